"""A run's evaluation in open-unlearning's format: ``eval_ou.json`` beside ``metrics.json``.

open-unlearning's evaluators (``src/evals/base.py``) write ``TOFU_EVAL.json`` / ``MUSE_EVAL.json``:
one entry per metric, named as its metric config (``configs/eval/tofu_metrics/*.yaml``, e.g.
``forget_truth_ratio``, ``forget_Q_A_Prob``, ``model_utility``, ``mia_min_k``), each
``{"agg_value": ..., "value_by_index": {"<i>": {...}}}`` where per-item values exist (index i =
the i-th scored item of the set) and ``{"agg_value": ...}`` for aggregates. A membership attack
also holds ``auc`` and the per-item scores of its ``forget`` and ``holdout`` sets. The file is
written for TOFU and MUSE; other benchmarks have no open-unlearning evaluator of this form, and
get no file.

Truth ratios are TOFU's original P̃(perturbed) / P̃(paraphrased) per item (open-unlearning's
definition for every aggregator but ``prob_mean``, also after its December 2025 change);
``forget_truth_ratio.agg_value`` is the ``closer_to_1_better`` mean, the retain, real-authors and
world-facts ones the ``true_better`` mean.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lunar_exp.bookkeeping.outputs import main_rank_only, write_json_atomic
from lunar_exp.interfaces import EvalResult
from lunar_exp.metrics.mia import ATTACKS, OPEN_UNLEARNING_KEYS

FILE = "eval_ou.json"
Records = Sequence[Mapping[str, Any]]

# open-unlearning metric name: this project's metrics.json key, for the aggregate-only entries.
TOFU_AGGREGATES = {
    "forget_quality": "forget_quality",
    "model_utility": "model_utility",
    "privleak": "privleak",
    "extraction_strength": "forget/extraction_strength",
    "exact_memorization": "forget/exact_memorization",
    "ra_Q_A_Prob_normalised": "real_authors/prob_normalised",
    "ra_Q_A_ROUGE": "real_authors/rougeL_recall",
    "ra_Truth_Ratio": "real_authors/truth_ratio",
    "wf_Q_A_Prob_normalised": "world_facts/prob_normalised",
    "wf_Q_A_ROUGE": "world_facts/rougeL_recall",
    "wf_Truth_Ratio": "world_facts/truth_ratio",
}
# (open-unlearning prefix, this project's split) of the TOFU sets scored item by item.
TOFU_QA_SPLITS = (("forget", "forget"), ("retain", "retain"))
# open-unlearning's MUSE ROUGE metrics: (this project's generations split, metrics.json key).
MUSE_ROUGE = {
    "forget_knowmem_ROUGE": ("forget_knowmem", "forget/knowmem_rougeL_f1"),
    "retain_knowmem_ROUGE": ("retain_knowmem", "retain/knowmem_rougeL_f1"),
    "forget_verbmem_ROUGE": ("forget_verbmem", "forget/verbmem_rougeL_f1"),
}
# The generations splits holding each benchmark's membership scores (members, non-members).
MIA_SPLITS = {"tofu": ("forget", "holdout"), "muse": ("privleak_forget", "privleak_holdout")}


def eval_ou_record(benchmark: str, result: EvalResult) -> dict[str, Any] | None:
    """``result`` in open-unlearning's format for ``benchmark`` (tofu, muse); None for others."""
    if benchmark == "tofu":
        record = {**_tofu_qa(result), **_aggregates(result.metrics, TOFU_AGGREGATES)}
    elif benchmark == "muse":
        record = {**_muse_rouge(result), **_aggregates(result.metrics, {"privleak": "privleak"})}
    else:
        return None
    record.update(_membership(result, *MIA_SPLITS[benchmark]))
    return dict(sorted(record.items()))  # open-unlearning's save_logs sorts its keys too


@main_rank_only
def write_eval_ou(run_dir: Path, benchmark: str, result: EvalResult) -> None:
    """Write ``eval_ou.json`` into ``run_dir`` when ``benchmark`` has an open-unlearning form."""
    record = eval_ou_record(benchmark, result)
    if record is not None:
        write_json_atomic(run_dir / FILE, record, sort_keys=False)  # indices in item order


def _aggregates(metrics: Mapping[str, Any], names: Mapping[str, str]) -> dict[str, dict]:
    """``{"agg_value": metrics[key]}`` for each open-unlearning name whose key was scored."""
    return {name: {"agg_value": metrics[key]} for name, key in names.items() if key in metrics}


def _by_index(values: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {str(index): dict(value) for index, value in enumerate(values)}


def _tofu_qa(result: EvalResult) -> dict[str, dict]:
    """Probability, ROUGE and truth ratio of the forget and retain sets, item by item."""
    out: dict[str, dict] = {}
    for prefix, split in TOFU_QA_SPLITS:
        rows = result.generations.get(split)
        if not rows:
            continue
        metrics = result.metrics
        ratio_name = "forget_truth_ratio" if prefix == "forget" else "retain_Truth_Ratio"
        out[f"{prefix}_Q_A_Prob"] = {
            "agg_value": metrics[f"{split}/prob"],
            "value_by_index": _by_index(_probability(r) for r in rows),
        }
        out[f"{prefix}_Q_A_ROUGE"] = {
            "agg_value": metrics[f"{split}/rougeL_recall"],
            "value_by_index": _by_index(
                _rouge_entry(r, ("rouge1_recall", "rougeL_recall")) for r in rows
            ),
        }
        out[ratio_name] = {
            "agg_value": metrics[f"{split}/truth_ratio"],
            "value_by_index": _by_index({"score": r["truth_ratio"]} for r in rows),
        }
    return out


def _probability(row: Mapping[str, Any]) -> dict[str, float]:
    """One item of an open-unlearning ``probability`` metric from its mean answer NLL."""
    loss = float(row["answer_nll"])
    return {"prob": math.exp(-loss), "avg_loss": loss}


def _muse_rouge(result: EvalResult) -> dict[str, dict]:
    """MUSE knowmem (forget, retain) and verbmem ROUGE-L F1, item by item."""
    out: dict[str, dict] = {}
    for name, (split, key) in MUSE_ROUGE.items():
        if key not in result.metrics:
            continue
        rows = result.generations.get(split, [])
        out[name] = {
            "agg_value": result.metrics[key],
            "value_by_index": _by_index(
                _rouge_entry(r, ("rouge1_recall", "rougeL_f1")) for r in rows
            ),
        }
    return out


def _rouge_entry(row: Mapping[str, Any], scores: Sequence[str]) -> dict[str, Any]:
    """One item of an open-unlearning ``rouge`` metric: its scores, prompt, answer, generation."""
    entry = {name: row[name] for name in scores if name in row}
    entry.update(
        input=row.get("question"), ground_truth=row.get("ground_truth"), generation=row["response"]
    )
    return entry


def _membership(result: EvalResult, members: str, non_members: str) -> dict[str, dict]:
    """``mia_<attack>``: the AUC and each set's per-item scores, for every attack scored."""
    out: dict[str, dict] = {}
    for attack in ATTACKS:
        auc = result.metrics.get(f"mia/{attack}_auc")
        if auc is None:
            continue
        sets = {
            name: _attack_scores(result.generations.get(split, []), attack)
            for name, split in (("forget", members), ("holdout", non_members))
        }
        out[OPEN_UNLEARNING_KEYS[attack]] = {"agg_value": auc, "auc": auc, **sets}
    return out


def _attack_scores(rows: Records, attack: str) -> dict[str, Any]:
    """One set's scores of ``attack`` as open-unlearning's ``Attack.attack`` returns them."""
    scores = [float(r[attack]) for r in rows if attack in r]
    mean = sum(scores) / len(scores) if scores else None
    return {"agg_value": mean, "value_by_index": _by_index({"score": s} for s in scores)}
