"""Benign relearning: fine-tune a copy on retain items only, then score the forget set.

Hu et al., ICLR 2025, "Unlearning or Obfuscating? Jogging the Memory of Unlearned LLMs via Benign
Relearning" (arXiv 2406.13356): a few steps on data that never contains the forget answers
(public or related text) bring unlearned knowledge back when it was hidden rather than removed.
Here the benign data are the benchmark's retain items (related entities, same question forms);
the attacker never sees a forget item, so every forget question is held out. Unlike ``relearn``
(forget items), the question is whether *any* fine-tuning undoes the unlearning.
"""

from __future__ import annotations

from dataclasses import dataclass

from lunar_exp.attacks._common import AttackTarget, model_copy
from lunar_exp.attacks._qa import mean_answer_nll
from lunar_exp.attacks.relearn import train_on
from lunar_exp.interfaces import ChatModel, EvalResult, UnlearnData
from lunar_exp.settings import setting, validate


@dataclass(kw_only=True)
class RelearnBenign:
    """Fine-tune a copy on retain items (never forget items); the benchmark scores it."""

    n_items: int | None = setting(
        None, ge=1, help="retain items the attacker trains on (the first n); null: all of them."
    )
    steps: int = setting(20, ge=1, help="optimizer steps (batches), whole epochs over the items.")
    lr: float = setting(
        1e-5, gt=0, help="AdamW learning rate (1e-4 diverged on the default run: docs/attacks.md)."
    )
    batch_size: int = setting(4, ge=1, help="items per step.")
    seed: int = setting(0, help="order of the items within an epoch.")

    def __post_init__(self) -> None:
        validate(self, "attack.relearn_benign")

    def check(self, chat: ChatModel, data: UnlearnData) -> None:
        """The benchmark must give retain items to train on."""
        if not data.retain:
            raise ValueError(
                "attack relearn_benign trains on retain items and this benchmark has none. Fix: "
                "drop relearn_benign from attack=[...]."
            )

    def evaluate(self, target: AttackTarget) -> tuple[EvalResult, dict[str, object]]:
        """Train a copy on the retain slice, then run the benchmark's evaluation on it."""
        benign = target.data.retain[: self.n_items]
        forget = target.data.forget
        with target.control(target.chat):
            before = mean_answer_nll(target.chat, forget), mean_answer_nll(target.chat, benign)
        with model_copy(target.chat) as clone:
            for param in clone.model.parameters():
                param.requires_grad_(True)
            with target.control(clone):
                train_on(
                    clone, benign, self.steps, self.lr, self.batch_size, self.seed, "relearn_benign"
                )
                after = mean_answer_nll(clone, forget), mean_answer_nll(clone, benign)
            result = target.evaluate(clone)
        return result, {
            "forget/answer_nll_before": before[0],
            "forget/answer_nll_after": after[0],
            "trained/answer_nll_before": before[1],
            "trained/answer_nll_after": after[1],
            "n_trained": len(benign),
        }
