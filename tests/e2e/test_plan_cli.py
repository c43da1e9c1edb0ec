"""``python -m lunar_exp.plan`` in a child process: a GiB figure per GPU, JSON, bad input."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _plan(*overrides: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = str(ROOT)  # the package, whatever the working directory
    command = [sys.executable, "-m", "lunar_exp.plan", *overrides]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


def test_the_planner_writes_nothing(tmp_path):
    # Hydra's default job logging would leave an empty lunar_exp.log in the working directory.
    done = _plan("+exp=tofu_llama", "method=lunar", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Peak per GPU" in done.stdout
    assert list(tmp_path.iterdir()) == []


def test_tofu_llama_npo_prints_a_peak_per_gpu(tmp_path):
    out = tmp_path / "plan.json"
    done = _plan("+exp=tofu_llama", "method=npo", "plan.world_size=4", f"plan.json={out}")
    assert done.returncode == 0, done.stderr
    peak = re.search(r"Peak per GPU: ([0-9.]+) GiB", done.stdout)
    assert peak, done.stdout
    record = json.loads(out.read_text())
    assert record["world_size"] == 4
    assert abs(record["peak_gib"] - float(peak.group(1))) < 0.01
    assert set(record["stages"]) == {"unlearn", "evaluate"}  # finetune=none in tofu_llama


def test_a_plan_over_budget_lists_settings_that_fit():
    done = _plan("+exp=wmdp_zephyr", "method=npo", "plan.gpu_gib=40")
    assert done.returncode == 0, done.stderr
    assert "does NOT fit" in done.stdout
    assert re.search(r"GiB  torchrun --nproc_per_node [48] -m lunar_exp", done.stdout), done.stdout


def test_an_unknown_model_exits_2_with_one_line():
    done = _plan("model=hf", "model.path=nobody/unknown-model-xyz")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lunar_exp: error:") and "Fix:" in lines[0]
