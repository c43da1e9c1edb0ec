"""environment.json: what a run's numbers came from (versions, processor, source commit)."""

import json
import subprocess

import torch

from lunar_exp.bookkeeping import cache
from lunar_exp.bookkeeping.environment import (
    cpu_description,
    describe_environment,
    package_versions,
    source_commit,
    trained_on,
)


def test_the_description_names_the_installed_versions():
    environment = describe_environment()
    assert environment["packages"]["torch"] == torch.__version__
    assert environment["torch_threads"] == torch.get_num_threads()
    assert package_versions(("no-such-distribution-here",)) == {"no-such-distribution-here": None}
    json.dumps(environment)  # JSON-ready


def test_cpu_extensions_come_from_the_first_processor_block(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu sse2 avx2 avx512f\n\n"
        "processor\t: 1\nmodel name\t: Other\nflags\t\t: amx_tile\n"
    )
    described = cpu_description(cpuinfo)
    assert described["model"] == "Test CPU 9000"
    assert described["extensions"] == ["avx2", "avx512f"]
    assert cpu_description(tmp_path / "absent")["extensions"] == []


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_the_source_commit_marks_local_changes(tmp_path):
    assert source_commit(tmp_path) is None  # not a lunar_exp checkout
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    assert source_commit(tmp_path) is None  # not a git work tree
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", "pyproject.toml")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert source_commit(tmp_path) == head
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'y'\n")
    assert source_commit(tmp_path) == f"{head}+dirty"


def test_a_cache_entry_keeps_the_environment_it_was_trained_in(tmp_path):
    recorded = {"packages": {"torch": "1.0"}}
    entry = tmp_path / "entry"
    cache.write_entry(entry, lambda tmp: (tmp / "w.txt").write_text("w"), {"environment": recorded})
    assert trained_on(str(entry)) == recorded
    older = tmp_path / "older"
    cache.write_entry(older, lambda tmp: (tmp / "w.txt").write_text("w"), {"losses": []})
    assert trained_on(str(older)) is None
    assert trained_on("") is None


def test_a_hung_git_gives_no_commit(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")

    def hung(*args, **kwargs):
        raise subprocess.TimeoutExpired(cmd="git", timeout=10)

    monkeypatch.setattr(subprocess, "run", hung)
    assert source_commit(tmp_path) is None
