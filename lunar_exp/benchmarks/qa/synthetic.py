"""The built-in synthetic benchmark: a fictitious knowledge graph, deterministic by seed."""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from lunar_exp.benchmarks.common import knowledge_graph as kg
from lunar_exp.benchmarks.qa.evaluation import evaluate_qa
from lunar_exp.benchmarks.qa.splits import edge_eval_sets, split_by_edges
from lunar_exp.interfaces import (
    QA,
    BenchmarkData,
    ChatModel,
    EvalResult,
    Generation,
    UnlearnData,
)
from lunar_exp.settings import setting, validate


@dataclass(kw_only=True)
class SyntheticBenchmark:
    """Made-up people with templated facts; forget set = all facts of chosen people."""

    name = "synthetic"  # not a setting: unannotated, so no dataclass field

    seed: int = setting(
        0, help="generator seed (independent of the run seed so methods see the same data)."
    )
    n_entities: int = setting(12, help="number of known people (at least 2).")
    facts_per_entity: int = setting(5, ge=1, help="templated facts per person (1..5).")
    forget_edges: list[str] = setting(
        ["person_00", "person_01"], help="ids of the people to forget (person_00 ...)."
    )
    n_abstain: int = setting(
        20, ge=0, help="unknown-person questions taught as abstentions during fine-tuning."
    )
    n_reference: int = setting(
        32, ge=0, help="unknown-person questions defining LUNAR's unlearning vector."
    )
    max_new_tokens: int = setting(32, ge=1, help="generation budget for evaluation.")
    eval_batch_size: int = setting(16, ge=1, help="prompts per generation batch.")

    def __post_init__(self) -> None:
        validate(self, "benchmark")
        if self.n_entities < 2:
            raise ValueError(
                f"benchmark.n_entities={self.n_entities}: need at least 2 (one forget, one "
                "retain). Fix: use a value >= 2."
            )
        self.forget_edges = list(self.forget_edges)

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
