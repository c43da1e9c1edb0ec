"""PDU's losses and dual step against hand-computed values, its dual schedule, its settings."""

import math

import pytest
import torch

from lunar_exp.methods import _losses as L
from lunar_exp.methods._loop import TrainLoop
from lunar_exp.methods.pdu import PDU

LN2 = math.log(2.0)


def test_logit_margin_loss_by_hand():
    # Row 1: log [1/2, 1/4, 1/4] = [-L, -2L, -2L]: max -L, mean -5L/3, margin 2L/3, squared 4L^2/9.
    # Row 2: uniform, margin 0.  Mean over rows: 2L^2/9.
    # Gradient: 2 * margin * (onehot(argmax) - 1/3) / 2 rows = (2L/3) [2/3, -1/3, -1/3] on row 1.
    rows = torch.tensor([[0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3]]).log().requires_grad_(True)
    loss = L.logit_margin_loss(rows)
    assert loss.item() == pytest.approx(2 * LN2**2 / 9, rel=1e-5)
    loss.backward()
    assert rows.grad is not None
    expected = torch.tensor([[4 * LN2 / 9, -2 * LN2 / 9, -2 * LN2 / 9], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(rows.grad, expected, rtol=1e-5, atol=1e-6)
    # logits or log-probs: a per-row shift changes nothing
    shifted = L.logit_margin_loss(rows.detach() + torch.tensor([[5.0], [-2.0]]))
    assert shifted.item() == pytest.approx(loss.item(), rel=1e-5)


def test_primal_dual_loss_and_dual_step_by_hand():
    # gamma * forget + lambda * (retain - eps) = 1.5 * 2 + 3 * (0.5 - 0.3) = 3.6;
    # d/d retain = lambda = 3, d/d forget = gamma = 1.5.
    forget = torch.tensor(2.0, requires_grad=True)
    retain = torch.tensor(0.5, requires_grad=True)
    loss = L.primal_dual_loss(forget, retain, dual=3.0, eps=0.3, gamma=1.5)
    assert loss.item() == pytest.approx(3.6)
    loss.backward()
    assert (forget.grad, retain.grad) == (pytest.approx(1.5), pytest.approx(3.0))
    # lambda + step * (retain - eps) = 3 + 5 * 0.2 = 4; below the bound it shrinks, never below 0
    assert L.dual_ascent(3.0, 0.5, eps=0.3, step=5.0) == pytest.approx(4.0)
    assert L.dual_ascent(3.0, 0.1, eps=0.3, step=5.0) == pytest.approx(2.0)
    assert L.dual_ascent(0.5, 0.1, eps=0.3, step=5.0) == 0.0


def test_dual_variable_waits_for_the_warm_up(tiny_target, toy_data):
    # The toy forget set has 2 items and batch_size is 2: one step per pass over it. With one
    # warm-up pass, steps 1 and 2 use lambda_0 = 1; the update after step 2 (one pass done) makes
    # step 3 use 1 + 1 * (retain loss of step 2 - 0).
    loop = TrainLoop(lr=1e-3, epochs=3, batch_size=2, weight_decay=0.0)
    pdu = PDU(alpha=1.0, retain_loss_eps=0.0, dual_step_size=1.0, dual_warmup_epochs=1, loop=loop)
    history = pdu.unlearn(tiny_target, toy_data).info["loss_history"]
    assert [h["dual"] for h in history[:2]] == [1.0, 1.0]
    assert history[2]["dual"] == pytest.approx(1.0 + history[1]["retain_loss"])
    fixed = PDU(alpha=1.0, primal_dual=False, dual_warmup_epochs=0, loop=loop)
    assert {h["dual"] for h in fixed.unlearn(tiny_target, toy_data).info["loss_history"]} == {1.0}


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: PDU(retain_loss_eps=-0.1), r"method.retain_loss_eps=-0.1 is out of range"),
        (lambda: PDU(dual_warmup_epochs=1.5), r"method.dual_warmup_epochs=1.5 is not an integer"),
        (lambda: PDU(dual_step_size=-1.0), r"method.dual_step_size=-1.0 is out of range"),
    ],
)
def test_bad_pdu_settings_fail_when_built(build, message):
    with pytest.raises(ValueError, match=message):
        build()
