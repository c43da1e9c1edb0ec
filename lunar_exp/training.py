"""A small supervised training loop in plain PyTorch (answer-token cross-entropy)."""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from lunar_exp.bookkeeping.loggers import log_train_step
from lunar_exp.metrics.primitives import pair_batch, token_nll

Pair = tuple[Sequence[int], Sequence[int]]


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
) -> list[float]:
    """Full fine-tuning on (prompt, answer) pairs with a linear warm-up/decay AdamW schedule.

    Each step's loss goes to the active logger as ``train/<stage>/loss``.

    Returns:
        The mean training loss of every epoch.
    """
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
                ids, mask, labels = (t.to(model.device) for t in pair_batch(batch, pad_id))
                nll, valid = token_nll(model, ids, mask, labels)
                loss = nll.sum() / valid.sum()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                losses.append(loss.item())
                progress.update()
                progress.set_postfix(loss=f"{loss.item():.3f}")
                # last_epoch counts scheduler steps, i.e. optimizer steps so far
                log_train_step(stage, schedule.last_epoch, {"loss": losses[-1]})
            history.append(sum(losses) / len(losses))
    finally:
        progress.close()
        model.eval()
    return history
