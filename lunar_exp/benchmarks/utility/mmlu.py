"""General utility evaluations any benchmark can add (``conf/utility/``).

A utility has ``load()`` (its evaluation sets; fails on bad input before any model loads) and
``evaluate(chat, eval_sets) -> EvalResult`` (metrics with their directions); the pipeline reports
its metrics as ``utility/<key>`` before and after unlearning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from lunar_exp.benchmarks.lm_eval.mcq import LMEvalMCQ, MCQTasks
from lunar_exp.interfaces import ChatModel, EvalResult
from lunar_exp.settings import setting, validate


@dataclass(kw_only=True)
class MMLUUtility:
    """MMLU accuracy through lm-eval (keys ``mmlu/acc``, ``mmlu/acc_stderr``)."""

    subjects: list[str] | None = setting(None, help="MMLU subjects; None = all 57.")
    mode: Literal["auto", "local", "hub"] = setting(
        "auto",
        help="hub (lm-eval's mmlu tasks), local (mmlu_dir) or auto (local when mmlu_dir exists).",
    )
    mmlu_dir: str = setting(
        "../shared/benchdata/mmlu", help="local test/<subject>_test.csv files (cais/mmlu form)."
    )
    limit: int | None = setting(None, ge=1, help="first N questions of each subject; None = all.")
    batch_size: int = setting(8, ge=1, help="lm-eval batch size.")
    cache_dir: str = setting(".cache", help="where the local lm-eval tasks are written.")

    def __post_init__(self) -> None:
        validate(self, "utility")
        # Not a setting: the lm-eval tasks, with the MMLU directory resolved now.
        self.suite = LMEvalMCQ(
            [],
            True,
            self.subjects,
            self.mode,
            "",
            self.mmlu_dir,
            self.limit,
            self.batch_size,
            self.cache_dir,
            owner="utility",
        )

    def load(self) -> dict[str, MCQTasks]:
        """Resolve the mode and validate the local questions: the ``mcq`` task list."""
        return {"mcq": self.suite.tasks()}

    def evaluate(self, chat: ChatModel, eval_sets: Mapping[str, Any]) -> EvalResult:
        """MMLU accuracy of ``chat.model`` on ``eval_sets``' task list."""
        return self.suite.evaluate(chat, eval_sets["mcq"])
