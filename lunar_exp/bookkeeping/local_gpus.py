"""``hydra/launcher=local_gpu``: one GPU of its own per job of a local sweep.

submitit's local executor starts every job of a sweep at once and gives each the same
``CUDA_VISIBLE_DEVICES`` (``range(gpus_per_node)``, or none when ``gpus_per_node`` is unset;
``submitit/local/local.py::_submit_command``), so on its own it puts every job on GPU 0 or on
none. The preset (``conf/hydra/launcher/local_gpu.yaml``) fixes both with two resolvers that the
launching process evaluates: ``${lunar_local_gpus:}`` (the launcher's ``gpus_per_node``) counts
the GPUs and exports their ids to the jobs' environment, ``${lunar_local_gpu_batch:<launcher>}``
(``conf/hydra/default.yaml``) makes the sweeper start that many jobs at a time. Each job then
calls :func:`pin_job_gpu` before CUDA starts and keeps only GPU ``job number mod count``.
"""

from __future__ import annotations

import logging
import os

from omegaconf import OmegaConf

log = logging.getLogger(__name__)

# The GPU ids the launching process found, passed to its jobs through the environment (submitit's
# local controller copies os.environ), since submitit overwrites their CUDA_VISIBLE_DEVICES.
GPU_IDS_ENV = "LUNAR_EXP_LOCAL_GPUS"
PRESET = "local_gpu"


def local_gpu_ids() -> list[str]:
    """The GPUs of this machine to share out: ``CUDA_VISIBLE_DEVICES`` when set, else all."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if visible:
        ids = [part.strip() for part in visible.split(",") if part.strip()]
    else:
        import torch

        ids = [str(index) for index in range(torch.cuda.device_count())]
    if not ids:
        raise ValueError(
            "hydra/launcher=local_gpu found no GPU (CUDA_VISIBLE_DEVICES is empty and torch sees "
            "none). Fix: run on a machine with GPUs, or use hydra/launcher=local for CPU jobs."
        )
    return ids


def _gpus_per_job_slot() -> int:
    """``${lunar_local_gpus:}``: the number of GPUs, exported to the jobs as their ids."""
    ids = local_gpu_ids()
    os.environ[GPU_IDS_ENV] = ",".join(ids)
    return len(ids)


def _batch_size(launcher_choice: str | None) -> int | None:
    """``${lunar_local_gpu_batch:<hydra/launcher choice>}``: jobs at once (None: no limit)."""
    return len(local_gpu_ids()) if launcher_choice == PRESET else None


def register_resolvers() -> None:
    """Register both resolvers (idempotent); ``lunar_exp.__main__`` does it at import."""
    if not OmegaConf.has_resolver("lunar_local_gpus"):
        OmegaConf.register_new_resolver("lunar_local_gpus", _gpus_per_job_slot)
    if not OmegaConf.has_resolver("lunar_local_gpu_batch"):
        OmegaConf.register_new_resolver("lunar_local_gpu_batch", _batch_size)


def pin_job_gpu(job_num: int) -> str | None:
    """In a job of ``hydra/launcher=local_gpu``, keep only its own GPU; returns its id.

    Must run before CUDA is initialised. Jobs start in batches of as many jobs as GPUs, with
    consecutive numbers, so ``job_num mod count`` differs between the jobs that run together.
    Elsewhere (other launchers, single runs) it does nothing and returns None.
    """
    ids = os.environ.get(GPU_IDS_ENV, "")
    if not ids or os.environ.get("SUBMITIT_EXECUTOR") != "local":
        return None
    gpus = ids.split(",")
    gpu = gpus[job_num % len(gpus)]
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    log.info("hydra/launcher=local_gpu: job %d runs on GPU %s of %s", job_num, gpu, ids)
    return gpu


register_resolvers()
