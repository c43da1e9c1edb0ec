"""The benchmark scripts that write the committed tables in docs/, run on the tiny smoke setup."""

import argparse
import json
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from lunar_exp.metrics.text import deviation_score
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from tune_baselines import choose_best, grid_points, tuned_yaml  # noqa: E402


def run_script(name: str, args: list[str], tmp_path) -> subprocess.CompletedProcess:
    """Run ``scripts/<name>`` as the docs say, with the caches under tmp_path."""
    env = dict(os.environ, LUNAR_EXP_CACHE=str(tmp_path / "cache"), HYDRA_FULL_ERROR="0")
    cmd = [sys.executable, str(ROOT / "scripts" / name), *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_bench_methods_reports_ratios_to_lunar_and_the_target_floor(tmp_path):
    out = tmp_path / "bench"
    runs = tmp_path / "runs"
    args = ["--methods", "lunar,ga", "--out", str(out), "--runs-dir", str(runs), "+exp=smoke"]
    result = run_script("bench_methods.py", args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    # --runs-dir keeps each method's run directory (for python -m lunar_exp.table).
    assert {p.parts[-3] for p in runs.rglob("metrics.json")} == {"lunar", "ga"}
    report = json.loads(out.with_suffix(".json").read_text())
    lunar, ga = report["methods"]["lunar"], report["methods"]["ga"]
    assert lunar["unlearn_time_vs_lunar"] == 1.0 and lunar["ds_vs_lunar"] == 1.0
    assert ga["unlearn_time_vs_lunar"] == pytest.approx(ga["unlearn_s"] / lunar["unlearn_s"])
    assert ga["ds_vs_lunar"] == pytest.approx(
        ga["deviation_score"] / max(lunar["deviation_score"], 1e-9)
    )
    assert lunar["params_changed"] > 0 and ga["params_changed"] > lunar["params_changed"]
    target = report["target"]
    # The floor forgets everything and keeps the target's retain score: 100 * (1 - retain R1).
    assert target["ds_floor"] == pytest.approx(100 * (1 - target["retain_rouge1"]))
    assert target["deviation_score"] == pytest.approx(
        deviation_score(target["forget_rouge1"], target["retain_rouge1"])
    )
    table = out.with_suffix(".md").read_text()
    assert "| lunar |" in table and "| ga |" in table and "DS floor" in table


def test_tune_baselines_runs_the_grid_and_reports_its_choice(tmp_path):
    out = tmp_path / "tune"
    runs = tmp_path / "runs"
    args = ["--methods", "ga", "--lrs", "1e-4,1e-2", "--epochs", "1,2", "--out", str(out)]
    args += ["--runs-dir", str(runs)]
    result = run_script("tune_baselines.py", [*args, "+exp=smoke"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    points = {"lr1e-4_e1", "lr1e-4_e2", "lr1e-2_e1", "lr1e-2_e2"}
    assert {path.name for path in (runs / "ga").iterdir()} == points
    assert all(len(list((runs / "ga" / p).rglob("metrics.json"))) == 1 for p in points)
    report = json.loads(out.with_suffix(".json").read_text())
    grid = {(row["lr"], row["epochs"]) for row in report["rows"] if row["method"] == "ga"}
    assert grid == {(1e-4, 1), (1e-4, 2), (1e-2, 1), (1e-2, 2)}
    assert report["best"]["ga"] == choose_best(report["rows"], ["ga"])["ga"]
    assert "**yes**" in out.with_suffix(".md").read_text()


def test_tune_baselines_runs_grids_side_by_side_extends_them_and_reuses_finished_points(
    tmp_path,
):
    out, tuned, runs = tmp_path / "tune", tmp_path / "tuned", tmp_path / "runs"
    tuned.mkdir()
    args = ["--grid", "ga:1e-4:1", "--grid", "npo:1e-4,1e-2:1", "--jobs", "2", "--out", str(out)]
    args += ["--write-tuned", "smoketest", "--tuned-dir", str(tuned), "+exp=smoke", "threads=1"]
    result = run_script("tune_baselines.py", args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    points = [(row["method"], row["lr"], row["epochs"]) for row in report["rows"]]
    assert points == [("ga", 1e-4, 1), ("npo", 1e-4, 1), ("npo", 1e-2, 1)]  # the order given
    assert sorted(p.name for p in tuned.iterdir()) == ["ga_smoketest.yaml", "npo_smoketest.yaml"]
    for method in ("ga", "npo"):
        written = OmegaConf.load(tuned / f"{method}_smoketest.yaml")
        assert written.method.loop.lr == report["best"][method]["lr"]
        assert written.method.loop.epochs == 1
    # --extend runs only the points the report lacks and chooses over all rows.
    more = ["--grid", "ga:1e-4,1e-3:1", "--extend", "--out", str(out), "--runs-dir", str(runs)]
    result = run_script("tune_baselines.py", [*more, "+exp=smoke", "threads=1"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [p.relative_to(runs).parts[:2] for p in runs.rglob("metrics.json")] == [
        ("ga", "lr1e-3_e1")
    ]
    extended = json.loads(out.with_suffix(".json").read_text())
    assert extended["rows"][:3] == report["rows"] and len(extended["rows"]) == 4
    assert len(extended["commands"]) == 2 and "--extend" in extended["commands"][1]
    assert extended["best"]["ga"] == choose_best(extended["rows"], ["ga"])["ga"]
    # A point whose folder holds a finished run with the same overrides is reused, not re-run.
    again = ["--grid", "ga:1e-3:1", "--out", str(tmp_path / "again"), "--runs-dir", str(runs)]
    result = run_script("tune_baselines.py", [*again, "+exp=smoke", "threads=1"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(runs.rglob("metrics.json"))) == 1
    reused = json.loads((tmp_path / "again.json").read_text())["rows"]
    assert reused == [row for row in extended["rows"] if row["lr"] == 1e-3]


def test_tuned_yaml_keeps_the_lr_a_float_and_names_its_source():
    row = {"method": "ga", "lr": 3e-6, "epochs": 10, "deviation_score": 12.5}
    text = tuned_yaml(row, "tofu", "docs/tuning_tofu")
    assert text.startswith("# @package _global_\n") and "docs/tuning_tofu.md" in text
    assert "lr: 3.0e-6" in text
    assert OmegaConf.create(text).method.loop.lr == 3e-6
    for lr in (1.25e-5, 3e-4, 1e-3, 7.5e-6):  # no digit is lost
        text = tuned_yaml({**row, "lr": lr}, "tofu", "docs/tuning_tofu")
        assert OmegaConf.create(text).method.loop.lr == lr


def test_grid_points_join_per_method_grids_and_reject_bad_ones():
    def parse(*grids, methods="ga", lrs="1e-5", epochs="10"):
        return grid_points(
            argparse.Namespace(grid=list(grids), methods=methods, lrs=lrs, epochs=epochs)
        )

    assert parse() == [("ga", "1e-5", "10")]
    assert parse("ga:1e-5,3e-5:5", "rmu:1e-3:20,5") == [
        ("ga", "1e-5", "5"),
        ("ga", "3e-5", "5"),
        ("rmu", "1e-3", "20"),
        ("rmu", "1e-3", "5"),
    ]
    with pytest.raises(SystemExit, match="METHOD:LRS:EPOCHS"):
        parse("ga:1e-5")
    with pytest.raises(SystemExit, match="unknown method"):
        parse("gaa:1e-5:10")
    with pytest.raises(SystemExit, match=r"no training loop.*sweep_layers"):
        parse("lunar:1e-5:10")


def test_tuning_choice_is_the_lowest_ds_then_the_higher_retain_score():
    def row(method, lr, ds, retain):
        return {"method": method, "lr": lr, "deviation_score": ds, "retain/rouge1_recall": retain}

    rows = [
        row("ga", 1e-5, 30.0, 0.9),
        row("ga", 3e-5, 20.0, 0.7),  # lowest DS
        row("npo", 1e-5, 5.0, 0.8),
        row("npo", 3e-5, 5.0, 0.95),  # DS tie: the higher retain score wins
    ]
    best = choose_best(rows, ["ga", "npo"])
    assert best["ga"]["lr"] == 3e-5 and best["npo"]["lr"] == 3e-5


def test_tune_finetune_times_only_the_steps_the_items_allow(tmp_path):
    out = tmp_path / "steps"
    base = ["--base", "+exp=smoke", "--out", str(out)]
    result = run_script(
        "tune_finetune.py", [*base, "--point", "", "--time-steps", "1000"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    row = json.loads(out.with_suffix(".json").read_text())["step_times"][0]
    assert 0 < row["timed_steps"] < 1000 and row["cpu_s_per_step"] > 0
    huge = run_script(
        "tune_finetune.py",
        [*base, "--point", "finetune.batch_size=100000", "--time-steps", "2"],
        tmp_path,
    )
    assert huge.returncode != 0 and "Fix: lower finetune.batch_size" in huge.stderr
    assert "Traceback" not in huge.stderr
