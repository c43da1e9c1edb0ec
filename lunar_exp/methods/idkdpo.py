"""IdkDPO: DPO that prefers an "I don't know" answer to the forget answer (Maini et al. 2024).

Reference implementation: locuslab/open-unlearning @ d3d7cf9, ``src/trainer/unlearn/dpo.py``.
The "I don't know" answers are the benchmark's own abstention answers (``QA.abstention``: TOFU
draws one per forget item from its 100-answer ``idontknow.jsonl`` with ``benchmark.idk_path``, as
open-unlearning does), else one fixed sentence. As in NPO, the frozen reference model's
log-probabilities are computed once before training.
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
from lunar_exp.methods._losses import idkdpo_loss, nll_loss
from lunar_exp.settings import setting, validate

FALLBACK_ABSTENTION = "I'm sorry, but I don't have any information about that."


@dataclass(kw_only=True)
class IdkDPO:
    """L = gamma * DPO(idk > forget answer; beta) + alpha * NLL retain."""

    beta: float = setting(0.1, gt=0, help="inverse temperature.")
    gamma: float = setting(1.0, ge=0, help="forget-term weight.")
    alpha: float = setting(1.0, ge=0, help="retain-term weight.")
    loop: TrainLoop = loop_setting()
    trainable_params: str | None = trainable_params_setting()

    def __post_init__(self) -> None:
        validate(self, "method")

    def unlearn(self, chat: ChatModel, data: UnlearnData) -> UnlearnOutcome:
        """Prefer the abstention over the forget answer; keep retain answers."""
        forget, retain = encode_items(chat, data.forget), encode_items(chat, data.retain)
        idk = encode_items(
            chat, data.forget, [qa.abstention or FALLBACK_ABSTENTION for qa in data.forget]
        )
        device = chat.model.device
        ref_forget = reference_logprobs(chat, forget).to(device)
        ref_idk = reference_logprobs(chat, idk).to(device)

        def batch_loss(forget_idx, retain_idx):
            f_logp, _ = answer_logprobs(chat.model, [forget[i] for i in forget_idx], _pad(chat))
            i_logp, _ = answer_logprobs(chat.model, [idk[i] for i in forget_idx], _pad(chat))
            _, r_nll = answer_logprobs(chat.model, [retain[i] for i in retain_idx], _pad(chat))
            f_loss = idkdpo_loss(
                i_logp, ref_idk[forget_idx], f_logp, ref_forget[forget_idx], self.beta
            )
            r_loss = nll_loss(r_nll)
            loss = self.gamma * f_loss + self.alpha * r_loss
            return loss, {
                "loss": loss.item(),
                "forget_loss": f_loss.item(),
                "retain_loss": r_loss.item(),
            }

        return run_unlearning(
            chat, batch_loss, len(forget), len(retain), self.trainable_params, self.loop, "idkdpo"
        )
