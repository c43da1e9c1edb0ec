"""LUNAR's regression on small hand-made tensors."""

import torch

from lunar_exp.methods._lunar_solvers import (
    RidgeAccumulator,
    fit_adamw,
    fit_report,
    solve_ridge,
)


def make_problem(n_shifted=6, n_pinned=20, d_ff=40, d_model=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_shifted + n_pinned, d_ff, generator=g, dtype=torch.float64)
    shifted = torch.zeros(len(x), dtype=torch.bool)
    shifted[:n_shifted] = True
    w0 = torch.randn(d_model, d_ff, generator=g, dtype=torch.float64) * 0.1
    r = torch.randn(d_model, generator=g, dtype=torch.float64)
    return x, shifted, w0, r


def closed_form_delta(x, shifted, r, coeff, ridge):
    acc = RidgeAccumulator(x.shape[1])
    acc.add(x, shifted)
    v = solve_ridge(acc, ridge=ridge, shifted_weight=1.0)
    return coeff * torch.outer(r, v), acc, v


def test_forget_rows_move_by_c_r_and_pinned_rows_stay():
    # 26 rows in a 40-dim input space: the targets are exactly reachable, so with a tiny ridge
    # every shifted row's output moves by c*r and every pinned row's output is unchanged.
    x, shifted, w0, r = make_problem()
    coeff = 2.0
    delta, acc, v = closed_form_delta(x, shifted, r, coeff, ridge=1e-10)
    moved = x @ (w0 + delta).T - x @ w0.T
    assert torch.allclose(moved[shifted], (coeff * r).expand(int(shifted.sum()), -1), atol=1e-6)
    assert torch.allclose(moved[~shifted], torch.zeros_like(moved[~shifted]), atol=1e-6)
    report = fit_report(acc, delta, coeff * r)
    assert abs(report["fit_shifted"] - 1.0) < 1e-6 and report["leak_pinned_rms"] < 1e-6


def test_closed_form_is_the_least_squares_optimum():
    # More rows than dimensions: no exact fit. The rank-1 edit must equal the unconstrained
    # least-squares solution of min_D ||D X^T - T||^2 (T = c*r on shifted rows, 0 elsewhere).
    x, shifted, w0, r = make_problem(n_shifted=30, n_pinned=120, d_ff=16)
    coeff = 3.0
    delta, _, _ = closed_form_delta(x, shifted, r, coeff, ridge=0.0)
    targets = shifted[:, None].double() * (coeff * r)[None, :]
    lstsq = torch.linalg.lstsq(x, targets).solution.T  # [d_model, d_ff]
    assert torch.allclose(delta, lstsq, atol=1e-8)
    # and it is rank one along r
    assert torch.linalg.matrix_rank(delta, atol=1e-8) == 1


def test_adamw_approaches_the_closed_form_loss():
    x, shifted, w0, r = make_problem(n_shifted=30, n_pinned=120, d_ff=16)
    coeff = 3.0
    delta, _, _ = closed_form_delta(x, shifted, r, coeff, ridge=0.0)
    y = x @ w0.T + shifted[:, None].double() * (coeff * r)[None, :]

    def loss(w):
        return torch.mean((x @ w.T - y) ** 2).item()

    optimum = loss(w0 + delta)
    start = loss(w0)
    trained = fit_adamw(
        w0.float(),
        [(x.float(), y.float())],
        lr=5e-2,
        epochs=150,
        batch_size=32,
        gamma=0.98,
        weight_decay=0.0,
        seed=0,
    )
    reached = loss(trained.double())
    assert reached < start
    assert reached - optimum < 0.02 * (start - optimum)


def test_ridge_is_scale_free_and_shrinks_the_edit():
    x, shifted, _, r = make_problem()
    small, _, _ = closed_form_delta(x, shifted, r, 1.0, ridge=1e-6)
    scaled, _, _ = closed_form_delta(10 * x, shifted, r, 1.0, ridge=1e-6)
    assert torch.allclose(small, 10 * scaled, rtol=1e-4)
    strong, _, _ = closed_form_delta(x, shifted, r, 1.0, ridge=10.0)
    assert strong.norm() < small.norm()
