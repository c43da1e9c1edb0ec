"""Loss functions against hand-computed values; each would fail on a flipped sign, beta or mean."""

import math

import pytest
import torch

from lunar_exp.methods import _losses as L


def logsig(x):
    return -math.log1p(math.exp(-x))


def test_ga_is_the_negated_mean_nll():
    # nll = [1.0, 3.0] -> mean 2.0 -> loss -2.0
    assert L.ga_loss(torch.tensor([1.0, 3.0])).item() == pytest.approx(-2.0)


def test_npo_by_hand():
    # log-ratios: (-4) - (-5) = 1.0 and (-2) - (-2) = 0.0; beta = 0.5
    # per item -(2/beta) * logsig(-beta * ratio) = -4 * logsig(-0.5) and -4 * logsig(0) = 4 ln 2
    seq, ref = torch.tensor([-4.0, -2.0]), torch.tensor([-5.0, -2.0])
    expected = (-4 * logsig(-0.5) + -4 * logsig(0.0)) / 2
    assert L.npo_loss(seq, ref, beta=0.5).item() == pytest.approx(expected, rel=1e-6)
    # equals (2/beta) * mean log(1 + (pi/pi_ref)^beta)
    direct = (4 * math.log1p(math.exp(0.5)) + 4 * math.log1p(1.0)) / 2
    assert L.npo_loss(seq, ref, beta=0.5).item() == pytest.approx(direct, rel=1e-6)
    # it falls as the forget answer becomes less likely than under the reference
    assert L.npo_loss(torch.tensor([-9.0]), torch.tensor([-5.0]), 0.5) < L.npo_loss(
        torch.tensor([-4.0]), torch.tensor([-5.0]), 0.5
    )


def test_simnpo_by_hand():
    # nll = [0.5, 1.5], beta = 2, delta = 0.5: -(2/2) * logsig(2 * [0, 1]) -> mean
    expected = -(logsig(0.0) + logsig(2.0)) / 2
    got = L.simnpo_loss(torch.tensor([0.5, 1.5]), beta=2.0, delta=0.5).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_idkdpo_by_hand():
    # margin = (idk - ref_idk) - (forget - ref_forget) = (-3 - -4) - (-2 - -2) = 1; beta = 0.1
    # loss = -(2/0.1) * logsig(0.1) = -20 * logsig(0.1)
    got = L.idkdpo_loss(
        torch.tensor([-3.0]),
        torch.tensor([-4.0]),
        torch.tensor([-2.0]),
        torch.tensor([-2.0]),
        beta=0.1,
    ).item()
    assert got == pytest.approx(-20 * logsig(0.1), rel=1e-6)


def test_masked_mse_by_hand():
    # one example, 3 tokens, d = 2, target 0; mask keeps tokens 0 and 2.
    # per-token mean_d h^2: [(1+1)/2, (4+4)/2, (9+1)/2] = [1, 4, 5] -> (1 + 5) / 2 = 3
    hidden = torch.tensor([[[1.0, -1.0], [2.0, 2.0], [3.0, 1.0]]])
    mask = torch.tensor([[1, 0, 1]])
    assert L.masked_mse(hidden, torch.zeros(2), mask).item() == pytest.approx(3.0)


def test_nll_loss_is_the_mean():
    assert L.nll_loss(torch.tensor([1.0, 2.0, 6.0])).item() == pytest.approx(3.0)
