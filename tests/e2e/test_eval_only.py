"""Evaluation only (`method=none`, issue 18 item 1) end to end on the tiny model.

A run saved with `save_model=true` is scored again from its `unlearned_model/` directory with
`method=none finetune=none model=hf model.path=<dir>`: every after-unlearning key must come back
exactly. The second scoring of the same directory loads the stored evaluation (`before/cached`),
and a weight file changed in place (same size) is a different model.
"""

import json
from pathlib import Path

from lunar_exp.benchmarks.tofu.benchmark import read_reference
from tests.benchmarks.test_tofu import SMALL_TOFU_ARGS
from tests.conftest import needs_shared, run_cli

# Keys that differ between the two runs by nature: the first run's "before" side is the target
# model before unlearning (the second run has no such model: both of its sides are the
# checkpoint), its method's own numbers (LUNAR's edit report), and timings, memory and caching.
# Fluency (the target model's NLL of the answers) is included: the saved directory records the
# run's target as its fluency judge (lunar_exp/fluency.py).
BY_NATURE = ("before/", "lunar/", "unlearn/", "time/", "resources/", "finetune/")


def metrics_of(root: Path) -> dict:
    (path,) = root.rglob("metrics.json")
    return json.loads(path.read_text())


def score_checkpoint(model_dir: Path, tmp_path: Path, name: str) -> dict:
    args = ["+exp=smoke", "method=none", "finetune=none", "model=hf", f"model.path={model_dir}"]
    shared_cache = f"paths.cache_dir={tmp_path / 'cache'}"  # the stored evaluations, shared
    result = run_cli([*args, shared_cache], tmp_path / name, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return metrics_of(tmp_path / name / "out")


def test_a_saved_unlearned_model_scores_as_its_run_and_its_evaluation_is_cached(tmp_path):
    first = run_cli(["+exp=smoke", "save_model=true"], tmp_path / "unlearn", timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    (model_dir,) = (tmp_path / "unlearn" / "out").rglob("unlearned_model")
    unlearned = metrics_of(tmp_path / "unlearn" / "out")

    scored = score_checkpoint(model_dir, tmp_path, "score")
    after_keys = [k for k in unlearned if not k.startswith(BY_NATURE)]
    assert "forget/rouge1_recall" in after_keys and "deviation_score" in after_keys
    assert "forget/fluency_nll" in after_keys and (model_dir / "fluency_judge.json").is_file()
    assert {k: scored.get(k) for k in after_keys} == {k: unlearned[k] for k in after_keys}
    # evaluated once: the "before" side is the same evaluation of the same model
    assert {k: scored[f"before/{k}"] for k in after_keys if f"before/{k}" in scored} == {
        k: scored[k] for k in after_keys if f"before/{k}" in scored
    }
    assert scored["before/cached"] is False and scored["time/unlearn_s"] < 1.0
    run_dir = next((tmp_path / "score" / "out").rglob("metrics.json")).parent
    assert (run_dir / "generations.jsonl").is_file()
    row = json.loads((run_dir / "generations.jsonl").read_text().splitlines()[0])
    assert row["response_before"] == row["response_after"]

    again = score_checkpoint(model_dir, tmp_path, "again")
    assert again["before/cached"] is True
    assert {k: again[k] for k in after_keys} == {k: scored[k] for k in after_keys}

    weights = model_dir / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0x01  # same size, one bit of the last weight's bytes flipped
    weights.write_bytes(bytes(data))
    changed = score_checkpoint(model_dir, tmp_path, "changed")
    assert changed["before/cached"] is False


@needs_shared()
def test_a_tofu_run_writes_its_evaluation_in_open_unlearnings_format(tmp_path):
    args = [*SMALL_TOFU_ARGS, "benchmark.forget_authors=null", "method=none", "finetune=none"]
    result = run_cli(args, tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_file,) = (tmp_path / "out").rglob("metrics.json")
    metrics = json.loads(metrics_file.read_text())
    record = json.loads((metrics_file.parent / "eval_ou.json").read_text())
    assert record["forget_truth_ratio"]["agg_value"] == metrics["forget/truth_ratio"]
    assert record["model_utility"]["agg_value"] == metrics["model_utility"]
    assert record["mia_min_k"]["agg_value"] == metrics["mia/min_k_auc"]
    # open-unlearning's reader side: this project's reader takes it as a retain reference
    reference = read_reference(metrics_file.parent / "eval_ou.json")
    assert len(reference["forget_truth_ratio"]) == 40 == metrics["data/n_forget"]
    assert reference["min_k_auc"] == metrics["mia/min_k_auc"]
