"""`torchrun --standalone --nproc_per_node 2 -m lunar_exp` against the same run in one process.

Two CPU ranks (gloo) fine-tune the target model and unlearn with FSDP2; the run must match the
1-process run (fp32 on CPU: only the order of the gradient sums differs) and rank 0 alone writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, run_cli

ARGS = ["+exp=smoke", "method=npo", "threads=1"]


def _torchrun(args: list[str], tmp_path, cache: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LUNAR_EXP_CACHE=str(tmp_path / cache), HYDRA_FULL_ERROR="0")
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "lunar_exp",
        f"paths.output_root={tmp_path / 'out2'}",
        *args,
    ]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def _metrics(root, method: str) -> dict:
    return json.loads((root / "toy" / "tiny" / method / "seed0" / "metrics.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("torchrun")
    single = run_cli(ARGS, tmp)
    assert single.returncode == 0, single.stderr[-3000:]
    double = _torchrun(ARGS, tmp, "cache2")  # its own cache: the fine-tuning runs sharded too
    assert double.returncode == 0, double.stderr[-3000:]
    return tmp, _metrics(tmp / "out", "npo"), _metrics(tmp / "out2", "npo")


def test_two_ranks_match_one_process(runs):
    _, one, two = runs
    assert (one["dist/world_size"], one["dist/strategy"]) == (1, "single")
    assert (two["dist/world_size"], two["dist/strategy"]) == (2, "fsdp2")
    assert two["finetune/cached"] is False
    for key in ("forget/rouge1_recall", "retain/rouge1_recall"):
        assert abs(two[key] - one[key]) <= 0.05, key
    assert abs(two["deviation_score"] - one["deviation_score"]) <= 5
    # Beyond the acceptance bounds: the training itself agrees to float rounding.
    for key in ("before/forget/answer_nll", "forget/answer_nll", "retain/answer_nll"):
        assert two[key] == pytest.approx(one[key], abs=1e-3), key
    assert two["train/final_loss"] == pytest.approx(one["train/final_loss"], rel=1e-4)
    assert two["unlearn/params_changed"] == one["unlearn/params_changed"]


def test_rank_zero_alone_writes_the_run(runs):
    tmp, _, _ = runs
    run_dir = tmp / "out2" / "toy" / "tiny" / "npo" / "seed0"
    log = (run_dir / "lunar_exp.log").read_text()
    assert log.count("metrics: {") == 1  # the console logger of rank 0 only
    assert not list(run_dir.glob(".*.json.*"))  # no temporary file left by a second writer
    entries = list((tmp / "cache2" / "targets").iterdir())
    assert len(entries) == 1 and (entries[0] / "entry.json").is_file()


def test_a_cached_target_is_loaded_by_every_rank(runs):
    tmp, _, _ = runs
    again = _torchrun(["+exp=smoke", "method=ga", "threads=1"], tmp, "cache2")
    assert again.returncode == 0, again.stderr[-3000:]
    metrics = _metrics(tmp / "out2", "ga")
    assert metrics["finetune/cached"] is True and metrics["dist/world_size"] == 2
    assert "Target model loaded from cache" in again.stderr + again.stdout


def test_accelerate_launch_forms_the_same_group(runs):
    # `accelerate launch --multi_gpu` (what a GPU node runs) starts torchrun's workers with the
    # same environment; without CUDA the group is gloo, so this is the GPU launch path on CPU.
    tmp, _, _ = runs
    env = dict(os.environ, LUNAR_EXP_CACHE=str(tmp / "cache2"), HYDRA_FULL_ERROR="0")
    env["OMP_NUM_THREADS"] = "1"
    launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    cmd = [sys.executable, *launch, "-m", "lunar_exp", f"paths.output_root={tmp / 'out3'}"]
    cmd += ["+exp=smoke", "method=npo", "threads=1"]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics, torchrun_metrics = _metrics(tmp / "out3", "npo"), _metrics(tmp / "out2", "npo")
    assert (metrics["dist/world_size"], metrics["dist/strategy"]) == (2, "fsdp2")
    assert metrics["forget/answer_nll"] == pytest.approx(torchrun_metrics["forget/answer_nll"])


def test_bench_fsdp_script_halves_the_tiny_models_state(tmp_path):
    out = tmp_path / "bench_fsdp.json"
    cmd = [sys.executable, "scripts/bench_fsdp.py", "--models", "tiny", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1", LUNAR_EXP_CACHE=str(tmp_path / "cache"))
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    one = report["tiny"]["ranks"]["1"][0]
    assert len(report["tiny"]["ranks"]["2"]) == 2
    for ratio in report["tiny"]["params_plus_adam_ratio_2_to_1"]:
        assert 0.45 <= ratio <= 0.55
    assert one["adam_bytes"] == 2 * one["params_bytes"]  # fp32 exp_avg and exp_avg_sq
