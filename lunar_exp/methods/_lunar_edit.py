"""Writing LUNAR's edit into a ``down_proj`` weight, checked against the edit that was solved.

A bfloat16 weight keeps 8 significant bits, so W + D is rounded to a grid of spacing ~|W|/256:
edit entries much smaller than that round away or to noise. :func:`write_edit` writes the edit in
the weight's dtype, measures the delivered edit (written minus original, in float32) against the
intended one, and when the relative error exceeds the tolerance replaces the projection by a
:class:`Float32Linear` holding W + D in float32 (docs/lunar.md, "Precision and device").
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

log = logging.getLogger(__name__)


class Float32Linear(nn.Linear):
    """A linear layer kept in float32 inside a lower-precision model.

    Its input is cast to float32 and its output back to the input's dtype, so the rest of the
    model runs as before while this weight holds small edits exactly. It is an ``nn.Linear`` with
    the same parameter names, so hooks, attacks and state dicts treat it as the original layer.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """``W x (+ b)`` computed in float32, returned in ``input``'s dtype."""
        bias = None if self.bias is None else self.bias.to(self.weight.dtype)
        return nn.functional.linear(input.to(self.weight.dtype), self.weight, bias).to(input.dtype)


@dataclass(frozen=True)
class WrittenEdit:
    """What writing one edit delivered.

    Attributes:
        delivered: the edit the model now applies (new weight minus old, float32).
        rel_error: ||delivered - intended||_F / ||intended||_F of the write in the weight's dtype.
        fallback: whether the projection was replaced by a :class:`Float32Linear`.
        rel_error_delivered: the same error for what the model finally holds.
    """

    delivered: torch.Tensor
    rel_error: float
    fallback: bool
    rel_error_delivered: float


def relative_error(delivered: torch.Tensor, intended: torch.Tensor) -> float:
    """``||delivered - intended||_F / ||intended||_F`` in float32 (0 when both are zero)."""
    target = intended.to(device=delivered.device, dtype=torch.float32)
    scale = float(target.norm())
    miss = float((delivered.float() - target).norm())
    if scale == 0.0:
        return 0.0 if miss == 0.0 else float("inf")
    return miss / scale


@torch.no_grad()
def write_edit(parent: nn.Module, name: str, delta: torch.Tensor, max_error: float) -> WrittenEdit:
    """Add ``delta`` to the weight of ``parent.<name>`` (a Linear) and check what arrived.

    The sum is formed in float64 and rounded once to the weight's dtype. When the delivered edit
    misses the intended one by more than ``max_error`` (relative Frobenius norm) and the weight
    is narrower than float32, ``parent.<name>`` becomes a :class:`Float32Linear` holding
    W + delta in float32.
    """
    linear = getattr(parent, name)
    weight = linear.weight
    before = weight.detach().float().clone()
    intended = delta.to(weight.device)
    weight.copy_((weight.double() + intended).to(weight.dtype))
    delivered = weight.detach().float() - before
    error = relative_error(delivered, intended)
    if error <= max_error:
        return WrittenEdit(delivered, error, False, error)
    if weight.element_size() >= 4:
        log.warning(
            "LUNAR's edit misses by %.3g (relative) even in %s; the edit is far below the "
            "weight's precision. Kept as written.",
            error,
            weight.dtype,
        )
        return WrittenEdit(delivered, error, False, error)
    kept = _float32_copy(linear, (before.double() + intended).float())
    setattr(parent, name, kept)
    delivered = kept.weight.detach() - before
    final = relative_error(delivered, intended)
    log.info(
        "LUNAR's edit written in %s missed by %.3g (> %.3g): %s kept in float32 (now %.2g).",
        weight.dtype,
        error,
        max_error,
        name,
        final,
    )
    return WrittenEdit(delivered, error, True, final)


def _float32_copy(linear: nn.Linear, weight: torch.Tensor) -> Float32Linear:
    """A :class:`Float32Linear` with ``weight`` and ``linear``'s bias, on the same device."""
    kept = Float32Linear(
        linear.in_features,
        linear.out_features,
        bias=linear.bias is not None,
        device=weight.device,
        dtype=torch.float32,
    )
    kept.weight.copy_(weight)
    kept.weight.requires_grad_(linear.weight.requires_grad)
    if linear.bias is not None and kept.bias is not None:
        kept.bias.copy_(linear.bias.float())
        kept.bias.requires_grad_(linear.bias.requires_grad)
    return kept.train(linear.training)
