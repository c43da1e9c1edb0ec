"""python -m lunar_exp.table on a real tiny sweep made by the CLI."""

import json

from PIL import Image

from lunar_exp.table.__main__ import main
from lunar_exp.table.runs import find_run_dirs
from tests.conftest import run_cli
from tests.legacy_directions import assert_directions_as_before


def test_real_tiny_sweep_end_to_end(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "method=lunar,ga", "seed=0,1", "+exp=smoke", f"hydra.sweep.dir={sweep_dir}"]
    result = run_cli(args, tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = find_run_dirs(sweep_dir)
    assert len(runs) == 4
    broken = sweep_dir / "toy" / "tiny" / "ga" / "seed1"
    (broken / "metrics.json").unlink()  # as a job killed before it finished leaves it
    out = tmp_path / "report" / "table.md"
    assert main([str(sweep_dir), "--out", str(out)]) == 0
    text = out.read_text()
    lunar = [
        json.loads((sweep_dir / "toy" / "tiny" / "lunar" / f"seed{s}" / "metrics.json").read_text())
        for s in (0, 1)
    ]
    mean_ds = (lunar[0]["deviation_score"] + lunar[1]["deviation_score"]) / 2
    row = next(line for line in text.splitlines() if line.startswith("| LUNAR"))
    assert row.startswith("| LUNAR | 2 | 0 |") and f"{mean_ds:.1f}" in row
    assert next(line for line in text.splitlines() if line.startswith("| GA")).startswith(
        "| GA | 1 | 1 |"
    )
    assert f"- {broken}" in text
    assert "Forget R1 ↓" in text and "DS ↓" in text  # the runs' own declarations
    for run in runs:
        if (run / "metrics.json").is_file():
            metrics = json.loads((run / "metrics.json").read_text())
            directions = json.loads((run / "metric_directions.json").read_text())
            assert_directions_as_before(metrics, directions)
    with Image.open(out.parent / "forget_retain.png") as image:
        image.verify()
    latex = tmp_path / "report" / "table.tex"
    assert main([str(sweep_dir), "--format", "latex", "--out", str(latex), "--no-plots"]) == 0
    assert r"\end{tabular}" in latex.read_text()
