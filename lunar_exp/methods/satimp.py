"""SatImp: saturation x importance loss reweighting (Yang et al., ICML 2025, arXiv 2505.11953).

"Exploring Criteria of Loss Reweighting to Enhance LLM Unlearning". Reference implementation:
locuslab/open-unlearning @ d3d7cf9, ``src/trainer/unlearn/satimp.py`` (a GradDiff subclass) with
``compute_satimp_loss`` in ``src/trainer/utils.py``: gradient ascent on each forget answer token
weighted by the detached p_t^beta1 * (1 - p_t)^beta2, averaged over the batch's answer tokens.
The reference builds a frozen reference model it never reads; none is kept here.
"""

from __future__ import annotations

from dataclasses import dataclass

from lunar_exp.interfaces import ChatModel, UnlearnData, UnlearnOutcome
from lunar_exp.methods._loop import (
    TrainLoop,
    answer_logprobs,
    encode_items,
    loop_setting,
    run_unlearning,
    trainable_params_setting,
)
from lunar_exp.methods._losses import nll_loss, satimp_loss
from lunar_exp.metrics.primitives import padding_id, pair_batch, token_nll
from lunar_exp.settings import setting, validate


@dataclass(kw_only=True)
class SatImp:
    """L = gamma * SatImp(forget; beta1, beta2) + alpha * NLL retain."""

    beta1: float = setting(5.0, ge=0, help="exponent of the saturation weight p_t^beta1.")
    beta2: float = setting(1.0, ge=0, help="exponent of the importance weight (1 - p_t)^beta2.")
    gamma: float = setting(1.0, ge=0, help="forget-term weight.")
    alpha: float = setting(0.1, ge=0, help="retain-term weight.")
    loop: TrainLoop = loop_setting()
    trainable_params: str | None = trainable_params_setting()

    def __post_init__(self) -> None:
        validate(self, "method")

    def unlearn(self, chat: ChatModel, data: UnlearnData) -> UnlearnOutcome:
        """Ascend the forget answers' reweighted token cross-entropy, descend the retain NLL."""
        forget, retain = encode_items(chat, data.forget), encode_items(chat, data.retain)
        pad = padding_id(chat.tokenizer)

        def batch_loss(forget_idx, retain_idx):
            model = chat.model  # read when called: the loop may train a sharded copy
            batch = pair_batch([forget[i] for i in forget_idx], pad)
            f_nll, f_mask = token_nll(model, *(t.to(model.device) for t in batch))
            _, r_nll = answer_logprobs(model, [retain[i] for i in retain_idx], pad)
            f_loss = satimp_loss(f_nll, f_mask, self.beta1, self.beta2)
            r_loss = nll_loss(r_nll)
            loss = self.gamma * f_loss + self.alpha * r_loss
            return loss, {
                "loss": loss.item(),
                "forget_loss": f_loss.item(),
                "retain_loss": r_loss.item(),
            }

        return run_unlearning(
            chat, batch_loss, len(forget), len(retain), self.trainable_params, self.loop, "satimp"
        )
