"""Sequential requests, end to end: seq/<k>/ metrics and the plot of a CLI run."""

import json

from PIL import Image

from tests.conftest import run_cli
from tests.legacy_directions import assert_directions_as_before


def test_three_requests_write_seq_metrics_and_the_plot(tmp_path):
    result = run_cli(
        ["+exp=smoke", "method.requests=[[person_00],[person_01],[person_02]]"], tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]
    run_dir = tmp_path / "out" / "toy" / "tiny" / "lunar" / "seed0"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for k in (1, 2, 3):
        for key in ("forget/rouge1_recall", "retain/rouge1_recall", "deviation_score"):
            assert f"seq/{k}/{key}" in metrics
        assert f"seq/{k}/request_{k}/forget/rouge1_recall" in metrics
    assert "seq/4/deviation_score" not in metrics
    assert metrics["data/n_forget"] == 6 and metrics["data/n_retain"] == 2
    assert metrics["deviation_score"] == metrics["seq/3/deviation_score"]
    directions = json.loads((run_dir / "metric_directions.json").read_text())
    assert directions["seq/2/request_1/forget/rouge1_recall"] is False
    assert directions["seq/3/retain/rouge1_recall"] is True
    assert_directions_as_before(metrics, directions)
    with Image.open(run_dir / "sequential.png") as image:
        assert image.size[0] > 500
