"""AltPO: alternate preference optimization (Mekala et al., COLING 2025, arXiv 2409.13474).

"Alternate Preference Optimization for Unlearning Factual Knowledge in Large Language Models".
Reference implementation: molereddy/Alternate-Preference-Optimization @ c9b78bd (``forget.py``
with ``forget_loss=subdpo``, ``generate.py``), ported to locuslab/open-unlearning @ d3d7cf9 as
``community/methods/AltPO`` (the ``DPO`` trainer on alternate answers). Before training, the
target model itself writes ``num_alternates`` plausible alternate answers to each forget question
(sampled at temperature 1 from a prompt that shows the question and its answer and asks for an
answer with every fact changed). Each (question, alternate) pair is one training example: DPO
prefers the alternate to the forget answer, plus NLL on a retain item, so one epoch is
``num_alternates`` passes over each forget question. As in NPO and IdkDPO, the frozen reference
model's log-probabilities are computed once before training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from lunar_exp.interfaces import QA, ChatModel, UnlearnData, UnlearnOutcome
from lunar_exp.methods._loop import (
    TrainLoop,
    answer_logprobs,
    encode_items,
    loop_setting,
    reference_logprobs,
    run_unlearning,
    trainable_params_setting,
)
from lunar_exp.methods._losses import idkdpo_loss as dpo_loss
from lunar_exp.methods._losses import nll_loss
from lunar_exp.metrics.primitives import batches, pad_left, padding_id
from lunar_exp.prompts import encode_item_prompts
from lunar_exp.settings import setting, validate

INSTRUCTION = (
    "Question: {question}\nAnswer: {answer}\n"
    "Now make up a different answer to the same question. Change every fact the answer gives "
    "so that it contradicts the given answer, keep it plausible, and keep every detail the "
    "question itself states."
)
REPLY_PREFIX = "Alternate answer:"
STOP_MARKERS = ("Question:", "Q:")


@dataclass(kw_only=True)
class AltPO:
    """L = gamma * DPO(alternate > forget answer; beta) + alpha * NLL retain."""

    beta: float = setting(0.1, gt=0, help="inverse temperature of the preference loss.")
    gamma: float = setting(1.0, ge=0, help="forget-term weight.")
    alpha: float = setting(1.0, ge=0, help="retain-term weight.")
    num_alternates: int = setting(5, ge=1, help="alternate answers generated per forget item.")
    temperature: float = setting(1.0, gt=0, help="sampling temperature of the alternates.")
    max_new_tokens: int = setting(200, ge=1, help="longest alternate answer, in tokens.")
    generation_batch_size: int = setting(16, ge=1, help="prompts per generation batch.")
    loop: TrainLoop = loop_setting()
    trainable_params: str | None = trainable_params_setting()

    def __post_init__(self) -> None:
        validate(self, "method")

    def unlearn(self, chat: ChatModel, data: UnlearnData) -> UnlearnOutcome:
        """Prefer the model's own alternate answers over the forget answers; keep retain answers."""
        k, pad, device = self.num_alternates, padding_id(chat.tokenizer), chat.model.device
        items = [qa for qa in data.forget for _ in range(k)]
        alternates = self.generate_alternates(chat, items)
        forget, retain = encode_items(chat, data.forget), encode_items(chat, data.retain)
        alternate = encode_items(chat, items, alternates)
        ref_forget = reference_logprobs(chat, forget).to(device)
        ref_alternate = reference_logprobs(chat, alternate).to(device)

        def batch_loss(pair_idx, retain_idx):
            item_idx = [j // k for j in pair_idx]
            model = chat.model  # read when called: the loop may train a sharded copy
            f_logp, _ = answer_logprobs(model, [forget[i] for i in item_idx], pad)
            a_logp, _ = answer_logprobs(model, [alternate[j] for j in pair_idx], pad)
            _, r_nll = answer_logprobs(model, [retain[i] for i in retain_idx], pad)
            f_loss = dpo_loss(
                a_logp, ref_alternate[pair_idx], f_logp, ref_forget[item_idx], self.beta
            )
            r_loss = nll_loss(r_nll)
            loss = self.gamma * f_loss + self.alpha * r_loss
            return loss, {
                "loss": loss.item(),
                "forget_loss": f_loss.item(),
                "retain_loss": r_loss.item(),
            }

        outcome = run_unlearning(
            chat, batch_loss, len(alternate), len(retain), self.trainable_params, self.loop, "altpo"
        )
        return replace(
            outcome,
            metrics={**outcome.metrics, **alternate_stats(items, alternates)},
            info={**outcome.info, "alternates": alternate_records(items, alternates)},
        )

    def generate_alternates(self, chat: ChatModel, items: Sequence[QA]) -> list[str]:
        """One sampled alternate answer per item (seeded by ``loop.seed``), cut at a question."""
        model, tokenizer = chat.model, chat.tokenizer
        prompts, pad = alternate_prompts(chat, items), padding_id(tokenizer)
        lengths = [len(p) + self.max_new_tokens for p in prompts]
        devices = [model.device] if model.device.type == "cuda" else []
        texts: list[str] = []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(self.loop.seed)
            for index in batches(len(prompts), self.generation_batch_size, "alternates", lengths):
                ids, mask = pad_left([prompts[i] for i in index], pad)
                out = sample(model, ids, mask, pad, tokenizer.eos_token_id, self)
                new = out[:, ids.shape[1] :]
                texts.extend(clean_alternate(t) for t in tokenizer.batch_decode(new, True))
        return texts


def sample(model, ids: torch.Tensor, mask: torch.Tensor, pad: int, eos, altpo: AltPO):
    """Plain sampling (no top-k or top-p cut) at ``altpo.temperature``: prompt and new ids."""
    return model.generate(
        input_ids=ids.to(model.device),
        attention_mask=mask.to(model.device),
        max_new_tokens=altpo.max_new_tokens,
        do_sample=True,
        temperature=altpo.temperature,
        top_k=0,
        top_p=1.0,
        pad_token_id=pad,
        eos_token_id=eos,
    )


def alternate_prompts(chat: ChatModel, items: Sequence[QA]) -> list[list[int]]:
    """Chat prompts asking for an alternate answer, ending with the reply's fixed opening."""
    requests = [
        QA(question=INSTRUCTION.format(question=qa.question, answer=qa.answer), answer="", edge="")
        for qa in items
    ]
    prompts = encode_item_prompts(chat.tokenizer, requests, chat.system_prompt)
    prefix = chat.tokenizer(REPLY_PREFIX, add_special_tokens=False)["input_ids"]
    return [list(p) + list(prefix) for p in prompts]


def clean_alternate(text: str) -> str:
    """The generated text up to the first stop marker, stripped."""
    for marker in STOP_MARKERS:
        text = text.split(marker)[0]
    return text.strip()


def alternate_stats(items: Sequence[QA], alternates: Sequence[str]) -> dict[str, float]:
    """Fractions of alternates that are empty or repeat the forget answer (case-insensitive)."""
    n = max(len(items), 1)
    pairs = zip(items, alternates, strict=True)
    copied = sum(a.strip().lower() == qa.answer.strip().lower() for qa, a in pairs)
    return {
        "unlearn/alternates_empty": sum(not a for a in alternates) / n,
        "unlearn/alternates_copied": copied / n,
    }


def alternate_records(items: Sequence[QA], alternates: Sequence[str]) -> list[dict[str, str]]:
    """``{question, answer, alternate}`` per generated alternate (saved in unlearn_info.json)."""
    return [
        {"question": qa.question, "answer": qa.answer, "alternate": a}
        for qa, a in zip(items, alternates, strict=True)
    ]
