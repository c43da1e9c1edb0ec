import multiprocessing
import os
import time
from pathlib import Path

import pytest

from lunar_exp.bookkeeping import cache


def test_entry_roundtrip_and_key_stability(tmp_path):
    target = tmp_path / "entry"
    cache.write_entry(target, lambda d: (d / "w.bin").write_bytes(b"abc"), {"x": 1})
    assert cache.read_entry(target, verify_hashes=True) == {"x": 1}
    assert cache.config_key({"a": 1, "b": 2}) == cache.config_key({"b": 2, "a": 1})
    assert cache.config_key({"a": 1}) != cache.config_key({"a": 2})


def test_truncated_or_corrupt_entry_is_rejected_and_removed(tmp_path):
    target = tmp_path / "entry"
    cache.write_entry(target, lambda d: (d / "w.bin").write_bytes(b"abcdef"), {})
    (target / "w.bin").write_bytes(b"abc")
    assert cache.read_entry(target) is None
    assert not target.exists()
    cache.write_entry(target, lambda d: (d / "w.bin").write_bytes(b"abcdef"), {})
    (target / "w.bin").write_bytes(b"abcxyz")
    assert cache.read_entry(target, verify_hashes=True) is None


def test_failed_fill_leaves_nothing(tmp_path):
    target = tmp_path / "entry"

    def fill(d):
        (d / "w.bin").write_bytes(b"partial")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        cache.write_entry(target, fill, {})
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_an_entry_completed_by_another_writer_meanwhile_is_kept(tmp_path):
    """Two runs that build the same missing entry: the first complete one stays, never replaced
    under a process that may be loading it, and the later copy leaves nothing behind."""
    target = tmp_path / "entry"

    def fill_while_another_writer_finishes(d):
        (d / "w.bin").write_bytes(b"second")
        cache.write_entry(target, lambda other: (other / "w.bin").write_bytes(b"first"), {"n": 1})

    cache.write_entry(target, fill_while_another_writer_finishes, {"n": 2})
    assert cache.read_entry(target) == {"n": 1}
    assert (target / "w.bin").read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]


def test_leftovers_that_are_not_a_complete_entry_are_replaced(tmp_path):
    target = tmp_path / "entry"
    target.mkdir()
    (target / "w.bin").write_bytes(b"half")  # no manifest: not an entry
    cache.write_entry(target, lambda d: (d / "w.bin").write_bytes(b"whole"), {"n": 1})
    assert cache.read_entry(target) == {"n": 1}


def _build_once(target: str, log: str) -> None:
    """What a run does for a missing entry: claim it, then build it unless it appeared."""
    entry = Path(target)
    if cache.read_entry(entry) is not None:
        return
    with cache.claim(entry) as built_meanwhile:
        if built_meanwhile is None:
            with open(log, "a") as handle:
                handle.write(f"{os.getpid()}\n")
            time.sleep(0.5)  # a slow build, so the other processes arrive while it runs
            cache.write_entry(entry, lambda d: (d / "w.bin").write_bytes(b"abc"), {"n": 1})


def test_processes_that_miss_the_same_entry_take_turns_and_one_builds_it(tmp_path):
    target, log = tmp_path / "entry", tmp_path / "builders.log"
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_build_once, args=(str(target), str(log))) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    assert len(log.read_text().split()) == 1
    assert cache.read_entry(target) == {"n": 1}


def test_claim_yields_an_entry_another_process_completed_while_it_waited(tmp_path):
    target = tmp_path / "entry"
    cache.write_entry(target, lambda d: (d / "w.bin").write_bytes(b"abc"), {"n": 1})
    with cache.claim(target) as built_meanwhile:
        assert built_meanwhile == {"n": 1}
