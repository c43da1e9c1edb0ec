"""General knowledge kept: the LUNAR repository's factual set as a utility (``utility=factual``).

The official LUNAR code scores ``factual_data.json`` (real-world facts: authors of classic
novels, capitals, inventors, ...) after every unlearning run to show that general knowledge
survives. Here the records on ``edges`` (the 168 ``retain`` records by default) are answered by
greedy generation and scored like a QA benchmark's retain split: the pipeline reports
``utility/factual/rouge1_recall``, ``utility/factual/refusal_rate`` (and answer NLL, MRR,
top-hit rate) before and after unlearning. A refusal here is collateral damage: the method
redirected a question it was never asked to forget.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lunar_exp.benchmarks.qa.evaluation import evaluate_split, split_directions
from lunar_exp.benchmarks.qa.qa_json import read_qa_file
from lunar_exp.interfaces import QA, ChatModel, EvalResult
from lunar_exp.settings import setting, validate

SPLIT = "factual"


@dataclass(kw_only=True)
class FactualUtility:
    """ROUGE-1 recall and refusal rate on real-world facts (keys ``factual/<metric>``)."""

    path: str = setting(
        "../shared/benchdata/lunar/factual_data.json",
        help="JSON list of {question, answer, edge} records (the LUNAR repository's factual set).",
    )
    edges: list[str] = setting(
        factory=lambda: ["retain"], help="edges of the records to score (the official: retain)."
    )
    limit: int | None = setting(None, ge=1, help="first N selected records; None = all.")
    max_new_tokens: int = setting(32, ge=1, help="generation budget per answer.")
    batch_size: int = setting(16, ge=1, help="prompts per generation batch.")

    def __post_init__(self) -> None:
        validate(self, "utility")
        self.edges = list(self.edges)

    def load(self) -> dict[str, list[QA]]:
        """The selected records, checked: a missing file or an empty selection is an error."""
        path = Path(self.path)
        if not path.is_file():
            raise FileNotFoundError(
                f"utility.path={self.path!r} not found. Fix: point utility.path at the LUNAR "
                "factual_data.json (../shared/benchdata/lunar/factual_data.json, or set "
                "paths.data_dir)."
            )
        records = read_qa_file(path)
        chosen = [qa for qa in records if qa.edge in self.edges]
        if not chosen:
            found = sorted({qa.edge for qa in records})
            raise ValueError(
                f"utility.edges={self.edges} selects no record of {path} (its edges: {found}). "
                "Fix: set utility.edges to some of those."
            )
        return {SPLIT: chosen[: self.limit]}

    def evaluate(self, chat: ChatModel, eval_sets: Mapping[str, Any]) -> EvalResult:
        """Greedy answers to the facts, scored by ROUGE-1 recall, refusals, NLL, MRR."""
        metrics, records = evaluate_split(
            chat, eval_sets[SPLIT], self.max_new_tokens, self.batch_size, SPLIT
        )
        return EvalResult(dict(metrics), {SPLIT: records}, dict(split_directions(SPLIT)))
