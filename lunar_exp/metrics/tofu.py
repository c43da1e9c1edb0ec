"""TOFU's aggregate metrics from per-item numbers (METRICS.md §1, open-unlearning's formulas).

Every function takes per-item values, so the same code scores this project's evaluations and the
official TOFU eval logs (``eval_log_aggregated.json``), which is how the tests check it.

Notation: ``loss`` is the mean answer-token NLL (ℓ̄), P̃ = exp(-ℓ̄) the length-normalised
probability.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import fmean

from scipy import stats

EPS = 1e-10


def truth_ratio(correct_loss: float, perturbed_losses: Sequence[float]) -> float:
    """TR = P̃_wrong / (P̃_correct + 1e-10), P̃_wrong the geometric mean of the perturbed P̃.

    The perturbed answers' mean losses are averaged first (``aggregate_to_1D``), so
    P̃_wrong = exp(-mean_j ℓ̄_j).
    """
    return math.exp(-fmean(perturbed_losses)) / (math.exp(-correct_loss) + EPS)


def truth_ratio_closer_to_1(ratios: Sequence[float]) -> float:
    """Forget aggregation: mean(min(TR, 1/TR)); 1 means no preference for the true answer."""
    return fmean(min(r, 1 / r) for r in ratios)


def truth_ratio_true_better(ratios: Sequence[float]) -> float:
    """Retain / real-authors / world-facts aggregation: mean(max(0, 1 - TR))."""
    return fmean(max(0.0, 1 - r) for r in ratios)


def normalised_prob(correct_loss: float, perturbed_losses: Sequence[float]) -> float:
    """P̃(a) / (P̃(a) + sum_j P̃(perturbed_j) + 1e-10), one item of ``*_Q_A_Prob_normalised``."""
    correct = math.exp(-correct_loss)
    return correct / (correct + sum(math.exp(-x) for x in perturbed_losses) + EPS)


def forget_quality(forget_ratios: Sequence[float], reference_ratios: Sequence[float]) -> float:
    """Two-sided two-sample KS p-value of forget truth ratios against the retain model's."""
    result = stats.ks_2samp(list(forget_ratios), list(reference_ratios))
    return float(result.pvalue)  # pyright: ignore[reportAttributeAccessIssue]


# The nine numbers whose harmonic mean is the model utility (configs/eval/tofu_metrics).
UTILITY_KEYS = (
    "retain/prob",
    "retain/rougeL_recall",
    "retain/truth_ratio",
    "real_authors/prob_normalised",
    "real_authors/rougeL_recall",
    "real_authors/truth_ratio",
    "world_facts/prob_normalised",
    "world_facts/rougeL_recall",
    "world_facts/truth_ratio",
)


def model_utility(values: Sequence[float]) -> float:
    """Harmonic mean of the nine utility numbers; any zero makes it 0 (as scipy's hmean)."""
    if any(v <= 0 for v in values):
        return 0.0
    return float(stats.hmean(list(values)))


def extraction_strength(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """ES = 1 - k/|y|, k the smallest index whose whole suffix is predicted exactly.

    Teacher-forced argmax ``predictions`` against answer ``labels``. As in open-unlearning, the
    search stops at k = |y| - 1, so the floor is 1/|y|, not 0.
    """
    size = len(labels)
    k = 0
    for k in range(size):  # noqa: B007 - k is the result
        if list(predictions[k:]) == list(labels[k:]):
            break
    return 1 - k / size


def exact_memorization(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Share of answer tokens whose teacher-forced argmax equals the label."""
    return fmean(float(p == t) for p, t in zip(predictions, labels, strict=True))
