"""SimNPO: simplicity-preferring NPO without a reference model (Fan et al. 2024, arXiv 2410.07163).

Reference implementation: locuslab/open-unlearning @ d3d7cf9, ``src/trainer/unlearn/simnpo.py``.
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
from lunar_exp.methods._losses import nll_loss, simnpo_loss
from lunar_exp.settings import setting, validate


@dataclass(kw_only=True)
class SimNPO:
    """L = gamma * SimNPO(forget; beta, delta) + alpha * NLL retain."""

    beta: float = setting(4.5, gt=0, help="inverse temperature.")
    delta: float = setting(
        0.0, help="margin on the length-normalised NLL (the SimNPO paper's gamma)."
    )
    gamma: float = setting(0.125, ge=0, help="forget-term weight (0.125 in the reference config).")
    alpha: float = setting(1.0, ge=0, help="retain-term weight.")
    loop: TrainLoop = loop_setting()
    trainable_params: str | None = trainable_params_setting()

    def __post_init__(self) -> None:
        validate(self, "method")

    def unlearn(self, chat: ChatModel, data: UnlearnData) -> UnlearnOutcome:
        """Raise the forget answers' mean NLL past delta; keep retain answers."""
        forget, retain = encode_items(chat, data.forget), encode_items(chat, data.retain)

        def batch_loss(forget_idx, retain_idx):
            _, f_nll = answer_logprobs(chat.model, [forget[i] for i in forget_idx], _pad(chat))
            _, r_nll = answer_logprobs(chat.model, [retain[i] for i in retain_idx], _pad(chat))
            f_loss = simnpo_loss(f_nll, self.beta, self.delta)
            r_loss = nll_loss(r_nll)
            loss = self.gamma * f_loss + self.alpha * r_loss
            return loss, {
                "loss": loss.item(),
                "forget_loss": f_loss.item(),
                "retain_loss": r_loss.item(),
            }

        return run_unlearning(
            chat, batch_loss, len(forget), len(retain), self.trainable_params, self.loop, "simnpo"
        )
