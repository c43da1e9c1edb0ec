"""Solvers for LUNAR's down_proj regression (LUNAR.md §1.5, §1.7).

For one layer, rows x_t (down_proj inputs) with targets y_t = W0 x_t + c*r*m_t (m_t = 1 on shifted
rows) and the loss sum_t ||(W0 + D) x_t - y_t||^2 + lam ||D||_F^2, the minimiser is the rank-1 edit
D = c*r*v^T with v = (X X^T + lam I)^-1 X m: a ridge regression of the shift mask on the inputs.
``RidgeAccumulator`` streams X X^T and X m on the rows' device (the model's) in float64 (or
float32, ``method.gram_dtype``), so no row is ever stored or copied to the host.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from lunar_exp.bookkeeping.loggers import log_train_step


@contextmanager
def exact_float32_matmul() -> Iterator[None]:
    """Float32 matrix products in full float32 (no TF32 on CUDA) inside the ``with`` body."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


@dataclass
class RidgeAccumulator:
    """Streaming sufficient statistics of one layer's regression, on ``device`` in ``dtype``."""

    dim: int
    device: torch.device | str = "cpu"
    dtype: torch.dtype = torch.float64
    gram_shifted: torch.Tensor = field(init=False)
    gram_pinned: torch.Tensor = field(init=False)
    sum_shifted: torch.Tensor = field(init=False)
    n_shifted: int = 0
    n_pinned: int = 0

    def __post_init__(self) -> None:
        place = {"dtype": self.dtype, "device": self.device}
        self.gram_shifted = torch.zeros(self.dim, self.dim, **place)
        self.gram_pinned = torch.zeros(self.dim, self.dim, **place)
        self.sum_shifted = torch.zeros(self.dim, **place)

    def add(self, inputs: torch.Tensor, shifted: torch.Tensor, weight: int = 1) -> None:
        """Add rows ``inputs [n, dim]`` with boolean ``shifted [n]``, each ``weight`` times.

        The rows are cast to the accumulator's dtype where they are (a copy to another device
        happens only when the accumulator was put elsewhere); the mask is split into row indices
        on the host, so no data-dependent indexing runs on the device.
        """
        x = inputs.to(device=self.gram_pinned.device, dtype=self.dtype)
        mask = shifted.to("cpu", torch.bool)
        xs = x.index_select(0, mask.nonzero().squeeze(1).to(x.device))
        xp = x.index_select(0, (~mask).nonzero().squeeze(1).to(x.device))
        with exact_float32_matmul():
            self.gram_shifted += weight * (xs.T @ xs)
            self.gram_pinned += weight * (xp.T @ xp)
        self.sum_shifted += weight * xs.sum(0)
        self.n_shifted += weight * len(xs)
        self.n_pinned += weight * len(xp)


def solve_ridge(acc: RidgeAccumulator, ridge: float, shifted_weight: float) -> torch.Tensor:
    """The v of the rank-1 edit c*r*v^T minimising the (weighted) ridge objective.

    ``ridge`` is relative to the mean diagonal of the Gram matrix, so it is scale-free; shifted
    rows count ``shifted_weight`` times (1.0 reproduces the unweighted objective of the paper).
    """
    if acc.n_shifted == 0:
        raise ValueError(
            "No shifted rows: every forget position was excluded. "
            "Fix: use method.perturb_positions=all or check the forget prompts."
        )
    gram = shifted_weight * acc.gram_shifted + acc.gram_pinned
    lam = ridge * torch.trace(gram) / acc.dim  # a tensor: no host round trip
    system = gram + lam * torch.eye(acc.dim, dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(system, shifted_weight * acc.sum_shifted)


def fit_report(acc: RidgeAccumulator, delta: torch.Tensor, shift: torch.Tensor) -> dict[str, float]:
    """How much of the shift ``shift`` (= c*r) the edit ``delta`` (``[d_model, d_ff]``) delivers.

    Pass the edit as delivered (what the weights hold after writing), not as solved.
    ``fit_shifted`` is the mean share of ``shift`` that shifted rows move by along it (1 = all of
    c*r); ``leak_pinned_rms`` the root-mean-square norm of ``delta x`` on pinned rows relative to
    ``|shift|`` (0 = pinned outputs untouched). For a rank-1 edit ``shift v^T`` they are the mean
    ``v.x`` on shifted rows and the RMS ``v.x`` on pinned rows; for any other edit (AdamW's,
    or a rank-1 edit after rounding) the leak also counts the output change orthogonal to r.
    """
    d = delta.to(device=acc.gram_pinned.device, dtype=acc.dtype)
    s = shift.to(d)
    norm_sq = float(s @ s)
    if norm_sq == 0.0:
        return {"fit_shifted": 0.0, "leak_pinned_rms": 0.0, **_row_counts(acc)}
    implied_v = d.T @ s / norm_sq  # the v of the rank-1 edit s v^T closest to d
    fit = float(implied_v @ acc.sum_shifted) / max(acc.n_shifted, 1)
    with exact_float32_matmul():
        pinned_sq = float(((d @ acc.gram_pinned) * d).sum()) / norm_sq  # sum_t |d x_t|^2 / |s|^2
    leak = math.sqrt(max(pinned_sq, 0.0) / max(acc.n_pinned, 1))
    return {"fit_shifted": fit, "leak_pinned_rms": leak, **_row_counts(acc)}


def _row_counts(acc: RidgeAccumulator) -> dict[str, float]:
    return {"rows_shifted": float(acc.n_shifted), "rows_pinned": float(acc.n_pinned)}


def fit_adamw(
    weight: torch.Tensor,
    rows: list[tuple[torch.Tensor, torch.Tensor]],
    lr: float,
    epochs: int,
    batch_size: int,
    gamma: float,
    weight_decay: float,
    seed: int,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Paper-parity training of the down_proj matrix (LUNAR.md §1.5): MSE, AdamW, ExponentialLR.

    Args:
        weight: the original ``[d_model, d_ff]`` matrix W0 (the starting point).
        rows: ``(inputs [n, d_ff], targets [n, d_model])`` chunks.
        lr: AdamW learning rate.
        epochs: passes over the rows.
        batch_size: rows per step.
        gamma: ExponentialLR factor, stepped once per epoch.
        weight_decay: AdamW weight decay.
        seed: row-order seed.
        dtype: training precision (float32 master weights by default).


    Returns:
        The trained matrix, same dtype as ``weight``.
    """
    inputs = torch.cat([x for x, _ in rows]).to(dtype)
    targets = torch.cat([y for _, y in rows]).to(dtype)
    trained = torch.nn.Parameter(weight.detach().to(dtype).clone())
    optimizer = torch.optim.AdamW([trained], lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
    order = list(range(len(inputs)))
    rng = random.Random(seed)
    for epoch in tqdm(range(epochs), desc="lunar adamw", unit="epoch", leave=False):
        rng.shuffle(order)
        losses = []
        for start in range(0, len(order), batch_size):
            index = torch.tensor(order[start : start + batch_size])
            loss = torch.nn.functional.mse_loss(inputs[index] @ trained.T, targets[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        scheduler.step()
        log_train_step("lunar_adamw", epoch + 1, {"loss": sum(losses) / max(len(losses), 1)})
    return trained.detach().to(weight.dtype)
