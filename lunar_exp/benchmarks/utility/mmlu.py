"""General utility evaluations any benchmark can add (``conf/utility/``).

A utility has ``load()`` (its evaluation sets; fails on bad input before any model loads) and
``evaluate(chat, eval_sets) -> EvalResult`` (metrics with their directions); the pipeline reports
its metrics as ``utility/<key>`` before and after unlearning.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lunar_exp.benchmarks.lm_eval.mcq import LMEvalMCQ, MCQTasks
from lunar_exp.interfaces import ChatModel, EvalResult


class MMLUUtility:
    """MMLU accuracy through lm-eval (keys ``mmlu/acc``, ``mmlu/acc_stderr``).

    Args:
        subjects: MMLU subjects; None = all 57.
        mode: ``hub`` (lm-eval's ``mmlu`` tasks), ``local`` (``mmlu_dir``) or ``auto`` (local when
            ``mmlu_dir`` exists).
        mmlu_dir: local ``test/<subject>_test.csv`` files (cais/mmlu form).
        limit: first N questions of each subject; None = all.
        batch_size: lm-eval batch size.
        cache_dir: where the local lm-eval tasks are written.
    """

    def __init__(
        self,
        subjects: list[str] | None = None,
        mode: str = "auto",
        mmlu_dir: str = "../shared/benchdata/mmlu",
        limit: int | None = None,
        batch_size: int = 8,
        cache_dir: str = ".cache",
    ) -> None:
        self.suite = LMEvalMCQ(
            [], True, subjects, mode, "", mmlu_dir, limit, batch_size, cache_dir, owner="utility"
        )

    def load(self) -> dict[str, MCQTasks]:
        """Resolve the mode and validate the local questions: the ``mcq`` task list."""
        return {"mcq": self.suite.tasks()}

    def evaluate(self, chat: ChatModel, eval_sets: Mapping[str, Any]) -> EvalResult:
        """MMLU accuracy of ``chat.model`` on ``eval_sets``' task list."""
        return self.suite.evaluate(chat, eval_sets["mcq"])
