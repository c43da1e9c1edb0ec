"""``python -m lunar_exp.table DIR``: the paper table (and plots) of every run under DIR."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lunar_exp.table.layout import DEFAULT_LAYOUT, load_layout
from lunar_exp.table.plots import plot_attack_bars, plot_forget_retain, plot_layer_sweeps
from lunar_exp.table.render import build_table, render
from lunar_exp.table.runs import RunRecord, find_run_dirs, read_run_dir, repeated_runs


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m lunar_exp.table", description=__doc__)
    parser.add_argument("dir", nargs="?", type=Path, help="a sweep dir or an outputs dir")
    parser.add_argument("--format", choices=["md", "latex", "csv"], default="md")
    parser.add_argument("--metrics", nargs="+", help="metric keys to show (default: the layout)")
    parser.add_argument("--out", type=Path, help="write the table here (default: stdout)")
    parser.add_argument("--wandb-project", help="also read the runs of W&B entity/project")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--no-target-row",
        action="store_true",
        help="leave out the target model's row (its scores before unlearning)",
    )
    parser.add_argument("--layout", type=Path, default=DEFAULT_LAYOUT, help="column layout YAML")
    args = parser.parse_args(argv)
    if args.dir is None and args.wandb_project is None:
        parser.error("give a run, sweep or outputs dir, or --wandb-project")
    return args


def collect(args: argparse.Namespace) -> list[RunRecord]:
    """Runs from the dir and from W&B."""
    records = [read_run_dir(path) for path in find_run_dirs(args.dir)] if args.dir else []
    if args.wandb_project:
        from lunar_exp.table.wandb_runs import fetch_wandb_runs

        records += fetch_wandb_runs(args.wandb_project)
    return records


def write_plots(records: list[RunRecord], folder: Path, layout, root: Path | None) -> list[Path]:
    """Draw the plots the runs have data for; returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    infos = {_run_label(run, root): run.info for run in records if not run.failed}
    written = [
        plot_forget_retain(records, folder / "forget_retain.png", layout),
        plot_layer_sweeps(infos, folder / "layer_sweep.png"),
        plot_attack_bars(records, folder / "attacks.png", layout),
    ]
    return [path for path in written if path is not None]


def _run_label(run: RunRecord, root: Path | None) -> str:
    source = Path(run.source)
    if root is not None and source.is_relative_to(root) and source != root:
        return str(source.relative_to(root))
    return run.source


def main(argv: list[str] | None = None) -> int:
    """Build, print or write the table, then the plots; 2 when there are no runs."""
    args = parse_args(argv)
    records = collect(args)
    if not records:
        print(
            f"lunar_exp.table: error: no runs (no .hydra/config.yaml under {args.dir})",
            file=sys.stderr,
        )
        return 2
    layout = load_layout(args.layout)
    table = build_table(records, layout, args.metrics, target_row=not args.no_target_row)
    text = render(table, layout, args.format)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    else:
        sys.stdout.write(text)
    if not args.no_plots:
        folder = args.out.parent if args.out else (args.dir or Path.cwd())
        for path in write_plots(records, folder, layout, args.dir):
            print(f"plot: {path}", file=sys.stderr)
    if repeated := repeated_runs(records):
        print(
            f"lunar_exp.table: warning: seeds run more than once, each run counts: {repeated}",
            file=sys.stderr,
        )
    failed = sum(run.failed for run in records)
    if failed:
        print(f"lunar_exp.table: {failed} of {len(records)} runs have no results", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
