"""The fine-tuning stage that makes the "target model" unlearning starts from.

It teaches the base model the benchmark's facts and abstention on unknown entities, and is
cached on disk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, PreTrainedModel

from lunar_exp import distributed
from lunar_exp.bookkeeping import cache
from lunar_exp.bookkeeping.environment import describe_environment
from lunar_exp.general_questions import load_general_prompts, with_own_answers
from lunar_exp.hooks import decoder_layers
from lunar_exp.interfaces import QA, ChatModel, UnlearnData
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
    every later stage sees a plain model. ``top_layers=N`` trains only the last N decoder blocks
    (and the final norm; with LoRA, adapters only in those blocks): backward stops at block
    ``depth - N``, so a step costs less. Every weight is trainable again afterwards.
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
    top_layers: int | None = setting(
        None,  # 1..depth, checked against the model when it trains
        help="train only the last N decoder blocks and the final norm (None: every weight; "
        "with adapter=lora: adapters only in those blocks).",
    )
    replay_path: str | None = setting(
        None,
        help="general questions trained with the base model's own greedy answers beside the "
        "benchmark's items, so the target keeps answering questions outside the benchmark: a "
        "folder of MMLU-style *.csv files or a JSON list of {question} records (never an "
        "evaluation set). null: no replay.",
    )
    replay_limit: int | None = setting(None, gt=0, help="replay the first N questions (null: all).")
    replay_answer_tokens: int = setting(
        48, ge=1, help="greedy answer tokens the base model gives each replay question."
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
        self._replay: tuple[QA, ...] = ()
        if self.enabled and self.replay_path is not None:
            self._replay = load_general_prompts(
                self.replay_path, self.replay_limit, "finetune.replay_path"
            )

    @property
    def hparams(self) -> dict[str, object]:
        """The training settings: part of the cache key of the target model (keep the names).

        LoRA's settings join only when ``adapter=lora``, ``top_layers`` only when set and the
        replay settings (with the replayed questions) only with a replay set, so full
        fine-tuning of every weight keeps its keys.
        """
        names = ("lr", "epochs", "batch_size", "weight_decay", "seed")
        if self.adapter == "lora":
            names += ("adapter", *LORA_SETTINGS)
        if self.top_layers is not None:
            names += ("top_layers",)
        hparams: dict[str, object] = {name: vars(self)[name] for name in names}
        if self._replay:
            hparams["replay"] = [qa.question for qa in self._replay]
            hparams["replay_answer_tokens"] = self.replay_answer_tokens
        return hparams

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
            return self._from_cache(chat, entry, meta, role, start)
        if self.adapter == "lora" and distributed.is_distributed():
            raise ValueError(
                "finetune.adapter=lora trains in one process only (LoRA is not sharded with "
                "FSDP2 here). Fix: fine-tune once with one process (sharded runs then load the "
                "cached target model), or set finetune.adapter=full."
            )
        # Runs of a parallel sweep that all miss the same entry take turns: one trains.
        with cache.claim(entry) as trained_meanwhile:
            if trained_meanwhile is not None:
                return self._from_cache(chat, entry, trained_meanwhile, role, start)
            log.info("Fine-tuning the %s (cache miss: %s)", role, entry)
            stage = f"finetune/{role.replace(' ', '_')}"
            losses = self._train(chat, data, stage, on_epoch_end)
            cache.write_entry(
                entry,
                lambda tmp: chat.model.save_pretrained(tmp, safe_serialization=True),
                {
                    "losses": losses,
                    "hparams": self.hparams,
                    "model": model_key,
                    "environment": describe_environment(),
                },
            )
        return FinetuneReport(False, time.perf_counter() - start, str(entry), losses)

    def _from_cache(
        self, chat: ChatModel, entry: Path, meta: dict, role: str, start: float
    ) -> FinetuneReport:
        log.info("%s loaded from cache %s", role.capitalize(), entry)
        self._load(chat, entry)
        losses = _cached_losses(meta, entry)
        return FinetuneReport(True, time.perf_counter() - start, str(entry), losses)

    def _train(
        self, chat: ChatModel, data: UnlearnData, stage: str, on_epoch_end: EpochHook | None
    ) -> list[float]:
        items = data.finetune_items() + self._replayed(chat)
        pairs = encode_item_pairs(chat.tokenizer, items, chat.system_prompt)
        pad = padding_id(chat.tokenizer)
        torch.manual_seed(self.seed)
        with self.trainable(chat.model) as model:
            losses = supervised_finetune(
                model,  # pyright: ignore[reportArgumentType]  (a PeftModel forwards like it)
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

    def _replayed(self, chat: ChatModel) -> tuple[QA, ...]:
        """The replay questions with the base model's own answers (before any training)."""
        return with_own_answers(
            chat, self._replay, self.replay_answer_tokens, 16, "finetune replay answers"
        )

    @contextmanager
    def trainable(self, model: PreTrainedModel) -> Iterator[PreTrainedModel | PeftModel]:
        """``model`` as this stage trains it.

        With ``adapter=lora`` a PeftModel (adapters in the top ``top_layers`` blocks when set;
        :func:`merge_adapters` afterwards makes every weight trainable again); else ``model``
        itself, with every weight below the top ``top_layers`` blocks frozen until exit.
        """
        if self.adapter == "lora":
            yield self._with_adapters(model)
        elif self.top_layers is None:
            yield model
        else:
            with top_layers_only(model, self.top_layers):
                yield model

    def _with_adapters(self, model: PreTrainedModel) -> PeftModel:
        """``model`` with trainable LoRA adapters on ``lora_targets`` (the base weights frozen)."""
        config = LoraConfig(
            r=self.lora_rank,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=list(self.lora_targets),
            layers_to_transform=self._lora_layers(model),
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

    def _lora_layers(self, model: PreTrainedModel) -> list[int] | None:
        """The blocks that get adapters: the top ``top_layers`` ones, or None (every block)."""
        if self.top_layers is None:
            return None
        _check_top_layers(model, self.top_layers)
        depth = len(decoder_layers(model))
        return list(range(depth - self.top_layers, depth))

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


def _check_top_layers(model: PreTrainedModel, count: int) -> None:
    """Raise a clear error when ``count`` is not between 1 and the model's number of blocks."""
    depth = len(decoder_layers(model))
    if not 1 <= count <= depth:
        raise ValueError(
            f"finetune.top_layers={count} is out of range for {type(model).__name__} with "
            f"{depth} decoder blocks. Fix: choose finetune.top_layers within 1..{depth}, or "
            "finetune.top_layers=null to train every weight."
        )


@contextmanager
def top_layers_only(model: PreTrainedModel, count: int) -> Iterator[None]:
    """Only the last ``count`` decoder blocks and the final norm are trainable inside.

    The embeddings, the (tied) LM head and the lower blocks are frozen, so backward stops at
    the lowest trained block. On exit every parameter is trainable again (later stages, e.g.
    the gradient methods, train them all, as after :func:`merge_adapters`).
    """
    _check_top_layers(model, count)
    trained = {id(p) for block in decoder_layers(model)[-count:] for p in block.parameters()}
    trained |= {id(p) for p in _final_norm(model).parameters()}
    for param in model.parameters():
        param.requires_grad_(id(param) in trained)
    try:
        yield
    finally:
        for param in model.parameters():
            param.requires_grad_(True)


def _final_norm(model: PreTrainedModel) -> torch.nn.Module:
    """The norm after the last decoder block of a Llama-style model (``model.norm``)."""
    try:
        return model.get_submodule("model.norm")
    except AttributeError as err:
        raise ValueError(
            f"{type(model).__name__} has no model.norm, so finetune.top_layers cannot find its "
            "final norm. Fix: set finetune.top_layers=null (train every weight)."
        ) from err


def _cached_losses(meta: dict[str, object], entry: Path) -> list[float]:
    """The per-epoch losses a cache entry's metadata recorded when it was trained."""
    losses = meta["losses"]
    if not isinstance(losses, list):
        raise ValueError(
            f"Cache entry {entry} records losses={losses!r}, not a list. Fix: delete the entry "
            "so the stage trains again."
        )
    return losses
