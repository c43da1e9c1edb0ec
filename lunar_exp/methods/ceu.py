"""CE-U: cross-entropy unlearning (Yang et al. 2025, arXiv 2503.01224).

"CE-U: Cross Entropy Unlearning". Reference implementation: locuslab/open-unlearning @ d3d7cf9,
``src/trainer/unlearn/ceu.py``. Each forget answer token is trained towards the model's own
next-token distribution with the true token's probability set to zero; the first answer token is
left out (``ignore_first_n_answer_tokens``, the footnote in the paper's training settings). The
reference has no retain term; ``alpha`` > 0 adds the retain NLL, off by default.
"""

from __future__ import annotations

from dataclasses import dataclass

from lunar_exp.interfaces import ChatModel, UnlearnData, UnlearnOutcome
from lunar_exp.methods._loop import (
    TrainLoop,
    answer_token_logprobs,
    encode_items,
    loop_setting,
    run_unlearning,
    trainable_params_setting,
    with_retain_term,
)
from lunar_exp.methods._losses import ceu_loss
from lunar_exp.metrics.primitives import padding_id
from lunar_exp.settings import setting, validate


@dataclass(kw_only=True)
class CEU:
    """L = gamma * CE-U(forget answer tokens after the first n) + alpha * NLL retain."""

    ignore_first_n_answer_tokens: int = setting(
        1, ge=0, help="leading answer tokens of each forget item left out of the loss."
    )
    gamma: float = setting(1.0, ge=0, help="forget-term weight.")
    alpha: float = setting(0.0, ge=0, help="retain-term weight (0 = no retain term, as the paper).")
    loop: TrainLoop = loop_setting()
    trainable_params: str | None = trainable_params_setting()

    def __post_init__(self) -> None:
        validate(self, "method")

    def unlearn(self, chat: ChatModel, data: UnlearnData) -> UnlearnOutcome:
        """Move each forget answer token's probability onto the model's other candidates."""
        forget, retain = encode_items(chat, data.forget), encode_items(chat, data.retain)
        pad, skip = padding_id(chat.tokenizer), self.ignore_first_n_answer_tokens

        def batch_loss(forget_idx, retain_idx):
            model = chat.model  # read when called: the loop may train a sharded copy
            rows, tokens = answer_token_logprobs(model, [forget[i] for i in forget_idx], pad, skip)
            f_loss = ceu_loss(rows, tokens)
            retain_pairs = [retain[i] for i in retain_idx]
            return with_retain_term(model, f_loss, self.gamma, self.alpha, retain_pairs, pad)

        return run_unlearning(
            chat, batch_loss, len(forget), len(retain), self.trainable_params, self.loop, "ceu"
        )
