"""GA: gradient ascent on the forget set (Jang et al. 2023, arXiv 2210.01504).

Reference implementation: locuslab/open-unlearning @ d3d7cf9,
``src/trainer/unlearn/grad_ascent.py``.
"""

from __future__ import annotations

from lunar_exp.interfaces import ChatModel, UnlearnData, UnlearnOutcome
from lunar_exp.methods._loop import (
    _pad,
    answer_logprobs,
    encode_items,
    loop_settings,
    run_unlearning,
)
from lunar_exp.methods._losses import ga_loss


class GA:
    """Ascend the forget answers' cross-entropy; no retain term.

    Args:
        lr: AdamW learning rate.
        epochs: passes over the forget set.
        batch_size: forget items per micro-batch.
        grad_accum: micro-batches per optimizer step.
        weight_decay: AdamW weight decay.
        trainable_params: regex over parameter names to train (None = all).
        gradient_checkpointing: trade compute for memory.
        bf16: autocast to bfloat16 on GPU.
        seed: batch order seed.
    """

    def __init__(
        self,
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
        self.loop = loop_settings(
            lr, epochs, batch_size, grad_accum, weight_decay, seed, gradient_checkpointing, bf16
        )
        self.trainable_params = trainable_params

    def unlearn(self, chat: ChatModel, data: UnlearnData) -> UnlearnOutcome:
        """Train on the forget set with the negated NLL."""
        forget = encode_items(chat, data.forget)

        def batch_loss(forget_idx, _retain_idx):
            _, nll = answer_logprobs(chat.model, [forget[i] for i in forget_idx], _pad(chat))
            loss = ga_loss(nll)
            return loss, {"loss": loss.item()}

        return run_unlearning(
            chat, batch_loss, len(forget), 0, self.trainable_params, self.loop, "ga"
        )
