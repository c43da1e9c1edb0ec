"""Refusal-direction ablation: project the unlearned model's own abstention direction out.

Arditi et al., 2024, "Refusal in language models is mediated by a single direction" (arXiv
2406.11717; reference code github.com/andyrdt/refusal_direction). The attacker holds the unlearned
weights, not the method's vectors. On the unlearned model it estimates the abstention direction as
the difference of mean residual activations at the last prompt token between prompts the model
refuses and prompts it answers, one candidate per layer; it picks the candidate whose ablation most
suppresses the model's own refusal of the forget questions while keeping retain answers (the
paper's selection, with the benchmark's abstention as "refusal"), and projects it out of every
write to the residual stream during generation.

Which prompts: ``prompts=abstain`` (default) contrasts the benchmark's unknown-entity questions,
which the fine-tuned model learned to refuse, with the retain questions it answers. This is the
paper's harmful-vs-harmless contrast and needs nothing about the forget set. ``prompts=forget``
contrasts the forget questions (never their answers) with retain questions, the direction along
which unlearning moved exactly these prompts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from statistics import fmean
from typing import Literal

import torch

from lunar_exp.attacks._common import FALLBACK_DEPTH, AttackTarget, check_attack_layers
from lunar_exp.hooks import ablate_direction, decoder_layers
from lunar_exp.interfaces import QA, ChatModel, EvalResult, UnlearnData
from lunar_exp.methods._activations import mean_last_token_outputs
from lunar_exp.metrics.primitives import answer_nll, greedy_generate, padding_id
from lunar_exp.prompts import encode_item_pairs, encode_item_prompts, special_id
from lunar_exp.settings import setting, validate

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class RefusalAblation:
    """Project the unlearned model's refusal direction out of the residual stream."""

    prompts: Literal["abstain", "forget"] = setting(
        "abstain",
        help="refused prompts: abstain = the benchmark's unknown-entity questions (else its "
        "reference prompts); forget = the forget questions. Answered prompts: retain questions.",
    )
    layers: list[int] | None = setting(
        None,
        help="candidate layers for the direction; null: every layer below 0.8 x depth (the "
        "paper's filter).",
    )
    max_prompts: int = setting(32, ge=1, help="most prompts per set (refused, answered, guard).")
    score_tokens: int = setting(
        4, ge=1, help="first tokens of the model's own forget response the selection scores."
    )
    max_retain_nll_rise: float = setting(
        0.5,
        ge=0,
        help="a candidate may raise the mean retain answer NLL by at most this (the paper's "
        "guard on harmless prompts); if none passes, the least refusing one is taken.",
    )
    batch_size: int = setting(16, ge=1, help="prompts per forward pass.")

    def __post_init__(self) -> None:
        validate(self, "attack.refusal_ablation")

    def check(self, chat: ChatModel, data: UnlearnData) -> None:
        """Fail early on layers out of range or prompt sets the benchmark does not give."""
        if self.layers is not None:
            check_attack_layers(chat.model, self.layers, "layers")
        if not data.retain or (self.prompts == "abstain" and not _refused(data)):
            raise ValueError(
                "attack refusal_ablation needs retain items and, with prompts=abstain, "
                "abstention or reference prompts; this benchmark lacks them. Fix: set "
                "attack.refusal_ablation.prompts=forget, or drop refusal_ablation."
            )

    def evaluate(self, target: AttackTarget) -> tuple[EvalResult, dict[str, object]]:
        """The benchmark's evaluation with the selected direction ablated everywhere."""
        chat = target.chat
        layers = self._candidates(chat)
        with target.control(chat):
            directions = self._directions(target, layers)
            scores = self._selection_scores(target, directions)
        layer = _select(scores, self.max_retain_nll_rise)
        log.info("refusal_ablation: direction of layer %s ablated at every layer", layer)
        with ablate_direction(chat.model, directions[layer]):
            result = target.evaluate()
        info: dict[str, object] = {"layer": layer, "prompts": self.prompts}
        for candidate, (refusal, retain) in scores.items():
            info[f"selection/layer_{candidate}/refusal_nll"] = refusal
            info[f"selection/layer_{candidate}/retain_nll"] = retain
        return result, info

    def _candidates(self, chat: ChatModel) -> list[int]:
        if self.layers is not None:
            return [int(layer) for layer in self.layers]
        count = len(decoder_layers(chat.model))
        return list(range(max(1, int(FALLBACK_DEPTH * count))))

    def _directions(self, target: AttackTarget, layers: list[int]) -> dict[int, torch.Tensor]:
        """mean(refused) - mean(answered) block outputs at the last prompt token, per layer."""
        chat, data = target.chat, target.data
        refused = (_refused(data) if self.prompts == "abstain" else data.forget)[: self.max_prompts]
        answered = data.retain[: self.max_prompts]
        tok, pad = chat.tokenizer, padding_id(chat.tokenizer)
        means = [
            mean_last_token_outputs(
                chat.model,
                encode_item_prompts(tok, items, chat.system_prompt),
                layers,
                pad,
                self.batch_size,
                f"refusal direction ({name})",
            )
            for name, items in (("refused", refused), ("answered", answered))
        ]
        return {layer: (means[0][layer] - means[1][layer]).float() for layer in layers}

    def _selection_scores(
        self, target: AttackTarget, directions: dict[int, torch.Tensor]
    ) -> dict[int, tuple[float, float]]:
        """Per candidate: NLL of the model's own first forget-response tokens, retain NLL.

        A higher first number means the ablation suppresses the unlearned model's refusal more.
        """
        chat = target.chat
        own = _own_responses(chat, target.data.forget, self.score_tokens, self.batch_size)
        guard = encode_item_pairs(
            chat.tokenizer, target.data.retain[: self.max_prompts], chat.system_prompt
        )
        pad = padding_id(chat.tokenizer)
        retain_base = fmean(answer_nll(chat.model, guard, pad, self.batch_size))
        scores: dict[int, tuple[float, float]] = {}
        for layer, direction in directions.items():
            with ablate_direction(chat.model, direction):
                refusal = fmean(answer_nll(chat.model, own, pad, self.batch_size))
                retain = fmean(answer_nll(chat.model, guard, pad, self.batch_size))
            scores[layer] = (refusal, retain - retain_base)
        return scores


def _refused(data: UnlearnData) -> tuple[QA, ...]:
    """The prompts the target model was taught to refuse: abstention set, else reference set."""
    return data.abstain or data.reference


def _own_responses(chat: ChatModel, items, tokens: int, batch_size: int):
    """(prompt ids, the first ``tokens`` ids of the model's own greedy response) per item."""
    tok = chat.tokenizer
    prompts = encode_item_prompts(tok, items, chat.system_prompt)
    texts = greedy_generate(chat.model, tok, prompts, tokens, batch_size, desc="own responses")
    eos = [special_id(tok.eos_token_id)]
    answers = [tok(t, add_special_tokens=False)["input_ids"][:tokens] or eos for t in texts]
    return list(zip(prompts, answers, strict=True))


def _select(scores: dict[int, tuple[float, float]], max_rise: float) -> int:
    """The candidate with the highest refusal NLL among those within the retain guard."""
    passing = [layer for layer, (_, rise) in scores.items() if rise <= max_rise]
    pool = passing or list(scores)
    return max(pool, key=lambda layer: scores[layer][0])
