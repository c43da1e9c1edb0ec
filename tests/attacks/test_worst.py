"""The worst case over attacks: the highest forget ROUGE-1 and DS, and which attack gave them."""

from lunar_exp.attacks.runner import run_attacks
from lunar_exp.interfaces import EvalResult


class Fixed:
    """An attack whose evaluation returns fixed numbers."""

    def __init__(self, forget: float, ds: float | None) -> None:
        self.metrics = {"forget/rouge1_recall": forget}
        if ds is not None:
            self.metrics["deviation_score"] = ds

    def check(self, chat, data) -> None:
        pass

    def evaluate(self, target):
        directions = {
            "forget/rouge1_recall": False,
            "forget/fact_recall": False,
            "deviation_score": False,
        }
        return EvalResult(dict(self.metrics), {}, {k: directions[k] for k in self.metrics}), {}


def test_worst_case_is_the_maximum_over_the_attacks_that_report_the_key():
    attacks = {"a": Fixed(0.2, 30.0), "b": Fixed(0.7, 20.0), "c": Fixed(0.1, None)}
    results = run_attacks(attacks, target=None)  # type: ignore[arg-type]
    assert results.metrics["attack/worst/forget/rouge1_recall"] == 0.7
    assert results.metrics["attack/worst/deviation_score"] == 30.0
    assert results.info["worst"] == {"forget_attack": "b", "deviation_attack": "a"}
    assert results.directions["attack/worst/forget/rouge1_recall"] is False  # lower is better
    assert results.directions["attack/worst/deviation_score"] is False


def test_no_attack_no_worst_case():
    results = run_attacks({}, target=None)  # type: ignore[arg-type]
    assert not any(key.startswith("attack/worst") for key in results.metrics)
    assert "worst" not in results.info


def test_worst_fact_recall_is_its_own_maximum():
    facts = {"a": 0.1, "b": 0.0}
    attacks = {name: Fixed(0.5, 10.0) for name in facts}
    for name, value in facts.items():
        attacks[name].metrics["forget/fact_recall"] = value
    results = run_attacks(attacks, target=None)  # type: ignore[arg-type]
    assert results.metrics["attack/worst/forget/fact_recall"] == 0.1
    assert results.info["worst"]["fact_attack"] == "a"
