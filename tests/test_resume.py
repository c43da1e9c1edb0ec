"""Resumable sweeps (bookkeeping/resume.py): finished jobs of the same config are skipped."""

import json

from lunar_exp.bookkeeping import resume
from tests.conftest import compose_config


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
