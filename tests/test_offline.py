"""The offline pre-flight check: hub ids in the local Hugging Face cache need no hub."""

import json
import shutil

import datasets.config
import huggingface_hub.constants
import pytest

from lunar_exp.benchmarks.common.corpora import read_documents
from lunar_exp.benchmarks.tofu.data import TofuSource
from lunar_exp.bookkeeping.offline import hub_needs
from tests.conftest import SHARED, compose_config, needs_shared


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


def cache_as_the_hub_loader_does(cache, repo_id: str, config: str, data_file) -> None:
    """Prepare ``data_file`` with datasets' JSON builder and lay it out as ``load_dataset(repo_id,
    config)`` leaves a hub dataset in HF_DATASETS_CACHE: <ns>___<name>/<config>/<version>/<hash>/
    (dataset_info.json naming the config, <name>-train.arrow)."""
    from datasets.packaged_modules.json.json import Json

    namespace, name = repo_id.split("/")
    build = cache / ".build"
    builder = Json(
        cache_dir=str(build), dataset_name=name, config_name=config, data_files={"train": data_file}
    )
    builder.download_and_prepare()
    target = cache / f"{namespace}___{builder.dataset_name}" / config / "0.0.0" / "0123abcd"
    shutil.copytree(builder.cache_dir, target, ignore=shutil.ignore_patterns("*.lock"))
    shutil.rmtree(build)


@pytest.fixture
def offline_datasets_cache(tmp_path, monkeypatch):
    """An empty HF datasets cache on a machine in offline mode (HF_HUB_OFFLINE=1)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "datasets"


@needs_shared()
def test_a_cached_hub_dataset_loads_offline_and_is_not_a_hub_need(offline_datasets_cache):
    cfg = compose_config(["+exp=smoke", "benchmark=tofu", "benchmark.split=forget01"])
    assert cfg.benchmark.path is None and cfg.benchmark.hub_id == "locuslab/TOFU"
    assert any("locuslab/TOFU would be downloaded" in need for need in hub_needs(cfg))
    with pytest.raises(ConnectionError, match="not in the local datasets cache"):
        TofuSource(None, "locuslab/TOFU")

    local = SHARED / "tofu" / "forget01.json"
    cache_as_the_hub_loader_does(offline_datasets_cache, "locuslab/TOFU", "forget01", str(local))
    assert hub_needs(cfg) == []
    from_cache = TofuSource(None, "locuslab/TOFU").records("forget01")  # load_dataset, offline
    assert from_cache == TofuSource(str(SHARED / "tofu")).records("forget01")
    other = compose_config(["+exp=smoke", "benchmark=tofu", "benchmark.hub_id=someorg/other"])
    assert any("someorg/other would be downloaded" in need for need in hub_needs(other))


@needs_shared()
def test_a_cached_hub_corpus_config_reads_offline(offline_datasets_cache, tmp_path):
    spec = "cais/wmdp-corpora:cyber-forget-corpus"
    cfg = compose_config(["+exp=smoke", "benchmark=wmdp", f"benchmark.forget_corpus={spec}"])
    assert any(f"benchmark.forget_corpus={spec}" in need for need in hub_needs(cfg))
    with pytest.raises(FileNotFoundError, match="needs the Hugging Face hub"):
        read_documents(spec, "benchmark.forget_corpus", 3)

    articles = json.loads((SHARED / "muse" / "news" / "raw" / "forget.json").read_text())[:5]
    jsonl = tmp_path / "corpus.jsonl"
    jsonl.write_text("".join(json.dumps({"text": text}) + "\n" for text in articles))
    repo, config = spec.split(":")
    cache_as_the_hub_loader_does(offline_datasets_cache, repo, config, str(jsonl))
    needs = " ".join(hub_needs(cfg))
    assert "forget_corpus" not in needs and "benchmark.retain_corpus=cais/wmdp-corpora" in needs
    assert read_documents(spec, "benchmark.forget_corpus", 3) == articles[:3]
