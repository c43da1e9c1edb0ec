"""python -m lunar_exp.table: synthetic run dirs (hand-checked numbers) and one real tiny sweep."""

import json
import math

import pandas as pd
import pytest
import yaml
from matplotlib.figure import Figure
from PIL import Image

from lunar_exp.table.__main__ import main
from lunar_exp.table.layout import load_layout
from lunar_exp.table.plots import _bars, series_colors
from lunar_exp.table.render import build_table, cell, to_markdown
from lunar_exp.table.runs import find_run_dirs, read_run_dir
from lunar_exp.table.wandb_runs import record_from_wandb
from tests.legacy_directions import old_higher_is_better


def fake_run(
    root,
    method,
    seed,
    metrics=None,
    attack=None,
    info=None,
    benchmark="toy",
    variant="",
    directions=True,
):
    """A run dir as Hydra and the pipeline leave it; metrics=None is a failed run.

    ``directions``: write ``metric_directions.json`` as the pipeline does (the evaluations'
    declarations, here the rule they follow); False leaves it out, as runs made before it did.
    """
    run = root / benchmark / "tiny" / method / f"seed{seed}" / variant
    (run / ".hydra").mkdir(parents=True)
    target = {"_target_": f"lunar_exp.methods.{method}.X"}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "method": target}))
    choices = {"benchmark": benchmark, "model": "tiny", "method": method, "hydra/launcher": "basic"}
    if attack:
        choices["attack"] = attack
    task = [f"method={method}", f"seed={seed}", "threads=1", *([variant] if variant else [])]
    hydra = {"hydra": {"runtime": {"choices": choices}, "overrides": {"task": task}}}
    (run / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
        if directions:
            declared = {key: old_higher_is_better(key) for key in metrics}
            (run / "metric_directions.json").write_text(json.dumps(declared))
    if info is not None:
        (run / "unlearn_info.json").write_text(json.dumps(info))
    return run


def result(forget, retain, **extra):
    ds = 100 * math.hypot(forget, 1 - retain)
    return {
        "forget/rouge1_recall": forget,
        "retain/rouge1_recall": retain,
        "deviation_score": ds,
        "forget/refusal_rate": 1 - forget,
        "before/forget/rouge1_recall": 1.0,
        "before/retain/rouge1_recall": 1.0,
        "finetune/cached": True,
        "privleak/reference": "default 0.5",
        **extra,
    }


def layer_sweep():
    return {
        str(layer): {
            "forget_refusal": layer / 4,
            "retain_refusal": 0.0,
            "retain_rouge1": 1 - layer / 8,
            "score": layer / 4 - layer / 16,
        }
        for layer in range(4)
    }


@pytest.fixture
def sweep(tmp_path):
    """LUNAR seeds 0, 1; GA seed 0 finished, seed 1 failed (no metrics.json)."""
    attacked = {
        "attack/layer_skip/forget/rouge1_recall": 0.4,
        "attack/layer_skip/deviation_score": 41,
    }
    fake_run(
        tmp_path,
        "lunar",
        0,
        result(0.0, 0.9, **attacked),
        info={"layers": [2], "layer_sweep": layer_sweep()},
    )
    fake_run(
        tmp_path,
        "lunar",
        1,
        result(0.2, 1.0, **attacked),
        info={"layers": [2], "layer_sweep": None},
    )
    fake_run(tmp_path, "ga", 0, result(0.5, 0.8, **{"attack/layer_skip/forget/rouge1_recall": 0.6}))
    fake_run(tmp_path, "ga", 1)
    return tmp_path


def test_run_dirs_are_found_and_failed_runs_kept(sweep):
    records = [read_run_dir(p) for p in find_run_dirs(sweep)]
    assert len(records) == 4
    failed = [r for r in records if r.failed]
    assert [r.source for r in failed] == [str(sweep / "toy" / "tiny" / "ga" / "seed1")]
    lunar = next(r for r in records if r.labels["method"] == "lunar" and r.seed == 1)
    assert dict(lunar.labels) == {
        "benchmark": "toy",
        "model": "tiny",
        "method": "lunar",
        "variant": "default",
        "attack": "none",
    }


def test_markdown_mean_std_directions_best_and_failed(sweep):
    layout = load_layout()
    table = build_table([read_run_dir(p) for p in find_run_dirs(sweep)], layout)
    text = to_markdown(table, layout)
    header = next(line for line in text.splitlines() if line.startswith("| Method"))
    assert header.startswith("| Method | n | n_failed | Forget R1 ↓ | Retain R1 ↑ | DS ↓ |")
    assert (
        "Forget refusal ↑" in header and "Layer skip R1 ↓" in header and "Layer skip DS ↓" in header
    )
    assert "MRR" not in header  # no run has it
    lunar = next(line for line in text.splitlines() if line.startswith("| LUNAR"))
    ga = next(line for line in text.splitlines() if line.startswith("| GA"))
    # LUNAR forget R1: mean(0.0, 0.2) = 0.1, sample std = 0.1414; GA: 0.5 from one finished seed.
    assert "| LUNAR | 2 | 0 | **0.100 ± 0.141** |" in lunar
    assert "| GA | 1 | 1 | 0.500 |" in ga
    # retain R1: LUNAR mean(0.9, 1.0) = 0.95 beats GA 0.8; DS: LUNAR mean(10, 20) = 15.0 ± 7.1
    assert "**0.950 ± 0.071**" in lunar and "**15.0 ± 7.1**" in lunar
    # attack columns: LUNAR 0.4 (↓ best) vs GA 0.6; GA has no attacked DS
    assert "**0.400 ± 0.000**" in lunar and ga.rstrip(" |").endswith("–")
    assert "benchmark toy, model tiny" in text.splitlines()[0]
    assert (
        str(sweep / "toy" / "tiny" / "ga" / "seed1") in text.split("Failed or unfinished runs")[1]
    )


def test_cli_latex_csv_metrics_option_and_plots(sweep, tmp_path):
    out = tmp_path / "paper" / "table.tex"
    assert main([str(sweep), "--format", "latex", "--out", str(out)]) == 0
    latex = out.read_text()
    assert r"\toprule" in latex and r"\textbf{0.100 $\pm$ 0.141}" in latex
    assert r"Forget R1 $\downarrow$" in latex and r"n\_failed" in latex
    assert "% failed (no metrics.json):" in latex
    for name in ("forget_retain.png", "layer_sweep.png", "attacks.png"):
        with Image.open(out.parent / name) as image:
            image.verify()
            assert image.format == "PNG"
    csv = tmp_path / "table.csv"
    keys = ["deviation_score", "forget/rouge1_recall"]
    assert (
        main([str(sweep), "--format", "csv", "--metrics", *keys, "--out", str(csv), "--no-plots"])
        == 0
    )
    frame = pd.read_csv(csv).set_index("method")
    assert list(frame.columns)[-4:] == [
        "deviation_score mean",
        "deviation_score std",
        "forget/rouge1_recall mean",
        "forget/rouge1_recall std",
    ]
    assert frame.loc["lunar", "deviation_score mean"] == pytest.approx(15.0)
    assert frame.loc["ga", "n_failed"] == 1 and math.isnan(frame.loc["ga", "deviation_score std"])
    assert not (tmp_path / "forget_retain.png").exists()


def test_no_plots_without_their_data(tmp_path):
    fake_run(tmp_path, "npo", 0, {"wmdp_bio/acc": 0.3})
    assert main([str(tmp_path), "--out", str(tmp_path / "t.md")]) == 0
    assert not list(tmp_path.glob("*.png"))
    assert "| NPO | 1 | 0 |" in (tmp_path / "t.md").read_text()


def test_cli_without_runs_fails(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no runs" in capsys.readouterr().err


def test_directions_are_read_from_the_runs(sweep):
    records = [read_run_dir(p) for p in find_run_dirs(sweep)]
    lunar = next(r for r in records if r.labels["method"] == "lunar")
    assert lunar.directions["attack/layer_skip/deviation_score"] is False
    assert lunar.directions["before/forget/rouge1_recall"] is False
    table = build_table(records, load_layout())
    assert table.directions["attack/layer_skip/forget/rouge1_recall"] is False
    assert table.directions["forget/refusal_rate"] is True
    # the target row's directions are the runs' before/ ones, without the prefix
    target = build_table(records, load_layout(), ["retain/rouge1_recall"])
    assert target.directions == {"retain/rouge1_recall": True}


def test_runs_without_declared_directions_get_no_marks_and_no_best(tmp_path):
    fake_run(tmp_path, "lunar", 0, result(0.0, 0.9), directions=False)
    fake_run(tmp_path, "ga", 0, result(0.5, 0.8), directions=False)
    assert main([str(tmp_path), "--out", str(tmp_path / "t.md"), "--no-plots"]) == 0
    text = (tmp_path / "t.md").read_text()
    assert "| Method | n | n_failed | Forget R1 | Retain R1 | DS |" in text
    assert "↓" not in text and "↑" not in text and "**" not in text


def test_a_direction_the_runs_disagree_on_is_not_used(tmp_path):
    fake_run(tmp_path, "lunar", 0, result(0.0, 0.9))
    run = fake_run(tmp_path, "ga", 0, result(0.5, 0.8))
    declared = json.loads((run / "metric_directions.json").read_text())
    (run / "metric_directions.json").write_text(json.dumps({**declared, "deviation_score": True}))
    table = build_table([read_run_dir(p) for p in find_run_dirs(tmp_path)], load_layout())
    assert "deviation_score" not in table.directions
    assert table.directions["forget/rouge1_recall"] is False


def test_cell_formatting():
    assert cell(0.1, float("nan")) == "0.100"
    assert cell(12.345, 1.0) == "12.3 ± 1.0"
    assert cell(float("nan"), float("nan")) == "–"


def test_wandb_records_become_the_same_rows():
    config = {
        "seed": 1,
        "hydra_choices": {"benchmark": "toy", "model": "tiny", "method": "npo"},
        "metric_directions": {"deviation_score": False, "finetune/cached": None, "bad": "up"},
    }
    summary = {"deviation_score": 12.0, "_runtime": 3.0, "finetune/cached": True, "note": "x"}
    record = record_from_wandb("me/proj/abc", "finished", config, summary)
    assert dict(record.directions) == {"deviation_score": False, "finetune/cached": None}
    assert record.source == "me/proj/abc" and record.seed == 1 and not record.failed
    assert dict(record.labels) == {
        "benchmark": "toy",
        "model": "tiny",
        "method": "npo",
        "variant": "default",
        "attack": "none",
    }
    assert dict(record.metrics) == {"deviation_score": 12.0}
    crashed = record_from_wandb(
        "me/proj/def", "crashed", {"method": {"_target_": "lunar_exp.methods.ga.GA"}}, {}
    )
    assert crashed.failed and crashed.labels["method"] == "ga" and crashed.seed is None
    layout = load_layout()
    text = to_markdown(build_table([record, crashed], layout), layout)
    assert "| NPO | 1 | 0 | 12.0 |" in text and "- me/proj/def" in text
    assert "DS ↓" in text


def test_ties_are_not_bold_and_repeated_seeds_are_reported(tmp_path, capsys):
    for sweep in ("a", "b"):
        fake_run(tmp_path / sweep, "lunar", 0, result(0.0, 1.0))
    fake_run(tmp_path / "a", "ga", 0, result(0.0, 1.0))
    assert main([str(tmp_path), "--no-plots"]) == 0
    captured = capsys.readouterr()
    assert "| LUNAR | 2 | 0 | 0.000 ± 0.000 |" in captured.out and "**" not in captured.out
    assert "toy/tiny/lunar/default/none seed 0 (2 runs)" in captured.err


def test_runs_differing_in_a_swept_setting_are_separate_rows(tmp_path):
    # -m method.coeffs=[2.0],[4.0] seed=0,1: four runs, two rows, never one average of all four.
    for seed, (low, high) in enumerate([(0.4, 0.0), (0.6, 0.2)]):
        fake_run(tmp_path, "lunar", seed, result(low, 1.0), variant="method.coeffs=[2.0]")
        fake_run(tmp_path, "lunar", seed, result(high, 1.0), variant="method.coeffs=[4.0]")
    fake_run(tmp_path, "ga", 0, result(0.9, 1.0))
    assert main([str(tmp_path / "toy"), "--out", str(tmp_path / "t.md")]) == 0
    lines = (tmp_path / "t.md").read_text().splitlines()
    assert "| Method | Variant | n | n_failed | Forget R1 ↓ |" in "\n".join(lines)
    rows = [line for line in lines if line.startswith("| LUNAR")]
    assert rows[0].startswith("| LUNAR | method.coeffs=[2.0] | 2 | 0 | 0.500 ± 0.141 |")
    assert rows[1].startswith("| LUNAR | method.coeffs=[4.0] | 2 | 0 | **0.100 ± 0.141** |")
    assert any(line.startswith("| GA | default | 1 | 0 | 0.900 |") for line in lines)
    with Image.open(tmp_path / "forget_retain.png") as image:
        image.verify()


def test_wandb_runs_carry_their_variant():
    config = {
        "seed": 0,
        "hydra_choices": {"method": "lunar"},
        "hydra_variant": "method.coeffs=[4.0]",
    }
    record = record_from_wandb("me/proj/x", "finished", config, {"deviation_score": 1.0})
    assert record.labels["variant"] == "method.coeffs=[4.0]"


def test_target_row_comes_first_once_and_is_never_best(sweep, tmp_path):
    # Every fake run recorded the same target scores (before/ forget 1.0, retain 1.0): one row.
    out = tmp_path / "t.md"
    assert main([str(sweep), "--out", str(out), "--no-plots"]) == 0
    lines = out.read_text().splitlines()
    rows = [line for line in lines if line.startswith("| ") and not line.startswith("| Method")]
    assert rows[0].startswith("| Target model | 1 | 0 | 1.000 | 1.000 |")
    assert "**" not in rows[0]  # retain 1.0 beats LUNAR's 0.95, but the target is not a method
    assert "Target model = the fine-tuned model before unlearning" in lines[0]
    assert main([str(sweep), "--out", str(out), "--no-plots", "--no-target-row"]) == 0
    assert "Target model" not in out.read_text()


def test_distinct_target_models_are_averaged_once_each(tmp_path):
    fake_run(tmp_path, "lunar", 0, result(0.0, 0.9, **{"before/retain/rouge1_recall": 0.8}))
    fake_run(tmp_path, "lunar", 1, result(0.0, 0.9))  # same method, another target model
    fake_run(tmp_path, "ga", 1, result(0.5, 0.9))  # the seed-1 target again: not counted twice
    table = build_table([read_run_dir(p) for p in find_run_dirs(tmp_path)], load_layout())
    target = table.frame.xs("target", level="method")
    assert int(target["n"].iloc[0]) == 2
    # retain R1 of the two distinct targets: mean(0.8, 1.0) = 0.9, sample std 0.1414
    assert target["retain/rouge1_recall mean"].iloc[0] == pytest.approx(0.9)
    assert target["retain/rouge1_recall std"].iloc[0] == pytest.approx(0.1414, abs=1e-4)


def test_ds_over_lunar_follows_ds_per_benchmark_and_needs_a_lunar_row(tmp_path):
    fake_run(tmp_path, "lunar", 0, result(0.0, 0.9))  # DS 10
    fake_run(tmp_path, "lunar", 1, result(0.0, 0.7))  # DS 30: LUNAR's mean DS is 20
    fake_run(tmp_path, "ga", 0, result(0.3, 0.6))  # DS 50
    fake_run(tmp_path, "ga", 0, result(0.3, 0.6), benchmark="other")  # no LUNAR run there
    layout = load_layout()
    table = build_table([read_run_dir(p) for p in find_run_dirs(tmp_path)], layout)
    keys = [c.key for c in table.columns]
    assert keys[keys.index("deviation_score") + 1] == "deviation_score/over_lunar"
    ratio = table.frame["deviation_score/over_lunar mean"]
    assert ratio[("toy", "tiny", "ga", "default", "none")] == pytest.approx(2.5)
    assert ratio[("toy", "tiny", "lunar", "default", "none")] == pytest.approx(1.0)
    assert math.isnan(ratio[("other", "tiny", "ga", "default", "none")])
    header = next(line for line in to_markdown(table, layout).splitlines() if "| Method" in line)
    assert "| DS ↓ | DS / LUNAR ↓ |" in header


@pytest.mark.parametrize("count", [3, 13, 25])
def test_every_series_gets_its_own_colour(count):
    assert len(set(series_colors(count))) == count


def test_thirteen_methods_get_thirteen_bar_colours_in_method_order():
    # matplotlib's default cycle repeats after 10: GA and AltPO once shared a colour
    methods = [f"m{i:02d}" for i in range(13)]
    index = pd.MultiIndex.from_tuples([(m, "default") for m in methods], names=["method", "v"])
    columns = pd.MultiIndex.from_product([["mean", "std"], ["none", "layer_skip"]])
    stats = pd.DataFrame(0.5, index=index, columns=columns)
    ax = Figure().subplots()
    _bars(ax, stats, load_layout())
    colours = [patch.get_facecolor() for patch in ax.patches]
    assert len(colours) == 13 * 2
    per_series = colours[::2]  # each series draws its two bars in turn
    assert len(set(per_series)) == 13
    assert per_series == [tuple(c) for c in series_colors(13)]
