"""Relearning: a few fine-tuning steps on a slice of the forget set, then the rest is scored.

Knowledge that was hidden rather than removed comes back on questions the attacker never
trained on (Lynch et al. 2024; Hu et al., "Jogging the memory of unlearned LLMs", 2024).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from lunar_exp.attacks._common import AttackTarget, model_copy
from lunar_exp.attacks._qa import mean_answer_nll, score_qa
from lunar_exp.interfaces import ChatModel, EvalResult, UnlearnData
from lunar_exp.metrics.primitives import padding_id
from lunar_exp.prompts import encode_item_pairs
from lunar_exp.settings import setting, validate
from lunar_exp.training import supervised_finetune


@dataclass(kw_only=True)
class Relearn:
    """Fine-tune a copy on the first ``n_items`` forget items; score the other forget items."""

    n_items: int = setting(
        2, ge=1, help="forget items the attacker trains on (the rest are held out and scored)."
    )
    steps: int = setting(10, ge=1, help="optimizer steps (batches), whole epochs over the slice.")
    lr: float = setting(1e-4, gt=0, help="AdamW learning rate.")
    batch_size: int = setting(2, ge=1, help="items per step.")
    seed: int = setting(0, help="order of the items within an epoch.")

    def __post_init__(self) -> None:
        validate(self, "attack.relearn")

    def check(self, chat: ChatModel, data: UnlearnData) -> None:
        """The forget set must keep at least one item out of the attacker's slice."""
        if len(data.forget) <= self.n_items:
            raise ValueError(
                f"attack.relearn.n_items={self.n_items} leaves no held-out forget item (the "
                f"forget set has {len(data.forget)}). Fix: lower attack.relearn.n_items."
            )

    def evaluate(self, target: AttackTarget) -> tuple[EvalResult, dict[str, object]]:
        """Train a copy on the slice, then score held-out forget items and the retain set."""
        slice_, held_out = target.data.forget[: self.n_items], target.data.forget[self.n_items :]
        with target.control(target.chat):
            nll_before = _nll_pair(target.chat, slice_, held_out)
        with model_copy(target.chat) as clone, target.control(clone):
            for param in clone.model.parameters():
                param.requires_grad_(True)
            self._train(clone, slice_)
            nll_after = _nll_pair(clone, slice_, held_out)
            result = score_qa(
                clone, target.generation, {"forget": held_out, "retain": target.data.retain}
            )
        return result, {
            "trained/answer_nll_before": nll_before[0],
            "trained/answer_nll_after": nll_after[0],
            "held_out/answer_nll_before": nll_before[1],
            "held_out/answer_nll_after": nll_after[1],
            "n_trained": len(slice_),
            "n_held_out": len(held_out),
        }

    def _train(self, chat, items) -> None:
        train_on(chat, items, self.steps, self.lr, self.batch_size, self.seed, "relearn")


def train_on(chat, items, steps: int, lr: float, batch_size: int, seed: int, name: str) -> None:
    """``steps`` AdamW steps (whole epochs) of answer NLL on ``items``, in place on ``chat``.

    The loss is logged as ``train/attack_<name>/loss`` with ``logger=wandb``.
    """
    pairs = encode_item_pairs(chat.tokenizer, items, chat.system_prompt)
    epochs = math.ceil(steps / math.ceil(len(pairs) / batch_size))
    supervised_finetune(
        chat.model,
        pairs,
        padding_id(chat.tokenizer),
        lr=lr,
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        desc=f"{name.replace('_', ' ')} attack",
        stage=f"attack_{name}",
    )


def _nll_pair(chat, trained, held_out) -> tuple[float, float]:
    """Mean answer NLL on the attacker's slice and on the held-out forget items."""
    return mean_answer_nll(chat, trained), mean_answer_nll(chat, held_out)
