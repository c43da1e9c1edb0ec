"""Fault tolerance: kills leave no corrupt cache entry, restarts resume, one failed job of a sweep
leaves the others' results complete."""

import gc
import json
import os
import signal
import subprocess
import sys
import time
import traceback
import weakref
from pathlib import Path

import pytest
import torch

from lunar_exp.bookkeeping import cache, errors
from lunar_exp.bookkeeping.errors import JobFailed, report_failure
from tests.conftest import ROOT, run_cli

SMOKE_RUN = Path("out") / "toy" / "tiny" / "lunar" / "seed0"


def start_cli(args: list[str], tmp_path: Path) -> subprocess.Popen:
    """`python -m lunar_exp` in the background, with outputs and caches under tmp_path."""
    env = dict(os.environ, LUNAR_EXP_CACHE=str(tmp_path / "cache"), HYDRA_FULL_ERROR="0")
    cmd = [sys.executable, "-m", "lunar_exp", f"paths.output_root={tmp_path / 'out'}", *args]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def kill_when(proc: subprocess.Popen, ready, timeout: float = 120.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true; fail if it ends or times out first."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the run ended before the point where it should be killed"
        assert time.monotonic() < deadline, "timed out waiting for the stage to kill in"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def log_text(tmp_path: Path) -> str:
    log = tmp_path / SMOKE_RUN / "lunar_exp.log"
    return log.read_text() if log.is_file() else ""


def complete_entries(tmp_path: Path) -> list[Path]:
    targets = tmp_path / "cache" / "targets"
    return sorted(p.parent for p in targets.glob("*/entry.json")) if targets.is_dir() else []


def metrics_of(tmp_path: Path) -> dict:
    return json.loads((tmp_path / SMOKE_RUN / "metrics.json").read_text())


def test_kill_during_finetuning_leaves_no_cache_entry_and_the_restart_completes(tmp_path):
    args = ["+exp=smoke", "finetune.epochs=80"]  # ~5 s of fine-tuning on the tiny model
    proc = start_cli(args, tmp_path)
    kill_when(proc, lambda: "Fine-tuning the target model" in log_text(tmp_path))
    assert proc.returncode == -signal.SIGKILL
    assert complete_entries(tmp_path) == []
    assert not list((tmp_path / "out").rglob("metrics.json"))

    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert metrics_of(tmp_path)["finetune/cached"] is False
    (entry,) = complete_entries(tmp_path)
    assert cache.read_entry(entry, verify_hashes=True) is not None


def test_run_killed_after_finetuning_resumes_from_the_cached_target_model(tmp_path):
    # one question per batch and long answers: the evaluation after fine-tuning takes seconds
    args = ["+exp=smoke", "benchmark.max_new_tokens=80", "benchmark.eval_batch_size=1"]
    proc = start_cli(args, tmp_path)
    kill_when(proc, lambda: bool(complete_entries(tmp_path)))
    assert proc.returncode == -signal.SIGKILL
    assert not list((tmp_path / "out").rglob("metrics.json"))

    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Target model loaded from cache" in log_text(tmp_path)
    assert metrics_of(tmp_path)["finetune/cached"] is True


def _flip_bytes(path: Path) -> None:
    """Change bytes in the middle of the file, keeping its size (a valid safetensors header)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(255 - b for b in data[middle : middle + 64])
    path.write_bytes(bytes(data))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def test_corrupted_cache_entry_is_detected_and_rebuilt(tmp_path):
    first = run_cli(["+exp=smoke"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    (entry,) = complete_entries(tmp_path)
    original = (entry / "model.safetensors").read_bytes()
    for damage in (_flip_bytes, _truncate):
        damage(entry / "model.safetensors")
        result = run_cli(["+exp=smoke"], tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        log = log_text(tmp_path)
        assert f"Cache entry {entry} is broken" in log
        assert "Fine-tuning the target model" in log
        assert metrics_of(tmp_path)["finetune/cached"] is False
        assert (entry / "model.safetensors").read_bytes() == original  # rebuilt, identical


def test_writer_killed_mid_write_leaves_no_entry_and_its_leftovers_are_removed(tmp_path):
    target = tmp_path / "entries" / "abc"
    child = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from lunar_exp.bookkeeping import cache\n"
        "def fill(tmp):\n"
        "    (tmp / 'model.safetensors').write_bytes(b'partial')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "cache.write_entry(Path(sys.argv[1]), fill, {})\n"
    )
    killed = subprocess.run([sys.executable, "-c", child, str(target)], cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL
    assert cache.read_entry(target) is None
    assert [p.name.startswith(".abc.") for p in target.parent.iterdir()] == [True]

    cache.write_entry(target, lambda d: (d / "model.safetensors").write_bytes(b"whole"), {"x": 1})
    assert [p.name for p in target.parent.iterdir()] == ["abc"]
    assert cache.read_entry(target) == {"x": 1}


def test_a_failing_sweep_job_leaves_the_other_jobs_complete(tmp_path):
    # Jobs 0 and 2 ask for LUNAR's layer 2 on a 2- and a 1-layer model (bad input found at run
    # time); job 1 is fine. Each job gets its own dir (same method, model and seed).
    sweep_args = ["model.num_layers=2,4,1", "hydra.sweep.subdir=job${hydra.job.num}"]
    result = run_cli(["-m", "+exp=smoke", *sweep_args], tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "lunar_exp: error: Layer index [2] is out of range for a 2-layer" in result.stderr
    (sweep,) = (tmp_path / "out" / "multirun").iterdir()
    failed, done = sweep / "job0", sweep / "job1"
    assert (failed / ".hydra" / "config.yaml").is_file()
    assert not (failed / "metrics.json").exists()
    assert "Job failed: Layer index [2]" in (failed / "lunar_exp.log").read_text()
    metrics = json.loads((done / "metrics.json").read_text())
    assert metrics["finetune/cached"] is False and "deviation_score" in metrics
    # Hydra re-raises only the first failure; the summary at the end names both.
    summary = result.stderr[result.stderr.index("lunar_exp: 2 sweep job(s) failed") :]
    assert f"  {sweep / 'job0'}: Layer index [2] is out of range for a 2-layer" in summary
    assert f"  {sweep / 'job2'}: Layer index [2] is out of range: a 1-layer model has" in summary
    assert str(sweep / "job1") not in summary


def test_report_failure_exits_2_on_bad_input_and_fails_only_the_job_in_a_multirun(capsys):
    with pytest.raises(SystemExit) as exit_info:
        report_failure(ValueError("bad value. Fix: a good one"), multirun=False)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "lunar_exp: error: bad value. Fix: a good one\n"
    assert report_failure(RuntimeError("bug"), multirun=False) is None  # the caller re-raises
    with pytest.raises(JobFailed, match="bad value") as failed:
        report_failure(ValueError("bad value. Fix: a good one"), multirun=True)
    assert failed.value.__cause__ is None  # one line, no traceback of the user's mistake
    bug = RuntimeError("bug")
    with pytest.raises(JobFailed, match="RuntimeError: bug") as failed:
        report_failure(bug, multirun=True)
    assert failed.value.__cause__ is bug  # a bug keeps its traceback


def live_tensor_bytes() -> int:
    """Bytes of every torch tensor the garbage collector can reach (parameters included)."""
    gc.collect()
    total = 0
    for obj in gc.get_objects():
        try:
            if issubclass(type(obj), torch.Tensor) and not obj.is_meta:
                total += obj.untyped_storage().nbytes()
        except (ReferenceError, RuntimeError):
            continue
    return total


def test_a_failed_sweep_job_releases_its_model_and_optimizer(monkeypatch, tmp_path):
    # Issue 16, item 7: in a sequential (basic launcher) sweep, job 0 trains a model and fails as
    # an out-of-memory error would; job 1 must start without job 0's model, optimizer states and
    # gradients still alive (Hydra keeps job 0's exception, and with it its frames, to the end).
    import lunar_exp.__main__ as entry
    import lunar_exp.pipeline

    failed: list[weakref.ref] = []
    seen_by_next_job: dict[str, object] = {}

    def training_run(model: torch.nn.Module) -> None:
        optimizer = torch.optim.AdamW(model.parameters())
        model(torch.randn(4, 1024)).sum().backward()
        optimizer.step()
        failed.extend([weakref.ref(model), weakref.ref(optimizer)])
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")

    def fake_run(cfg):
        if cfg.seed == 0:
            training_run(torch.nn.Sequential(*(torch.nn.Linear(1024, 1024) for _ in range(4))))
        seen_by_next_job["alive"] = [ref() is not None for ref in failed]
        seen_by_next_job["tensor_bytes"] = live_tensor_bytes()
        return {}

    monkeypatch.setattr(lunar_exp.pipeline, "run", fake_run)
    monkeypatch.setattr(errors, "FAILED_JOBS", [])
    conf = f"--config-path={ROOT / 'conf'}"
    argv = ["lunar_exp", conf, "-m", "seed=0,1", f"hydra.sweep.dir={tmp_path}", "logger=none"]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.chdir(tmp_path)  # Hydra's multirun opens an (empty) lunar_exp.log in the cwd
    baseline = live_tensor_bytes()
    with pytest.raises(SystemExit):  # Hydra re-raises job 0's failure at the end of the sweep
        entry.main()
    assert len(failed) == 2 and seen_by_next_job["alive"] == [False, False]
    # 4 x 4 MiB of weights, the same again as gradients and twice as AdamW states: 64 MiB
    extra_mib = (seen_by_next_job["tensor_bytes"] - baseline) / 2**20
    assert extra_mib < 8, f"job 1 started with {extra_mib:.0f} MiB of job 0's tensors alive"


def test_release_failed_run_clears_chained_frames_and_the_cuda_cache(monkeypatch):
    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(True))

    def fails_holding(big: torch.Tensor) -> None:
        raise RuntimeError("out of memory")

    big = torch.zeros(1 << 20)
    ref = weakref.ref(big)
    try:
        try:
            fails_holding(big)
        except RuntimeError as inner:
            raise JobFailed("job failed") from inner
    except JobFailed as err:
        del big
        assert ref() is not None  # the inner traceback's frame still holds the tensor
        errors.release_failed_run(err)
        assert ref() is None and emptied == [True]
        assert "fails_holding" in "".join(traceback.format_exception(err))  # still printable
