"""The hard-coded direction table the project used before each evaluation declared its own.

A frozen copy of the former ``lunar_exp/metrics/directions.py``, kept only as the oracle the tests
compare the declared directions with: every key the old table knew must keep its meaning.
"""

from __future__ import annotations

from collections.abc import Mapping

from lunar_exp.interfaces import EvalResult

HIGHER_IS_BETTER: dict[str, bool] = {
    "rouge1_recall": True,
    "rougeL_recall": True,
    "rougeL_f1": True,
    "refusal_rate": False,
    "answer_nll": False,
    "mrr": True,
    "top_hit_rate": True,
    "prob": True,
    "prob_normalised": True,
    "truth_ratio": True,
    "extraction_strength": True,
    "exact_memorization": True,
    "knowmem_rougeL_f1": True,
    "verbmem_rougeL_f1": True,
    "acc": True,
    "acc_norm": True,
    "coherent_refusal_rate": False,  # added with the coherence metrics: flips as refusal_rate
    "token_accuracy": True,  # added with attack=probe (teacher-forced answer-token accuracy)
    "lens_token_accuracy": True,  # the same through the untrained logit lens
    "fact_recall": True,  # added with fact-word recall (lunar_exp/metrics/text.py)
}
# Added with the coherence metrics (lunar_exp/metrics/coherence.py): the same on every split.
SPLIT_INDEPENDENT: dict[str, bool] = {
    "degeneration": False,
    "distinct_2": True,
    "fluency_nll": False,
}

KEY_HIGHER_IS_BETTER: dict[str, bool | None] = {
    "deviation_score": False,
    "forget_quality": True,
    "model_utility": True,
    "privleak": None,
    "forget/refusal_rate": True,
    "forget/truth_ratio": True,
    "mia/min_k_auc": None,
    "privleak/reference_auc": None,
}

_PREFIXES = ("attack", "seq", "before")


def old_higher_is_better(key: str) -> bool | None:
    """The old rule, with the old table's prefix stripping (``before/``, ``attack/<n>/``...)."""
    parts = key.split("/")
    while len(parts) > 1 and parts[0] in _PREFIXES:
        parts = parts[2:] if parts[0] in ("attack", "seq") else parts[1:]
    key = "/".join(parts)
    if key in KEY_HIGHER_IS_BETTER:
        return KEY_HIGHER_IS_BETTER[key]
    split, _, name = key.rpartition("/")
    if name in SPLIT_INDEPENDENT:
        return SPLIT_INDEPENDENT[name]
    if name not in HIGHER_IS_BETTER:
        return None
    value = HIGHER_IS_BETTER[name]
    forgetting = split.split("/")[-1].startswith(("forget", "wmdp"))
    return (not value) if forgetting else value


def assert_directions_as_before(
    metrics: Mapping[str, object], directions: Mapping[str, bool | None]
) -> None:
    """Every metric has a direction, and it is the one the old table gave its key."""
    assert set(directions) == set(metrics), set(metrics) ^ set(directions)
    changed = {
        key: (way, old_higher_is_better(key))
        for key, way in directions.items()
        if way is not old_higher_is_better(key)
    }
    assert not changed, changed


def assert_declared_as_before(result: EvalResult) -> None:
    """:func:`assert_directions_as_before` for one evaluation's result."""
    assert_directions_as_before(result.metrics, result.directions)
