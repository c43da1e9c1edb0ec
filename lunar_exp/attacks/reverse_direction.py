"""Reverse direction (white-box): subtract c·r_l from the edited blocks' outputs (LUNAR.md §4)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

from lunar_exp.attacks._common import AttackTarget, check_attack_layers, edited_layers
from lunar_exp.hooks import add_to_block_outputs
from lunar_exp.interfaces import ChatModel, EvalResult, UnlearnData
from lunar_exp.methods._activations import mean_last_token_outputs
from lunar_exp.metrics.primitives import padding_id
from lunar_exp.prompts import encode_item_prompts
from lunar_exp.settings import setting, validate

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ReverseDirection:
    """Push activations back along the unlearning direction at every position.

    With LUNAR's saved unlearning vectors ``r_l`` and coefficients the attacker knows exactly
    what was added; for methods without vectors the direction is recomputed on the unlearned
    model as mean(reference) − mean(forget) at the last prompt token, as LUNAR computes it.
    """

    source: Literal["saved", "recompute"] = setting(
        "saved",
        help="saved: the method's own vectors when it saved them (the oracle attacker of "
        "LUNAR.md §4); recompute: always estimate the direction from the unlearned model (an "
        "attacker who has the weights but not the vectors).",
    )
    coeff: float | None = setting(
        None, help="c; null: the method's own coefficients (LUNAR), else default_coeff."
    )
    default_coeff: float = setting(2.0, help="c when the method has no coefficient.")
    layers: list[int] | None = setting(
        None, help="layers to attack; null: the method's edited layers (or the fallback depth)."
    )
    batch_size: int = setting(16, ge=1, help="prompts per forward pass when recomputing r.")

    def __post_init__(self) -> None:
        validate(self, "attack.reverse_direction")

    def check(self, chat: ChatModel, data: UnlearnData) -> None:
        """Fail early on layers out of range or a missing reference set."""
        if self.layers is not None:
            check_attack_layers(chat.model, self.layers, "layers")

    def evaluate(self, target: AttackTarget) -> tuple[EvalResult, dict[str, object]]:
        """The benchmark's evaluation with ``-c·r_l`` added to each attacked block's output."""
        layers = edited_layers(target, self.layers)
        vectors, source = self._vectors(target, layers)
        coeffs = self._coeffs(target, layers)
        shifts = {layer: -c * vectors[layer] for layer, c in zip(layers, coeffs, strict=True)}
        with add_to_block_outputs(target.chat.model, shifts):
            result = target.evaluate()
        info = {"layers": layers, "coeffs": coeffs, "direction": source}
        if source == "recomputed":
            info.update(_compare_to_saved(vectors, target.outcome.tensors))
        return result, info

    def _vectors(self, target: AttackTarget, layers: list[int]):
        tensors = target.outcome.tensors
        if self.source == "saved" and all(f"r.layer{layer}" in tensors for layer in layers):
            return {layer: tensors[f"r.layer{layer}"].float() for layer in layers}, "saved"
        data, chat = target.data, target.chat
        if not data.reference:
            raise ValueError(
                "attack reverse_direction needs the method's vectors or reference prompts to "
                "recompute them; the benchmark gives none. Fix: drop reverse_direction."
            )
        tok, pad = chat.tokenizer, padding_id(chat.tokenizer)
        ref = encode_item_prompts(tok, data.reference, chat.system_prompt)
        fgt = encode_item_prompts(tok, data.forget, chat.system_prompt)
        with target.control(chat):
            ref_mean = mean_last_token_outputs(chat.model, ref, layers, pad, self.batch_size, "r")
            fgt_mean = mean_last_token_outputs(chat.model, fgt, layers, pad, self.batch_size, "r")
        log.info("reverse_direction: direction recomputed on the unlearned model at %s", layers)
        return {k: (ref_mean[k] - fgt_mean[k]).to(torch.float32) for k in layers}, "recomputed"

    def _coeffs(self, target: AttackTarget, layers: list[int]) -> list[float]:
        if self.coeff is not None:
            return [float(self.coeff)] * len(layers)
        own = target.outcome.info.get("coeffs")
        if isinstance(own, list | tuple) and len(own) == len(layers):
            return [float(c) for c in own]
        return [float(self.default_coeff)] * len(layers)


def _compare_to_saved(
    recomputed: Mapping[int, torch.Tensor], tensors: Mapping[str, torch.Tensor]
) -> dict[str, float]:
    """How a recomputed direction r' relates to the method's saved r_l, per layer.

    ``cos_to_saved`` is their cosine; ``scale_to_saved`` is the projection r'·r / r·r. After a
    LUNAR edit that moved forget activations by c·r, r' = (1 - c)·r: anti-parallel for c > 1, so
    subtracting it pushes forget prompts further along r instead of back.
    """
    out: dict[str, float] = {}
    for layer, vector in recomputed.items():
        saved = tensors.get(f"r.layer{layer}")
        if saved is None:
            continue
        r, r_new = saved.double(), vector.double()
        out[f"direction/layer{layer}/cos_to_saved"] = float(
            torch.nn.functional.cosine_similarity(r_new, r, dim=0)
        )
        out[f"direction/layer{layer}/scale_to_saved"] = float(r_new @ r / (r @ r))
    return out
