"""The process group: the one place that knows whether a run is distributed, and how.

A run launched as several processes (``torchrun``, ``accelerate launch``, or N SLURM tasks, e.g.
submitit running the Hydra job function once per task) calls :func:`init_from_env` at the start
of ``pipeline.run``; it forms the process group (NCCL on CUDA, gloo on CPU) and sets each rank's
CUDA device from its local rank. A single process never creates a group and behaves as before.

Every rank runs the same program (SPMD): the same data, the same evaluation, the same training
calls; training is sharded with FSDP2 (:func:`shard_for_training`), and only rank 0 writes
outputs, caches and logs (``is_main``). Values a rank-0-only decision depends on (a cache hit,
the run dir) are shared with :func:`agree`.
"""

from __future__ import annotations

import atexit
import copy
import logging
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from types import MethodType
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

log = logging.getLogger(__name__)

T = TypeVar("T")

# Longest wait of one collective (a barrier while rank 0 writes a 7B cache entry, say).
TIMEOUT = timedelta(minutes=60)
# The base of the port a SLURM job's group meets on (plus the job id modulo PORT_SPAN).
PORT_BASE, PORT_SPAN = 20000, 20000
# The sharded model's method that runs the decoder blocks up to one layer (RMU's loss).
FORWARD_UNTIL = "lunar_forward_until"


@dataclass(frozen=True)
class Launch:
    """Where this process sits in a multi-process launch, read from the environment."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    source: str  # "torchrun" (also accelerate launch) or "slurm"


def launch_from_env(env: Mapping[str, str] | None = None) -> Launch | None:
    """The launch described by ``env`` (default ``os.environ``); None for a single process.

    torchrun and ``accelerate launch`` set RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
    MASTER_PORT; N SLURM tasks (``srun``, submitit) set SLURM_STEP_NUM_TASKS (or SLURM_NTASKS),
    SLURM_PROCID and SLURM_LOCALID, and the group meets on the job's first node at a port
    derived from SLURM_JOB_ID.
    """
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        world = int(env["WORLD_SIZE"])
        if world <= 1:
            return None
        return Launch(
            rank=int(env["RANK"]),
            world_size=world,
            local_rank=int(env.get("LOCAL_RANK", "0")),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", "29500")),
            source="torchrun",
        )
    tasks = int(env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS") or "1")
    if tasks <= 1 or "SLURM_PROCID" not in env:
        return None
    job_digits = re.sub(r"\D", "", env.get("SLURM_JOB_ID", "")) or "0"
    return Launch(
        rank=int(env["SLURM_PROCID"]),
        world_size=tasks,
        local_rank=int(env.get("SLURM_LOCALID", "0")),
        master_addr=env.get("MASTER_ADDR") or _slurm_first_host(env),
        master_port=int(env.get("MASTER_PORT") or PORT_BASE + int(job_digits) % PORT_SPAN),
        source="slurm",
    )


def _slurm_first_host(env: Mapping[str, str]) -> str:
    """The first host of the job's node list (``scontrol show hostnames``), else the launcher."""
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
    if nodelist:
        try:
            out = subprocess.run(
                ["scontrol", "show", "hostnames", nodelist],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            ).stdout.split()
            if out:
                return out[0]
        except (OSError, subprocess.SubprocessError):
            pass
    return env.get("SLURM_LAUNCH_NODE_IPADDR", "127.0.0.1")


def init_from_env() -> int:
    """Join the process group the environment describes (idempotent); returns the world size.

    A single process (no launch in the environment) creates no group. A group that someone else
    already initialised (``accelerate``, a test) is used as it is.
    """
    if dist.is_available() and dist.is_initialized():
        return world_size()
    launch = launch_from_env()
    if launch is None:
        return 1
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(launch.local_rank)
    dist.init_process_group(
        backend="nccl" if cuda else "gloo",
        init_method=f"tcp://{launch.master_addr}:{launch.master_port}",
        rank=launch.rank,
        world_size=launch.world_size,
        timeout=TIMEOUT,
        device_id=torch.device("cuda", launch.local_rank) if cuda else None,
    )
    atexit.register(teardown)
    if launch.rank != 0:
        _quiet_this_rank()
    log.info(
        "Distributed run (%s): rank %d of %d, backend %s",
        launch.source,
        launch.rank,
        launch.world_size,
        dist.get_backend(),
    )
    return launch.world_size


def _quiet_this_rank() -> None:
    """Non-main ranks: no log file lines (rank 0 writes the run's log), warnings only.

    Their progress bars still go to stderr; ``torchrun --local-ranks-filter 0`` shows rank 0's.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.WARNING)


def teardown() -> None:
    """Leave the process group (a no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True on rank 0 (and in a single process): the rank that writes outputs and caches."""
    return rank() == 0


def is_distributed() -> bool:
    """True when more than one rank runs this program."""
    return world_size() > 1


def strategy() -> str:
    """How training is spread: ``single`` (one process) or ``fsdp2`` (sharded over ranks)."""
    return "fsdp2" if is_distributed() else "single"


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def agree(value: T) -> T:
    """Rank 0's ``value`` on every rank (picklable values; ``value`` itself in one process)."""
    if not is_distributed():
        return value
    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum of ``values`` over ranks (the same list length on every rank)."""
    if not is_distributed():
        return list(values)
    device = _collective_device()
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


def _collective_device() -> torch.device:
    """Where small collective tensors live: the rank's GPU under NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def local_share(n_items: int) -> tuple[slice, float]:
    """This rank's part of a global batch of ``n_items``, and its loss weight.

    Rank r takes items r, r + W, r + 2W, ... of the batch. Gradients are averaged over the W
    ranks, so a rank's mean-over-items loss is weighted by W * n_r / n: the averaged gradient then
    equals the gradient of the global batch's mean, as in one process. A rank left without an
    item takes the first one with weight 0, so it still joins every collective.
    """
    world, me = world_size(), rank()
    count = len(range(me, n_items, world))
    if count == 0:
        return slice(0, 1), 0.0
    return slice(me, None, world), world * count / n_items


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The model's decoder blocks (``model.model.layers`` for Llama-style models)."""
    base = getattr(model, "base_model", model)
    layers = getattr(base, "layers", None)
    if isinstance(layers, nn.ModuleList):
        return layers
    blocks = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    if not blocks:
        raise ValueError(
            f"{type(model).__name__} has no list of decoder blocks to shard. Fix: run it in one "
            "process, or use a model with a ModuleList of blocks (model.model.layers)."
        )
    return max(blocks, key=len)


def shard_for_training(model: nn.Module, compute_dtype: torch.dtype | None) -> nn.Module:
    """A copy of ``model`` sharded with FSDP2: each decoder block, then the root.

    The copy keeps fp32 master weights (and so fp32 AdamW states) in its shards whatever the
    model's dtype; ``compute_dtype`` (bf16 on CUDA) makes forward and backward run in that dtype
    with gradients reduced in fp32 (``MixedPrecisionPolicy``); None computes in fp32. Blocks are
    upcast and sharded one at a time, so no full fp32 copy of the model is ever held. The copy
    also gets the method :data:`FORWARD_UNTIL` (the decoder blocks up to one layer, run through
    the root's FSDP hooks), which RMU's loss calls through ``_loop.forward_blocks``.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    from lunar_exp.methods._activations import forward_until

    policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    mesh = _device_mesh()
    train_model = copy.deepcopy(model)
    for block in decoder_layers(train_model):
        _upcast_plain_params(block)
        fully_shard(block, mesh=mesh, mp_policy=policy)
    _upcast_plain_params(train_model)
    fully_shard(train_model, mesh=mesh, mp_policy=policy)

    def run_blocks(self, ids, mask, last_layer):
        return forward_until(self, ids, mask, last_layer)

    setattr(train_model, FORWARD_UNTIL, MethodType(run_blocks, train_model))
    from torch.distributed.fsdp import register_fsdp_forward_method

    register_fsdp_forward_method(train_model, FORWARD_UNTIL)
    return train_model


def _device_mesh():
    """A 1-D mesh over every rank on this rank's device type."""
    from torch.distributed.device_mesh import init_device_mesh

    device_type = "cuda" if dist.get_backend() == "nccl" else "cpu"
    return init_device_mesh(device_type, (world_size(),))


def _upcast_plain_params(module: nn.Module) -> None:
    """Cast ``module``'s not-yet-sharded floating parameters to fp32 in place (masters)."""
    from torch.distributed.tensor import DTensor

    for param in module.parameters():
        if not isinstance(param, DTensor) and param.is_floating_point():
            param.data = param.data.float()


@contextmanager
def parked_on_host(model: nn.Module) -> Iterator[None]:
    """On CUDA, keep the plain ``model`` in host memory while its sharded copy trains.

    Each rank then holds only its shards (weights, gradients, AdamW states) on the GPU; the
    trained weights are gathered into the parked model before it goes back. On CPU: nothing.
    """
    device = next(model.parameters()).device
    if device.type != "cuda":
        yield
        return
    model.to("cpu")
    torch.cuda.empty_cache()
    try:
        yield
    finally:
        model.to(device)


@torch.no_grad()
def gather_into(train_model: nn.Module, model: nn.Module) -> None:
    """Copy the sharded copy's trained weights into the plain ``model`` on every rank.

    One parameter is all-gathered at a time (``DTensor.full_tensor``), in the same order on every
    rank, and cast to ``model``'s dtype; ``model`` stays an ordinary module (no FSDP class, no
    hooks), so evaluation, attacks and saving see a plain ``PreTrainedModel``.
    """
    from torch.distributed.tensor import DTensor

    targets = dict(model.named_parameters())
    for name, param in train_model.named_parameters():
        full = param.full_tensor() if isinstance(param, DTensor) else param.detach()
        target = targets[name]
        target.copy_(full.to(device=target.device, dtype=target.dtype))
