"""NPO: Negative Preference Optimization (Zhang et al. 2024, arXiv 2404.05868).

Reference implementation: locuslab/open-unlearning @ d3d7cf9, ``src/trainer/unlearn/npo.py``.
The frozen reference model enters only through log pi_ref(y|x) of the forget answers; since it is
frozen and the inputs are fixed, those values are computed once before training (identical to a
frozen deep copy, without holding a second model in memory).
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
    reference_logprobs,
    run_unlearning,
    trainable_params_setting,
)
from lunar_exp.methods._losses import nll_loss, npo_loss
from lunar_exp.settings import setting, validate


@dataclass(kw_only=True)
class NPO:
    """L = gamma * NPO(forget; beta) + alpha * NLL retain."""

    beta: float = setting(0.1, gt=0, help="inverse temperature of the preference loss.")
    gamma: float = setting(1.0, ge=0, help="forget-term weight.")
    alpha: float = setting(1.0, ge=0, help="retain-term weight.")
    loop: TrainLoop = loop_setting()
    trainable_params: str | None = trainable_params_setting()

    def __post_init__(self) -> None:
        validate(self, "method")

    def unlearn(self, chat: ChatModel, data: UnlearnData) -> UnlearnOutcome:
        """Push forget answers below the reference model's likelihood; keep retain answers."""
        forget, retain = encode_items(chat, data.forget), encode_items(chat, data.retain)
        ref = reference_logprobs(chat, forget).to(chat.model.device)

        def batch_loss(forget_idx, retain_idx):
            f_logp, _ = answer_logprobs(chat.model, [forget[i] for i in forget_idx], _pad(chat))
            _, r_nll = answer_logprobs(chat.model, [retain[i] for i in retain_idx], _pad(chat))
            f_loss = npo_loss(f_logp, ref[forget_idx], self.beta)
            r_loss = nll_loss(r_nll)
            loss = self.gamma * f_loss + self.alpha * r_loss
            return loss, {
                "loss": loss.item(),
                "forget_loss": f_loss.item(),
                "retain_loss": r_loss.item(),
            }

        return run_unlearning(
            chat, batch_loss, len(forget), len(retain), self.trainable_params, self.loop, "npo"
        )
