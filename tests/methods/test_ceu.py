"""CE-U's loss against hand-computed values, its gradient, the skipped first tokens, settings."""

import math

import pytest
import torch

from lunar_exp.methods import _losses as L
from lunar_exp.methods._loop import answer_token_logprobs
from lunar_exp.methods.ceu import CEU

LN2 = math.log(2.0)


def test_ceu_by_hand():
    # Row 1: p = [1/2, 1/4, 1/4], label 0 -> q = softmax with the label at -inf = [0, 1/2, 1/2]
    #   CE = -(1/2 ln 1/4 + 1/2 ln 1/4) = 2L (L = ln 2)
    # Row 2: p = [1/4, 1/2, 1/4], label 0 -> q = [0, 2/3, 1/3]; CE = -(2/3 ln 1/2 + 1/3 ln 1/4)
    #   = 2L/3 + 2L/3 = 4L/3.  Mean over rows: (2L + 4L/3) / 2 = 5L/3.
    # Gradient on the logits z with q detached: (p - q) / 2 per row
    #   row 1: [1/2, -1/4, -1/4] / 2; row 2: [1/4, -1/6, -1/12] / 2.
    # (Were q not detached, it would be a different vector.)
    probs = torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]])
    logits = probs.log().clone().requires_grad_(True)
    loss = L.ceu_loss(torch.log_softmax(logits, -1), torch.tensor([0, 0]))
    assert loss.item() == pytest.approx(5 * LN2 / 3, rel=1e-6)
    loss.backward()
    assert logits.grad is not None
    expected = torch.tensor([[1 / 4, -1 / 8, -1 / 8], [1 / 8, -1 / 12, -1 / 24]])
    torch.testing.assert_close(logits.grad, expected, rtol=1e-5, atol=1e-7)


def test_ceu_of_no_tokens_is_zero_with_a_graph():
    rows = torch.zeros((0, 3), requires_grad=True)
    loss = L.ceu_loss(rows, torch.zeros(0, dtype=torch.long))
    assert loss.item() == 0.0 and loss.requires_grad


def test_first_answer_tokens_are_left_out(tiny_chat):
    # Two pairs with 3- and 2-token answers: 5 rows; skipping the first token of each leaves 3,
    # the answers' 2nd and 3rd tokens and the 2nd token of the second answer, in that order.
    pairs = [([5, 6, 7], [11, 12, 13]), ([8], [21, 22])]
    rows, tokens = answer_token_logprobs(tiny_chat.model, pairs, 0)
    assert rows.shape[0] == 5 and tokens.tolist() == [11, 12, 13, 21, 22]
    kept_rows, kept = answer_token_logprobs(tiny_chat.model, pairs, 0, skip_first=1)
    assert kept.tolist() == [12, 13, 22]
    torch.testing.assert_close(kept_rows, rows[[1, 2, 4]])


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: CEU(ignore_first_n_answer_tokens=-1),
            r"method.ignore_first_n_answer_tokens=-1 is out of range. Fix: use a value >= 0",
        ),
        (lambda: CEU(ignore_first_n_answer_tokens=1.5), r"is not an integer"),
        (lambda: CEU(gamma="x"), r"method.gamma='x' is not a number"),
    ],
)
def test_bad_ceu_settings_fail_when_built(build, message):
    with pytest.raises(ValueError, match=message):
        build()
