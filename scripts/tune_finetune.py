"""Grid-search the fine-tuning stage (full vs LoRA, lr, epochs) on one experiment.

Usage: python scripts/tune_finetune.py --out docs/tuning_pistol_finetune \\
           --point "finetune.lr=1e-3 finetune.epochs=8" --point "finetune=lora finetune.lr=1e-3" \\
           [--base "+exp=pistol_smollm"] [--probe-retain 40] [--deadline 21:30]
       python scripts/tune_finetune.py --time-steps 3 --point "" --point "finetune=lora" ...
Every point fine-tunes the target model exactly as a run of that config would (and caches it),
probes forget and retain ROUGE-1 recall after every epoch by greedy generation (all forget
questions, the first --probe-retain retain questions), then runs the benchmark's own evaluation
of the target model. Wall time and the process's CPU time of the fine-tuning are both recorded:
with threads=1 the CPU time is what the stage costs when the CPU is not shared. Rows are appended
to OUT.json (earlier rows kept) and OUT.md is rewritten after every point; the running point's
probes go to OUT.partial.json after every epoch.
``--time-steps N`` only times N training steps of each point (after one warm-up step) and records
the CPU seconds per step and per epoch under OUT.json's "step_times": what a fine-tuning budget
allows, without training a target.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lunar_exp.interfaces import QA, ChatModel
from lunar_exp.metrics.primitives import greedy_generate, padding_id
from lunar_exp.metrics.text import rouge_recall
from lunar_exp.pipeline import model_cache_key
from lunar_exp.prompts import encode_item_pairs, encode_item_prompts
from lunar_exp.training import supervised_finetune

ROOT = Path(__file__).resolve().parents[1]
KEYS = ("forget/rouge1_recall", "retain/rouge1_recall", "forget/refusal_rate", "deviation_score")


def main() -> None:
    parser = argparse.ArgumentParser(description="Grid-search the fine-tuning stage.")
    parser.add_argument("--point", action="append", required=True, help="overrides of a point")
    parser.add_argument("--base", default="+exp=pistol_smollm")
    parser.add_argument("--out", default=str(ROOT / "docs" / "tuning_pistol_finetune"))
    parser.add_argument("--probe-retain", type=int, default=40)
    parser.add_argument("--deadline", default=None, help="HH:MM UTC: start no point after it")
    parser.add_argument("--time-steps", type=int, default=0, help="only time this many steps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    report = _load(out.with_suffix(".json"))
    if args.time_steps:
        for point in args.point:
            row = time_steps(shlex.split(args.base) + shlex.split(point), args.time_steps)
            row["point"] = point
            row["command"] = "python scripts/tune_finetune.py " + shlex.join(sys.argv[1:])
            report.setdefault("step_times", []).append(row)
            out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
            print(json.dumps(row), flush=True)
        return
    for point in args.point:
        if _past(args.deadline):
            print(f"deadline {args.deadline} passed; not starting {point!r}", flush=True)
            break
        overrides = shlex.split(args.base) + shlex.split(point)
        row = run_point(overrides, args.probe_retain, out.with_suffix(".partial.json"))
        row["point"] = point
        report["rows"].append(row)
        report["commands"].append("python scripts/tune_finetune.py " + shlex.join(sys.argv[1:]))
        out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(_markdown(report))
        print(json.dumps({k: v for k, v in row.items() if k != "probe"}), flush=True)


def run_point(overrides: list[str], probe_retain: int, progress: Path) -> dict[str, object]:
    """Fine-tune (or load the cached target of) one config, probing every epoch; evaluate.

    Every probe is also written to ``progress`` at once, so a stopped point keeps its curve.
    """
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    benchmark = instantiate(cfg.benchmark)
    bench = benchmark.load()
    chat = instantiate(cfg.model)
    stage = instantiate(cfg.finetune)
    data = bench.unlearn
    probes: list[dict[str, float]] = []
    forget, retain = list(data.forget), list(data.retain[:probe_retain])

    def probe(epoch: int, model) -> None:
        view = ChatModel(model, chat.tokenizer, chat.system_prompt, chat.name)
        start, start_cpu = time.perf_counter(), time.process_time()
        row = {"epoch": epoch, **_probe(view, forget, retain, bench.generation.max_new_tokens)}
        row["probe_s"] = round(time.perf_counter() - start, 1)
        row["probe_cpu_s"] = round(time.process_time() - start_cpu, 1)
        probes.append(row)
        print(json.dumps(row), flush=True)
        progress.write_text(json.dumps({"overrides": overrides, "probe": probes}, indent=2) + "\n")

    wall, cpu = time.perf_counter(), time.process_time()
    report = stage.run(chat, data, model_cache_key(cfg), on_epoch_end=probe)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    probe_s = sum(float(p["probe_s"]) for p in probes)
    probe_cpu_s = sum(float(p["probe_cpu_s"]) for p in probes)
    start = time.perf_counter()
    result = benchmark.evaluate(chat, bench.eval_sets)
    return {
        "finetune": OmegaConf.to_container(cfg.finetune, resolve=True),
        "cached": report.cached,
        "finetune_wall_s": round(wall - probe_s, 1),
        "finetune_cpu_s": round(cpu - probe_cpu_s, 1),  # the probes' CPU time not included
        "probe_s": round(probe_s, 1),
        "probe_cpu_s": round(probe_cpu_s, 1),
        "losses": [round(x, 4) for x in report.losses],
        "probe": probes,
        **{key: round(float(result.metrics[key]), 4) for key in KEYS},
        "eval_s": round(time.perf_counter() - start, 1),
        "target": report.path,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def time_steps(overrides: list[str], steps: int) -> dict[str, object]:
    """CPU and wall seconds per training step of one config's fine-tuning (nothing cached)."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    bench = instantiate(cfg.benchmark).load()
    chat = instantiate(cfg.model)
    stage = instantiate(cfg.finetune)
    items = bench.unlearn.finetune_items()
    size = stage.batch_size
    pairs = encode_item_pairs(chat.tokenizer, items, chat.system_prompt)[: (steps + 1) * size]
    timed = -(-(len(pairs) - size) // size)  # steps the items allow after the warm-up (<= steps)
    if timed <= 0:
        raise SystemExit(
            f"--time-steps needs more than one batch ({size}) of fine-tuning items; the benchmark "
            f"has {len(items)}. Fix: lower finetune.batch_size or use a larger benchmark."
        )
    pad = padding_id(chat.tokenizer)
    with stage.trainable(chat.model) as trained:  # LoRA adapters or frozen lower blocks
        model: Any = trained  # a PeftModel forwards like the model
        supervised_finetune(model, pairs[:size], pad, 1e-9, 1, size, 0, desc="warm-up")
        wall, cpu = time.perf_counter(), time.process_time()
        supervised_finetune(model, pairs[size:], pad, 1e-9, 1, size, 0, desc="timed steps")
        wall, cpu = (time.perf_counter() - wall) / timed, (time.process_time() - cpu) / timed
    per_epoch = -(-len(items) // size)
    return {
        "finetune": OmegaConf.to_container(cfg.finetune, resolve=True),
        "cpu_s_per_step": round(cpu, 2),
        "wall_s_per_step": round(wall, 2),
        "timed_steps": timed,
        "steps_per_epoch": per_epoch,
        "cpu_min_per_epoch": round(cpu * per_epoch / 60, 2),
        "epochs_in_30_cpu_min": round(30 * 60 / (cpu * per_epoch), 1),
    }


def _probe(chat: ChatModel, forget: list[QA], retain: list[QA], max_new: int) -> dict[str, float]:
    """Mean ROUGE-1 recall of greedy answers on the forget and (probe) retain questions."""
    scores = {}
    for name, items in (("forget", forget), ("retain", retain)):
        prompts = encode_item_prompts(chat.tokenizer, items, chat.system_prompt)
        answers = greedy_generate(chat.model, chat.tokenizer, prompts, max_new, desc=None)
        recall = rouge_recall([qa.answer for qa in items], answers)["rouge1_recall"]
        scores[f"{name}_r1"] = round(sum(recall) / len(recall), 4)
    return scores


def _past(deadline: str | None) -> bool:
    if deadline is None:
        return False
    now = dt.datetime.now(dt.UTC)
    hour, minute = (int(x) for x in deadline.split(":"))
    return (now.hour, now.minute) >= (hour, minute)


def _load(path: Path) -> dict:
    if path.exists():
        return json.loads(path.read_text())
    return {"rows": [], "commands": []}


def _markdown(report: dict) -> str:
    lines = [
        "| point | adapter | lr | epochs | batch | forget R1 | retain R1 | forget refusal | "
        "fine-tune wall s | fine-tune CPU s | probe R1 per epoch (forget/retain) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        ft = row["finetune"]
        curve = " ".join(f"{p['forget_r1']:.2f}/{p['retain_r1']:.2f}" for p in row["probe"])
        lines.append(
            f"| `{row['point']}` | {ft.get('adapter', 'full')} | {ft['lr']:g} | {ft['epochs']} | "
            f"{ft['batch_size']} | {row['forget/rouge1_recall']:.3f} | "
            f"{row['retain/rouge1_recall']:.3f} | {row['forget/refusal_rate']:.2f} | "
            f"{row['finetune_wall_s']:.0f} | {row['finetune_cpu_s']:.0f} | {curve} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
