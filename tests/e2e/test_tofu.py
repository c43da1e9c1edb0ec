"""TOFU end to end: the trained retain reference and the offline GPU experiment."""

import json

from lunar_exp.metrics.mia import ATTACKS
from tests.benchmarks.test_tofu import SMALL_TOFU_ARGS
from tests.conftest import needs_shared, run_cli
from tests.legacy_directions import assert_directions_as_before


@needs_shared()
def test_trained_retain_model_reference_reaches_every_evaluation(tmp_path):
    args = [*SMALL_TOFU_ARGS, "benchmark.retain_reference=finetune", "attack=[layer_skip]"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_file,) = (tmp_path / "out").rglob("metrics.json")
    metrics = json.loads(metrics_file.read_text())
    for prefix in ("before/", "", "attack/layer_skip/"):
        assert metrics[f"{prefix}forget_quality"] is not None
    record = json.loads((metrics_file.parent / "retain_reference.json").read_text())
    assert len(record["forget_truth_ratio"]) == 20
    # the whole membership suite, the Reference attack against the trained retain model included
    for prefix in ("before/", "", "attack/layer_skip/"):
        for attack in ATTACKS:
            assert 0 <= metrics[f"{prefix}mia/{attack}_auc"] <= 1
            assert isinstance(metrics[f"{prefix}privleak/{attack}"], float)
    assert set(record["mia_auc"]) == set(ATTACKS)
    rows = [json.loads(line) for line in (metrics_file.parent / "generations.jsonl").open()]
    holdout = [row for row in rows if row["split"] == "holdout"]
    assert len(holdout) == 6 and {"reference_before", "gradnorm_after"} <= set(holdout[0])
    directions = json.loads((metrics_file.parent / "metric_directions.json").read_text())
    assert directions["forget_quality"] is True and directions["privleak"] is None
    assert_directions_as_before(metrics, directions)
    without = run_cli([*args, "finetune=none"], tmp_path / "none", timeout=120)
    assert without.returncode == 2 and "but finetune=none" in without.stderr


@needs_shared()
def test_attack_eval_core_scores_attacks_on_forget_and_retain_only(tmp_path):
    args = [*SMALL_TOFU_ARGS, "attack=[layer_skip]", "attack_eval=core"]
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_file,) = (tmp_path / "out").rglob("metrics.json")
    metrics = json.loads(metrics_file.read_text())
    attacked = {key.removeprefix("attack/layer_skip/") for key in metrics if "layer_skip/" in key}
    assert {"forget/rouge1_recall", "retain/rouge1_recall", "deviation_score"} <= attacked
    assert not [key for key in attacked if key.startswith(("real_authors/", "mia/", "model_util"))]
    assert "real_authors/rouge1_recall" in metrics and "model_utility" in metrics  # after: full
    assert "attack/worst/deviation_score" in metrics
    bad = run_cli([*args, "attack_eval=fast"], tmp_path / "bad", timeout=120)
    assert bad.returncode != 0 and "attack_eval" in bad.stderr and "core" in bad.stderr


def test_tofu_llama_offline_fails_at_once_naming_model_and_data_paths(tmp_path):
    # HF_HUB_OFFLINE makes the run behave as on a machine without internet, even if there is one
    result = run_cli(["+exp=tofu_llama"], tmp_path, timeout=120, env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 2
    assert "model.path=/local/model/dir" in result.stderr
    assert "benchmark.path=/local/data/dir" in result.stderr
    assert not list(tmp_path.rglob("metrics.json"))
