"""Resumable sweeps (bookkeeping/resume.py): finished jobs of the same config are skipped."""

import json

from lunar_exp.bookkeeping import resume
from tests.conftest import compose_config, run_cli


def finished_run(tmp_path, overrides):
    cfg = compose_config(["+exp=smoke", *overrides])
    resume.write_run_config(tmp_path, cfg)
    (tmp_path / "metrics.json").write_text(json.dumps({"deviation_score": 1.0}))
    return cfg


def test_finished_run_with_the_same_config_is_complete(tmp_path):
    cfg = finished_run(tmp_path, [])
    assert resume.finished_metrics(tmp_path, cfg) == {"deviation_score": 1.0}
    # keys that do not change results are ignored
    same = compose_config(["+exp=smoke", "threads=2", "resume=true", "paths.cache_dir=/elsewhere"])
    assert resume.finished_metrics(tmp_path, same) is not None


def test_changed_missing_or_broken_results_are_not_complete(tmp_path):
    cfg = finished_run(tmp_path, [])
    changed = compose_config(["+exp=smoke", "method.coeffs=[3.0]"])
    assert resume.finished_metrics(tmp_path, changed) is None
    (tmp_path / "metrics.json").write_text('{"deviation_score": 1.')  # cut short
    assert resume.finished_metrics(tmp_path, cfg) is None
    (tmp_path / "metrics.json").unlink()
    assert resume.finished_metrics(tmp_path, cfg) is None


def test_resume_false_always_runs(tmp_path):
    finished_run(tmp_path, [])
    cfg = compose_config(["+exp=smoke", "resume=false"])
    assert resume.completed_run(cfg, tmp_path) is None


def test_rerunning_a_sweep_runs_only_missing_or_changed_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", "+exp=smoke", "method=lunar,ga", f"hydra.sweep.dir={sweep}"]
    first = run_cli(args, tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    lunar, ga = (sweep / "toy" / "tiny" / m / "seed0" for m in ("lunar", "ga"))
    assert (lunar / "run_config.json").is_file() and (ga / "run_config.json").is_file()

    (lunar / "metrics.json").unlink()  # as if the job had been killed
    ga_written = (ga / "metrics.json").stat().st_mtime_ns
    second = run_cli(args, tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    output = second.stdout + second.stderr
    assert f"Run already complete: {ga} (resume=true); skipping" in output
    assert f"Run already complete: {lunar}" not in output
    assert json.loads((lunar / "metrics.json").read_text())["deviation_score"] is not None
    assert (ga / "metrics.json").stat().st_mtime_ns == ga_written

    # a changed config in the same run dir (swept keys get their own dir; force the same one)
    same_dir = "hydra.sweep.subdir=toy/tiny/lunar/seed0"
    changed = run_cli(
        [*args[:2], "method=lunar", "method.coeffs=[3.0]", args[3], same_dir], tmp_path
    )
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert "Run already complete" not in changed.stdout + changed.stderr
    assert json.loads((lunar / "run_config.json").read_text())["method"]["coeffs"] == [3.0]
    assert (lunar / "metrics.previous.json").is_file()  # the earlier result, moved aside
