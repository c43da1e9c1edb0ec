"""What a number came from: library versions, the processor and the accelerator of a run.

A cached target model is keyed by its training settings and data, not by what ran the training
(library versions, the processor's kernels, the thread count, lunar_exp's own code), and those
can change its weights: a TOFU-twin target trained again under the same key scored differently
(docs/runs.md). Every finished run writes ``environment.json`` beside ``metrics.json`` and every
target-model cache entry keeps the same record, so two runs that disagree can be told apart by
what they ran on.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

import torch

from lunar_exp.bookkeeping import cache

ENVIRONMENT_FILE = "environment.json"
SOURCE_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "lunar_exp",
    "torch",
    "transformers",
    "accelerate",
    "peft",
    "datasets",
    "tokenizers",
    "safetensors",
    "numpy",
    "gguf",
    "lm_eval",
    "hydra-core",
)
# Instruction-set extensions that change which fp32/bf16 kernels torch's CPU backend runs.
CPU_EXTENSIONS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "asimd", "sve")


def describe_environment() -> dict[str, object]:
    """The machine and software of this process: JSON-ready, cheap (no device work)."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_description(),
        "accelerator": accelerator_description(),
        "torch_threads": torch.get_num_threads(),
        "packages": package_versions(),
        "lunar_exp_commit": source_commit(),
    }


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution; None for one that is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict[str, object]:
    """Model name, logical CPU count and the kernel-relevant instruction-set extensions."""
    fields = _first_cpu_fields(cpuinfo)
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {
        "model": fields.get("model name") or platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "extensions": [name for name in CPU_EXTENSIONS if name in flags],
    }


def accelerator_description() -> dict[str, object] | None:
    """The CUDA devices' names and the CUDA version; None on a machine without them."""
    if not torch.cuda.is_available():
        return None
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {"cuda": torch.version.cuda, "devices": names}


def source_commit(package_dir: Path = SOURCE_ROOT) -> str | None:
    """The git commit of the lunar_exp checkout, ``+dirty`` with local changes.

    None when the package is not in a git work tree of its own (e.g. installed from a wheel).
    """
    if not (package_dir / "pyproject.toml").is_file():
        return None
    try:
        commit = _git(package_dir, "rev-parse", "HEAD")
        dirty = _git(package_dir, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):  # no git, not a work tree, or a hung git
        return None
    return f"{commit}+dirty" if dirty else commit


def _git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
    )
    return done.stdout.strip()


def _first_cpu_fields(cpuinfo: Path) -> dict[str, str]:
    """The ``key: value`` lines of the first processor block of /proc/cpuinfo (empty if absent)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n", 1)[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def run_environment(target_entry: str) -> dict[str, object]:
    """A run's ``environment.json``: this process's environment and the target model's.

    ``target_model`` is the environment recorded by the run that fine-tuned the target (None
    without one).
    """
    return {"run": describe_environment(), "target_model": trained_on(target_entry)}


def trained_on(target_entry: str) -> dict[str, object] | None:
    """The environment kept in a target-model cache entry.

    None without a fine-tuned target or for an entry written before environments were recorded.
    """
    if not target_entry:
        return None
    meta = cache.read_entry(Path(target_entry), verify_hashes=False) or {}
    recorded = meta.get("environment")
    return recorded if isinstance(recorded, dict) else None
