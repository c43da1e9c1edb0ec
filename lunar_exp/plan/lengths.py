"""Token lengths and batch sizes of the sets each stage batches, without loading any weights.

Generated benchmarks (synthetic, toy), PISTOL JSON and TOFU/MUSE from a local ``benchmark.path``
are read and tokenized (the tokenizer loads without weights: the tiny one in-process, a local or
cached one from its files, the embedded SmolLM2's from its GGUF). Hub data is never fetched: the
lengths then come from :data:`HUB_DEFAULTS` and the benchmark config, in words converted at
:data:`TOKENS_PER_WORD`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig

# Llama-family BPE tokens per English word: conf/exp/wmdp_zephyr.yaml's "380 words ~ 512 tokens".
TOKENS_PER_WORD = 1.35
# Tokens a chat template adds around one question and answer (Llama-2's [INST] ... [/INST]).
TEMPLATE_TOKENS = 16
# Longest TOFU question + answer and longest question, in words, measured on the shared copy
# (../shared/benchdata/tofu/forget10.json: 104 and 39 words); used for hub TOFU.
TOFU_ITEM_WORDS, TOFU_QUESTION_WORDS = 104, 39
# LUNAR's reference prompts and abstention answers (unknown-person questions), in words.
REFERENCE_WORDS = 40
# Benchmarks read from local files or generated in-process (class names).
READABLE = {"SyntheticBenchmark", "QAJsonBenchmark"}
READABLE_WITH_PATH = {"TofuBenchmark", "MUSEBenchmark"}


@dataclass(frozen=True)
class Lengths:
    """Longest padded length (tokens) of each set, and the evaluation's batch settings."""

    forget: int
    retain: int
    reference: int
    finetune: int
    prompt: int
    max_new_tokens: int
    eval_batch_size: int
    ranked_generation: bool
    source: str
    counts: dict[str, int] | None = None  # items per set when read from the data
    shared_prefix: int = 0  # tokens every LUNAR row sequence starts with (run once)

    def items(self, name: str, batch: int) -> int:
        """Items in the largest batch of set ``name`` (``batch``, fewer when the set is smaller)."""
        if self.counts is None or name not in self.counts:
            return batch
        return max(1, min(batch, self.counts[name]))


def token_lengths(cfg: DictConfig) -> Lengths:
    """Lengths read from the data when that is cheap, else the documented defaults."""
    kind = str(cfg.benchmark.get("_target_", "")).rsplit(".", 1)[-1]
    if kind in READABLE or (kind in READABLE_WITH_PATH and cfg.benchmark.get("path")):
        return _from_data(cfg, kind)
    return _defaults(cfg, kind)


def _tokens(words: float) -> int:
    return math.ceil(TOKENS_PER_WORD * words) + TEMPLATE_TOKENS


def _defaults(cfg: DictConfig, kind: str) -> Lengths:
    bench = cfg.benchmark
    batch = int(bench.get("eval_batch_size") or 8)
    reference = _tokens(REFERENCE_WORDS)
    if kind == "TofuBenchmark":
        item = _tokens(TOFU_ITEM_WORDS)
        return Lengths(
            item, item, reference, item, _tokens(TOFU_QUESTION_WORDS),
            int(bench.max_new_tokens), batch, False,
            f"defaults: TOFU items <= {TOFU_ITEM_WORDS} words (shared forget10 copy)",
        )  # fmt: skip
    if kind == "MUSEBenchmark":
        chunk = _tokens(bench.chunk_words)
        new = max(int(bench.knowmem_max_new_tokens), int(bench.verbmem_max_new_tokens))
        return Lengths(
            chunk, chunk, reference, chunk, chunk, new, batch, False,
            f"defaults: MUSE chunks of chunk_words={bench.chunk_words} words",
        )  # fmt: skip
    if kind == "WMDPBenchmark":
        chunk = _tokens(bench.chunk_words)
        # lm-eval scores multiple choice by log-likelihood; batch_tokens bounds each pass.
        return Lengths(
            chunk, chunk, reference, chunk, chunk, 0, batch, False,
            f"defaults: WMDP chunks of chunk_words={bench.chunk_words} words",
        )  # fmt: skip
    raise ValueError(
        f"The planner has no length defaults for benchmark {kind!r}. Fix: give the benchmark "
        "a local benchmark.path, or plan one of tofu, muse, wmdp, synthetic, qa_json."
    )


def _from_data(cfg: DictConfig, kind: str) -> Lengths:
    from lunar_exp.prompts import encode_item_pairs

    data = instantiate(cfg.benchmark).load()
    tokenizer = _tokenizer(cfg)
    system = cfg.model.get("system_prompt")
    unlearn = data.unlearn

    def longest(items, prompt_only: bool = False) -> int:
        if not items:
            return 0
        if tokenizer is None:
            words = [len(q.question.split()) + (0 if prompt_only else len(q.answer.split()))
                     for q in items]  # fmt: skip
            return _tokens(max(words))
        pairs = encode_item_pairs(tokenizer, items, system)
        return max(len(p) + (0 if prompt_only else len(a)) for p, a in pairs)

    every = unlearn.forget + unlearn.retain
    prefix = 0
    if tokenizer is not None and unlearn.forget:
        from lunar_exp.prompts import shared_prefix_length

        sequences = [p + a for p, a in encode_item_pairs(tokenizer, every, system)]
        prefix = max(0, min(shared_prefix_length(sequences), min(map(len, sequences)) - 1))
    how = "tokenized" if tokenizer is not None else f"{TOKENS_PER_WORD} tokens/word"
    return Lengths(
        forget=longest(unlearn.forget),
        retain=longest(unlearn.retain),
        reference=longest(unlearn.reference),
        finetune=longest(unlearn.finetune_items()),
        prompt=longest(every, prompt_only=True),
        max_new_tokens=int(data.generation.max_new_tokens),
        eval_batch_size=int(data.generation.batch_size),
        ranked_generation=kind in READABLE,
        source=f"read from the {kind} data ({how})",
        counts={
            "forget": len(unlearn.forget),
            "retain": len(unlearn.retain),
            "reference": len(unlearn.reference),
            "finetune": len(unlearn.finetune_items()),
            "evaluate": max(len(unlearn.forget), len(unlearn.retain)),
        },
        shared_prefix=prefix,
    )


def _tokenizer(cfg: DictConfig):
    """The run's tokenizer when it loads without weights and without the network; else None."""
    from transformers import AutoTokenizer

    model = cfg.model
    try:
        if str(model.get("_target_", "")).endswith("tiny_llama"):
            from lunar_exp.tiny_tokenizer import build_tokenizer

            tokenizer = build_tokenizer()
        elif model.get("path") and not str(model.path).endswith(".gguf"):
            tokenizer = AutoTokenizer.from_pretrained(str(model.path), local_files_only=True)
        else:
            tokenizer = _gguf_tokenizer(cfg)
    except (OSError, ValueError):
        return None
    if model.get("chat_template"):
        tokenizer.chat_template = model.chat_template
    return tokenizer


def _gguf_tokenizer(cfg: DictConfig):
    """The converted copy's tokenizer when the run has cached one, else the GGUF's own."""
    from transformers import AutoTokenizer

    from lunar_exp.bookkeeping import cache
    from lunar_exp.models import _dtype

    gguf = _gguf_path(cfg.model)
    key = cache.config_key(str(gguf), gguf.stat().st_size, str(_dtype(str(cfg.model.dtype))))
    entry = Path(str(cfg.paths.cache_dir)) / "models" / f"gguf-{key}"
    if (entry / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(entry)
    return AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)


def _gguf_path(model: DictConfig) -> Path:
    from lunar_exp.models import packaged_file

    if model.get("path"):
        return Path(str(model.path))
    return packaged_file(model.package, model.gguf_file or "")
