"""A small supervised training loop in plain PyTorch (answer-token cross-entropy).

Also the precision and checkpointing helpers it shares with the unlearning loop
(``lunar_exp/methods/_loop.py``); sharding over ranks is ``lunar_exp/distributed.py``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from lunar_exp import distributed
from lunar_exp.bookkeeping.loggers import log_train_step
from lunar_exp.metrics.primitives import pair_batch, token_nll

Pair = tuple[Sequence[int], Sequence[int]]

# Gradient checkpointing turns on by itself above this many parameters. Below 1B (SmolLM2-135M,
# the tiny test model) activations are small next to weights + AdamW states and recomputing the
# forward pass costs ~30% more time for nothing; at 7B (Llama-2-7B, Zephyr) it removes most of a
# micro-batch's activations (python -m lunar_exp.plan; docs/gpu.md).
CHECKPOINTING_MIN_PARAMS = 1_000_000_000
HALF_DTYPES = (torch.bfloat16, torch.float16)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (any ``nn.Module``)."""
    return next(model.parameters()).device


def wants_checkpointing(model: nn.Module, setting: bool | None, min_params: int) -> bool:
    """``setting`` when given; otherwise on for models above ``min_params`` parameters."""
    if setting is not None:
        return setting
    return sum(p.numel() for p in model.parameters()) > min_params


def enable_checkpointing(model: nn.Module) -> None:
    """Gradient checkpointing of every decoder block (non-reentrant: works under FSDP2)."""
    if not isinstance(model, PreTrainedModel):
        raise ValueError(
            f"{type(model).__name__} cannot checkpoint its blocks. Fix: set "
            "method.loop.gradient_checkpointing=false."
        )
    model.activation_checkpointing_enable({"use_reentrant": False})


def disable_checkpointing(model: nn.Module) -> None:
    """Undo :func:`enable_checkpointing`."""
    if isinstance(model, PreTrainedModel):
        model.activation_checkpointing_disable()


@contextmanager
def fp32_masters(model: nn.Module) -> Iterator[torch.dtype | None]:
    """Train a half-precision model through fp32 master weights; yields the half dtype (or None).

    Inside, every bf16/fp16 parameter holds an fp32 copy (the same ``Parameter`` objects, so
    optimizers and closures see them), and AdamW's states built on them are fp32; on exit they
    are cast back. Pure bf16 AdamW loses most small updates (at lr 1e-5, 85% of a 256x256
    matrix's entries never change in 50 steps: tests/test_distributed.py); with fp32 masters
    every update accumulates until the final cast. fp32 models pass through untouched.
    """
    original = {p: p.dtype for p in model.parameters() if p.dtype in HALF_DTYPES}
    half = next(iter(original.values()), None)
    for param in original:
        param.data = param.data.float()
    try:
        yield half
    finally:
        with torch.no_grad():
            for param, dtype in original.items():
                param.data = param.data.to(dtype)


def autocast_context(device: torch.device, dtype: torch.dtype | None) -> AbstractContextManager:
    """Autocast to ``dtype`` on CUDA; nothing on CPU (fp32 there) or when ``dtype`` is None."""
    if dtype is None or device.type != "cuda":
        return nullcontext()
    return torch.autocast("cuda", dtype=dtype)


def compute_dtype(model: nn.Module, bf16: bool = False) -> torch.dtype | None:
    """The compute dtype of sharded training (None: fp32).

    On CUDA the model's half dtype, or bf16 when asked; on CPU always fp32, so a CPU run
    computes as the single-process run does.
    """
    if model_device(model).type != "cuda":
        return None
    dtype = next(model.parameters()).dtype
    if dtype in HALF_DTYPES:
        return dtype
    return torch.bfloat16 if bf16 else None


def supervised_finetune(
    model: PreTrainedModel,
    pairs: Sequence[Pair],
    pad_id: int,
    lr: float,
    epochs: int,
    batch_size: int,
    seed: int,
    weight_decay: float = 0.0,
    warmup_ratio: float = 0.1,
    desc: str = "finetune",
    stage: str = "finetune",
    gradient_checkpointing: bool | None = None,
    on_epoch_end: Callable[[int, PreTrainedModel], None] | None = None,
) -> list[float]:
    """Train the trainable weights on (prompt, answer) pairs (linear warm-up/decay AdamW).

    Each step's loss goes to the active logger as ``train/<stage>/loss``. In one process the
    model trains in place (fp32 masters for a half-precision model); with several ranks a
    sharded fp32 copy trains, each rank on its share of every batch, and the result is gathered
    back into ``model`` on every rank. ``gradient_checkpointing`` None: on above
    ``CHECKPOINTING_MIN_PARAMS`` parameters. ``on_epoch_end(epoch, model)`` runs after every
    epoch (one process only), in eval mode; training resumes in train mode.

    Returns:
        The mean training loss of every epoch.
    """
    checkpointing = wants_checkpointing(model, gradient_checkpointing, CHECKPOINTING_MIN_PARAMS)
    args = (pairs, pad_id, lr, epochs, batch_size, seed, weight_decay, warmup_ratio)
    if distributed.is_distributed():
        if on_epoch_end is not None:
            raise ValueError(
                "An epoch hook cannot run in sharded fine-tuning. Fix: run with one process."
            )
        train_model = distributed.shard_for_training(model, compute_dtype(model))
        if checkpointing:
            enable_checkpointing(train_model)
        with distributed.parked_on_host(model):
            history = _fit(train_model, *args, desc, stage, nullcontext())
            distributed.gather_into(train_model, model)
        model.eval()
        return history
    with fp32_masters(model) as half:
        if checkpointing:
            enable_checkpointing(model)
        try:
            autocast = autocast_context(model_device(model), half)
            return _fit(model, *args, desc, stage, autocast, on_epoch_end)
        finally:
            if checkpointing:
                disable_checkpointing(model)


def _fit(
    model,
    pairs,
    pad_id,
    lr,
    epochs,
    batch_size,
    seed,
    weight_decay,
    warmup_ratio,
    desc,
    stage,
    autocast,
    on_epoch_end=None,
) -> list[float]:
    """The epochs of :func:`supervised_finetune` on ``model`` (plain or sharded)."""
    rng = random.Random(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(pairs) + batch_size - 1) // batch_size)
    warmup = max(1, int(warmup_ratio * steps))
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )
    model.train()
    history = []
    progress = tqdm(total=steps, desc=desc, unit="step")
    try:
        for _ in range(epochs):
            order = list(range(len(pairs)))
            rng.shuffle(order)
            losses = []
            for start in range(0, len(order), batch_size):
                batch = [pairs[i] for i in order[start : start + batch_size]]
                with autocast:
                    loss, value = _batch_loss(model, batch, pad_id)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(value)
                progress.update()
                progress.set_postfix(loss=f"{value:.3f}")
                # last_epoch counts scheduler steps, i.e. optimizer steps so far
                log_train_step(stage, schedule.last_epoch, {"loss": losses[-1]})
            history.append(sum(losses) / len(losses))
            if on_epoch_end is not None:
                model.eval()
                on_epoch_end(len(history), model)
                model.train()
    finally:
        # No gradient outlives the stage: a later stage (unlearning) would add the last
        # fine-tuning gradient to its first step, and only on a cold cache.
        optimizer.zero_grad(set_to_none=True)
        progress.close()
        model.eval()
    return history


def _batch_loss(
    model: PreTrainedModel, batch: list[Pair], pad_id: int
) -> tuple[torch.Tensor, float]:
    """Mean answer-token NLL of ``batch`` (to backpropagate) and its value.

    With several ranks each computes its share's summed NLL over the global batch's token count,
    times the world size (gradients are averaged over ranks): the same loss as one process.
    """
    device = model_device(model)
    if not distributed.is_distributed():
        ids, mask, labels = (t.to(device) for t in pair_batch(batch, pad_id))
        nll, valid = _tail_nll(model, ids, mask, labels, max(len(a) for _, a in batch))
        loss = nll.sum() / valid.sum()
        return loss, loss.item()
    share, weight = distributed.local_share(len(batch))
    ids, mask, labels = (t.to(device) for t in pair_batch(batch[share], pad_id))
    nll, valid = token_nll(model, ids, mask, labels)
    used = 1.0 if weight > 0 else 0.0
    nll_sum = nll.sum() * used
    tokens, total = distributed.all_sum([valid.sum().item() * used, nll_sum.item()])
    loss = nll_sum * distributed.world_size() / tokens
    return loss, total / tokens


def _tail_nll(
    model: PreTrainedModel,
    ids: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    answer_len: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``token_nll`` of left-padded pairs, with logits only where answer tokens are predicted.

    Answers end every row (``pair_batch`` pads on the left), so the last ``answer_len + 1``
    positions hold every labelled prediction: the vocabulary projection and log-softmax skip the
    prompt positions (20% less CPU time per step on PISTOL, whose answers are 6 of 53 tokens).
    The loss is the same as ``token_nll``'s.
    """
    keep = min(answer_len + 1, ids.shape[1])
    if keep == ids.shape[1]:
        return token_nll(model, ids, mask, labels)
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids, logits_to_keep=keep)
    targets = labels[:, ids.shape[1] - keep + 1 :]
    valid = targets != -100
    logprobs = torch.log_softmax(out.logits[:, :-1].float(), dim=-1)
    picked = logprobs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -picked * valid, valid
