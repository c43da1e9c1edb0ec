"""What a loaded model *is*, for caching its evaluation when the run does not fine-tune it.

A model given by path is identified by its contents, not its name: a local directory or ``.gguf``
file by the SHA-256 of its files, a hub id by the commit the local Hugging Face cache resolved it
to, the embedded default by its packaged GGUF file's hash, the tiny test model by its config.
Hashing a 7B checkpoint takes a while, so each file's hash is memoized on disk by (path, size,
mtime, ctime): a file rewritten in place gets new times and is hashed again; size and times alone
are never taken as the identity.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import try_to_load_from_cache

from lunar_exp.bookkeeping import cache, outputs

log = logging.getLogger(__name__)

# Model-config keys that name where the weights come from: the identity replaces them in keys.
SOURCE_KEYS = ("path", "package", "gguf_file")
# ``_target_`` of the tiny test model, whose weights follow from its config (seeded init).
TINY_TARGET = "lunar_exp.models.tiny_llama"


def model_identity(node: Mapping[str, Any], memo_dir: Path) -> str | None:
    """The identity of the model ``node`` (a ``conf/model`` config) loads; None if unknown.

    Args:
        node: the resolved model config.
        memo_dir: where file hashes are memoized (``<cache_dir>/hashes``).
    """
    path = node.get("path")
    if path:
        return _path_identity(str(path), memo_dir)
    if node.get("package"):
        from lunar_exp.models import packaged_file

        gguf = packaged_file(str(node["package"]), str(node.get("gguf_file") or ""))
        return f"file:{file_sha256(gguf, memo_dir)}"
    if node.get("_target_") == TINY_TARGET:
        return "tiny:config"  # the config (part of every key) determines the weights
    return None


def _path_identity(path: str, memo_dir: Path) -> str | None:
    local = Path(path).expanduser()
    if local.is_file():
        return f"file:{file_sha256(local, memo_dir)}"
    if local.is_dir():
        return f"dir:{directory_sha256(local, memo_dir)}"
    return hub_identity(path)


def hub_identity(repo_id: str) -> str | None:
    """``hub:<id>@<commit>``: the commit the local HF cache resolves ``main`` to (offline)."""
    found = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(found, str):
        log.info("No cached commit of %s; its evaluation is not cached", repo_id)
        return None
    return f"hub:{repo_id}@{Path(found).parent.name}"  # .../snapshots/<commit>/config.json


def directory_sha256(directory: Path, memo_dir: Path) -> str:
    """One hash over every file of ``directory`` (relative names and contents; dotfiles skipped)."""
    files = sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )
    if not files:
        raise FileNotFoundError(
            f"model.path={str(directory)!r} holds no files. Fix: point model.path at a model "
            "directory (config.json + weights)."
        )
    listing = {p.relative_to(directory).as_posix(): file_sha256(p, memo_dir) for p in files}
    return hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()


def file_sha256(path: Path, memo_dir: Path) -> str:
    """The SHA-256 of ``path``'s contents, memoized by its resolved path, size, mtime and ctime."""
    real = path.resolve()
    stat = real.stat()
    stamp = (str(real), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    memo = memo_dir / f"{cache.config_key(*stamp)}.json"
    try:
        record = json.loads(memo.read_text())
        if tuple(record["stamp"]) == stamp:
            return str(record["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = cache.sha256_of(real)
    memo.parent.mkdir(parents=True, exist_ok=True)
    outputs.write_json_atomic(memo, {"stamp": list(stamp), "sha256": digest})
    return digest


def evaluation_key_parts(node: Mapping[str, Any], identity: str) -> dict[str, Any]:
    """The model part of an evaluation cache key: the identity and the settings beside it.

    dtype, system prompt and chat template change the scores; device and cache paths do not
    (``pipeline.model_cache_key`` drops those), and the source keys are replaced by the identity.
    """
    settings = {k: v for k, v in node.items() if k not in SOURCE_KEYS}
    return {"identity": identity, "settings": settings}
