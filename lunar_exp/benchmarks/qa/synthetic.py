"""The built-in synthetic benchmark: a fictitious knowledge graph, deterministic by seed."""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from typing import Any

from lunar_exp.benchmarks.common import knowledge_graph as kg
from lunar_exp.benchmarks.qa.evaluation import evaluate_qa
from lunar_exp.benchmarks.qa.splits import edge_eval_sets, split_by_edges
from lunar_exp.bookkeeping.errors import require_counts, require_index
from lunar_exp.interfaces import (
    QA,
    BenchmarkData,
    ChatModel,
    EvalResult,
    Generation,
    UnlearnData,
)


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

    def load(self) -> BenchmarkData:
        """Generate the graph and split it by ``forget_edges``; evaluation sets are the same."""
        rng = random.Random(self.seed)
        taken: set[str] = set()
        people = kg.make_people(rng, self.n_entities, taken)
        facts = [qa for person in people for qa in kg.person_facts(person, self.facts_per_entity)]
        forget, retain = split_by_edges(facts, self.forget_edges, source="the synthetic graph")
        unknown = kg.make_names(rng, self.n_abstain + self.n_reference, taken)
        abstain = kg.unknown_questions(rng, unknown[: self.n_abstain], "unknown")
        reference = kg.unknown_questions(rng, unknown[self.n_abstain :], "reference")
        data = UnlearnData(tuple(forget), tuple(retain), tuple(abstain), tuple(reference))
        generation = Generation(self.max_new_tokens, self.eval_batch_size)
        return BenchmarkData(data, self.eval_sets_for(data, self.forget_edges), generation)

    def eval_sets_for(
        self, data: UnlearnData, forget_edges: Collection[str]
    ) -> dict[str, tuple[QA, ...]]:
        """``forget``: the items on ``forget_edges``; ``retain``: every other item."""
        return edge_eval_sets(data, forget_edges)

    def evaluate(
        self,
        chat: ChatModel,
        eval_sets: Mapping[str, Any],
        reference: Mapping[str, Any] | None = None,
    ) -> EvalResult:
        """Greedy generation on each set; ROUGE, refusal rate, answer NLL, MRR, hit rate, DS."""
        return evaluate_qa(chat, eval_sets, self.max_new_tokens, self.eval_batch_size)
