"""Which way is better for every metric, so tables and plots can mark it.

Keys are matched on the full metric key first (``forget_quality``), then on its last component
(``forget/rouge1_recall`` -> ``rouge1_recall``). For the forget split, "better" means "better
unlearned" (lower memorisation); for every other split it means "better kept".
"""

from __future__ import annotations

# Metric name -> True when higher is better (on retain / utility splits).
HIGHER_IS_BETTER: dict[str, bool] = {
    # QA generation metrics (synthetic, qa_json, TOFU)
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
    # MUSE
    "knowmem_rougeL_f1": True,
    "verbmem_rougeL_f1": True,
    # lm-eval multiple choice
    "acc": True,
    "acc_norm": True,
}

# Whole keys whose direction does not follow the split rule.
KEY_HIGHER_IS_BETTER: dict[str, bool] = {
    "deviation_score": False,
    "forget_quality": True,
    "model_utility": True,
    "privleak": None,  # best at 0: |privleak| lower is better
    "forget/refusal_rate": True,
    # closer to 1 (no preference for the true answer over perturbed ones) = better unlearned
    "forget/truth_ratio": True,
    "mia/min_k_auc": None,  # best near the retain model's AUC
    "privleak/reference_auc": None,
}


def higher_is_better(key: str) -> bool | None:
    """True / False for a metric key, None when closeness to a target (0) is what counts.

    On the ``forget`` split (and WMDP's hazard tasks) a knowledge metric flips: lower is better.
    Attack and sequential-request keys (``attack/<name>/...``, ``seq/<k>/...``) follow the key
    they prefix.
    """
    parts = key.split("/")
    if len(parts) > 2 and parts[0] in ("attack", "seq"):
        key = "/".join(parts[2:])
    if key in KEY_HIGHER_IS_BETTER:
        return KEY_HIGHER_IS_BETTER[key]
    split, _, name = key.rpartition("/")
    if name not in HIGHER_IS_BETTER:
        return None
    value = HIGHER_IS_BETTER[name]
    forgetting = split.split("/")[-1].startswith(("forget", "wmdp"))
    return (not value) if forgetting else value


def arrow(key: str) -> str:
    """A compact marker for tables: ↑ higher is better, ↓ lower, → closer to 0."""
    return {True: "↑", False: "↓", None: "→0"}[higher_is_better(key)]
