"""GradDiff: gradient ascent on forget plus descent on retain (Liu et al. 2022).

Reference implementation: locuslab/open-unlearning @ d3d7cf9, ``src/trainer/unlearn/grad_diff.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from lunar_exp.interfaces import ChatModel, UnlearnData, UnlearnOutcome
from lunar_exp.methods._loop import (
    TrainLoop,
    _pad,
    answer_logprobs,
    encode_items,
    loop_setting,
    run_unlearning,
    trainable_params_setting,
)
from lunar_exp.methods._losses import ga_loss, nll_loss
from lunar_exp.settings import setting, validate


@dataclass(kw_only=True)
class GradDiff:
    """L = gamma * (-NLL forget) + alpha * NLL retain."""

    gamma: float = setting(1.0, ge=0, help="forget-term weight.")
    alpha: float = setting(1.0, ge=0, help="retain-term weight.")
    loop: TrainLoop = loop_setting()
    trainable_params: str | None = trainable_params_setting()

    def __post_init__(self) -> None:
        validate(self, "method")

    def unlearn(self, chat: ChatModel, data: UnlearnData) -> UnlearnOutcome:
        """Train on forget (ascent) and retain (descent) together."""
        forget, retain = encode_items(chat, data.forget), encode_items(chat, data.retain)

        def batch_loss(forget_idx, retain_idx):
            _, f_nll = answer_logprobs(chat.model, [forget[i] for i in forget_idx], _pad(chat))
            _, r_nll = answer_logprobs(chat.model, [retain[i] for i in retain_idx], _pad(chat))
            f_loss, r_loss = ga_loss(f_nll), nll_loss(r_nll)
            loss = self.gamma * f_loss + self.alpha * r_loss
            return loss, {
                "loss": loss.item(),
                "forget_loss": f_loss.item(),
                "retain_loss": r_loss.item(),
            }

        return run_unlearning(
            chat, batch_loss, len(forget), len(retain), self.trainable_params, self.loop, "graddiff"
        )
