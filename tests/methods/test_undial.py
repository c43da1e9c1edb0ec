"""UNDIAL's loss against hand-computed values, its gradient, the teacher store and settings."""

import math

import pytest
import torch

from lunar_exp.methods import _losses as L
from lunar_exp.methods._loop import TrainLoop, answer_token_logprobs, encode_items
from lunar_exp.methods.undial import UNDIAL, teacher_rows

LN2 = math.log(2.0)
TEACHER = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]]).log()
STUDENT = torch.tensor([[0.5, 0.25, 0.25], [0.25, 0.5, 0.25]]).log()
LABELS = torch.tensor([0, 2])


def test_undial_by_hand():
    # beta = ln 2 divides the label's teacher probability by 2 before renormalising:
    #   row 1: [1/2 / 2, 1/4, 1/4] -> q = [1/3, 1/3, 1/3]; student p = [1/2, 1/4, 1/4]
    #     CE = -(1/3)(ln 1/2 + 2 ln 1/4) = (1/3)(L + 4L) = 5L/3  (L = ln 2)
    #   row 2: [0.2, 0.3, 0.5 / 2] = [0.2, 0.3, 0.25] / 0.75 -> q = [4/15, 6/15, 5/15];
    #     student p = [1/4, 1/2, 1/4]: CE = (4/15) 2L + (6/15) L + (5/15) 2L = 24L/15 = 8L/5
    #   mean over rows: (5L/3 + 8L/5) / 2 = 49L/30
    # Gradient on the student's log-probs: -q / 2 per row; none reaches the teacher.
    student = STUDENT.clone().requires_grad_(True)
    teacher = TEACHER.clone().requires_grad_(True)
    loss = L.undial_loss(student, teacher, LABELS, beta=LN2)
    assert loss.item() == pytest.approx(49 * LN2 / 30, rel=1e-6)
    loss.backward()
    assert student.grad is not None and teacher.grad is None
    expected = -torch.tensor([[1 / 3, 1 / 3, 1 / 3], [4 / 15, 6 / 15, 5 / 15]]) / 2
    torch.testing.assert_close(student.grad, expected, rtol=1e-5, atol=1e-7)


def test_undial_beta_zero_is_plain_distillation_and_shift_free():
    # beta = 0: q = teacher. Row 1: -(1/2 ln 1/2 + 2 * 1/4 ln 1/4) = L/2 + L = 3L/2;
    # row 2: -(0.2 ln 1/4 + 0.3 ln 1/2 + 0.5 ln 1/4) = 0.4L + 0.3L + 1.0L = 1.7L; mean 1.6L.
    assert L.undial_loss(STUDENT, TEACHER, LABELS, 0.0).item() == pytest.approx(1.6 * LN2)
    # logits instead of log-probs (a per-row shift) give the same target
    shifted = L.undial_loss(STUDENT, TEACHER + torch.tensor([[7.0], [-3.0]]), LABELS, LN2)
    assert shifted.item() == pytest.approx(49 * LN2 / 30, rel=1e-6)


def test_teacher_rows_line_up_with_the_student_rows(tiny_target, toy_data):
    pairs = encode_items(tiny_target, toy_data.forget)
    pad = tiny_target.tokenizer.pad_token_id
    teacher = teacher_rows(tiny_target.model, pairs, pad, batch_size=2)
    assert [len(t) for t in teacher] == [len(answer) for _, answer in pairs]
    assert len({len(t) for t in teacher}) > 1  # answers of different lengths, so order matters
    for pair, rows in zip(pairs, teacher, strict=True):
        with torch.no_grad():
            alone, _ = answer_token_logprobs(tiny_target.model, [pair], pad)
        torch.testing.assert_close(rows, alone, rtol=1e-4, atol=1e-5)


def test_undial_reports_the_teacher_store(tiny_target, toy_data):
    loop = TrainLoop(lr=1e-3, epochs=1, batch_size=2, weight_decay=0.0)
    outcome = UNDIAL(loop=loop).unlearn(tiny_target, toy_data)
    n_tokens = sum(len(a) for _, a in encode_items(tiny_target, toy_data.forget))
    vocab = tiny_target.model.config.vocab_size
    assert outcome.metrics["unlearn/teacher_mib"] == pytest.approx(n_tokens * vocab * 4 / 2**20)
    assert "train/final_retain_loss" not in outcome.metrics  # alpha = 0: no retain term


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: UNDIAL(beta=-1.0), r"method.beta=-1.0 is out of range. Fix: use a value >= 0"),
        (lambda: UNDIAL(alpha="x"), r"method.alpha='x' is not a number"),
    ],
)
def test_bad_undial_settings_fail_when_built(build, message):
    with pytest.raises(ValueError, match=message):
        build()
