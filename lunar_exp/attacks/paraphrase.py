"""Paraphrase: the forget questions rephrased (benchmark paraphrases or generator templates)."""

from __future__ import annotations

from dataclasses import replace

from lunar_exp.attacks._common import AttackTarget
from lunar_exp.attacks._qa import score_qa
from lunar_exp.benchmarks.common.directions import DEVIATION_SCORE
from lunar_exp.interfaces import EvalResult, UnlearnData
from lunar_exp.metrics.text import deviation_score


class Paraphrase:
    """Ask the forget questions in other words; the retain side is the unlearned model's own."""

    def check(self, chat, data: UnlearnData) -> None:
        """Every forget item needs a paraphrase (TOFU, the synthetic benchmark, qa_json fields)."""
        missing = sum(1 for item in data.forget if not item.paraphrase)
        if missing:
            raise ValueError(
                f"attack paraphrase: {missing} of {len(data.forget)} forget items have no "
                "paraphrased question (this benchmark ships none). Fix: drop paraphrase from "
                "attack=[...], or give qa_json records a 'paraphrase' field."
            )

    def evaluate(self, target: AttackTarget) -> tuple[EvalResult, dict[str, object]]:
        """Score the paraphrased forget questions; DS uses the unlearned model's retain score."""
        rephrased = tuple(replace(item, question=item.paraphrase) for item in target.data.forget)
        with target.control(target.chat):
            result = score_qa(target.chat, target.generation, {"forget": rephrased})
        after = target.after
        retain = after.metrics.get("retain/rouge1_recall") if after is not None else None
        if after is not None and retain is not None:
            result.metrics["retain/rouge1_recall"] = retain
            result.directions["retain/rouge1_recall"] = after.directions["retain/rouge1_recall"]
            result.metrics["deviation_score"] = deviation_score(
                result.metrics["forget/rouge1_recall"], retain
            )
            result.directions.update(DEVIATION_SCORE)
        return result, {}
