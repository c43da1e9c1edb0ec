"""Atomic, verified on-disk model cache (safetensors + JSON only, never pickles).

An entry is a directory written under a temporary name and renamed into place only when complete,
with ``entry.json`` recording the size and SHA-256 of every file. Loading re-checks sizes (and, on
request, hashes), so a run killed mid-write never leaves an entry that looks valid.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

MANIFEST = "entry.json"


def config_key(*parts: object) -> str:
    """A short stable hash of JSON-serialisable parts (config dicts, versions)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_entry(target: Path, fill: Callable[[Path], None], meta: dict[str, object]) -> None:
    """Create cache entry ``target`` by letting ``fill`` write into a temporary directory."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        fill(tmp)
        files = {
            p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in sorted(tmp.iterdir())
            if p.is_file()
        }
        (tmp / MANIFEST).write_text(json.dumps({"meta": meta, "files": files}, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_entry(target: Path, verify_hashes: bool = False) -> dict[str, object] | None:
    """The entry's metadata if ``target`` is complete, else None (a broken entry is removed)."""
    manifest = target / MANIFEST
    if not manifest.is_file():
        return None
    try:
        record = json.loads(manifest.read_text())
        for name, info in record["files"].items():
            path = target / name
            if not path.is_file() or path.stat().st_size != info["bytes"]:
                raise ValueError(f"{name} is missing or truncated")
            if verify_hashes and _sha256(path) != info["sha256"]:
                raise ValueError(f"{name} does not match its hash")
    except (ValueError, KeyError, json.JSONDecodeError):
        shutil.rmtree(target, ignore_errors=True)
        return None
    return record["meta"]
