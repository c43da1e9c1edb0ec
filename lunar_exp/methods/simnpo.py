"""SimNPO: simplicity-preferring NPO without a reference model (Fan et al. 2024, arXiv 2410.07163).

Reference implementation: locuslab/open-unlearning @ d3d7cf9, ``src/trainer/unlearn/simnpo.py``.
"""

from __future__ import annotations

from lunar_exp.bookkeeping.errors import require_numbers, require_ranges
from lunar_exp.interfaces import ChatModel, UnlearnData, UnlearnOutcome
from lunar_exp.methods._loop import (
    _pad,
    answer_logprobs,
    encode_items,
    loop_settings,
    run_unlearning,
)
from lunar_exp.methods._losses import nll_loss, simnpo_loss


class SimNPO:
    """L = gamma * SimNPO(forget; beta, delta) + alpha * NLL retain.

    Args:
        beta: inverse temperature.
        delta: margin on the length-normalised NLL (the SimNPO paper's gamma).
        gamma: forget-term weight (0.125 in the reference config).
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
        beta: float = 4.5,
        delta: float = 0.0,
        gamma: float = 0.125,
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
        require_numbers("method", delta=delta)
        self.beta, self.delta, self.gamma, self.alpha = beta, delta, gamma, alpha
        self.loop = loop_settings(
            lr, epochs, batch_size, grad_accum, weight_decay, seed, gradient_checkpointing, bf16
        )
        self.trainable_params = trainable_params

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
