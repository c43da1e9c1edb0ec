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


def test_wga_by_hand():
    # Two examples, L = ln 2. Example A has 2 answer tokens with p = 1/2, 1/4 (ce = L, 2L);
    # example B has 1 answer token with p = 1/8 (ce = 3L) and a masked position holding junk 5.0.
    # beta = 1: w = p = 1/2, 1/4, 1/8; w * ce = L/2, L/2, 3L/8.
    #   token mean over the batch (3 tokens): -(L/2 + L/2 + 3L/8) / 3 = -11L/24
    #   (a per-example mean would be -((L/2 + L/2)/2 + 3L/8) / 2 = -7L/16: different)
    # beta = 0: w = 1: -(L + 2L + 3L) / 3 = -2L, GA's token mean (ga_loss's per-example
    #   mean of the same tokens is -(1.5L + 3L) / 2 = -2.25L).
    # beta = 2: w = 1/4, 1/16, 1/64; w * ce = L/4, L/8, 3L/64 -> -(27L/64) / 3 = -9L/64.
    # Gradient at beta = 1 with the weight detached: d loss / d ce_t = -w_t / 3 on answer tokens,
    #   i.e. [[-1/6, -1/12], [-1/24, 0]]; through the weight it would be -p_t (1 - ce_t) / 3.
    ln2 = math.log(2.0)
    mask = torch.tensor([[1, 1], [1, 0]], dtype=torch.bool)

    def nll():
        return torch.tensor([[ln2, 2 * ln2], [3 * ln2, 5.0]], requires_grad=True)

    ce = nll()
    loss = L.wga_loss(ce, mask, beta=1.0)
    assert loss.item() == pytest.approx(-11 * ln2 / 24, rel=1e-6)
    assert loss.item() != pytest.approx(-7 * ln2 / 16, rel=1e-3)
    loss.backward()
    assert ce.grad is not None
    expected_grad = torch.tensor([[-1 / 6, -1 / 12], [-1 / 24, 0.0]])
    torch.testing.assert_close(ce.grad, expected_grad, rtol=1e-6, atol=1e-7)

    assert L.wga_loss(nll(), mask, beta=0.0).item() == pytest.approx(-2 * ln2, rel=1e-6)
    assert L.wga_loss(nll(), mask, beta=2.0).item() == pytest.approx(-9 * ln2 / 64, rel=1e-6)
