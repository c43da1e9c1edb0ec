"""logger=wandb: offline runs read back from the record file, secrets, failures, missing key."""

import json
import struct
from pathlib import Path

import pytest

from lunar_exp.bookkeeping import loggers, wandb_support

SECRET = "secret-xyz"


def wandb_records(path: Path):
    """Protobuf records of a ``run-<id>.wandb`` file (LevelDB log format, 32 KiB blocks).

    wandb 0.31 has no Python reader any more (the Go core writes the file), so this follows the
    format: a 7-byte header (``:W&B``, magic, version), then chunks of
    (crc32: 4, length: 2, type: 1) + payload; type 1 = full, 2/3/4 = first/middle/last.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, pending = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the rest of a block too short for a chunk header: padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending + payload)
            pending = b""
            yield record
        elif kind in (2, 3):
            pending += payload
        else:
            break


def read_run(wandb_dir: Path) -> dict:
    """Summary, history keys, config keys and exit code of the one offline run under wandb_dir."""
    (path,) = wandb_dir.glob("wandb/offline-run-*/run-*.wandb")
    run = {"summary": {}, "history": set(), "config": {}, "exit_code": None}
    for record in wandb_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "summary":
            run["summary"] |= {
                i.key: json.loads(i.value_json) for i in record.summary.update if i.key
            }
        elif kind == "history":
            run["history"] |= {"/".join(i.nested_key) or i.key for i in record.history.item}
        elif kind in ("run", "config"):
            items = record.run.config.update if kind == "run" else record.config.update
            run["config"] |= {i.key: json.loads(i.value_json) for i in items}
        elif kind == "exit":
            run["exit_code"] = record.exit.exit_code
    return run


def wandb_env(tmp_path, **extra):
    return {"WANDB_DIR": str(tmp_path / "wandb"), "NETRC": str(tmp_path / "no-netrc"), **extra}


def test_mode_resolution(tmp_path, monkeypatch):
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert wandb_support.resolve_mode("auto") == "offline"
    assert wandb_support.resolve_mode("offline") == "offline"
    with pytest.raises(ValueError, match="logger.mode=online needs W&B credentials"):
        wandb_support.resolve_mode("online")
    with pytest.raises(ValueError, match="not a W&B mode"):
        wandb_support.resolve_mode("sometimes")
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password k\n")
    assert wandb_support.resolve_mode("auto") == "online"
    assert wandb_support.resolve_mode("online") == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_support.resolve_mode("auto") == "disabled"


def test_generations_rows_keep_column_order_and_encode_containers(tmp_path):
    path = tmp_path / "generations.jsonl"
    path.write_text('{"split": "forget", "response_after": "x"}\n{"split": "retain", "ids": [1]}\n')
    columns, rows = wandb_support.generations_rows(path)
    assert columns == ["split", "response_after", "ids"]
    assert rows == [["forget", "x", None], ["retain", None, "[1]"]]


class RecordingLogger:
    def __init__(self):
        self.calls = []

    def log_config(self, config):
        self.calls.append(("config", config))

    def log_metrics(self, metrics, step=None):
        self.calls.append(("metrics", dict(metrics), step))

    def close(self, exit_code=0):
        self.calls.append(("close", exit_code))


def test_logging_run_routes_steps_and_closes_with_the_outcome():
    loggers.log_train_step("ga", 1, {"loss": 1.0})  # no logger: nothing happens
    logger = RecordingLogger()
    with loggers.logging_run(logger):
        loggers.log_train_step("ga", 3, {"loss": 0.5, "forget_loss": 0.25})
    assert logger.calls == [
        ("metrics", {"train/ga/loss": 0.5, "train/ga/forget_loss": 0.25}, 3),
        ("close", 0),
    ]
    failing = RecordingLogger()
    with pytest.raises(RuntimeError), loggers.logging_run(failing):
        raise RuntimeError("boom")
    assert failing.calls == [("close", 1)]
    loggers.log_train_step("ga", 4, {"loss": 0.1})
    assert len(logger.calls) == 2  # closed: steps no longer reach it


def test_layer_sweep_plot_is_drawn_only_for_a_sweep(tmp_path):
    from PIL import Image

    sweep = {str(x): {"score": x, "forget_refusal": 0.5, "retain_rouge1": 1.0} for x in range(3)}
    (tmp_path / "unlearn_info.json").write_text(json.dumps({"layers": [2], "layer_sweep": None}))
    loggers._draw_layer_sweep(tmp_path)
    assert not (tmp_path / "layer_sweep.png").exists()
    (tmp_path / "unlearn_info.json").write_text(json.dumps({"layers": [2], "layer_sweep": sweep}))
    loggers._draw_layer_sweep(tmp_path)
    with Image.open(tmp_path / "layer_sweep.png") as image:
        assert image.format == "PNG"
