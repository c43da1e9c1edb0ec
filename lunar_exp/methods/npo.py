"""NPO: Negative Preference Optimization (Zhang et al. 2024, arXiv 2404.05868).

Reference implementation: locuslab/open-unlearning @ d3d7cf9, ``src/trainer/unlearn/npo.py``.
The frozen reference model enters only through log pi_ref(y|x) of the forget answers; since it is
frozen and the inputs are fixed, those values are computed once before training (identical to a
frozen deep copy, without holding a second model in memory).
"""

from __future__ import annotations

from lunar_exp.bookkeeping.errors import require_ranges
from lunar_exp.interfaces import ChatModel, UnlearnData, UnlearnOutcome
from lunar_exp.methods._loop import (
    _pad,
    answer_logprobs,
    encode_items,
    loop_settings,
    reference_logprobs,
    run_unlearning,
)
from lunar_exp.methods._losses import nll_loss, npo_loss


class NPO:
    """L = gamma * NPO(forget; beta) + alpha * NLL retain.

    Args:
        beta: inverse temperature of the preference loss.
        gamma: forget-term weight.
        alpha: retain-term weight.
        lr: AdamW learning rate.
        epochs: passes over the forget set.
        batch_size: forget (and paired retain) items per micro-batch.
        grad_accum: micro-batches per optimizer step.
        weight_decay: AdamW weight decay.
        trainable_params: regex over parameter names to train (None = all).
        gradient_checkpointing: trade compute for memory.
        bf16: autocast to bfloat16 on GPU.
        seed: batch order and retain sampling seed.
    """

    def __init__(
        self,
        beta: float = 0.1,
        gamma: float = 1.0,
        alpha: float = 1.0,
        lr: float = 1e-5,
        epochs: int = 5,
        batch_size: int = 8,
        grad_accum: int = 1,
        weight_decay: float = 0.01,
        trainable_params: str | None = None,
        gradient_checkpointing: bool = False,
        bf16: bool = False,
        seed: int = 0,
    ) -> None:
        require_ranges("method", {"beta": beta}, {"gamma": gamma, "alpha": alpha})
        self.beta, self.gamma, self.alpha = beta, gamma, alpha
        self.loop = loop_settings(
            lr, epochs, batch_size, grad_accum, weight_decay, seed, gradient_checkpointing, bf16
        )
        self.trainable_params = trainable_params

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
