"""SatImp's loss against hand-computed values, its gradient, and its settings."""

import math

import pytest
import torch

from lunar_exp.methods import _losses as L
from lunar_exp.methods.satimp import SatImp

LN2 = math.log(2.0)
MASK = torch.tensor([[1, 1], [1, 0]], dtype=torch.bool)


def nll():
    # Example A: 2 answer tokens with p = 1/2, 1/4 (ce = L, 2L); example B: 1 token with p = 1/8
    # (ce = 3L) and a masked position holding junk 5.0. L = ln 2.
    return torch.tensor([[LN2, 2 * LN2], [3 * LN2, 5.0]], requires_grad=True)


def test_satimp_by_hand():
    # beta1 = beta2 = 1: w = p (1 - p) = 1/4, 3/16, 7/64; w * ce = L/4, 3L/8, 21L/64
    #   token mean over the batch (3 tokens): -(16 + 24 + 21) L / 64 / 3 = -61L/192
    #   (a per-example mean would be -((L/4 + 3L/8)/2 + 21L/64) / 2 = -41L/128: different)
    # Gradient with the weight detached: d loss / d ce_t = -w_t / 3 = [[-1/12, -1/16], [-7/192, 0]]
    ce = nll()
    loss = L.satimp_loss(ce, MASK, beta1=1.0, beta2=1.0)
    assert loss.item() == pytest.approx(-61 * LN2 / 192, rel=1e-6)
    assert loss.item() != pytest.approx(-41 * LN2 / 128, rel=1e-3)
    loss.backward()
    assert ce.grad is not None
    expected = torch.tensor([[-1 / 12, -1 / 16], [-7 / 192, 0.0]])
    torch.testing.assert_close(ce.grad, expected, rtol=1e-6, atol=1e-7)


def test_satimp_exponents_by_hand():
    # beta1 = 0, beta2 = 2: w = (1 - p)^2 = 1/4, 9/16, 49/64; w * ce = L/4, 9L/8, 147L/64
    #   -> -(16 + 72 + 147) L / 64 / 3 = -235L/192 (swapping beta1 and beta2 gives WGA's -9L/64)
    assert L.satimp_loss(nll(), MASK, 0.0, 2.0).item() == pytest.approx(-235 * LN2 / 192, rel=1e-6)
    # beta1 = 2, beta2 = 0 is WGA with beta = 2: w = 1/4, 1/16, 1/64 -> -(27L/64) / 3 = -9L/64
    assert L.satimp_loss(nll(), MASK, 2.0, 0.0).item() == pytest.approx(-9 * LN2 / 64, rel=1e-6)
    assert L.satimp_loss(nll(), MASK, 2.0, 0.0).item() == pytest.approx(
        L.wga_loss(nll(), MASK, beta=2.0).item(), rel=1e-6
    )


def test_satimp_reference_defaults():
    method = SatImp()
    assert (method.beta1, method.beta2, method.gamma, method.alpha) == (5.0, 1.0, 1.0, 0.1)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: SatImp(beta1=-1.0), r"method.beta1=-1.0 is out of range. Fix: use a value >= 0"),
        (lambda: SatImp(beta2="x"), r"method.beta2='x' is not a number"),
        (lambda: SatImp(alpha=-0.1), r"method.alpha=-0.1 is out of range"),
    ],
)
def test_bad_satimp_settings_fail_when_built(build, message):
    with pytest.raises(ValueError, match=message):
        build()
