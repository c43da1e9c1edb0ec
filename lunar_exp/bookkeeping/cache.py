"""Atomic, verified on-disk model cache (safetensors + JSON only, never pickles).

An entry is a directory written under a temporary name and renamed into place only when complete,
with ``entry.json`` recording the size and SHA-256 of every file. Loading re-checks sizes and
hashes (0.5 s for a 538 MB model), so neither a run killed mid-write nor a file damaged later
(truncated, or bytes changed at the same size) is ever loaded: the entry is removed and rebuilt.
The temporary directory names its writer (host and pid); a later write of the same entry removes
the leftovers of writers on this host that no longer run. In a multi-process run rank 0 alone
writes an entry; the other ranks wait until it is complete (``write_entry``).

Separate runs that need the same missing entry at once (a parallel sweep on a cold cache) take
turns through ``claim``: the first builds it, the others wait and then load it. Should two writers
still finish the same entry (a filesystem without ``flock``, ranks of different runs), the first
complete entry stays and the later copy is dropped: an entry is never replaced under a reader.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from lunar_exp import distributed

log = logging.getLogger(__name__)

MANIFEST = "entry.json"
# How long a non-main rank waits for rank 0 to write an entry (a 7B model: minutes), and how often
# it looks.
WAIT_SECONDS, POLL_SECONDS = 4 * 3600.0, 1.0


def config_key(*parts: object) -> str:
    """A short stable hash of JSON-serialisable parts (config dicts, versions)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def sha256_of(path: Path) -> str:
    """The hex SHA-256 of a file's contents, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_entry(target: Path, fill: Callable[[Path], None], meta: dict[str, object]) -> None:
    """Create cache entry ``target`` by letting ``fill`` write into a temporary directory.

    On a non-main rank of a multi-process run nothing is written: the call returns once rank 0's
    entry is complete (the ranks share the cache directory).
    """
    if not distributed.is_main():
        _wait_for_entry(target)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_writers(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{_writer()}.", dir=target.parent))
    try:
        fill(tmp)
        files = {
            p.name: {"bytes": p.stat().st_size, "sha256": sha256_of(p)}
            for p in sorted(tmp.iterdir())
            if p.is_file()
        }
        (tmp / MANIFEST).write_text(json.dumps({"meta": meta, "files": files}, indent=2))
        _move_into_place(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _move_into_place(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target`` unless another writer's complete entry is already there.

    The same key means the same settings and data, so the entry that was there first is kept
    (another process may be loading it); leftovers that are not a complete entry are replaced.
    """
    if (target / MANIFEST).is_file():
        log.info("Cache entry %s was completed by another process meanwhile; keeping it", target)
        return
    if target.exists():
        shutil.rmtree(target, ignore_errors=True)
    try:
        os.replace(tmp, target)
    except OSError:  # another writer renamed its entry into place since the check above
        if not (target / MANIFEST).is_file():
            raise
        log.info("Cache entry %s was completed by another process meanwhile; keeping it", target)


@contextmanager
def claim(target: Path) -> Iterator[dict[str, object] | None]:
    """Hold the right to build the missing entry ``target`` (None), or yield its metadata.

    The metadata comes when another process completed the entry while this one waited: load it
    instead of building it. For a caller that found ``target`` missing (``read_entry`` gave
    None): runs on one machine or on a shared filesystem that need the same entry take turns on
    an advisory lock (``flock`` on ``.<name>.lock`` beside it, released when the holder ends,
    killed or not), so one of them builds it while the others wait. The ranks of one
    multi-process run do not lock (their rank 0 writes, ``write_entry``): they yield None.
    """
    if distributed.is_distributed():
        yield None
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    with (target.parent / f".{target.name}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("Waiting for another process to finish building %s", target)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield read_entry(target)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _wait_for_entry(target: Path) -> None:
    """Block until ``target`` is a complete entry (written by rank 0), or fail after a while."""
    deadline = time.monotonic() + WAIT_SECONDS
    while not (target / MANIFEST).is_file():
        if time.monotonic() > deadline:
            raise FileNotFoundError(
                f"Rank {distributed.rank()} waited {WAIT_SECONDS:.0f} s for rank 0 to write the "
                f"cache entry {target}. Fix: give every rank the same paths.cache_dir on a "
                "shared filesystem, and check rank 0's log for its failure."
            )
        time.sleep(POLL_SECONDS)


def read_entry(target: Path, verify_hashes: bool = True) -> dict[str, object] | None:
    """The entry's metadata if ``target`` is complete, else None (a broken entry is removed).

    Args:
        target: the entry directory.
        verify_hashes: also compare every file's SHA-256 with the manifest (sizes are always
            checked); a same-size corruption is caught only with hashes.
    """
    manifest = target / MANIFEST
    if not manifest.is_file():
        return None
    try:
        record = json.loads(manifest.read_text())
        for name, info in record["files"].items():
            path = target / name
            if not path.is_file() or path.stat().st_size != info["bytes"]:
                raise ValueError(f"{name} is missing or truncated")
            if verify_hashes and sha256_of(path) != info["sha256"]:
                raise ValueError(f"{name} does not match its hash")
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        log.warning("Cache entry %s is broken (%s); removing it so it is rebuilt", target, err)
        shutil.rmtree(target, ignore_errors=True)
        return None
    return record["meta"]


def _writer() -> str:
    """This process as ``host-pid`` (dots dropped), the tag of its temporary directories."""
    return f"{socket.gethostname().replace('.', '_')}-{os.getpid()}"


def _remove_dead_writers(target: Path) -> None:
    """Remove temporary directories of ``target`` left by killed writers on this host."""
    host = socket.gethostname().replace(".", "_")
    for tmp in target.parent.glob(f".{target.name}.{host}-*.*"):
        pid = tmp.name[len(f".{target.name}.{host}-") :].split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    return True
