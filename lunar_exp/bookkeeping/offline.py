"""Fail at once, with every fix listed, when a run needs the Hugging Face hub and it is offline."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import try_to_load_from_cache
from omegaconf import DictConfig

from lunar_exp.benchmarks.common.corpora import is_hub_spec
from lunar_exp.models import hub_dataset_cached, hub_reachable


def _is_hub_id(path: object) -> bool:
    text = str(path)
    return text.count("/") == 1 and not text.startswith((".", "/", "~")) and not Path(text).exists()


def _in_local_hub_cache(repo_id: str) -> bool:
    """Whether a hub model's config is in the local Hugging Face cache (``HF_HUB_CACHE``).

    A compute node without internet runs from such a cache (``HF_HUB_OFFLINE=1``); transformers
    then loads the model from it, so the run needs no hub access for the model.
    """
    return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)


def hub_needs(cfg: DictConfig) -> list[str]:
    """The settings of ``cfg`` that would download from the hub, each with its local fix.

    A hub model already in the local Hugging Face cache needs no download and is not listed,
    nor is a hub dataset that ``datasets`` has cached (``models.hub_dataset_cached``: the whole
    repository for a benchmark's ``hub_id``, the named config for a corpus ``owner/name:config``).
    """
    needs = []
    model_path = cfg.model.get("path")
    if model_path and _is_hub_id(model_path) and not _in_local_hub_cache(str(model_path)):
        needs.append(f"model.path={model_path} is a hub id (fix: model.path=/local/model/dir)")
    bench = cfg.benchmark
    if "hub_id" in bench and not bench.get("path") and not hub_dataset_cached(str(bench.hub_id)):
        needs.append(
            f"benchmark.path is null, so {bench.hub_id} would be downloaded "
            "(fix: benchmark.path=/local/data/dir, or load it once where the hub is reachable "
            "so that it is in HF_DATASETS_CACHE)"
        )
    for key in ("forget_corpus", "retain_corpus"):
        spec = bench.get(key)
        if spec and is_hub_spec(str(spec)) and not hub_dataset_cached(*str(spec).split(":", 1)):
            needs.append(f"benchmark.{key}={spec} is a hub corpus (fix: a local .json/.jsonl/.txt)")
    return needs


def check_hub_access(cfg: DictConfig) -> None:
    """Raise ConnectionError listing every hub-dependent setting when the hub is unreachable."""
    needs = hub_needs(cfg)
    if needs and not hub_reachable():
        raise ConnectionError(
            "The Hugging Face hub is unreachable and this run needs it: "
            + "; ".join(needs)
            + ". Point these settings at local copies (same layout as on the hub)."
        )
