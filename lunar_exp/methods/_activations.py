"""Activation collection for LUNAR: unlearning vectors and the rows of the down_proj regression."""

from __future__ import annotations

import copy
import inspect
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass

import torch
from transformers import DynamicCache, PreTrainedModel

from lunar_exp.hooks import (
    capture_block_outputs,
    capture_down_proj,
    stop_after_block,
)
from lunar_exp.metrics.primitives import batches, pad_left
from lunar_exp.prompts import shared_prefix_length


def _position_ids(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def forward_until(
    model: PreTrainedModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    last_layer: int,
    prefix: DynamicCache | None = None,
) -> None:
    """Run the decoder blocks up to ``last_layer`` only: the hooks read the blocks.

    The blocks above it and the LM head (logits of batch x length x vocabulary: 315 MB for
    16 x 100 tokens of SmolLM2) never run. With ``prefix`` (the key/value cache of tokens every
    sequence starts with, batch 1), ``ids`` are the continuations after it.
    """
    device = model.device
    offset = prefix.get_seq_length() if prefix is not None else 0
    kwargs = {"use_cache": False}
    if prefix is not None:
        cache = copy.deepcopy(prefix)
        cache.batch_repeat_interleave(len(ids))
        kwargs = {"use_cache": True, _cache_argument(model): cache}
        mask = torch.cat([torch.ones(len(ids), offset, dtype=mask.dtype), mask], dim=1)
    with stop_after_block(model, last_layer):
        model.base_model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=(offset + _position_ids(mask[:, offset:])).to(device),
            **kwargs,
        )


def _cache_argument(model: PreTrainedModel) -> str:
    """``cache`` in recent transformers, ``past_key_values`` before it."""
    parameters = inspect.signature(model.base_model.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


@torch.inference_mode()
def prefix_cache(model: PreTrainedModel, prefix: Sequence[int], last_layer: int) -> DynamicCache:
    """Key/value cache of ``prefix`` up to ``last_layer`` (hooks on those blocks see it run)."""
    cache = DynamicCache()
    with stop_after_block(model, last_layer):
        model.base_model(
            input_ids=torch.tensor([list(prefix)], device=model.device),
            use_cache=True,
            **{_cache_argument(model): cache},
        )
    return cache


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
    sums: dict[int, torch.Tensor] = {}
    with capture_block_outputs(model, layers) as store:
        for index in batches(len(prompts), batch_size, desc, [len(p) for p in prompts]):
            ids, mask = pad_left([prompts[i] for i in index], pad_id)
            forward_until(model, ids, mask, max(layers))
            for layer in layers:
                last = store[layer][:, -1, :].double().sum(0).cpu()
                sums[layer] = last if layer not in sums else sums[layer] + last
    return {layer: sums[layer] / len(prompts) for layer in layers}


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

    ``inputs`` and ``outputs`` stay where the model computed them, in its dtype (no host copy:
    the regression sums are accumulated on the model's device); ``shifted`` is a CPU mask.
    ``read`` holds the block's output at each sequence's ``read_at`` position (float64,
    ``[sequences, d_model]``), or None when the source reads nothing. ``weight`` is how many
    sequences share these rows (the shared prefix is computed once and counts once per sequence).
    """

    layer: int
    inputs: torch.Tensor
    outputs: torch.Tensor
    shifted: torch.Tensor
    read: torch.Tensor | None = None
    weight: int = 1


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
    prefix: SharedPrefix | None = None,
) -> Iterator[RowBatch]:
    """Stream the down_proj input/output rows of every real token, one forward pass per batch.

    All layers' rows (and, with ``source.read_at``, the block outputs r is read from) come from
    the same pass, so memory holds one batch at a time (at most ``batch_size`` sequences and the
    current ``batch_token_budget``). With ``prefix`` (:func:`run_shared_prefix`, the tokens every
    sequence starts with, i.e. the chat template's head) the passes run only what follows it and
    attend to its cached keys and values; its rows come once, weighted by the number of
    sequences. Attention is causal, so the rows are those of full passes.
    """
    start = prefix.length if prefix is not None else 0
    suffixes = [s[start:] for s in source.sequences]
    shift_from = [None if f is None else max(f - start, 0) for f in source.shift_from]
    read_at = [r - start for r in source.read_at] if source.read_at else None
    with ExitStack() as stack:
        store = stack.enter_context(capture_down_proj(model, layers))
        reading = capture_block_outputs(model, layers) if read_at else nullcontext({})
        blocks = stack.enter_context(reading)
        cache = None
        if prefix is not None:
            cache = prefix.cache
            yield from _prefix_rows(prefix.rows, layers, source.shift_from, start)
        lengths = [len(s) for s in suffixes]
        for index in batches(len(suffixes), batch_size, desc, lengths):
            ids, mask = pad_left([suffixes[i] for i in index], pad_id)
            forward_until(model, ids, mask, max(layers), cache)
            real = mask.bool()
            batch_lengths = [lengths[i] for i in index]
            shifted = _shift_mask(mask, batch_lengths, [shift_from[i] for i in index])
            for layer in layers:
                x, y = store[layer]
                yield RowBatch(
                    layer,
                    x[real.to(x.device)],
                    y[real.to(y.device)],
                    shifted[real],
                    _read(blocks.get(layer), batch_lengths, read_at, index),
                )


@dataclass(frozen=True)
class SharedPrefix:
    """The tokens every row sequence starts with, run once for all row sets.

    Attributes:
        length: how many tokens.
        cache: their keys and values up to the deepest layer read (batch 1).
        rows: per layer, their down_proj inputs and outputs (``[length, d]``, in the model's
            dtype, on its device).
    """

    length: int
    cache: DynamicCache
    rows: dict[int, tuple[torch.Tensor, torch.Tensor]]


@torch.inference_mode()
def run_shared_prefix(
    model: PreTrainedModel, sources: Sequence[RowSource], layers: Sequence[int]
) -> SharedPrefix | None:
    """One pass over the head shared by every sequence of ``sources``; None when there is none."""
    length = shared_prefix_of(sources)
    if not length:
        return None
    with capture_down_proj(model, layers) as store:
        cache = prefix_cache(model, sources[0].sequences[0][:length], max(layers))
        rows = {layer: (store[layer][0][0], store[layer][1][0]) for layer in layers}
    return SharedPrefix(length, cache, rows)


def shared_prefix_of(sources: Sequence[RowSource]) -> int:
    """Tokens shared by every sequence, leaving each at least its read position and one token."""
    sequences = [s for source in sources for s in source.sequences]
    if len(sequences) < 2:
        return 0
    limit = min(len(s) for s in sequences) - 1
    for source in sources:
        if source.read_at:
            limit = min(limit, *source.read_at)
    return min(shared_prefix_length(sequences), max(limit, 0))


def _prefix_rows(rows: dict, layers, shift_from, start: int) -> Iterator[RowBatch]:
    """The prefix's rows once per distinct shift pattern, weighted by its number of sequences."""
    patterns = Counter(
        tuple(f is not None and position >= f for position in range(start)) for f in shift_from
    )
    for pattern, count in patterns.items():
        for layer in layers:
            x, y = rows[layer]
            yield RowBatch(layer, x, y, torch.tensor(pattern), None, count)


def _read(hidden, lengths: Sequence[int], read_at, index) -> torch.Tensor | None:
    """Block outputs at each sequence's ``read_at`` position (left padding), in float64."""
    if hidden is None:
        return None
    width = hidden.shape[1]
    rows = torch.arange(len(lengths))
    cols = torch.tensor([width - n + read_at[i] for n, i in zip(lengths, index, strict=True)])
    return hidden[rows.to(hidden.device), cols.to(hidden.device)].double().cpu()
