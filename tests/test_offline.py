"""The offline pre-flight check: hub ids in the local Hugging Face cache need no hub."""

import huggingface_hub.constants

from lunar_exp.bookkeeping.offline import hub_needs
from tests.conftest import compose_config


def fake_hub_cache(root, repo_id: str) -> None:
    # The hub cache layout: models--org--name/refs/main names a snapshot holding the files.
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")


def test_a_cached_hub_model_is_not_a_hub_need(tmp_path, monkeypatch):
    # A compute node with HF_HUB_OFFLINE=1 and a populated cache must be allowed to start.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    cfg = compose_config(["model=hf", "model.path=someorg/somemodel", "benchmark=synthetic"])
    assert any("model.path=someorg/somemodel" in need for need in hub_needs(cfg))
    fake_hub_cache(tmp_path, "someorg/somemodel")
    assert hub_needs(cfg) == []
    other = compose_config(["model=hf", "model.path=someorg/other", "benchmark=synthetic"])
    assert any("someorg/other" in need for need in hub_needs(other))
