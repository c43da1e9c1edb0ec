"""Benign relearning: a copy trained on retain items only brings back what GA suppressed."""

from lunar_exp.attacks import relearn_benign
from lunar_exp.attacks.relearn_benign import RelearnBenign
from lunar_exp.attacks.runner import run_attacks
from lunar_exp.interfaces import UnlearnOutcome
from lunar_exp.methods._loop import TrainLoop
from lunar_exp.methods.ga import GA
from tests.attacks.test_attacks_tiny import attack_target, fingerprint


def ga_unlearned(tiny_target, toy_data):
    # Gradient ascent on the forget answers suppresses features the retain answers share
    # ("He was born in ...", the tokens of the answers): the knowledge is obfuscated, not removed.
    outcome = GA(loop=TrainLoop(lr=1e-3, epochs=5, batch_size=2)).unlearn(tiny_target, toy_data)
    target = attack_target(tiny_target, outcome)
    target.after = target.benchmark.evaluate(tiny_target, target.eval_sets)
    return target


def test_training_on_retain_items_brings_suppressed_forget_answers_back(tiny_target, toy_data):
    target = ga_unlearned(tiny_target, toy_data)
    weights = fingerprint(tiny_target.model)
    results = run_attacks({"relearn_benign": RelearnBenign(steps=20, lr=3e-3)}, target)
    metrics = results.metrics
    prefix = "attack/relearn_benign"
    # measured: forget answer NLL 3.56 after GA (1.50 on the target) -> 1.81; ROUGE-1 0.1 -> 0.4
    # (0.1 -> 0.3 with the same NLLs in the fresh install of 2026-12-06 evening: the greedy
    # answers differ between library builds; ROUGE-1 moves in steps of 0.1 on these items)
    before, after = (
        metrics[f"{prefix}/forget/answer_nll_before"],
        metrics[f"{prefix}/forget/answer_nll_after"],
    )
    assert after < before - 1.0
    assert metrics[f"{prefix}/forget/answer_nll"] == after  # the evaluation scores the trained copy
    recovered = metrics[f"{prefix}/forget/rouge1_recall"]
    assert recovered > target.after.metrics["forget/rouge1_recall"] + 0.15
    assert metrics[f"{prefix}/n_trained"] == len(toy_data.retain)
    assert all(weights[k].equal(v) for k, v in tiny_target.model.state_dict().items())


def test_the_attacker_never_trains_on_a_forget_item(tiny_target, toy_data, monkeypatch):
    seen = []

    def record(chat, items, *args):
        seen.extend(items)

    monkeypatch.setattr(relearn_benign, "train_on", record)
    target = attack_target(tiny_target, UnlearnOutcome())
    RelearnBenign(n_items=3).evaluate(target)
    assert seen == list(toy_data.retain[:3])
    assert not set(seen) & set(toy_data.forget)
