"""The built-in synthetic benchmark: a fictitious knowledge graph, deterministic by seed."""

from __future__ import annotations

import random

from lunar_exp.benchmarks.common import knowledge_graph as kg
from lunar_exp.benchmarks.qa.evaluation import evaluate_qa
from lunar_exp.benchmarks.qa.splits import split_by_edges
from lunar_exp.bookkeeping.errors import require_counts, require_index
from lunar_exp.interfaces import ChatModel, EvalResult, UnlearnData


class SyntheticBenchmark:
    """Made-up people with templated facts; forget set = all facts of chosen people.

    Args:
        seed: generator seed (independent of the run seed so methods see the same data).
        n_entities: number of known people.
        facts_per_entity: templated facts per person (1..5).
        forget_edges: ids of the people to forget (``person_00`` ...).
        n_abstain: unknown-person questions taught as abstentions during fine-tuning.
        n_reference: unknown-person questions defining LUNAR's unlearning vector.
        max_new_tokens: generation budget for evaluation.
        eval_batch_size: prompts per generation batch.
    """

    name = "synthetic"
    splits_by_edge = True  # evaluate() scores data.forget/retain as given (sequential requests)

    def __init__(
        self,
        seed: int = 0,
        n_entities: int = 12,
        facts_per_entity: int = 5,
        forget_edges: list[str] | None = None,
        n_abstain: int = 20,
        n_reference: int = 32,
        max_new_tokens: int = 32,
        eval_batch_size: int = 16,
    ) -> None:
        require_counts("benchmark", 0, n_abstain=n_abstain, n_reference=n_reference)
        require_counts(
            "benchmark",
            1,
            facts_per_entity=facts_per_entity,
            max_new_tokens=max_new_tokens,
            eval_batch_size=eval_batch_size,
        )
        require_index("benchmark", "n_entities", n_entities)
        if n_entities < 2:
            raise ValueError(f"n_entities={n_entities}: need at least 2 (one forget, one retain).")
        self.seed = seed
        self.n_entities = n_entities
        self.facts_per_entity = facts_per_entity
        self.forget_edges = (
            ["person_00", "person_01"] if forget_edges is None else list(forget_edges)
        )
        self.n_abstain = n_abstain
        self.n_reference = n_reference
        self.max_new_tokens = max_new_tokens
        self.eval_batch_size = eval_batch_size

    def load(self) -> UnlearnData:
        """Generate the graph and split it by ``forget_edges``."""
        rng = random.Random(self.seed)
        taken: set[str] = set()
        people = kg.make_people(rng, self.n_entities, taken)
        facts = [qa for person in people for qa in kg.person_facts(person, self.facts_per_entity)]
        forget, retain = split_by_edges(facts, self.forget_edges, source="the synthetic graph")
        unknown = kg.make_names(rng, self.n_abstain + self.n_reference, taken)
        abstain = kg.unknown_questions(rng, unknown[: self.n_abstain], "unknown")
        reference = kg.unknown_questions(rng, unknown[self.n_abstain :], "reference")
        return UnlearnData(tuple(forget), tuple(retain), tuple(abstain), tuple(reference))

    def evaluate(self, chat: ChatModel, data: UnlearnData) -> EvalResult:
        """Greedy generation on forget and retain; ROUGE, refusal rate, answer NLL."""
        return evaluate_qa(
            chat,
            {"forget": data.forget, "retain": data.retain},
            self.max_new_tokens,
            self.eval_batch_size,
        )
