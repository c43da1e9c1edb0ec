"""End-to-end runs of `python -m lunar_exp` in a subprocess."""

import json

import pytest
import torch

from lunar_exp.methods import method_options
from tests.conftest import run_cli
from tests.legacy_directions import assert_directions_as_before

REQUIRED_KEYS = [
    "before/forget/rouge1_recall",
    "before/retain/rouge1_recall",
    "before/deviation_score",
    "forget/rouge1_recall",
    "retain/rouge1_recall",
    "forget/rougeL_recall",
    "retain/rougeL_recall",
    "deviation_score",
    "forget/refusal_rate",
    "retain/refusal_rate",
    "time/finetune_s",
    "time/unlearn_s",
    "time/eval_s",
    "finetune/cached",
]


def run_dir(tmp_path):
    return tmp_path / "out" / "toy" / "tiny" / "lunar" / "seed0"


def test_smoke_run_writes_complete_outputs_and_reuses_the_cache(tmp_path):
    first = run_cli(["+exp=smoke"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    out = run_dir(tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert not [k for k in REQUIRED_KEYS if k not in metrics]
    assert metrics["finetune/cached"] is False
    lines = [json.loads(x) for x in (out / "generations.jsonl").read_text().splitlines()]
    assert {row["split"] for row in lines} == {"forget", "retain"}
    assert {"question", "ground_truth", "response_before", "response_after"} <= set(lines[0])
    assert (out / "lunar_exp.log").is_file() and (out / ".hydra" / "config.yaml").is_file()
    assert json.loads((out / "unlearn_info.json").read_text())["layers"] == [2]
    environment = json.loads((out / "environment.json").read_text())
    assert environment["run"]["packages"]["torch"] == torch.__version__
    assert environment["target_model"]["packages"] == environment["run"]["packages"]
    assert (out / "unlearn_vectors.safetensors").is_file()
    assert "Deviation Score ↓" in first.stdout
    # every metrics.json key has a declared direction, the same as the old table's
    directions = json.loads((out / "metric_directions.json").read_text())
    assert_directions_as_before(metrics, directions)
    assert directions["before/deviation_score"] is False and directions["forget/mrr"] is False
    assert directions["forget/refusal_rate"] is True and directions["retain/answer_nll"] is False

    second = run_cli(["+exp=smoke", "save_model=true"], tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    rerun = json.loads((out / "metrics.json").read_text())
    assert rerun["finetune/cached"] is True and rerun["before/cached"] is True
    assert rerun["before/deviation_score"] == metrics["before/deviation_score"]
    # the cached target keeps the environment of the run that fine-tuned it
    cached_from = json.loads((out / "environment.json").read_text())["target_model"]
    assert cached_from == environment["target_model"]
    # the stored target-model evaluation keeps its directions
    assert json.loads((out / "metric_directions.json").read_text()) == directions
    assert "Target model loaded from cache" in (out / "lunar_exp.log").read_text()
    assert (out / "unlearned_model" / "model.safetensors").is_file()
    assert (out / "metrics.previous.json").is_file()  # the first run's results, moved aside


@pytest.mark.parametrize(
    "args,message",
    [
        (["model.path=/nonexistent"], "model.path='/nonexistent' does not exist"),
        (["benchmark.forget_edges=[NO_SUCH_EDGE]"], "Forget edge(s) ['NO_SUCH_EDGE'] not found"),
        (["+exp=smoke", "method.layers=[7]"], "Layer index [7] is out of range for a 4-layer"),
        (["+exp=smoke", "method.solver=newton"], "method.solver='newton': use closed_form"),
    ],
)
def test_bad_input_fails_at_once_with_one_clear_line(tmp_path, args, message):
    result = run_cli(args, tmp_path, timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("lunar_exp: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert message in errors[0]
    assert not list((tmp_path / "out").rglob("metrics.json"))


def test_unknown_group_option_is_rejected(tmp_path):
    result = run_cli(["model=nosuchmodel"], tmp_path, timeout=120)
    assert result.returncode != 0
    assert "nosuchmodel" in result.stderr
    assert not list((tmp_path / "out").rglob("metrics.json"))


def test_help_lists_every_group():
    import subprocess
    import sys

    from tests.conftest import ROOT

    out = subprocess.run(
        [sys.executable, "-m", "lunar_exp", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    for group in ["model", "benchmark", "method", "finetune", "logger", "paths"]:
        assert f"{group}:" in out
    assert "smollm2_135m" in out and "synthetic" in out and "qa_json" in out


@pytest.mark.slow
def test_default_run_on_the_embedded_model(tmp_path):
    result = run_cli([], tmp_path, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out" / "synthetic" / "smollm2_135m" / "lunar" / "seed0"
    m = json.loads((out / "metrics.json").read_text())
    assert m["before/forget/rouge1_recall"] >= 0.9 and m["before/retain/rouge1_recall"] >= 0.9
    assert m["forget/rouge1_recall"] <= 0.1 and m["retain/rouge1_recall"] >= 0.9
    assert m["forget/refusal_rate"] >= 0.9 and m["retain/refusal_rate"] <= 0.05
    assert m["deviation_score"] <= 15


def test_multirun_over_every_method_fine_tunes_once(tmp_path):
    methods = ",".join(method_options())
    result = run_cli(["-m", "+exp=smoke", f"method={methods}"], tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    found = sorted((tmp_path / "out" / "multirun").rglob("metrics.json"))
    assert len(found) == len(method_options())
    runs = {p.parent.parent.name: json.loads(p.read_text()) for p in found}
    assert set(runs) == set(methods.split(","))
    for metrics in runs.values():
        assert not [k for k in REQUIRED_KEYS if k not in metrics]
        assert metrics["unlearn/params_changed"] > 0
    for path in found:  # every method's metrics have their declared directions
        directions = json.loads((path.parent / "metric_directions.json").read_text())
        assert_directions_as_before(json.loads(path.read_text()), directions)
    assert sum(not m["finetune/cached"] for m in runs.values()) == 1
