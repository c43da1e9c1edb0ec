"""Grid-search lr and epochs of the baselines on a benchmark; write JSON and a Markdown table.

Usage: python scripts/tune_baselines.py [--methods ga,npo] [--lrs 1e-5,5e-5,2e-4]
                                        [--epochs 5,10] [--grid ga:3e-6,1e-5:10 ...]
                                        [--jobs 2] [--out docs/tuning_synthetic]
                                        [--runs-dir DIR] [--write-tuned BENCHMARK] [--extend]
                                        [overrides]
The grid is --methods x --lrs x --epochs, or, with one or more --grid METHOD:LRS:EPOCHS, the
union of those per-method grids. --extend adds to the report already at --out: it runs only the
grid points that report lacks and chooses over all rows (the report lists every command). --jobs
runs that many grid points at once (each is its own child process; give `threads=1` so they do
not fight over the cores). Selection rule: the lowest Deviation Score; ties go to the higher
retain ROUGE-1. The report is rewritten after every finished point, so an interrupted grid keeps
what it measured (resume it with --extend). Every run starts from the same cached target model
(fine-tuned once; warm it with one run first when --jobs > 1, or two jobs will fine-tune it side
by side). With --runs-dir the run directories are kept there, one folder per
grid point (`<method>/lr<lr>_e<epochs>`, with its log `run.log`), so the chosen runs can feed
`python -m lunar_exp.table`; without it they are deleted. A point whose folder already holds a
finished run with the same overrides is not run again (its metrics.json is reused; delete the
folder to re-run it), so two invocations can share a --runs-dir. --write-tuned BENCHMARK writes each
method's choice to conf/tuned/<method>_<BENCHMARK>.yaml, the file Hydra picks up for
`method=<method> benchmark=<BENCHMARK>`.
"""

import argparse
import itertools
import json
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml
from _runs import ROOT, machine, run_once

from lunar_exp.methods import method_options

KEYS = [
    "deviation_score",
    "forget/rouge1_recall",
    "retain/rouge1_recall",
    "forget/refusal_rate",
    "retain/refusal_rate",
    "time/unlearn_s",
]


def main() -> None:
    args = _parser().parse_args()
    command = "python scripts/tune_baselines.py " + " ".join(sys.argv[1:])
    earlier, commands = _earlier_report(args.out) if args.extend else ([], [])
    commands = [*commands, command]
    done = {(r["method"], r["lr"], r["epochs"]) for r in earlier}
    points = [p for p in grid_points(args) if (p[0], float(p[1]), int(p[2])) not in done]
    new_rows: dict[tuple[str, str, str], dict] = {}
    lock = threading.Lock()

    def run(point: tuple[str, str, str]) -> None:
        row = _run_point(point, runs_dir, args.overrides)
        with lock:  # an interrupted grid keeps what it measured (resume it with --extend)
            new_rows[point] = row
            _write_report(args, earlier + [new_rows[p] for p in points if p in new_rows], commands)

    with tempfile.TemporaryDirectory() as tmp:
        runs_dir = Path(args.runs_dir or tmp)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(run, points))
    best = _write_report(args, earlier + [new_rows[p] for p in points], commands)
    if args.write_tuned:
        for method, row in best.items():
            path = Path(args.tuned_dir) / f"{method}_{args.write_tuned}.yaml"
            path.write_text(tuned_yaml(row, args.write_tuned, args.out))


def _write_report(args: argparse.Namespace, rows: list[dict], commands: list[str]) -> dict:
    """Write the JSON and Markdown report of the rows so far (earlier rows, then this command's
    in grid order); return each method's choice."""
    best = choose_best(rows, list(dict.fromkeys(r["method"] for r in rows)))
    report = {"commands": commands, "machine": machine(), "rows": rows, "best": best}
    Path(args.out + ".json").write_text(json.dumps(report, indent=2) + "\n")
    Path(args.out + ".md").write_text(_markdown(rows, best, commands))
    return best


def _earlier_report(out: str) -> tuple[list[dict], list[str]]:
    """The rows and commands of the report at ``out`` (--extend); none when there is none yet."""
    path = Path(out + ".json")
    if not path.exists():
        return [], []
    report = json.loads(path.read_text())
    return report["rows"], report.get("commands") or [report["command"]]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    baselines = loop_methods()
    parser.add_argument("--methods", default=",".join(baselines))
    parser.add_argument("--lrs", default="1e-5,5e-5,2e-4")
    parser.add_argument("--epochs", default="10")
    parser.add_argument(
        "--grid",
        action="append",
        metavar="METHOD:LRS:EPOCHS",
        help="a per-method grid, e.g. ga:3e-6,1e-5:10 (repeatable; replaces the three above)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="grid points run at once")
    parser.add_argument("--out", default=str(ROOT / "docs" / "tuning_synthetic"))
    parser.add_argument("--runs-dir", help="keep the run directories here (default: deleted)")
    parser.add_argument(
        "--extend",
        action="store_true",
        help="add to the report at --out: run only its missing grid points, choose over all rows",
    )
    parser.add_argument("--write-tuned", metavar="BENCHMARK", help="write conf/tuned files")
    parser.add_argument("--tuned-dir", default=str(ROOT / "conf" / "tuned"))
    parser.add_argument("overrides", nargs="*")
    return parser


def grid_points(args: argparse.Namespace) -> list[tuple[str, str, str]]:
    """(method, lr, epochs) of every grid point, in the order given."""
    if not args.grid:
        spans = [(args.methods, args.lrs, args.epochs)]
    else:
        spans = [_split_grid(spec) for spec in args.grid]
    points = []
    for methods, lrs, epochs in spans:
        product = itertools.product(methods.split(","), lrs.split(","), epochs.split(","))
        points += [p for p in product if p not in points]
    unknown = sorted({m for m, _, _ in points} - set(method_options()))
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {method_options()}")
    untrained = sorted({m for m, _, _ in points} - set(loop_methods()))
    if untrained:
        raise SystemExit(
            f"method(s) {untrained} have no training loop (no lr or epochs to tune); choose from "
            f"{loop_methods()} (LUNAR chooses its layer by method.sweep_layers, docs/methods.md)"
        )
    return points


def loop_methods() -> list[str]:
    """The methods trained by the gradient loop: their config's defaults fill ``method.loop``."""
    return [m for m in method_options() if any(_fills_loop(d) for d in _defaults(m))]


def _defaults(method: str) -> list:
    config = yaml.safe_load((ROOT / "conf" / "method" / f"{method}.yaml").read_text())
    return config.get("defaults", [])


def _fills_loop(entry) -> bool:
    return isinstance(entry, dict) and any(key.endswith("@loop") for key in entry)


def _split_grid(spec: str) -> tuple[str, str, str]:
    parts = spec.split(":")
    if len(parts) != 3 or not all(parts):
        raise SystemExit(f"--grid {spec!r}: expected METHOD:LRS:EPOCHS, e.g. ga:3e-6,1e-5:10")
    return parts[0], parts[1], parts[2]


def _run_point(point: tuple[str, str, str], runs_dir: Path, overrides: list[str]) -> dict:
    method, lr, epochs = point
    settings = [f"method={method}", f"method.loop.lr={lr}", f"method.loop.epochs={epochs}"]
    point_dir = runs_dir / method / f"lr{lr}_e{epochs}"
    point_dir.mkdir(parents=True, exist_ok=True)
    metrics = finished_point(point_dir, [f"paths.output_root={point_dir}", *settings, *overrides])
    if metrics is None:
        metrics = run_once(settings + overrides, point_dir, point_dir / "run.log")
    row = {"method": method, "lr": float(lr), "epochs": int(epochs)}
    row |= {k: round(float(metrics[k]), 4) for k in KEYS}
    print(json.dumps(row), flush=True)
    return row


def finished_point(point_dir: Path, overrides: list[str]) -> dict | None:
    """The metrics of a finished run in ``point_dir`` launched with exactly ``overrides``.

    A run is finished when it wrote ``metrics.json`` (only finished runs do); Hydra keeps its
    command-line overrides in ``.hydra/overrides.yaml``. None when no such run is there.
    """
    for found in sorted(point_dir.rglob("metrics.json")):
        saved = found.parent / ".hydra" / "overrides.yaml"
        if saved.is_file() and yaml.safe_load(saved.read_text()) == overrides:
            return json.loads(found.read_text())
    return None


def tuned_yaml(row: dict, benchmark: str, out: str) -> str:
    """The conf/tuned file of one method's chosen grid point, with where it came from."""
    return (
        "# @package _global_\n"
        f"# {row['method']} on benchmark={benchmark}: best Deviation Score "
        f"({row['deviation_score']:g}) of the lr x epochs grid in docs/{Path(out).name}.md\n"
        "# (selection: lowest DS), written by scripts/tune_baselines.py --write-tuned with the\n"
        f"# commands listed there.\n"
        "method:\n"
        "  loop:\n"
        f"    lr: {_yaml_float(row['lr'])}\n"
        f"    epochs: {row['epochs']}\n"
    )


def _yaml_float(value: float) -> str:
    """3e-06 as 3.0e-6, 1.25e-05 as 1.25e-5: a float to YAML (which needs the dot), exactly."""
    mantissa, exponent = f"{value:.14e}".split("e")
    mantissa = mantissa.rstrip("0")
    return (
        f"{mantissa}0e{int(exponent)}" if mantissa.endswith(".") else f"{mantissa}e{int(exponent)}"
    )


def choose_best(rows: list[dict], methods: list[str]) -> dict[str, dict]:
    """Per method, the row with the lowest DS; ties go to the higher retain ROUGE-1."""
    return {
        m: min(
            (r for r in rows if r["method"] == m),
            key=lambda r: (r["deviation_score"], -r["retain/rouge1_recall"]),
        )
        for m in methods
    }


def _markdown(rows: list[dict], best: dict, commands: list[str]) -> str:
    lines = [
        "Generated by (selection: lowest DS over all rows):",
        "",
        *(f"- `{command}`" for command in commands),
        "",
        "| method | lr | epochs | DS | forget R1 | retain R1 | forget refusal | "
        "retain refusal | unlearn s | chosen |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        chosen = "**yes**" if best[r["method"]] is r else ""
        lines.append(
            f"| {r['method']} | {r['lr']:g} | {r['epochs']} | {r['deviation_score']:.1f} "
            f"| {r['forget/rouge1_recall']:.3f} | {r['retain/rouge1_recall']:.3f} | "
            f"{r['forget/refusal_rate']:.2f} | {r['retain/refusal_rate']:.2f} | "
            f"{r['time/unlearn_s']:.1f} | {chosen} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
