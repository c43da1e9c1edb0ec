"""The two tested primitives every metric is built on.

* :func:`greedy_generate`: batched greedy decoding with left padding.
* :func:`answer_nll`: per-example mean negative log-likelihood of answer tokens given the prompt.

Every inference pass here (and LUNAR's activation collection) streams its inputs in batches of at
most ``batch_size`` sequences and, inside :func:`batch_token_budget`, at most that many padded
tokens: a forward pass's activations and logits grow with batch x padded length, so the budget
bounds memory whatever the number or length of the items. The pipeline opens the budget from the
top-level ``batch_tokens`` setting; training loops keep their own ``batch_size``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase


def padding_id(tokenizer: PreTrainedTokenizerBase) -> int:
    """The padding token id, falling back to end-of-sequence for tokenizers without one."""
    token = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if not isinstance(token, int):
        raise ValueError(
            f"Tokenizer {type(tokenizer).__name__} has neither a pad nor an end-of-sequence token "
            "id. Fix: use a tokenizer with an eos token."
        )
    return token


def pad_left(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token id lists into ``(input_ids, attention_mask)``."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq) :] = 1
    return ids, mask


_BATCH_TOKENS: ContextVar[int | None] = ContextVar("batch_tokens", default=None)


@contextmanager
def batch_token_budget(tokens: int | None) -> Iterator[None]:
    """Cap every inference batch inside the block at ``tokens`` padded tokens (None: no cap).

    A single sequence longer than the budget still runs, alone in its batch.
    """
    if tokens is not None and (isinstance(tokens, bool) or not isinstance(tokens, int)):
        raise ValueError(f"batch_tokens={tokens!r} is not an integer. Fix: e.g. batch_tokens=8192.")
    if tokens is not None and tokens < 1:
        raise ValueError(f"batch_tokens={tokens} must be positive. Fix: e.g. batch_tokens=8192.")
    token = _BATCH_TOKENS.set(tokens)
    try:
        yield
    finally:
        _BATCH_TOKENS.reset(token)


def _spans(count: int, batch_size: int, lengths: Sequence[int] | None) -> list[range]:
    """Consecutive index ranges of at most ``batch_size`` items and the token budget."""
    budget = _BATCH_TOKENS.get()
    if budget is None or lengths is None:
        return [range(s, min(s + batch_size, count)) for s in range(0, count, batch_size)]
    spans, start = [], 0
    while start < count:
        end, width = start + 1, lengths[start]
        while end < count and end - start < batch_size:
            wider = max(width, lengths[end])
            if wider * (end - start + 1) > budget:
                break
            end, width = end + 1, wider
        spans.append(range(start, end))
        start = end
    return spans


def batches(
    count: int, batch_size: int, desc: str | None = None, lengths: Sequence[int] | None = None
):
    """Yield consecutive index ranges of at most ``batch_size`` items, in order.

    Args:
        count: number of items.
        batch_size: most items per batch.
        desc: tqdm label (no progress bar when None).
        lengths: each item's padded length in tokens (prompt + answer, or prompt + generated
            tokens); with them, batches also stay within the current :func:`batch_token_budget`.
    """
    spans = _spans(count, batch_size, lengths)
    yield from tqdm(spans, desc=desc, unit="batch", leave=False) if desc else spans


@torch.inference_mode()
def greedy_generate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    batch_size: int = 16,
    desc: str | None = "generate",
) -> list[str]:
    """Greedy continuations of tokenized prompts, decoded without special tokens."""
    texts, _ = _generate(model, tokenizer, prompts, None, max_new_tokens, batch_size, desc)
    return texts


@torch.inference_mode()
def greedy_generate_ranked(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[Sequence[int]],
    targets: Sequence[Sequence[int]],
    max_new_tokens: int,
    batch_size: int = 16,
    desc: str | None = "generate",
) -> tuple[list[str], list[list[int]]]:
    """Greedy continuations and, per target token j, its rank in generation step j (1 = top).

    Free-running, as LUNAR's MRR (LUNAR.md section 3): step j conditions on the model's own
    first j tokens, not on the target's. Ties count in the target's favour; target tokens past
    the last generated step get the worst rank (the vocabulary size).
    """
    return _generate(model, tokenizer, prompts, targets, max_new_tokens, batch_size, desc)


def _generate(model, tokenizer, prompts, targets, max_new_tokens, batch_size, desc):
    pad = padding_id(tokenizer)
    texts: list[str] = []
    ranks: list[list[int]] = []
    device = model.device
    lengths = [len(p) + max_new_tokens for p in prompts]
    for index in batches(len(prompts), batch_size, desc, lengths):
        ids, mask = pad_left([prompts[i] for i in index], pad)
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
            eos_token_id=tokenizer.eos_token_id,
            return_dict_in_generate=True,
            output_logits=targets is not None,
        )
        decoded = tokenizer.batch_decode(out.sequences[:, ids.shape[1] :], skip_special_tokens=True)
        texts.extend(t.strip() for t in decoded)
        if targets is not None:
            ranks.extend(_target_ranks(out.logits, [targets[i] for i in index]))
    return texts, ranks


def _target_ranks(step_logits, targets: Sequence[Sequence[int]]) -> list[list[int]]:
    """Rank of ``targets[b][j]`` among step j's logits of row b (worst rank past the last step)."""
    vocab = step_logits[0].shape[-1]
    ranks = [[vocab] * len(t) for t in targets]
    for step, logits in enumerate(step_logits):
        rows = [b for b, t in enumerate(targets) if step < len(t)]
        if not rows:
            break
        picked = logits[rows]
        wanted = torch.tensor([targets[b][step] for b in rows], device=picked.device)
        reference = picked.gather(1, wanted[:, None])
        above = (picked > reference).sum(-1).tolist()
        for b, count in zip(rows, above, strict=True):
            ranks[b][step] = count + 1
    return ranks


def pair_batch(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ``(input_ids, attention_mask, labels)`` for prompt+answer pairs.

    Labels are -100 on prompt and padding positions, so losses count answer tokens only.
    """
    ids, mask = pad_left([list(p) + list(a) for p, a in pairs], pad_id)
    labels = torch.full_like(ids, -100)
    for row, (_, answer) in enumerate(pairs):
        labels[row, ids.shape[1] - len(answer) :] = torch.tensor(list(answer), dtype=torch.long)
    return ids, mask, labels


def next_token_logprobs(
    model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-softmax over the vocabulary ``[batch, seq-1, vocab]``, the label log-probs and mask."""
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits
    targets = labels[:, 1:]
    valid = targets != -100
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    picked = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return logprobs, picked, valid


def token_nll(
    model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL (0 where unlabelled) and the label mask, both ``[batch, seq-1]``."""
    _, picked, valid = next_token_logprobs(model, ids, mask, labels)
    return -picked * valid, valid


@torch.inference_mode()
def answer_nll(
    model: PreTrainedModel,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_id: int,
    batch_size: int = 16,
    desc: str | None = None,
) -> list[float]:
    """Mean answer-token NLL of each (prompt ids, answer ids) pair, teacher-forced."""
    values: list[float] = []
    for index in batches(len(pairs), batch_size, desc, [len(p) + len(a) for p, a in pairs]):
        ids, mask, labels = pair_batch([pairs[i] for i in index], pad_id)
        device = model.device
        nll, valid = token_nll(model, ids.to(device), mask.to(device), labels.to(device))
        values.extend((nll.sum(-1) / valid.sum(-1).clamp(min=1)).tolist())
    return values


@torch.inference_mode()
def answer_token_stats(
    model: PreTrainedModel,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_id: int,
    batch_size: int = 16,
    desc: str | None = None,
) -> list[tuple[list[float], list[int]]]:
    """Teacher-forced log-probability and argmax prediction of every answer token, in one pass.

    Returns one ``(log-probs, argmax ids)`` pair of lists per (prompt, answer) pair.
    """
    values: list[tuple[list[float], list[int]]] = []
    for index in batches(len(pairs), batch_size, desc, [len(p) + len(a) for p, a in pairs]):
        ids, mask, labels = (
            t.to(model.device) for t in pair_batch([pairs[i] for i in index], pad_id)
        )
        logprobs, picked, valid = next_token_logprobs(model, ids, mask, labels)
        argmax = logprobs.argmax(-1)
        for row in range(ids.shape[0]):
            keep = valid[row]
            values.append((picked[row][keep].tolist(), argmax[row][keep].tolist()))
    return values


def answer_token_logprobs(
    model: PreTrainedModel,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    pad_id: int,
    batch_size: int = 16,
    desc: str | None = None,
) -> list[list[float]]:
    """Teacher-forced log-probability of every answer token of each (prompt, answer) pair."""
    return [lp for lp, _ in answer_token_stats(model, pairs, pad_id, batch_size, desc)]
