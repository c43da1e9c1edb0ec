"""Activation collection for LUNAR: unlearning vectors and the rows of the down_proj regression."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from lunar_exp.hooks import (
    capture_block_outputs,
    capture_down_proj,
    stop_after_block,
)
from lunar_exp.metrics.primitives import batches, pad_left


def _position_ids(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def forward_until(
    model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, last_layer: int
) -> None:
    """Run the decoder blocks up to ``last_layer`` only: the hooks read the blocks.

    The blocks above it, the LM head (logits of batch x length x vocabulary: 315 MB for
    16 x 100 tokens of SmolLM2) and the key/value cache are never needed here.
    """
    device = model.device
    with stop_after_block(model, last_layer):
        model.base_model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=_position_ids(mask).to(device),
            use_cache=False,
        )


@torch.inference_mode()
def mean_last_token_outputs(
    model: PreTrainedModel,
    prompts: Sequence[Sequence[int]],
    layers: Sequence[int],
    pad_id: int,
    batch_size: int,
    desc: str,
) -> dict[int, torch.Tensor]:
    """Mean over prompts of block ``l``'s output at the last prompt token, in float64.

    Block l's output is the input of block l+1, the activation LUNAR's vector r_l is read from
    (LUNAR.md §1.2). Left padding keeps position -1 a real token.
    """
    sums = {layer: None for layer in layers}
    with capture_block_outputs(model, layers) as store:
        for index in batches(len(prompts), batch_size, desc, [len(p) for p in prompts]):
            ids, mask = pad_left([prompts[i] for i in index], pad_id)
            forward_until(model, ids, mask, max(layers))
            for layer in layers:
                last = store[layer][:, -1, :].double().sum(0).cpu()
                sums[layer] = last if sums[layer] is None else sums[layer] + last
    return {layer: total / len(prompts) for layer, total in sums.items()}


@dataclass(frozen=True)
class RowSource:
    """Token sequences whose down_proj rows enter the regression.

    Attributes:
        sequences: token ids (prompt, or prompt + answer).
        shift_from: per sequence, the first position whose row is shifted by c*r; positions before
            it (and every position when None) are pinned: their output must not change.
        read_at: per sequence, the position whose block output the same pass also returns (the
            last prompt token, where LUNAR reads r_l); None returns none. Attention is causal,
            so the prompt's positions inside prompt + answer equal a prompt-only pass.
    """

    sequences: Sequence[Sequence[int]]
    shift_from: Sequence[int | None]
    read_at: Sequence[int] | None = None


@dataclass(frozen=True)
class RowBatch:
    """Rows of one layer from one forward pass: inputs x, outputs y = W0 x, and the shift mask.

    ``read`` holds the block's output at each sequence's ``read_at`` position (float64,
    ``[sequences, d_model]``), or None when the source reads nothing.
    """

    layer: int
    inputs: torch.Tensor
    outputs: torch.Tensor
    shifted: torch.Tensor
    read: torch.Tensor | None = None


def _shift_mask(mask: torch.Tensor, lengths: Sequence[int], shift_from) -> torch.Tensor:
    """Boolean [batch, seq] of shifted positions (left padding: real tokens sit at the end)."""
    shifted = torch.zeros_like(mask, dtype=torch.bool)
    width = mask.shape[1]
    for row, (length, start) in enumerate(zip(lengths, shift_from, strict=True)):
        if start is not None:
            shifted[row, width - length + start :] = True
    return shifted


@torch.inference_mode()
def iter_rows(
    model: PreTrainedModel,
    source: RowSource,
    layers: Sequence[int],
    pad_id: int,
    batch_size: int,
    desc: str,
) -> Iterator[RowBatch]:
    """Stream the down_proj input/output rows of every real token, one forward pass per batch.

    All layers' rows (and, with ``source.read_at``, the block outputs r is read from) come from
    the same pass, so memory holds one batch at a time (at most ``batch_size`` sequences and the
    current ``batch_token_budget``).
    """
    device = model.device
    lengths = [len(s) for s in source.sequences]
    with ExitStack() as stack:
        store = stack.enter_context(capture_down_proj(model, layers))
        reading = capture_block_outputs(model, layers) if source.read_at else nullcontext({})
        blocks = stack.enter_context(reading)
        for index in batches(len(source.sequences), batch_size, desc, lengths):
            ids, mask = pad_left([source.sequences[i] for i in index], pad_id)
            forward_until(model, ids, mask, max(layers))
            real = mask.bool()
            batch_lengths = [lengths[i] for i in index]
            shifted = _shift_mask(mask, batch_lengths, [source.shift_from[i] for i in index])
            for layer in layers:
                x, y = store[layer]
                yield RowBatch(
                    layer,
                    x[real.to(device)].float().cpu(),
                    y[real.to(device)].float().cpu(),
                    shifted[real],
                    _read(blocks.get(layer), batch_lengths, source.read_at, index),
                )


def _read(hidden, lengths: Sequence[int], read_at, index) -> torch.Tensor | None:
    """Block outputs at each sequence's ``read_at`` position (left padding), in float64."""
    if hidden is None:
        return None
    width = hidden.shape[1]
    rows = torch.arange(len(lengths))
    cols = torch.tensor([width - n + read_at[i] for n, i in zip(lengths, index, strict=True)])
    return hidden[rows.to(hidden.device), cols.to(hidden.device)].double().cpu()
