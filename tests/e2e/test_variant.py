"""Sweep variants, end to end: swept settings get their own dirs and table rows."""

from lunar_exp.table.__main__ import main
from lunar_exp.table.runs import find_run_dirs, read_run_dir
from tests.conftest import run_cli


def test_a_swept_setting_gets_its_own_dir_and_table_row(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "+exp=smoke", "method.coeffs=[2.0],[8.0]", "threads=1"]
    result = run_cli([*args, f"hydra.sweep.dir={sweep_dir}"], tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = sorted(str(p.relative_to(sweep_dir)) for p in find_run_dirs(sweep_dir))
    assert runs == [
        "toy/tiny/lunar/seed0/method.coeffs=[2.0]",
        "toy/tiny/lunar/seed0/method.coeffs=[8.0]",
    ]
    assert {read_run_dir(sweep_dir / run).labels["variant"] for run in runs} == {
        "method.coeffs=[2.0]",
        "method.coeffs=[8.0]",
    }
    out = tmp_path / "table.md"
    assert main([str(sweep_dir), "--out", str(out), "--no-plots"]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| LUNAR")]
    assert [row.split(" | ")[1:3] for row in rows] == [
        ["method.coeffs=[2.0]", "1"],
        ["method.coeffs=[8.0]", "1"],
    ]


def test_submitit_jobs_resolve_the_variant_subdir(tmp_path):
    # submitit pickles the task function and resolves the run dir in the job's own process, where
    # the ${lunar_variant:} resolver must exist too (SLURM takes the same path).
    sweep_dir = tmp_path / "sweep"
    args = ["-m", "+exp=smoke", "hydra/launcher=local", "method.coeffs=[8.0]", "threads=1"]
    result = run_cli([*args, f"hydra.sweep.dir={sweep_dir}"], tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = sweep_dir / "toy" / "tiny" / "lunar" / "seed0" / "method.coeffs=[8.0]"
    assert (run_dir / "metrics.json").is_file()
