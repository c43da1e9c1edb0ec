"""GA: gradient ascent on the forget set (Jang et al. 2023, arXiv 2210.01504).

Reference implementation: locuslab/open-unlearning @ d3d7cf9,
``src/trainer/unlearn/grad_ascent.py``.
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
from lunar_exp.methods._losses import ga_loss
from lunar_exp.settings import validate


@dataclass(kw_only=True)
class GA:
    """Ascend the forget answers' cross-entropy; no retain term."""

    loop: TrainLoop = loop_setting()
    trainable_params: str | None = trainable_params_setting()

    def __post_init__(self) -> None:
        validate(self, "method")

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
