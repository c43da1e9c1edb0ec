"""The fine-tuning stage that makes the "target model" unlearning starts from.

It teaches the base model the benchmark's facts and abstention on unknown entities, and is
cached on disk.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from lunar_exp import distributed
from lunar_exp.bookkeeping import cache
from lunar_exp.interfaces import ChatModel, UnlearnData
from lunar_exp.metrics.primitives import padding_id
from lunar_exp.prompts import encode_item_pairs
from lunar_exp.settings import setting, validate
from lunar_exp.training import supervised_finetune

log = logging.getLogger(__name__)

# Bump when the stage's behaviour changes so stale cache entries are not reused.
STAGE_VERSION = 1


@dataclass(frozen=True)
class FinetuneReport:
    """How the target model was obtained."""

    cached: bool
    seconds: float
    path: str
    losses: list[float]


@dataclass(kw_only=True)
class FineTune:
    """Full fine-tuning on forget + retain + abstention items (answer tokens only)."""

    enabled: bool = setting(
        True, help="when false the base model is the target model (e.g. an already fine-tuned one)."
    )
    lr: float = setting(3e-4, gt=0, help="peak AdamW learning rate (linear warm-up then decay).")
    epochs: int = setting(6, ge=1, help="passes over the items.")
    batch_size: int = setting(8, ge=1, help="items per step.")
    weight_decay: float = setting(0.0, ge=0, help="AdamW weight decay.")
    seed: int = setting(0, help="shuffling seed.")
    cache_dir: str | Path = setting(".cache", help="root of the on-disk cache.")

    def __post_init__(self) -> None:
        # A disabled stage never trains: its counts are not used, so not checked.
        validate(self, "finetune", skip=() if self.enabled else ("epochs", "batch_size"))

    @property
    def hparams(self) -> dict[str, object]:
        """The training settings: part of the cache key of the target model (keep the names)."""
        names = ("lr", "epochs", "batch_size", "weight_decay", "seed")
        return {name: vars(self)[name] for name in names}

    def entry(self, model_key: dict, data: UnlearnData) -> Path:
        """Cache location keyed by the model config, the exact training items and the hparams."""
        items = [
            (qa.question, qa.answer, *(("plain",) if qa.plain else ()))
            for qa in data.finetune_items()
        ]
        key = cache.config_key(STAGE_VERSION, model_key, items, self.hparams)
        return Path(self.cache_dir) / "targets" / key

    def run(
        self, chat: ChatModel, data: UnlearnData, model_key: dict, role: str = "target model"
    ) -> FinetuneReport:
        """Replace ``chat.model`` by the cached target model, training it first if needed.

        With several ranks every rank trains its shard and ends with the full model; rank 0
        writes the cache entry and the others wait for it (``cache.write_entry``).
        """
        if not self.enabled:
            return FinetuneReport(cached=False, seconds=0.0, path="", losses=[])
        start = time.perf_counter()
        entry = self.entry(model_key, data)
        # Rank 0 decides hit or miss for every rank: a miss trains on all of them (sharded).
        meta = distributed.agree(cache.read_entry(entry) if distributed.is_main() else None)
        if meta is not None:
            log.info("%s loaded from cache %s", role.capitalize(), entry)
            self._load(chat, entry)
            losses = _cached_losses(meta, entry)
            return FinetuneReport(True, time.perf_counter() - start, str(entry), losses)
        log.info("Fine-tuning the %s (cache miss: %s)", role, entry)
        losses = self._train(chat, data, stage=f"finetune/{role.replace(' ', '_')}")
        cache.write_entry(
            entry,
            lambda tmp: chat.model.save_pretrained(tmp, safe_serialization=True),
            {"losses": losses, "hparams": self.hparams, "model": model_key},
        )
        return FinetuneReport(False, time.perf_counter() - start, str(entry), losses)

    def _train(self, chat: ChatModel, data: UnlearnData, stage: str) -> list[float]:
        items = data.finetune_items()
        pairs = encode_item_pairs(chat.tokenizer, items, chat.system_prompt)
        pad = padding_id(chat.tokenizer)
        torch.manual_seed(self.seed)
        return supervised_finetune(
            chat.model,
            pairs,
            pad,
            lr=self.lr,
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=self.seed,
            weight_decay=self.weight_decay,
            stage=stage,
        )

    @staticmethod
    def _load(chat: ChatModel, entry: Path) -> None:
        device, dtype = chat.model.device, chat.model.dtype
        model = AutoModelForCausalLM.from_pretrained(entry, dtype=dtype, use_safetensors=True)
        # transformers wraps PreTrainedModel.to in functools.wraps, whose typeshed type
        # (_Wrapped) has no __get__: pyright sees the bound call as missing ``self``.
        chat.model = model.to(device).eval()  # pyright: ignore[reportArgumentType]


def _cached_losses(meta: dict[str, object], entry: Path) -> list[float]:
    """The per-epoch losses a cache entry's metadata recorded when it was trained."""
    losses = meta["losses"]
    if not isinstance(losses, list):
        raise ValueError(
            f"Cache entry {entry} records losses={losses!r}, not a list. Fix: delete the entry "
            "so the stage trains again."
        )
    return losses
