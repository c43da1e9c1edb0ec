"""One small training loop in plain PyTorch, shared by the gradient-based baselines.

The loop walks the forget set in shuffled batches; each forget item is paired with a retain item
drawn uniformly at random (seeded), as in the reference implementation. The method supplies
``batch_loss(forget_idx, retain_idx) -> (loss, parts)``; the loop handles accumulation, the
schedule, gradient checkpointing (on by default for models above ``checkpointing_min_params``),
fp32 master weights with bf16 compute on GPU, and, under a multi-process launch, FSDP2 sharding
(``lunar_exp.distributed``; docs/distributed.md). Its settings are one
:class:`TrainLoop`, configured once in conf/train_loop/default.yaml and composed into each
baseline's config as ``method.loop`` (override e.g. ``method.loop.lr=3e-5``).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from lunar_exp import distributed
from lunar_exp.bookkeeping.loggers import log_train_step
from lunar_exp.interfaces import QA, ChatModel
from lunar_exp.methods._activations import forward_until
from lunar_exp.methods._losses import nll_loss
from lunar_exp.metrics.primitives import next_token_logprobs, padding_id, pair_batch, token_nll
from lunar_exp.prompts import encode_item_pairs
from lunar_exp.settings import setting, validate
from lunar_exp.training import (
    CHECKPOINTING_MIN_PARAMS,
    autocast_context,
    compute_dtype,
    disable_checkpointing,
    enable_checkpointing,
    fp32_masters,
    model_device,
    wants_checkpointing,
)

BatchLoss = Callable[[list[int], list[int]], tuple[torch.Tensor, dict[str, float]]]


@dataclass(kw_only=True)
class TrainLoop:
    """The training loop's settings, shared by the gradient baselines (``method.loop``)."""

    lr: float = setting(1e-5, gt=0, help="AdamW learning rate.")
    epochs: int = setting(5, ge=1, help="passes over the forget set.")
    batch_size: int = setting(8, ge=1, help="forget (and paired retain) items per micro-batch.")
    grad_accum: int = setting(1, ge=1, help="micro-batches per optimizer step.")
    weight_decay: float = setting(0.01, ge=0, help="AdamW weight decay.")
    seed: int = setting(0, help="batch order and retain sampling seed (RMU: also its direction).")
    gradient_checkpointing: bool | None = setting(
        None,
        help="trade compute for memory; null: on for models above checkpointing_min_params.",
    )
    checkpointing_min_params: int = setting(
        CHECKPOINTING_MIN_PARAMS,
        ge=0,
        help="parameter count above which gradient_checkpointing=null turns it on.",
    )
    bf16: bool = setting(False, help="compute in bfloat16 on GPU (fp32 master weights).")

    def __post_init__(self) -> None:
        validate(self, "method.loop")


def encode_items(chat: ChatModel, items: Sequence[QA], answers: Sequence[str] | None = None):
    """(prompt ids, answer ids) pairs for ``items`` (optionally with replacement answers)."""
    return encode_item_pairs(chat.tokenizer, items, chat.system_prompt, answers)


def answer_logprobs(
    model: PreTrainedModel, pairs: Sequence[tuple[list[int], list[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example (sequence-summed answer log-prob, mean answer-token NLL), with gradients."""
    ids, mask, labels = (t.to(model.device) for t in pair_batch(pairs, pad_id))
    nll, valid = token_nll(model, ids, mask, labels)
    total = nll.sum(-1)
    return -total, total / valid.sum(-1).clamp(min=1)


def answer_token_logprobs(
    model: PreTrainedModel,
    pairs: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
    skip_first: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-softmax rows ``[n, vocab]`` at the positions that predict answer tokens, and the tokens.

    Rows follow the pairs in order, each pair's answer tokens left to right; ``skip_first`` drops
    the first answer tokens of every pair.
    """
    ids, mask, labels = (t.to(model.device) for t in pair_batch(pairs, pad_id))
    logprobs, _, valid = next_token_logprobs(model, ids, mask, labels)
    if skip_first:
        valid = valid & (valid.cumsum(-1) > skip_first)
    return logprobs[valid], labels[:, 1:][valid]


def with_retain_term(
    model: PreTrainedModel,
    forget_loss: torch.Tensor,
    gamma: float,
    alpha: float,
    retain_pairs: Sequence[tuple[list[int], list[int]]],
    pad_id: int,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``gamma * forget_loss``, plus ``alpha`` x the retain answers' NLL when ``alpha`` is not 0.

    For the methods whose retain term is optional (UNDIAL, CE-U: none in their papers); returns
    the loss and its logged parts.
    """
    loss, parts = gamma * forget_loss, {"forget_loss": forget_loss.item()}
    if alpha:
        _, r_nll = answer_logprobs(model, retain_pairs, pad_id)
        r_loss = nll_loss(r_nll)
        loss, parts["retain_loss"] = loss + alpha * r_loss, r_loss.item()
    return loss, {"loss": loss.item(), **parts}


@torch.no_grad()
def reference_logprobs(chat: ChatModel, pairs, batch_size: int = 16) -> torch.Tensor:
    """Sequence log-probs under the current (frozen, not yet trained) model, computed once."""
    values = [
        answer_logprobs(chat.model, pairs[i : i + batch_size], _pad(chat))[0]
        for i in range(0, len(pairs), batch_size)
    ]
    return torch.cat(values).detach()


def select_params(model: PreTrainedModel, pattern: str | None) -> list[torch.nn.Parameter]:
    """Parameters whose name matches ``pattern`` (all when None) become trainable; others freeze."""
    import re

    regex = re.compile(pattern) if pattern else None
    chosen = []
    for name, param in model.named_parameters():
        param.requires_grad_(regex is None or bool(regex.search(name)))
        if param.requires_grad:
            chosen.append(param)
    if not chosen:
        raise ValueError(
            f"No parameter matches {pattern!r}. Fix: set method.trainable_params to a "
            "regex over parameter names (e.g. model\\.layers\\.7\\.)."
        )
    return chosen


def train(
    model: PreTrainedModel,
    params: list[torch.nn.Parameter],
    batch_loss: BatchLoss,
    n_forget: int,
    n_retain: int,
    loop: TrainLoop,
    desc: str = "unlearn",
    chat: ChatModel | None = None,
) -> tuple[list[dict[str, float]], list[torch.nn.Parameter]]:
    """Run the loop.

    In one process ``model`` trains in place; a bf16/fp16 model trains fp32 master weights (and
    so fp32 AdamW states) under autocast and is cast back at the end. With several ranks
    (``lunar_exp.distributed``) a sharded fp32 copy trains instead, as ``chat.model`` (so
    ``batch_loss`` must read ``chat.model`` when called), each rank on its share of every batch;
    the trained weights are then gathered back into ``model`` on every rank.

    Returns:
        The per-optimizer-step loss parts (for logging; averaged over ranks), and the parameters
        the optimizer updated: those the loss reached with a gradient (RMU's loss reads one
        block, so blocks above it never change, whatever ``params`` allows).
    """
    try:
        if distributed.is_distributed():
            if chat is None:
                raise ValueError(
                    "train() runs on several ranks but got no chat to swap the sharded model "
                    "into. Fix: call it through run_unlearning, or pass chat=."
                )
            return _train_sharded(chat, params, batch_loss, n_forget, n_retain, loop, desc)
        return _train_local(model, params, batch_loss, n_forget, n_retain, loop, desc)
    finally:
        for param in model.parameters():
            param.requires_grad_(True)


def _train_local(model, params, batch_loss, n_forget, n_retain, loop, desc):
    """One process: ``model`` trains in place (fp32 masters for a half-precision model)."""
    checkpointing = wants_checkpointing(
        model, loop.gradient_checkpointing, loop.checkpointing_min_params
    )
    with fp32_masters(model) as half_dtype:
        bf16 = torch.bfloat16 if loop.bf16 else None
        autocast = autocast_context(model_device(model), half_dtype or bf16)
        if checkpointing:
            enable_checkpointing(model)
        model.train()
        try:
            return _steps(model, params, batch_loss, n_forget, n_retain, loop, desc, autocast)
        finally:
            model.eval()
            if checkpointing:
                disable_checkpointing(model)


def _train_sharded(chat, params, batch_loss, n_forget, n_retain, loop, desc):
    """Several ranks: train a sharded fp32 copy as ``chat.model``, then gather it into the model."""
    model = chat.model
    wanted = {name for name, p in model.named_parameters() if any(p is q for q in params)}
    train_model = distributed.shard_for_training(model, compute_dtype(model, loop.bf16))
    train_params = [p for name, p in train_model.named_parameters() if name in wanted]
    if wants_checkpointing(model, loop.gradient_checkpointing, loop.checkpointing_min_params):
        enable_checkpointing(train_model)
    with distributed.parked_on_host(model):
        chat.model = train_model  # the methods' batch_loss closures read chat.model
        train_model.train()
        try:
            history, updated = _steps(
                train_model,
                train_params,
                batch_loss,
                n_forget,
                n_retain,
                loop,
                desc,
                nullcontext(),
                after_first_backward=lambda: _check_sharded_model_used(params),
            )
        finally:
            chat.model = model
        distributed.gather_into(train_model, model)
    names = {id(p): name for name, p in train_model.named_parameters()}
    originals = dict(model.named_parameters())
    return history, [originals[names[id(p)]] for p in updated]


def _check_sharded_model_used(originals: list[torch.nn.Parameter]) -> None:
    """Fail when the loss reached the plain model's parameters instead of the sharded copy's."""
    if any(p.grad is not None for p in originals):
        raise ValueError(
            "The method's batch_loss ran the model it captured before training, but with several "
            "ranks the loop trains a sharded copy as chat.model. Fix: read chat.model inside "
            "batch_loss, when it is called (as lunar_exp/methods/ga.py does)."
        )


def _steps(
    model,
    params,
    batch_loss,
    n_forget,
    n_retain,
    loop,
    desc,
    autocast,
    after_first_backward: Callable[[], None] | None = None,
):
    """The epochs: shuffled forget batches, paired retain items, accumulation, AdamW steps.

    Every rank draws the same global batches; each computes the loss of its share
    (``distributed.local_share``, weighted so the averaged gradient is the global batch's).
    """
    batch_size, grad_accum = loop.batch_size, loop.grad_accum
    rng = random.Random(loop.seed)
    optimizer = torch.optim.AdamW(
        params, lr=loop.lr, weight_decay=loop.weight_decay, fused=_fusable(params)
    )
    sharded = distributed.is_distributed()
    total = loop.epochs * math.ceil(n_forget / batch_size)
    history: list[dict[str, float]] = []
    updated: dict[int, torch.nn.Parameter] = {}
    micro = 0
    for _ in tqdm(range(loop.epochs), desc=desc, unit="epoch"):
        order = list(range(n_forget))
        rng.shuffle(order)
        for start in range(0, n_forget, batch_size):
            forget_idx = order[start : start + batch_size]
            retain_idx = [rng.randrange(n_retain) for _ in forget_idx] if n_retain else []
            share, weight = distributed.local_share(len(forget_idx))
            micro += 1
            if sharded:  # reduce-scatter gradients only on a step's last micro-batch
                model.set_requires_gradient_sync(micro % grad_accum == 0 or micro == total)
            with autocast:
                loss, parts = batch_loss(forget_idx[share], retain_idx[share])
            if weight != 1.0:
                loss = loss * weight
            (loss / grad_accum).backward()
            if micro == 1 and after_first_backward is not None:
                after_first_backward()
            updated |= {id(p): p for p in params if p.grad is not None}
            if micro % grad_accum == 0:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                history.append(_global_parts(parts, weight))
                log_train_step(desc, len(history), history[-1])
    if micro % grad_accum:
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return history, list(updated.values())


def _global_parts(parts: dict[str, float], weight: float) -> dict[str, float]:
    """A micro-batch's loss parts over the global batch (the ranks' shares, by item count)."""
    if not distributed.is_distributed():
        return parts
    keys = sorted(parts)
    share = weight / distributed.world_size()
    return dict(zip(keys, distributed.all_sum([parts[k] * share for k in keys]), strict=True))


def forward_blocks(model: PreTrainedModel, ids, mask, last_layer: int) -> None:
    """Run the decoder blocks up to ``last_layer`` (``_activations.forward_until``).

    On a sharded training model it goes through the FSDP root, which gathers the embedding;
    a loss that reads one block (RMU) calls this instead of ``forward_until``.
    """
    method = getattr(model, distributed.FORWARD_UNTIL, None)
    if method is None:
        forward_until(model, ids, mask, last_layer)
    else:
        method(ids, mask, last_layer)


def _fusable(params: list[torch.nn.Parameter]) -> bool:
    """Whether PyTorch's fused AdamW can take ``params`` (float tensors on CPU or CUDA).

    One kernel per step instead of the default per-tensor loop: on this CPU 0.41 -> 0.10 s per
    step for 148M parameters; same algorithm (GA and NPO reached the same DS with it).
    """
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)


def count_params(params: Sequence[torch.nn.Parameter]) -> int:
    """Number of scalar parameters."""
    return sum(p.numel() for p in params)


def _pad(chat: ChatModel) -> int:
    return padding_id(chat.tokenizer)


def run_unlearning(
    chat: ChatModel,
    batch_loss: BatchLoss,
    n_forget: int,
    n_retain: int,
    trainable_params: str | None,
    loop: TrainLoop,
    desc: str,
):
    """Select parameters, train, and report the outcome shared by every baseline."""
    from lunar_exp.interfaces import UnlearnOutcome

    params = select_params(chat.model, trainable_params)
    history, updated = train(
        chat.model, params, batch_loss, n_forget, n_retain, loop, desc, chat=chat
    )
    metrics = {
        "unlearn/params_changed": float(count_params(updated)),
        "train/steps": float(len(history)),
    }
    if history:
        metrics.update({f"train/final_{k}": v for k, v in history[-1].items()})
    return UnlearnOutcome(metrics=metrics, info={"loss_history": history})


def loop_setting() -> TrainLoop:
    """The ``loop`` field every gradient baseline declares (``conf/train_loop/``, method.loop.*)."""
    return setting(factory=TrainLoop, help="the training loop (method.loop.*).")


def trainable_params_setting() -> str | None:
    """The ``trainable_params`` field of the gradient baselines (all parameters by default)."""
    return setting(None, help="regex over parameter names to train (None = all).")
