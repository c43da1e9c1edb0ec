"""Time the default run cold (empty cache) and warm (target model cached); write JSON.

Usage: python scripts/bench_default.py [--out docs/bench_default.json] [-- extra overrides]
Peak RSS is the run process's own maximum resident set size (it records it in metrics.json).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = [
    "before/forget/rouge1_recall",
    "before/retain/rouge1_recall",
    "forget/rouge1_recall",
    "retain/rouge1_recall",
    "forget/refusal_rate",
    "retain/refusal_rate",
    "deviation_score",
    "time/finetune_s",
    "time/unlearn_s",
    "time/eval_s",
    "finetune/cached",
]


def timed_run(cache: Path, outputs: Path, overrides: list[str]) -> dict:
    env = dict(os.environ, LUNAR_EXP_CACHE=str(cache))
    cmd = [sys.executable, "-m", "lunar_exp", f"paths.output_root={outputs}", *overrides]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    metrics_file = next(outputs.rglob("metrics.json"))
    metrics = json.loads(metrics_file.read_text())
    result = {
        "wall_s": round(wall, 1),
        "peak_rss_gib": round(metrics["resources/peak_rss_mb"] / 1024, 2),
    }
    result.update({k: metrics[k] for k in KEYS})
    metrics_file.unlink()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench_default.json"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cache, outputs = Path(tmp) / "cache", Path(tmp) / "outputs"
        cold = timed_run(cache, outputs, args.overrides)
        warm = timed_run(cache, outputs, args.overrides)
    report = {
        "command": "python -m lunar_exp " + " ".join(args.overrides),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "cold": cold,
        "warm": warm,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
