"""WGA: weighted gradient ascent (Wang et al., ICLR 2025, arXiv 2502.19301).

"Rethinking LLM Unlearning Objectives: A Gradient Perspective and Go Beyond". Reference
implementation: locuslab/open-unlearning @ d3d7cf9, ``src/trainer/unlearn/wga.py`` (a GradDiff
subclass) with ``compute_wga_loss`` in ``src/trainer/utils.py``.
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
from lunar_exp.methods._losses import nll_loss, wga_loss
from lunar_exp.metrics.primitives import pair_batch, token_nll
from lunar_exp.settings import setting, validate


@dataclass(kw_only=True)
class WGA:
    """L = gamma * WGA(forget; beta) + alpha * NLL retain."""

    beta: float = setting(
        1.0, ge=0, help="exponent of the detached token weight p_t^beta (0 = token-mean GA)."
    )
    gamma: float = setting(1.0, ge=0, help="forget-term weight.")
    alpha: float = setting(1.0, ge=0, help="retain-term weight.")
    loop: TrainLoop = loop_setting()
    trainable_params: str | None = trainable_params_setting()

    def __post_init__(self) -> None:
        validate(self, "method")

    def unlearn(self, chat: ChatModel, data: UnlearnData) -> UnlearnOutcome:
        """Ascend the forget answers' token-weighted cross-entropy, descend the retain NLL."""
        forget, retain = encode_items(chat, data.forget), encode_items(chat, data.retain)

        def batch_loss(forget_idx, retain_idx):
            model = chat.model  # read when called: the loop may train a sharded copy
            batch = pair_batch([forget[i] for i in forget_idx], _pad(chat))
            f_nll, f_mask = token_nll(model, *(t.to(model.device) for t in batch))
            _, r_nll = answer_logprobs(model, [retain[i] for i in retain_idx], _pad(chat))
            f_loss, r_loss = wga_loss(f_nll, f_mask, self.beta), nll_loss(r_nll)
            loss = self.gamma * f_loss + self.alpha * r_loss
            return loss, {
                "loss": loss.item(),
                "forget_loss": f_loss.item(),
                "retain_loss": r_loss.item(),
            }

        return run_unlearning(
            chat, batch_loss, len(forget), len(retain), self.trainable_params, self.loop, "wga"
        )
