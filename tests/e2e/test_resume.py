"""Resumable sweeps, end to end: a rerun runs only missing or changed jobs."""

import json

from tests.conftest import run_cli


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
