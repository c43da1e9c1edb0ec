"""`eval_ou.json`: a run's evaluation in open-unlearning's format (issue 18, item 2, writing).

The TOFU file written from a real evaluation on the tiny model is read back by our own reader as
`benchmark.retain_reference` and must give the forget quality of the equivalent lunar_exp
reference; the MUSE file must give privleak the same AUCs; the key names are open-unlearning's
metric names (copied from its configs/eval/{tofu,muse}_metrics/*.yaml `@package` lines).
"""

import json
import math

import pytest

from lunar_exp.benchmarks.muse.benchmark import read_reference_aucs
from lunar_exp.bookkeeping.open_unlearning import FILE, eval_ou_record, write_eval_ou
from lunar_exp.interfaces import EvalResult
from lunar_exp.metrics.mia import ATTACKS
from tests.benchmarks.test_tofu import small_tofu
from tests.conftest import needs_shared

# open-unlearning's metric names (locuslab/open-unlearning @ d3d7cf9, configs/eval/*_metrics).
TOFU_NAMES = {
    "exact_memorization",
    "extraction_strength",
    "forget_Q_A_PARA_Prob",
    "forget_Q_A_PARA_ROUGE",
    "forget_Q_A_PERT_Prob",
    "forget_Q_A_PERT_ROUGE",
    "forget_Q_A_Prob",
    "forget_Q_A_ROUGE",
    "forget_Q_A_gibberish",
    "forget_truth_ratio",
    "forget_quality",
    "mia_gradnorm",
    "mia_loss",
    "mia_min_k",
    "mia_min_k_plus_plus",
    "mia_reference",
    "mia_zlib",
    "model_utility",
    "privleak",
    "ra_Q_A_PERT_Prob",
    "ra_Q_A_Prob",
    "ra_Q_A_Prob_normalised",
    "ra_Q_A_ROUGE",
    "ra_Truth_Ratio",
    "retain_Q_A_PARA_Prob",
    "retain_Q_A_PERT_Prob",
    "retain_Q_A_Prob",
    "retain_Q_A_ROUGE",
    "retain_Truth_Ratio",
    "wf_Q_A_PERT_Prob",
    "wf_Q_A_Prob",
    "wf_Q_A_Prob_normalised",
    "wf_Q_A_ROUGE",
    "wf_Truth_Ratio",
}
MUSE_NAMES = {
    "exact_memorization",
    "extraction_strength",
    "forget_gibberish",
    "forget_knowmem_ROUGE",
    "forget_verbmem_ROUGE",
    "mia_gradnorm",
    "mia_loss",
    "mia_min_k",
    "mia_min_k_plus_plus",
    "mia_reference",
    "mia_zlib",
    "privleak",
    "retain_knowmem_ROUGE",
}


@pytest.fixture(scope="module")
def tofu_run(tmp_path_factory):
    """forget01 whole (40 items, the count an open-unlearning log of forget01 holds), tiny model."""
    from lunar_exp.models import tiny_llama

    bench = small_tofu(forget_authors=None)
    loaded = bench.load()
    result = bench.evaluate(tiny_llama(seed=0), loaded.eval_sets, None)
    run_dir = tmp_path_factory.mktemp("run")
    write_eval_ou(run_dir, "tofu", result)
    return result, run_dir / FILE


@needs_shared()
def test_tofu_eval_ou_uses_open_unlearnings_names_and_schema(tofu_run):
    result, path = tofu_run
    record = json.loads(path.read_text())
    assert set(record) <= TOFU_NAMES
    for name in ("forget_truth_ratio", "forget_Q_A_Prob", "forget_Q_A_ROUGE", "model_utility"):
        assert name in record
    assert {f"mia_{a}" for a in ATTACKS if a != "reference"} <= set(record)
    metrics, forget = result.metrics, result.generations["forget"]
    assert record["model_utility"] == {"agg_value": metrics["model_utility"]}
    assert record["forget_quality"] == {"agg_value": None}  # no reference: missing, as theirs
    ratios = record["forget_truth_ratio"]
    assert ratios["agg_value"] == metrics["forget/truth_ratio"]
    assert list(ratios["value_by_index"]) == [str(i) for i in range(40)]
    assert [v["score"] for v in ratios["value_by_index"].values()] == [
        r["truth_ratio"] for r in forget
    ]
    prob = record["forget_Q_A_Prob"]["value_by_index"]["3"]
    assert prob == {"prob": math.exp(-forget[3]["answer_nll"]), "avg_loss": forget[3]["answer_nll"]}
    rouge = record["forget_Q_A_ROUGE"]
    assert rouge["agg_value"] == metrics["forget/rougeL_recall"]  # their rouge_type rougeL_recall
    assert rouge["value_by_index"]["0"]["generation"] == forget[0]["response"]
    mia = record["mia_min_k"]
    assert mia["agg_value"] == mia["auc"] == metrics["mia/min_k_auc"]
    assert len(mia["forget"]["value_by_index"]) == 40
    assert len(mia["holdout"]["value_by_index"]) == len(result.generations["holdout"])
    assert record["privleak"] == {"agg_value": metrics["privleak"]}


@needs_shared()
def test_tofu_eval_ou_read_back_gives_the_forget_quality_of_the_lunar_exp_reference(
    tofu_run, tmp_path, tiny_target
):
    result, path = tofu_run
    ours = tmp_path / "retain_reference.json"
    ratios = [r["truth_ratio"] for r in result.generations["forget"]]
    ours.write_text(json.dumps({"forget_truth_ratio": ratios}))
    ou_bench, ours_bench = (
        small_tofu(forget_authors=None, retain_reference=str(p)) for p in (path, ours)
    )
    ou_loaded, ours_loaded = ou_bench.load(), ours_bench.load()
    assert ou_loaded.retain_reference is not None
    assert ou_loaded.retain_reference["forget_truth_ratio"] == ratios
    assert ou_loaded.retain_reference["min_k_auc"] == result.metrics["mia/min_k_auc"]
    # another model scored against each reference (the fine-tuned tiny target)
    ou_fq = ou_bench.evaluate(tiny_target, ou_loaded.eval_sets, ou_loaded.retain_reference)
    ours_fq = ours_bench.evaluate(tiny_target, ours_loaded.eval_sets, ours_loaded.retain_reference)
    assert ou_fq.metrics["forget_quality"] is not None
    assert ou_fq.metrics["forget_quality"] == ours_fq.metrics["forget_quality"]
    assert ou_fq.metrics["forget_quality"] < 1.0  # another model: the test can tell them apart


def muse_result() -> EvalResult:
    """A MUSE evaluation as MUSEBenchmark.evaluate returns it (keys and rows), by hand."""
    knowmem = [
        {"split": "forget_knowmem", "question": "q", "ground_truth": "a", "response": "a b"}
        | {"rougeL_f1": 0.5, "rouge1_recall": 1.0}
    ]
    metrics = {
        "forget/knowmem_rougeL_f1": 0.5,
        "retain/knowmem_rougeL_f1": 0.25,
        "forget/verbmem_rougeL_f1": 0.125,
        "mia/min_k_auc": 0.75,
        "mia/loss_auc": 0.625,
        "privleak": -50.0,
    }
    members = [{"split": "privleak_forget", "question": "t", "min_k": s, "loss": s} for s in (1, 2)]
    non_members = [{"split": "privleak_holdout", "question": "u", "min_k": 3.0, "loss": 3.0}]
    verbmem = [{"split": "forget_verbmem", "question": "…p", "ground_truth": "c", "response": "c"}]
    generations = {
        "forget_knowmem": knowmem,
        "retain_knowmem": [{**knowmem[0], "split": "retain_knowmem", "rougeL_f1": 0.25}],
        "forget_verbmem": [{**verbmem[0], "rougeL_f1": 0.125}],
        "privleak_forget": members,
        "privleak_holdout": non_members,
    }
    return EvalResult(metrics, generations, dict.fromkeys(metrics))


def test_muse_eval_ou_gives_privleak_its_aucs_under_open_unlearnings_names(tmp_path):
    write_eval_ou(tmp_path, "muse", muse_result())
    record = json.loads((tmp_path / FILE).read_text())
    assert set(record) == {
        "forget_knowmem_ROUGE",
        "retain_knowmem_ROUGE",
        "forget_verbmem_ROUGE",
        "privleak",
        "mia_min_k",
        "mia_loss",
    }
    assert set(record) <= MUSE_NAMES
    assert record["forget_knowmem_ROUGE"]["value_by_index"]["0"]["rougeL_f1"] == 0.5
    assert record["mia_min_k"]["forget"] == {
        "agg_value": 1.5,
        "value_by_index": {"0": {"score": 1.0}, "1": {"score": 2.0}},
    }
    assert read_reference_aucs(tmp_path / FILE) == {"min_k": 0.75, "loss": 0.625}


def test_benchmarks_without_an_open_unlearning_form_get_no_file(tmp_path):
    result = EvalResult({"forget/rouge1_recall": 0.5}, {}, {"forget/rouge1_recall": False})
    assert eval_ou_record("synthetic", result) is None
    write_eval_ou(tmp_path, "synthetic", result)
    assert not (tmp_path / FILE).exists()
