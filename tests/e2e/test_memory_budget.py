"""Memory bound of inference batches: a bad budget stops the CLI run at once."""

from tests.conftest import run_cli


def test_the_run_rejects_a_bad_budget_at_once(tmp_path):
    result = run_cli(["+exp=smoke", "batch_tokens=0"], tmp_path, timeout=120)
    assert result.returncode == 2
    assert "lunar_exp: error: batch_tokens=0 must be positive" in result.stderr
    assert not list((tmp_path / "out").rglob("metrics.json"))
