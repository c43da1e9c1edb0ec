"""Rounding to GGUF's Q4_1 grid: asymmetric 4-bit, groups of 32 along each weight row.

Why this is its own attack: the embedded SmolLM2 weights are dequantized from a Q4_1 GGUF, so
every block weight of the base model already sits exactly on this grid (rounding it is an
identity for the target model). Unlearning moves the weights off the grid by small amounts; the
rounding snaps most of them back, so unlearning looks far more fragile here than under a generic
quantizer (int4 of another model). It is an artifact of where these weights came from, not a
general result about 4-bit quantization.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lunar_exp.attacks._common import AttackTarget, linear_weights, model_copy, relative_change
from lunar_exp.interfaces import EvalResult
from lunar_exp.settings import setting, validate


def round_to_q4_1(weight: torch.Tensor, group_size: int = 32) -> torch.Tensor:
    """``weight`` rounded to the Q4_1 grid (scale and minimum stored in float16, as in GGUF)."""
    rows, cols = weight.shape
    if cols % group_size:
        raise ValueError(f"Q4_1 needs the row length ({cols}) to be a multiple of {group_size}.")
    groups = weight.detach().float().reshape(-1, group_size)
    low = groups.min(dim=1, keepdim=True).values.half().float()
    high = groups.max(dim=1, keepdim=True).values
    scale = ((high - low) / 15).half().float()
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    levels = torch.clamp(torch.round((groups - low) / safe), 0, 15)
    return (levels * scale + low).reshape(rows, cols).to(weight.dtype)


@dataclass(kw_only=True)
class GridQuantizeQ41:
    """Round a copy's decoder linear weights to the Q4_1 grid, then evaluate it."""

    group_size: int = setting(
        32, ge=1, help="weights per group sharing one scale and minimum (32 in GGUF Q4_1)."
    )

    def __post_init__(self) -> None:
        validate(self, "attack.quantize_q4_1_grid")

    def check(self, chat, data) -> None:
        """The block weights' rows must split into whole groups."""
        for name, weight in linear_weights(chat.model).items():
            if weight.shape[1] % self.group_size:
                raise ValueError(
                    f"attack quantize_q4_1_grid: {name} rows ({weight.shape[1]}) are not a "
                    f"multiple of group_size={self.group_size}. Fix: drop this attack."
                )

    @torch.no_grad()
    def evaluate(self, target: AttackTarget) -> tuple[EvalResult, dict[str, object]]:
        """Evaluate the rounded copy; report how far the weights moved."""
        original = {k: v.detach() for k, v in linear_weights(target.chat.model).items()}
        with model_copy(target.chat) as clone:
            for weight in linear_weights(clone.model).values():
                weight.copy_(round_to_q4_1(weight, self.group_size))
            rounded = {k: v.detach() for k, v in linear_weights(clone.model).items()}
            info = relative_change(original, rounded)
            result = target.evaluate(clone)
        return result, info
