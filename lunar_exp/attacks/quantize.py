"""Weight-only quantization of the linear layers, then evaluation (Zhang et al., ICLR 2025).

"Catastrophic failure of LLM unlearning via quantization": unlearning by small diffuse weight
updates can fall below the quantization step, so the quantized unlearned model answers again.
Backends: optimum-quanto (qint8 per channel, qint4 group-wise) and bitsandbytes NF4 (the 4-bit
format of Zhang et al.'s experiments); both run on CPU and GPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from lunar_exp.attacks._common import AttackTarget, linear_weights, model_copy, relative_change
from lunar_exp.interfaces import ChatModel, EvalResult, UnlearnData
from lunar_exp.settings import setting, validate

# Block sizes bitsandbytes' 4-bit quantizer accepts.
NF4_BLOCKSIZES = (32, 64, 128, 256, 512, 1024, 2048, 4096)


@dataclass(kw_only=True)
class Quantize:
    """Quantize a copy of the unlearned model's linear layers (weights only) and evaluate it.

    Each linear layer is quantized by the library (optimum-quanto ``QLinear.from_module`` +
    ``freeze`` for int8/int4; bitsandbytes ``quantize_4bit`` for NF4: their scales, blocks and
    rounding), and the copy then computes with the dequantized weights,
    the values a weight-only quantized kernel multiplies by. Keeping plain ``nn.Linear``
    modules lets evaluation run under ``torch.inference_mode`` and keeps LUNAR's ``mode=hook``
    control attached to the same modules.
    """

    weights: Literal["int8", "int4", "nf4"] = setting(
        "int8",
        help="int8 (per-channel) or int4 (group-wise), quanto's qint8 / qint4, or nf4 "
        "(bitsandbytes 4-bit NormalFloat, blocks of blocksize).",
    )
    exclude: list[str] = setting(
        ["lm_head"],
        help="names of modules left in full precision (the attack touches only linear layers "
        "inside the decoder blocks).",
    )
    blocksize: int = setting(64, help="NF4 block size (64, bitsandbytes' default).")

    def __post_init__(self) -> None:
        validate(self, "attack.quantize")
        if self.weights == "nf4" and self.blocksize not in NF4_BLOCKSIZES:
            raise ValueError(
                f"attack.quantize_nf4.blocksize={self.blocksize!r} is not an NF4 block size. "
                f"Fix: use one of {list(NF4_BLOCKSIZES)} (bitsandbytes' choices; 64 is its "
                "default)."
            )

    def check(self, chat: ChatModel, data: UnlearnData) -> None:
        """Nothing model-specific to check before the run."""

    def evaluate(self, target: AttackTarget) -> tuple[EvalResult, dict[str, object]]:
        """Evaluate a quantized copy; report how far its weights moved from the originals."""
        original = {k: v.detach() for k, v in linear_weights(target.chat.model).items()}
        with model_copy(target.chat) as clone:
            self._quantize_in_place(clone.model)
            quantized = {k: v.detach() for k, v in linear_weights(clone.model).items()}
            info = relative_change(original, quantized)
            result = target.evaluate(clone)
        backend = "bitsandbytes" if self.weights == "nf4" else "optimum-quanto"
        return result, {"backend": backend, **info}

    @torch.no_grad()
    def _quantize_in_place(self, model: torch.nn.Module) -> None:
        for name, module in model.named_modules():
            if not isinstance(module, torch.nn.Linear) or any(x in name for x in self.exclude):
                continue
            module.weight.copy_(self._dequantized(module).to(module.weight.dtype))

    def _dequantized(self, module: torch.nn.Linear) -> torch.Tensor:
        if self.weights == "nf4":
            import bitsandbytes.functional as bnb

            packed, state = bnb.quantize_4bit(
                module.weight.data, blocksize=self.blocksize, quant_type="nf4"
            )
            return bnb.dequantize_4bit(packed, state)
        from optimum.quanto import qint4, qint8
        from optimum.quanto.nn import QLinear

        quantized = QLinear.from_module(
            module, weights={"int8": qint8, "int4": qint4}[self.weights]
        )
        if quantized is None:
            raise TypeError(f"optimum-quanto cannot quantize {type(module).__name__}")
        quantized.freeze()
        weight = quantized.qweight
        if weight is None:
            raise TypeError("optimum-quanto left the layer without quantized weights")
        return weight.dequantize()
