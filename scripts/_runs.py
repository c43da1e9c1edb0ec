"""Helpers for scripts that launch `python -m lunar_exp` runs and read their metrics.json."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(overrides: list[str], output_root: Path, log_file: Path | None = None) -> dict:
    """Run one experiment in a child process; return its metrics.json (raises on failure)."""
    before = set(output_root.rglob("metrics.json")) if output_root.exists() else set()
    cmd = [sys.executable, "-m", "lunar_exp", f"paths.output_root={output_root}", *overrides]
    with open(log_file or os.devnull, "a") as log:
        subprocess.run(cmd, cwd=ROOT, check=True, stdout=log, stderr=subprocess.STDOUT)
    new = sorted(set(output_root.rglob("metrics.json")) - before, key=os.path.getmtime)
    found = new[-1] if new else max(output_root.rglob("metrics.json"), key=os.path.getmtime)
    return json.loads(found.read_text())


def machine() -> dict:
    """The machine and software the numbers come from (the runs' environment.json record)."""
    from lunar_exp.bookkeeping.environment import describe_environment

    return {"cpus": os.cpu_count(), **describe_environment()}
