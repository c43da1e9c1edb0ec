"""PISTOL-format QA from JSON (``[{"question", "answer", "edge"}, ...]``), e.g. PISTOL samples."""

from __future__ import annotations

import json
import random
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
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

REQUIRED_KEYS = ("question", "answer", "edge")


def read_qa_file(path: Path, required: tuple[str, ...] = REQUIRED_KEYS) -> list[QA]:
    """Read and validate a JSON list of QA records.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a non-empty JSON list of records with ``required`` string keys.
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"Dataset file {path} not found. Fix: set benchmark.path to an existing JSON file."
        )
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno}). "
            "Fix: provide a JSON list of {question, answer, edge} records."
        ) from err
    if not isinstance(records, list) or not records:
        raise ValueError(
            f"{path} must hold a non-empty JSON list of records. "
            'Fix: provide [{"question": ..., "answer": ..., "edge": ...}, ...].'
        )
    for index, record in enumerate(records):
        bad = [
            k
            for k in required
            if not isinstance(record, dict) or not isinstance(record.get(k), str)
        ]
        if bad:
            raise ValueError(
                f"{path} record {index} lacks string field(s) {bad}. Fix: every record "
                f"needs {list(required)} (PISTOL format)."
            )
    return [
        QA(r["question"], r["answer"], r.get("edge", "extra"), r.get("paraphrase")) for r in records
    ]


@dataclass(kw_only=True)
class QAJsonBenchmark:
    """Questions, answers and edges from a JSON file; forget set = items on ``forget_edges``."""

    name = "qa_json"  # not a setting: unannotated, so no dataclass field

    path: str = setting(help="the JSON file.")
    forget_edges: list[str] = setting(help="edges to forget (e.g. [A_B]).")
    abstain_path: str | None = setting(
        None, help="JSON [{question, answer}] of abstention items for fine-tuning (optional)."
    )
    reference_path: str | None = setting(
        None, help="JSON [{question, answer}] of LUNAR reference prompts (optional)."
    )
    n_abstain: int = setting(
        16, ge=0, help="generated unknown-person abstention items when abstain_path is unset."
    )
    n_reference: int = setting(
        32, ge=0, help="generated reference prompts when reference_path is unset."
    )
    retain_eval_limit: int | None = setting(
        200, ge=1, help="evaluate the first N retain items (the LUNAR code uses 200; None = all)."
    )
    max_new_tokens: int = setting(48, ge=1, help="generation budget for evaluation.")
    eval_batch_size: int = setting(16, ge=1, help="prompts per generation batch.")
    seed: int = setting(0, help="seed of the generated abstention and reference prompts.")

    def __post_init__(self) -> None:
        validate(self, "benchmark")
        self.forget_edges = list(self.forget_edges)

    def load(self) -> BenchmarkData:
        """Read, validate and split the file; add abstention and reference prompts."""
        path = Path(self.path)
        forget, retain = split_by_edges(read_qa_file(path), self.forget_edges, source=str(path))
        rng = random.Random(self.seed)
        names = kg.make_names(rng, self.n_abstain + self.n_reference, set())
        abstain = self._extra(self.abstain_path, rng, names[: self.n_abstain], "unknown")
        reference = self._extra(self.reference_path, rng, names[self.n_abstain :], "reference")
        data = UnlearnData(tuple(forget), tuple(retain), tuple(abstain), tuple(reference))
        generation = Generation(self.max_new_tokens, self.eval_batch_size)
        return BenchmarkData(data, self.eval_sets_for(data, self.forget_edges), generation)

    def eval_sets_for(
        self, data: UnlearnData, forget_edges: Collection[str]
    ) -> dict[str, tuple[QA, ...]]:
        """``forget``: the items on ``forget_edges``; ``retain``: the first N others.

        N is ``retain_eval_limit`` (all of them when unset).
        """
        return edge_eval_sets(data, forget_edges, self.retain_eval_limit)

    @staticmethod
    def _extra(path: str | None, rng: random.Random, names: list[str], edge: str) -> list[QA]:
        if path is None:
            return kg.unknown_questions(rng, names, edge)
        return [
            QA(qa.question, qa.answer, edge)
            for qa in read_qa_file(Path(path), required=("question", "answer"))
        ]

    def evaluate(
        self,
        chat: ChatModel,
        eval_sets: Mapping[str, Any],
        reference: Mapping[str, Any] | None = None,
    ) -> EvalResult:
        """Greedy generation on each set (forget, the limited retain set); QA metrics and DS."""
        return evaluate_qa(chat, eval_sets, self.max_new_tokens, self.eval_batch_size)
