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

from lunar_exp.bookkeeping import cache
from lunar_exp.bookkeeping.errors import require_counts, require_ranges
from lunar_exp.interfaces import ChatModel, UnlearnData
from lunar_exp.prompts import encode_item_pairs
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


class FineTune:
    """Full fine-tuning on forget + retain + abstention items (answer tokens only).

    Args:
        enabled: when false the base model is the target model (e.g. an already fine-tuned model).
        lr: peak AdamW learning rate (linear warm-up then decay).
        epochs: passes over the items.
        batch_size: items per step.
        weight_decay: AdamW weight decay.
        seed: shuffling seed.
        cache_dir: root of the on-disk cache.
    """

    def __init__(
        self,
        enabled: bool = True,
        lr: float = 3e-4,
        epochs: int = 6,
        batch_size: int = 8,
        weight_decay: float = 0.0,
        seed: int = 0,
        cache_dir: str = ".cache",
    ) -> None:
        require_ranges("finetune", {"lr": lr}, {"weight_decay": weight_decay})
        if enabled:
            require_counts("finetune", 1, epochs=epochs, batch_size=batch_size)
        self.enabled = enabled
        self.hparams = {
            "lr": lr,
            "epochs": epochs,
            "batch_size": batch_size,
            "weight_decay": weight_decay,
            "seed": seed,
        }
        self.cache_dir = Path(cache_dir)

    def entry(self, model_key: dict, data: UnlearnData) -> Path:
        """Cache location keyed by the model config, the exact training items and the hparams."""
        items = [
            (qa.question, qa.answer, *(("plain",) if qa.plain else ()))
            for qa in data.finetune_items()
        ]
        key = cache.config_key(STAGE_VERSION, model_key, items, self.hparams)
        return self.cache_dir / "targets" / key

    def run(
        self, chat: ChatModel, data: UnlearnData, model_key: dict, role: str = "target model"
    ) -> FinetuneReport:
        """Replace ``chat.model`` by the cached target model, training it first if needed."""
        if not self.enabled:
            return FinetuneReport(cached=False, seconds=0.0, path="", losses=[])
        start = time.perf_counter()
        entry = self.entry(model_key, data)
        meta = cache.read_entry(entry)
        if meta is not None:
            log.info("%s loaded from cache %s", role.capitalize(), entry)
            self._load(chat, entry)
            return FinetuneReport(True, time.perf_counter() - start, str(entry), meta["losses"])
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
        pad = chat.tokenizer.pad_token_id
        torch.manual_seed(self.hparams["seed"])
        return supervised_finetune(
            chat.model,
            pairs,
            pad,
            **{k: self.hparams[k] for k in ("lr", "epochs", "batch_size", "seed", "weight_decay")},
            stage=stage,
        )

    @staticmethod
    def _load(chat: ChatModel, entry: Path) -> None:
        device, dtype = chat.model.device, chat.model.dtype
        model = AutoModelForCausalLM.from_pretrained(entry, dtype=dtype, use_safetensors=True)
        chat.model = model.to(device).eval()
