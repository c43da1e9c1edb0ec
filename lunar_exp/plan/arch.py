"""The model architecture the planner sizes, read without loading any weights.

Sources, in order: ``plan.arch`` (a built-in name or a path), the tiny test Llama's own config,
a ``.gguf`` file's metadata (the embedded SmolLM2 ships as one), a local model directory's
``config.json``, the local Hugging Face cache, and last a built-in table of the public configs
of the 7B models the experiments name (``conf/exp/*_llama.yaml``, ``wmdp_zephyr.yaml``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, MistralConfig
from transformers.configuration_utils import PretrainedConfig

# Public config.json values (Hugging Face hub, read 2026-12-05).
# Llama-2-7b: https://huggingface.co/meta-llama/Llama-2-7b-hf/blob/main/config.json; the TOFU
# target (locuslab/tofu_ft_llama2-7b, Llama-2-7b-chat fine-tuned) and the MUSE targets
# (muse-bench/MUSE-news_target, MUSE-books_target) are fine-tunes with the same shapes.
# Mistral-7B: https://huggingface.co/mistralai/Mistral-7B-v0.1/blob/main/config.json, the base of
# HuggingFaceH4/zephyr-7b-beta (its config.json has the same shapes).
KNOWN_ARCHS: dict[str, dict] = {
    "llama-2-7b": {
        "kind": "llama",
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "tie_word_embeddings": False,
    },
    "mistral-7b": {
        "kind": "mistral",
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "tie_word_embeddings": False,
    },
}
# Substrings of hub ids (lower case) that name a model of a known architecture.
KNOWN_IDS = {
    "llama-2-7b": "llama-2-7b",
    "llama2-7b": "llama-2-7b",
    "muse-bench/muse-": "llama-2-7b",
    "zephyr-7b": "mistral-7b",
    "mistral-7b": "mistral-7b",
}


@dataclass(frozen=True)
class Arch:
    """What the memory model needs of an architecture.

    ``params`` maps each parameter name to its number of elements (tied weights once), as the
    model would name them.
    """

    name: str
    source: str
    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    params: dict[str, int]

    @property
    def n_params(self) -> int:
        """Number of scalar parameters."""
        return sum(self.params.values())

    @property
    def kv_dim(self) -> int:
        """Width of the keys (and of the values) of one token in one layer."""
        return self.kv_heads * (self.hidden // self.heads)

    def layer_params(self, layer: int) -> int:
        """Parameters of decoder block ``layer``."""
        prefix = f".layers.{layer}."
        return sum(n for name, n in self.params.items() if prefix in name)


def resolve_arch(cfg: DictConfig) -> Arch:
    """The architecture of ``cfg.model`` (or ``cfg.plan.arch``), from metadata only."""
    override = cfg.plan.get("arch")
    if override:
        return _from_name_or_path(str(override), "plan.arch")
    model = cfg.model
    if str(model.get("_target_", "")).endswith("tiny_llama"):
        return _tiny(model)
    path = model.get("path")
    if path:
        return _from_name_or_path(str(path), "model.path")
    if model.get("package"):
        from lunar_exp.models import packaged_file

        return _from_gguf(packaged_file(model.package, model.gguf_file or ""))
    raise ValueError(
        "The model config has neither model.path nor model.package. Fix: set model.path, or "
        "plan.arch=<local model dir | .gguf | " + " | ".join(KNOWN_ARCHS) + ">."
    )


def _from_name_or_path(value: str, key: str) -> Arch:
    if value in KNOWN_ARCHS:
        return _known(value, f"built-in table ({value})")
    if value.endswith(".gguf") and Path(value).is_file():
        return _from_gguf(Path(value))
    if Path(value, "config.json").is_file():
        return _arch(AutoConfig.from_pretrained(value), value, f"{value}/config.json")
    cached = _hf_cached_config(value)
    if cached is not None:
        return _arch(AutoConfig.from_pretrained(cached.parent), value, f"HF cache {cached}")
    for needle, known in KNOWN_IDS.items():
        if needle in value.lower():
            return _known(known, f"built-in table ({known}, matched {value})", value)
    raise ValueError(
        f"{key}={value!r} is no local model, not in the Hugging Face cache and not a model the "
        "planner knows. Fix: set plan.arch to a local model dir (config.json suffices), a .gguf "
        f"file, or one of {', '.join(KNOWN_ARCHS)}."
    )


def _hf_cached_config(repo_id: str) -> Path | None:
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/", "~")):
        return None
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, "config.json")
    return Path(found) if isinstance(found, str) and os.path.isfile(found) else None


def _known(key: str, source: str, name: str | None = None) -> Arch:
    values = dict(KNOWN_ARCHS[key])
    config_class = MistralConfig if values.pop("kind") == "mistral" else LlamaConfig
    return _arch(config_class(**values), name or key, source)


def _tiny(model: DictConfig) -> Arch:
    from lunar_exp.tiny_tokenizer import build_tokenizer

    config = LlamaConfig(
        vocab_size=len(build_tokenizer()),
        hidden_size=model.get("hidden_size", 64),
        intermediate_size=model.get("intermediate_size", 128),
        num_hidden_layers=model.get("num_layers", 4),
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    return _arch(config, "tiny", "lunar_exp.models.tiny_llama settings")


def _from_gguf(path: Path) -> Arch:
    """A Llama-family config from a GGUF file's metadata (the ``gguf`` package; no tensors)."""
    import gguf

    reader = gguf.GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()
    if arch != "llama":
        raise ValueError(
            f"{path.name} is a {arch!r} GGUF; the planner reads llama ones. Fix: set "
            "plan.arch=<local model dir with config.json>."
        )

    def field(key: str):
        return reader.fields[f"llama.{key}"].contents()

    vocab = reader.fields.get("llama.vocab_size")
    config = LlamaConfig(
        vocab_size=int(
            vocab.contents() if vocab else len(reader.fields["tokenizer.ggml.tokens"].data)
        ),
        hidden_size=int(field("embedding_length")),
        intermediate_size=int(field("feed_forward_length")),
        num_hidden_layers=int(field("block_count")),
        num_attention_heads=int(field("attention.head_count")),
        num_key_value_heads=int(field("attention.head_count_kv")),
        tie_word_embeddings=not any(t.name == "output.weight" for t in reader.tensors),
    )
    return _arch(config, path.stem, f"GGUF metadata of {path}")


def _arch(config: PretrainedConfig, name: str, source: str) -> Arch:
    """Parameter names and sizes from a model built on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = {n: p.numel() for n, p in model.named_parameters()}
    text = config.get_text_config()
    heads = int(text.num_attention_heads)
    return Arch(
        name=name,
        source=source,
        vocab=int(text.vocab_size),
        hidden=int(text.hidden_size),
        intermediate=int(text.intermediate_size),
        layers=int(text.num_hidden_layers),
        heads=heads,
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        params=params,
    )
