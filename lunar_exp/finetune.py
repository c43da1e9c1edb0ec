"""The fine-tuning stage that makes the "target model" unlearning starts from.

It teaches the base model the benchmark's facts and abstention on unknown entities, and is
cached on disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, PreTrainedModel

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
# The settings that only LoRA fine-tuning reads; part of the cache key when adapter=lora.
LORA_SETTINGS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_targets")
# Llama-family projections (SmolLM2, Llama, Mistral, Qwen): attention and MLP.
DEFAULT_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
EpochHook = Callable[[int, PreTrainedModel], None]


@dataclass(frozen=True)
class FinetuneReport:
    """How the target model was obtained."""

    cached: bool
    seconds: float
    path: str
    losses: list[float]


@dataclass(kw_only=True)
class FineTune:
    """Fine-tuning on forget + retain + abstention items (answer tokens only).

    ``adapter=full`` trains every weight; ``adapter=lora`` trains LoRA adapters (peft) on
    ``lora_targets`` and merges them into the weights before the target model is cached, so
    every later stage sees a plain model.
    """

    enabled: bool = setting(
        True, help="when false the base model is the target model (e.g. an already fine-tuned one)."
    )
    lr: float = setting(3e-4, gt=0, help="peak AdamW learning rate (linear warm-up then decay).")
    epochs: int = setting(6, ge=1, help="passes over the items.")
    batch_size: int = setting(8, ge=1, help="items per step.")
    weight_decay: float = setting(0.0, ge=0, help="AdamW weight decay.")
    seed: int = setting(0, help="shuffling seed (and LoRA's initialisation).")
    adapter: Literal["full", "lora"] = setting(
        "full", help="full: train every weight; lora: train LoRA adapters, then merge them."
    )
    lora_rank: int = setting(8, ge=1, help="LoRA rank r (adapter=lora).")
    lora_alpha: int = setting(32, ge=1, help="LoRA alpha; the update is scaled by alpha/r.")
    lora_dropout: float = setting(0.05, ge=0, le=1, help="dropout on the LoRA branch's input.")
    lora_targets: list[str] = setting(
        DEFAULT_LORA_TARGETS, help="module names that get LoRA adapters (adapter=lora)."
    )
    cache_dir: str | Path = setting(".cache", help="root of the on-disk cache.")

    def __post_init__(self) -> None:
        # A disabled stage never trains: its counts are not used, so not checked.
        validate(self, "finetune", skip=() if self.enabled else ("epochs", "batch_size"))
        self.lora_targets = [str(name) for name in self.lora_targets]  # a plain list for the key
        if self.adapter == "lora" and not self.lora_targets:
            raise ValueError(
                "finetune.lora_targets is empty, so LoRA would train nothing. Fix: list module "
                "names such as [q_proj, v_proj], or set finetune.adapter=full."
            )

    @property
    def hparams(self) -> dict[str, object]:
        """The training settings: part of the cache key of the target model (keep the names).

        LoRA's settings join only when ``adapter=lora``, so full fine-tuning keeps its keys.
        """
        names = ("lr", "epochs", "batch_size", "weight_decay", "seed")
        if self.adapter == "lora":
            names += ("adapter", *LORA_SETTINGS)
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
        self,
        chat: ChatModel,
        data: UnlearnData,
        model_key: dict,
        role: str = "target model",
        on_epoch_end: EpochHook | None = None,
    ) -> FinetuneReport:
        """Replace ``chat.model`` by the cached target model, training it first if needed.

        With several ranks every rank trains its shard and ends with the full model; rank 0
        writes the cache entry and the others wait for it (``cache.write_entry``).
        ``on_epoch_end(epoch, model)`` is called after every training epoch (e.g. a probe).
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
        if self.adapter == "lora" and distributed.is_distributed():
            raise ValueError(
                "finetune.adapter=lora trains in one process only (LoRA is not sharded with "
                "FSDP2 here). Fix: fine-tune once with one process (sharded runs then load the "
                "cached target model), or set finetune.adapter=full."
            )
        log.info("Fine-tuning the %s (cache miss: %s)", role, entry)
        stage = f"finetune/{role.replace(' ', '_')}"
        losses = self._train(chat, data, stage, on_epoch_end)
        cache.write_entry(
            entry,
            lambda tmp: chat.model.save_pretrained(tmp, safe_serialization=True),
            {"losses": losses, "hparams": self.hparams, "model": model_key},
        )
        return FinetuneReport(False, time.perf_counter() - start, str(entry), losses)

    def _train(
        self, chat: ChatModel, data: UnlearnData, stage: str, on_epoch_end: EpochHook | None
    ) -> list[float]:
        items = data.finetune_items()
        pairs = encode_item_pairs(chat.tokenizer, items, chat.system_prompt)
        pad = padding_id(chat.tokenizer)
        torch.manual_seed(self.seed)
        model = self._with_adapters(chat.model) if self.adapter == "lora" else chat.model
        losses = supervised_finetune(
            model,  # pyright: ignore[reportArgumentType]  (a PeftModel forwards like the model)
            pairs,
            pad,
            lr=self.lr,
            epochs=self.epochs,
            batch_size=self.batch_size,
            seed=self.seed,
            weight_decay=self.weight_decay,
            stage=stage,
            on_epoch_end=on_epoch_end,
        )
        if isinstance(model, PeftModel):
            chat.model = merge_adapters(model)
        return losses

    def _with_adapters(self, model: PreTrainedModel) -> PeftModel:
        """``model`` with trainable LoRA adapters on ``lora_targets`` (the base weights frozen)."""
        config = LoraConfig(
            r=self.lora_rank,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=list(self.lora_targets),
            bias="none",
            task_type="CAUSAL_LM",
        )
        try:
            wrapped = get_peft_model(model, config)
        except ValueError as err:
            raise ValueError(
                f"finetune.lora_targets={list(self.lora_targets)} do not fit "
                f"{type(model).__name__} ({' '.join(str(err).split())}). Fix: name modules "
                "of this model, e.g. [q_proj, v_proj]."
            ) from err
        assert isinstance(wrapped, PeftModel), "get_peft_model returns a PeftModel"
        return wrapped

    @staticmethod
    def _load(chat: ChatModel, entry: Path) -> None:
        device, dtype = chat.model.device, chat.model.dtype
        model = AutoModelForCausalLM.from_pretrained(entry, dtype=dtype, use_safetensors=True)
        # transformers wraps PreTrainedModel.to in functools.wraps, whose typeshed type
        # (_Wrapped) has no __get__: pyright sees the bound call as missing ``self``.
        chat.model = model.to(device).eval()  # pyright: ignore[reportArgumentType]


def merge_adapters(model: PeftModel) -> PreTrainedModel:
    """Fold the trained LoRA updates into the base weights and drop every peft module."""
    merged = model.merge_and_unload()
    for param in merged.parameters():
        param.requires_grad_(True)  # peft froze the base weights; later stages train them
    merged.eval()
    return merged  # pyright: ignore[reportReturnType]


def _cached_losses(meta: dict[str, object], entry: Path) -> list[float]:
    """The per-epoch losses a cache entry's metadata recorded when it was trained."""
    losses = meta["losses"]
    if not isinstance(losses, list):
        raise ValueError(
            f"Cache entry {entry} records losses={losses!r}, not a list. Fix: delete the entry "
            "so the stage trains again."
        )
    return losses
