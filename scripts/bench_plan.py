"""Planner vs measured peak memory of each stage on CPU runs -> docs/bench_plan.json.

Each configuration runs in its own child process (``--one``), which builds the run's parts as
``lunar_exp.pipeline`` does (model, benchmark data, fine-tuning stage, method) and runs the
fine-tuning stage, the evaluation and the unlearning, each inside a tracker of live tensor
memory: a ``TorchDispatchMode`` that records every tensor storage an operator returns and drops
it when the storage is freed, plus the model's parameters and buffers present when the stage
starts. Its peak is the peak of live tensor bytes, the quantity the planner estimates (no Python
heap, no allocator slack). The planner runs on the same composed config with plan.device=cpu.
Epochs are cut to 1 (and the forget batches of a step stay whole): a stage's peak is reached in
its second optimizer step and does not grow with more epochs.

    .venv/bin/python scripts/bench_plan.py            # every configuration -> docs/bench_plan.json
    .venv/bin/python scripts/bench_plan.py --quick    # tiny model only (tests)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import weakref
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "bench_plan.json"
FAST = ["finetune.epochs=1", "threads=1"]
TINY = ["+exp=smoke", *FAST]
SMOL = [*FAST]
CONFIGS = {
    "tiny_ga": [*TINY, "method=ga", "method.loop.epochs=2"],
    "tiny_npo": [*TINY, "method=npo", "method.loop.epochs=2"],
    "tiny_rmu": [*TINY, "method=rmu", "method.loop.epochs=2"],
    "tiny_lunar": [*TINY, "method=lunar"],
    "smollm2_ga": [*SMOL, "method=ga", "method.loop.epochs=1"],
    "smollm2_npo": [*SMOL, "method=npo", "method.loop.epochs=1"],
    "smollm2_rmu": [*SMOL, "method=rmu", "method.loop.epochs=1"],
    "smollm2_lunar": [*SMOL, "method=lunar"],
}
TOLERANCE = 0.25


class LiveTensors:
    """Live tensor bytes (and their peak) of the storages operators return while active."""

    def __init__(self, present=()) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tracker.add(out)
                return out

        self.mode = Mode()
        self.live: dict[int, int] = {}
        self.current = self.peak = 0
        # Tensors alive before the stage (the model) count from the start, and once: an
        # operator returning a view of one (a weight's transpose) adds nothing.
        self.add(list(present))

    def add(self, out) -> None:
        import torch
        from torch.utils._pytree import tree_flatten

        for tensor in tree_flatten(out)[0]:
            if not isinstance(tensor, torch.Tensor) or tensor.device.type != "cpu":
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key in self.live or storage.nbytes() == 0:
                continue
            self.live[key] = storage.nbytes()
            self.current += storage.nbytes()
            self.peak = max(self.peak, self.current)
            weakref.finalize(storage, self.free, key)

    def free(self, key: int) -> None:
        self.current -= self.live.pop(key, 0)


@contextmanager
def tracked(chat, results: dict, stage: str):
    tracker = LiveTensors([*chat.model.parameters(), *chat.model.buffers()])
    with tracker.mode:
        yield
    results[stage] = tracker.peak


def measure(overrides: list[str], cache: str) -> dict:
    """Run the stages of one config in this process; peak live tensor bytes per stage."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from lunar_exp.metrics.primitives import batch_token_budget
    from lunar_exp.pipeline import build_method, seed_everything

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("plan", overrides=[*overrides, f"paths.cache_dir={cache}"])
    torch.set_num_threads(1)
    seed_everything(int(cfg.seed))
    chat = instantiate(cfg.model)
    benchmark = instantiate(cfg.benchmark)
    data = benchmark.load()
    method = build_method(cfg.method)
    finetune = instantiate(cfg.finetune)
    measured: dict[str, int] = {}
    with batch_token_budget(cfg.get("batch_tokens")):
        if finetune.enabled:
            with tracked(chat, measured, "finetune"):
                finetune._train(chat, data.unlearn, stage="finetune")
            # the stage leaves the last step's gradients on the model; a run whose target
            # model comes from the cache starts without them, as the planner assumes
            chat.model.zero_grad(set_to_none=True)
        with tracked(chat, measured, "evaluate"):
            benchmark.evaluate(chat, data.eval_sets, None)
        with tracked(chat, measured, "unlearn"):
            method.unlearn(chat, data.unlearn)
    return measured


def estimate(overrides: list[str], cache: str) -> dict:
    from hydra import compose, initialize_config_dir

    from lunar_exp.plan.__main__ import plan_config

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("plan", overrides=[*overrides, f"paths.cache_dir={cache}", "plan.device=cpu"])
    _, lengths, plan, _ = plan_config(cfg)
    stages = {s.name: {"total": s.parts.total, **vars(s.parts)} for s in plan.stages}
    return {"stages": stages, "lengths": vars(lengths)}


def one(name: str, cache: str) -> dict:
    overrides = CONFIGS[name]
    planned = estimate(overrides, cache)
    measured = measure(overrides, cache)
    rows = {}
    for stage, peak in measured.items():
        guess = planned["stages"][stage]["total"]
        rows[stage] = {
            "estimate_mib": round(guess / 2**20, 2),
            "measured_mib": round(peak / 2**20, 2),
            "ratio": round(guess / peak, 3),
            "parts_mib": {k: round(v / 2**20, 2) for k, v in planned["stages"][stage].items()},
        }
    return {"overrides": overrides, "lengths": planned["lengths"], "stages": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--one", help="measure one configuration (child process)")
    parser.add_argument("--quick", action="store_true", help="tiny model configurations only")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--cache", default=os.environ.get("LUNAR_EXP_CACHE", str(Path.home() / ".cache/lunar_exp"))
    )
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.cache)))
        return
    names = [n for n in CONFIGS if not args.quick or n.startswith("tiny")]
    results = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    for name in names:
        command = [sys.executable, __file__, "--one", name, "--cache", args.cache]
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)
        if done.returncode:
            sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        ratios = {s: r["ratio"] for s, r in results[name]["stages"].items()}
        print(name, ratios, flush=True)
    ratios = [r["ratio"] for res in results.values() for r in res["stages"].values()]
    record = {
        "command": "python scripts/bench_plan.py" + (" --quick" if args.quick else ""),
        "method": "peak live tensor bytes per stage (TorchDispatchMode storage tracker), "
        "CPU, fp32, threads=1",
        "tolerance": TOLERANCE,
        "all_within_tolerance": all(abs(r - 1) <= TOLERANCE for r in ratios),
        "configs": results,
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}; ratios {min(ratios):.2f}..{max(ratios):.2f}")


if __name__ == "__main__":
    main()
