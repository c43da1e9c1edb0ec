"""WMDP end to end: a run with the MMLU utility through the CLI."""

import json

from tests.benchmarks.test_wmdp import NEWS
from tests.conftest import needs_shared, run_cli
from tests.legacy_directions import assert_directions_as_before


@needs_shared()
def test_wmdp_run_with_mmlu_utility_end_to_end(tmp_path):
    result = run_cli(
        [
            "+exp=smoke",
            "benchmark=wmdp",
            "benchmark.subsets=[cyber]",
            "benchmark.mmlu=false",
            "benchmark.limit=4",
            f"benchmark.forget_corpus={NEWS / 'raw' / 'forget.json'}",
            f"benchmark.retain_corpus={NEWS / 'privleak' / 'retain2.json'}",
            "benchmark.n_forget=6",
            "benchmark.n_retain=6",
            "benchmark.chunk_words=40",
            "benchmark.n_reference=4",
            "utility=mmlu",
            "utility.subjects=[anatomy]",
            "utility.limit=4",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (metrics_file,) = (tmp_path / "out").rglob("metrics.json")
    metrics = json.loads(metrics_file.read_text())
    for key in ("wmdp_cyber/acc", "utility/mmlu/acc"):
        assert 0.0 <= metrics[key] <= 1.0
        assert 0.0 <= metrics[f"before/{key}"] <= 1.0
    assert "mmlu/acc" not in metrics and metrics["data/n_forget"] == 6
    directions = json.loads((metrics_file.parent / "metric_directions.json").read_text())
    assert directions["wmdp_cyber/acc"] is False and directions["before/wmdp_cyber/acc"] is False
    assert directions["utility/mmlu/acc"] is True and directions["utility/mmlu/acc_stderr"] is None
    assert_directions_as_before(metrics, directions)
    rows = (metrics_file.parent / "generations.jsonl").read_text().splitlines()
    splits = [json.loads(row)["split"] for row in rows]
    assert splits.count("utility/mmlu_anatomy") == 4 and splits.count("wmdp_cyber") == 4
