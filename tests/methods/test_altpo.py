"""AltPO: its objective by hand, the alternates it generates, and its settings."""

import math

import pytest
import torch

from lunar_exp.methods import _losses as L
from lunar_exp.methods._loop import TrainLoop
from lunar_exp.methods.altpo import AltPO, alternate_stats, clean_alternate

LOOP = TrainLoop(lr=1e-3, epochs=1, batch_size=2, weight_decay=0.0)


def logsig(x):
    return -math.log1p(math.exp(-x))


def test_altpo_objective_by_hand():
    # One forget answer (log pi = -2, ref -2) with two alternates, each its own example:
    # margins (alt - ref_alt) - (forget - ref_forget): (-3 - -4) - 0 = 1 and (-6 - -5) - 0 = -1.
    # beta = 0.1: -(2/0.1) * mean(logsig(0.1), logsig(-0.1)) = -10 * (logsig(0.1) + logsig(-0.1))
    loss = L.idkdpo_loss(
        torch.tensor([-3.0, -6.0]),
        torch.tensor([-4.0, -5.0]),
        torch.tensor([-2.0, -2.0]),
        torch.tensor([-2.0, -2.0]),
        beta=0.1,
    )
    assert loss.item() == pytest.approx(-10 * (logsig(0.1) + logsig(-0.1)), rel=1e-6)


def test_clean_alternate_and_stats():
    assert clean_alternate("  Paris is in Peru.\nQuestion: next?") == "Paris is in Peru."
    assert clean_alternate("Q: what") == ""

    class Item:
        def __init__(self, answer):
            self.answer = answer

    items = [Item("Rome."), Item("Rome."), Item("Oslo.")]
    stats = alternate_stats(items, ["rome.", "", "Bergen."])  # pyright: ignore[reportArgumentType]
    assert stats == {"unlearn/alternates_empty": 1 / 3, "unlearn/alternates_copied": 1 / 3}


def test_alternates_are_seeded_and_leave_the_global_rng_alone(tiny_target, toy_data):
    altpo = AltPO(num_alternates=3, max_new_tokens=6, loop=LOOP)
    items = [qa for qa in toy_data.forget for _ in range(3)]
    torch.manual_seed(1)
    first = altpo.generate_alternates(tiny_target, items)
    after_first = torch.rand(1)
    torch.manual_seed(2)
    second = altpo.generate_alternates(tiny_target, items)
    assert first == second and len(first) == len(items)  # loop.seed decides, not the global seed
    torch.manual_seed(1)
    assert torch.equal(after_first, torch.rand(1))  # the global generator did not move
    assert len(set(first)) > 1  # sampled, not one greedy answer repeated
    other = AltPO(num_alternates=3, max_new_tokens=6, loop=TrainLoop(seed=1))
    assert other.generate_alternates(tiny_target, items) != first


def test_altpo_trains_on_every_alternate(tiny_target, toy_data):
    outcome = AltPO(num_alternates=3, max_new_tokens=6, loop=LOOP).unlearn(tiny_target, toy_data)
    records = outcome.info["alternates"]
    assert len(records) == 3 * len(toy_data.forget)
    assert [r["question"] for r in records[:3]] == [toy_data.forget[0].question] * 3
    # 6 (question, alternate) examples in batches of 2: 3 steps for one epoch
    assert outcome.metrics["train/steps"] == 3
    assert 0 <= outcome.metrics["unlearn/alternates_copied"] <= 1


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: AltPO(beta=0.0), r"method.beta=0.0 is out of range. Fix: use a value > 0"),
        (lambda: AltPO(num_alternates=0), r"method.num_alternates=0 is out of range"),
        (lambda: AltPO(temperature=0.0), r"method.temperature=0.0 is out of range"),
    ],
)
def test_bad_altpo_settings_fail_when_built(build, message):
    with pytest.raises(ValueError, match=message):
        build()
