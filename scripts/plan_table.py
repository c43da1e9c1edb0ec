"""The planner's estimates for the GPU-sized experiments x every method, at 1 and 4 GPUs.

Rewrites the table between the markers in docs/gpu.md (and docs/gpu_plan.json):

    .venv/bin/python scripts/plan_table.py
"""

from __future__ import annotations

import json
from pathlib import Path

from hydra import compose, initialize_config_dir

from lunar_exp.methods import method_options
from lunar_exp.plan.__main__ import plan_config
from lunar_exp.plan.estimate import GIB

ROOT = Path(__file__).resolve().parents[1]
DOC, RAW = ROOT / "docs" / "gpu.md", ROOT / "docs" / "gpu_plan.json"
EXPERIMENTS = ("tofu_llama", "muse_llama", "wmdp_zephyr")
WORLDS = (1, 4)
BEGIN, END = "<!-- plan_table: begin -->", "<!-- plan_table: end -->"


def peak(experiment: str, method: str, world: int) -> dict:
    overrides = [f"+exp={experiment}", f"method={method}", f"plan.world_size={world}"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("plan", overrides=overrides)
    _, _, plan, found = plan_config(cfg)
    worst = max(plan.stages, key=lambda s: s.parts.total)
    return {
        "peak_gib": round(plan.peak_gib, 1),
        "stage": worst.name,
        "fits": plan.fits,
        "parts_gib": {k: round(v / GIB, 1) for k, v in vars(worst.parts).items()},
        "fix": " ".join(found[0].overrides) if found else None,
    }


def main() -> None:
    results = {
        f"{exp}/{method}/{world}": peak(exp, method, world)
        for exp in EXPERIMENTS
        for method in method_options()
        for world in WORLDS
    }
    header = "| experiment | method | " + " | ".join(f"{w} GPU peak (stage)" for w in WORLDS)
    rows = [header + " |", "|---|---|" + "---|" * len(WORLDS)]
    for exp in EXPERIMENTS:
        for method in method_options():
            cells = []
            for world in WORLDS:
                r = results[f"{exp}/{method}/{world}"]
                mark = "" if r["fits"] else " **over**"
                cells.append(f"{r['peak_gib']} ({r['stage']}){mark}")
            rows.append(f"| {exp} | {method} | " + " | ".join(cells) + " |")
    text = DOC.read_text()
    head, rest = text.split(BEGIN)
    _, tail = rest.split(END)
    DOC.write_text(head + BEGIN + "\n" + "\n".join(rows) + "\n" + END + tail)
    RAW.write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
