"""Fluency of generated answers (``<split>/fluency_nll``), judged by the target model.

The judge of a run is its target model, the model before unlearning: the fine-tuned target's
cache entry, or the configured model when the run does not fine-tune. The pipeline scores the
target's own answers while it evaluates the target and the rest (the unlearned model's answers,
the utility's) with the judge reloaded after every evaluation and attack.

A saved ``unlearned_model/`` records its judge (:data:`JUDGE_FILE`), so that scoring it again
with ``method=none finetune=none model.path=<that dir>`` judges its answers by the same target
and reproduces the run's after-metrics, fluency included. A checkpoint without that record (a
published model) is its own judge.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from transformers import AutoModelForCausalLM, PreTrainedModel

from lunar_exp.bookkeeping import outputs
from lunar_exp.interfaces import ChatModel, EvalResult
from lunar_exp.metrics.coherence import fluency_directions, score_fluency

log = logging.getLogger(__name__)

JUDGE_FILE = "fluency_judge.json"
# Settings of the recorded model config that say where, not what, to load: the current run's.
PLACEMENT_KEYS = ("device", "device_map", "cache_dir")


@dataclass(frozen=True)
class Judge:
    """The model that judges fluency.

    Attributes:
        target_path: the fine-tuned target's directory (the fine-tuning cache entry); empty when
            the target is the configured model itself.
        model: the resolved ``conf/model`` config that loads the target when ``target_path``
            is empty (and that the fine-tuning started from otherwise).
    """

    target_path: str
    model: dict[str, Any]


def run_judge(model_cfg: DictConfig, target_path: str) -> Judge:
    """The judge of a run that unlearns: its target model."""
    node = OmegaConf.to_container(model_cfg, resolve=True)
    assert isinstance(node, dict), "the model config is a mapping"
    return Judge(target_path=target_path, model={str(k): v for k, v in node.items()})


def record_judge(model_dir: Path, judge: Judge) -> None:
    """Write ``judge`` into a saved model's directory (:data:`JUDGE_FILE`)."""
    outputs.write_json_atomic(model_dir / JUDGE_FILE, asdict(judge))


def recorded_judge(model_cfg: DictConfig) -> Judge | None:
    """The judge recorded beside the configured checkpoint; None when it is its own judge.

    A record whose target directory no longer exists (a cleared cache) is ignored with a warning:
    the checkpoint then judges its own answers, as a published model does.
    """
    path = model_cfg.get("path")
    record = Path(str(path)) / JUDGE_FILE if path else None
    if record is None or not record.is_file():
        return None
    try:
        found = json.loads(record.read_text())
        judge = Judge(target_path=str(found["target_path"]), model=dict(found["model"]))
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(
            f"{record} is not a fluency-judge record ({err}). Fix: delete it (the model then "
            "judges its own answers' fluency) or save the model again with save_model=true."
        ) from err
    if judge.target_path and not Path(judge.target_path).is_dir():
        log.warning(
            "%s names the target model %s, which is gone (cache cleared?); the checkpoint "
            "judges its own answers' fluency",
            record,
            judge.target_path,
        )
        return None
    return judge


def add_fluency(chat: ChatModel, result: EvalResult, batch_size: int) -> EvalResult:
    """``result`` with ``<split>/fluency_nll`` under ``chat``'s model (the judge).

    Splits already scored are left alone; records get ``fluency_nll``
    (``lunar_exp.metrics.coherence.score_fluency``).
    """
    todo = {
        split: rows
        for split, rows in result.generations.items()
        if f"{split}/fluency_nll" not in result.metrics
    }
    found = score_fluency(chat.model, chat.tokenizer, chat.system_prompt, todo, batch_size)
    result.metrics.update(found)
    result.directions.update(fluency_directions(found))
    return result


def swap_in_judge(chat: ChatModel, judge: Judge, model_cfg: DictConfig) -> None:
    """Replace ``chat``'s model by the judge, loaded where it was, after releasing it."""
    old = chat.model
    device, dtype = old.device, old.dtype
    # frees the old weights, whoever still holds the module (transformers' wrapped ``to``)
    old.to("meta")  # pyright: ignore[reportArgumentType]
    if device.type == "cuda":
        torch.cuda.empty_cache()
    log.info("Loading the fluency judge (%s)", judge.target_path or "the target model config")
    chat.model = _load_judge(judge, model_cfg, device, dtype)


def _load_judge(
    judge: Judge, model_cfg: DictConfig, device: torch.device, dtype: torch.dtype
) -> PreTrainedModel:
    if not judge.target_path:
        placement = {k: model_cfg.get(k) for k in PLACEMENT_KEYS if k in model_cfg}
        node: Mapping[str, Any] = {**judge.model, **placement}
        return instantiate(OmegaConf.create(dict(node))).model
    model = AutoModelForCausalLM.from_pretrained(
        judge.target_path, dtype=dtype, use_safetensors=True
    )
    # transformers' wrapped ``to`` confuses pyright (see finetune.FineTune._load)
    return model.to(device).eval()  # pyright: ignore[reportArgumentType]
