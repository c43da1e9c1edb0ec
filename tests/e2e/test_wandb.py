"""W&B logger, end to end: offline runs mirror metrics, losses and generations."""

import json

from tests.conftest import run_cli
from tests.test_wandb import SECRET, read_run, wandb_env


def test_offline_run_mirrors_metrics_losses_and_generations_without_secrets(tmp_path):
    env = wandb_env(tmp_path, WANDB_MODE="offline", WANDB_API_KEY=SECRET)
    args = ["+exp=smoke", "logger=wandb", "logger.mode=offline", "method=ga"]
    result = run_cli(args, tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out" / "toy" / "tiny" / "ga" / "seed0"
    metrics = json.loads((out / "metrics.json").read_text())
    run = read_run(tmp_path / "wandb")
    assert run["summary"]["deviation_score"] == metrics["deviation_score"]
    assert run["summary"]["forget/rouge1_recall"] == metrics["forget/rouge1_recall"]
    assert {"train/finetune/target_model/loss", "train/ga/loss", "train/ga/step"} <= run["history"]
    (table,) = (tmp_path / "wandb").glob("wandb/offline-run-*/files/media/table/generations_*.json")
    lines = (out / "generations.jsonl").read_text().splitlines()
    assert len(json.loads(table.read_text())["data"]) == len(lines) > 0
    assert run["config"]["hydra_choices"]["method"] == "ga"
    assert run["config"]["seed"] == 0 and run["exit_code"] == 0
    directions = json.loads((out / "metric_directions.json").read_text())
    assert run["config"]["metric_directions"] == directions  # the table reads them back
    assert directions["deviation_score"] is False
    assert SECRET not in result.stdout + result.stderr
    for root in (out, tmp_path / "wandb"):
        leaked = [p for p in root.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
        assert not leaked


def test_lunar_adamw_and_relearn_losses_have_their_own_step_axes(tmp_path):
    env = wandb_env(tmp_path, WANDB_MODE="offline")
    args = [
        "+exp=smoke",
        "logger=wandb",
        "logger.mode=offline",
        "method.solver=adamw",
        "method.epochs=3",
        "attack=[relearn]",
        "attack.relearn.n_items=1",
    ]
    result = run_cli(args, tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    history = read_run(tmp_path / "wandb")["history"]
    assert {"train/lunar_adamw/loss", "train/lunar_adamw/step"} <= history
    assert {"train/attack_relearn/loss", "train/attack_relearn/step"} <= history
    assert "train/finetune/loss" not in history  # relearning is not the fine-tuning stage


def test_failed_run_is_finished_with_a_nonzero_exit_code(tmp_path):
    env = wandb_env(tmp_path, WANDB_MODE="offline")
    args = ["+exp=smoke", "logger=wandb", "logger.mode=offline", "method.layers=[7]"]
    result = run_cli(args, tmp_path, timeout=120, env=env)
    assert result.returncode == 2, result.stderr[-3000:]
    assert read_run(tmp_path / "wandb")["exit_code"] == 1


def test_online_without_credentials_fails_before_any_stage(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_IDENTITY_TOKEN_FILE", raising=False)
    args = ["+exp=smoke", "logger=wandb", "logger.mode=online"]
    result = run_cli(args, tmp_path, timeout=120, env=wandb_env(tmp_path))
    assert result.returncode == 2
    errors = [x for x in result.stderr.splitlines() if x.startswith("lunar_exp: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert "logger.mode=online needs W&B credentials" in errors[0]
    assert "WANDB_API_KEY" in errors[0] and "logger.mode=offline" in errors[0]
    log = next((tmp_path / "out").rglob("lunar_exp.log")).read_text()
    assert "Fine-tuning" not in log and not (tmp_path / "wandb").exists()
