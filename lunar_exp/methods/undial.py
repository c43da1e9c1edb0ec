"""UNDIAL: self-distillation with adjusted logits (Dong et al., NAACL 2025, arXiv 2402.10052).

"UNDIAL: Self-Distillation with Adjusted Logits for Robust Unlearning in Large Language Models".
Reference implementation: locuslab/open-unlearning @ d3d7cf9, ``src/trainer/unlearn/undial.py``
with ``compute_undial_loss`` in ``src/trainer/utils.py``. The student is trained towards the
frozen teacher's next-token distribution with the true token's logit lowered by beta.

The teacher is the target model before training and its inputs are fixed, so its distributions
over the forget answers are computed once before training (as NPO's reference log-probs) and kept
on the CPU: 4 bytes x vocabulary per forget answer token (SmolLM2, vocabulary 49,152: 192 KiB a
token), reported as ``unlearn/teacher_mib``. A frozen copy would instead hold a second model.
Unlike the reference, which averages over every position of the sequence (prompt and padding
included, where the -100 label indexes the vocabulary from the end), the loss is the mean over
answer tokens, as every loss here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
from transformers import PreTrainedModel

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
from lunar_exp.methods._losses import undial_loss
from lunar_exp.metrics.primitives import padding_id
from lunar_exp.settings import setting, validate

Pairs = Sequence[tuple[list[int], list[int]]]


@torch.no_grad()
def teacher_rows(model: PreTrainedModel, pairs: Pairs, pad_id: int, batch_size: int = 8):
    """Each pair's answer-token log-softmax rows under the current (frozen) model, on the CPU."""
    rows: list[torch.Tensor] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        values, _ = answer_token_logprobs(model, chunk, pad_id)
        rows.extend(values.cpu().split([len(answer) for _, answer in chunk]))
    return rows


@dataclass(kw_only=True)
class UNDIAL:
    """L = gamma * UNDIAL(forget; beta) + alpha * NLL retain."""

    beta: float = setting(
        10.0, ge=0, help="how far the true token's teacher logit is lowered (0 = self-distill)."
    )
    gamma: float = setting(1.0, ge=0, help="forget-term weight.")
    alpha: float = setting(0.0, ge=0, help="retain-term weight (0 = no retain term, as the paper).")
    loop: TrainLoop = loop_setting()
    trainable_params: str | None = trainable_params_setting()

    def __post_init__(self) -> None:
        validate(self, "method")

    def unlearn(self, chat: ChatModel, data: UnlearnData) -> UnlearnOutcome:
        """Distil the target model's forget-answer distributions minus beta on the true tokens."""
        forget, retain = encode_items(chat, data.forget), encode_items(chat, data.retain)
        pad = padding_id(chat.tokenizer)
        teacher = teacher_rows(chat.model, forget, pad)

        def batch_loss(forget_idx, retain_idx):
            model = chat.model  # read when called: the loop may train a sharded copy
            student, tokens = answer_token_logprobs(model, [forget[i] for i in forget_idx], pad)
            target = torch.cat([teacher[i] for i in forget_idx]).to(student.device)
            f_loss = undial_loss(student, target, tokens, self.beta)
            retain_pairs = [retain[i] for i in retain_idx]
            return with_retain_term(model, f_loss, self.gamma, self.alpha, retain_pairs, pad)

        outcome = run_unlearning(
            chat, batch_loss, len(forget), len(retain), self.trainable_params, self.loop, "undial"
        )
        teacher_mib = sum(t.nbytes for t in teacher) / 2**20
        return replace(outcome, metrics={**outcome.metrics, "unlearn/teacher_mib": teacher_mib})
