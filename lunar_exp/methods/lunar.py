"""LUNAR: LLM Unlearning via Neural Activation Redirection (arXiv 2502.07218).

Reference implementation: facebookresearch/LUNAR @ dfa56eb (see ../shared/docs/LUNAR.md).
For each chosen layer l, the MLP ``down_proj`` matrix is edited so that forget prompts leave
block l shifted by c*r_l (r_l = mean reference activation - mean forget activation at the last
prompt token, output of block l) while the outputs of pinned rows stay unchanged.

Beyond the literal recipe (every forget position shifted, only retain prompts pinned), three
options decide whether it works on a given model (docs/lunar_recipe.md has the evidence):
``perturb_positions=after_prefix`` leaves the chat template's shared head out of the shifted rows,
``pin_retain_answers`` pins the retain answers' positions, and ``pin_abstentions`` pins the
reference prompts with their abstention answers so redirected answers stay coherent.
``perturb_positions=all pin_retain_answers=false pin_abstentions=false`` is the paper's recipe.

The regression sums and the solve run on the model's device in ``gram_dtype``; the edit is
written in the weight's dtype and checked against the solved one (``lunar/edit_rel_error``), with
a float32 copy of the projection when rounding would spoil it (docs/lunar.md).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from lunar_exp.general_questions import json_questions, load_general_prompts, with_own_answers
from lunar_exp.hooks import check_layers, decoder_layers, down_proj, redirect_down_proj
from lunar_exp.interfaces import QA, ChatModel, UnlearnData, UnlearnOutcome
from lunar_exp.methods._activations import (
    RowSource,
    iter_rows,
    mean_last_token_outputs,
    run_shared_prefix,
)
from lunar_exp.methods._layer_sweep import steering_sweep, top_layers
from lunar_exp.methods._lunar_edit import WrittenEdit, relative_error, write_edit
from lunar_exp.methods._lunar_solvers import RidgeAccumulator, fit_adamw, fit_report, solve_ridge
from lunar_exp.metrics.primitives import padding_id
from lunar_exp.prompts import encode_item_pairs, encode_item_prompts, shared_prefix_length
from lunar_exp.settings import setting, validate

log = logging.getLogger(__name__)

# The official LUNAR code's reference prompt sets (facebookresearch/LUNAR dataset/splits/), by
# method.reference_set: JSON lists of {"instruction", "category"} records.
OFFICIAL_REFERENCE_FILES = {"harmful": "harmful.json", "unverified": "unverified.json"}


@dataclass
class _Collected:
    """What LUNAR's activation passes produce for the solvers, per layer."""

    accumulators: dict[int, RidgeAccumulator]
    vectors: dict[int, torch.Tensor] = field(default_factory=dict)
    rows: dict[int, list] = field(default_factory=lambda: defaultdict(list))


@dataclass(kw_only=True)
class LUNAR:
    """Rank-1 ``down_proj`` edits that redirect forget prompts into the abstention region."""

    layers: Sequence[int] | Literal["auto"] = setting(
        "auto", help="layer indices to edit, or auto for the steering sweep."
    )
    coeffs: list[float] = setting(
        [2.0], help="coefficient c per layer (one value, or a bare number, serves every layer)."
    )
    solver: Literal["closed_form", "adamw"] = setting(
        "closed_form",
        help="closed_form: exact ridge least squares from streamed Gram sums, memory independent "
        "of the data size; adamw: paper parity, keeps every row, (d_ff + d_model) x 4 bytes per "
        "token and layer (e.g. 0.6 GB per layer for 70k tokens of SmolLM2).",
    )
    perturb_positions: Literal["after_prefix", "all", "last"] = setting(
        "after_prefix", help="forget positions shifted."
    )
    pin_retain_answers: bool = setting(
        True, help="pin retain answers' positions too (not only retain prompts)."
    )
    pin_abstentions: bool = setting(
        True, help="pin the benchmark's reference prompts with their abstention answers."
    )
    reference_set: Literal["benchmark", "harmful", "unverified"] = setting(
        "benchmark",
        help="prompts whose mean activation defines r: the benchmark's abstention (reference) "
        "prompts, or the official code's harmful.json (260 harmful requests) or unverified.json "
        "(199 questions about fictional things) from reference_dir (docs/lunar.md).",
    )
    reference_dir: str = setting(
        "../shared/benchdata/lunar",
        help="folder of the official reference sets (reference_set=harmful|unverified).",
    )
    general_path: str | list[str] | None = setting(
        None,
        help="general questions pinned with the model's own answers, so the edit leaves questions "
        "outside the forget set alone: a folder of MMLU-style *.csv files or a JSON list of "
        "{question} records, or a list of such paths; never evaluation items "
        "(docs/lunar_collateral.md). null: none.",
    )
    general_limit: int | None = setting(
        None, gt=0, help="use the first N general questions (null: all)."
    )
    general_answer_tokens: int = setting(
        32, ge=0, help="greedy answer tokens generated per general question; 0 pins prompts only."
    )
    ridge: float = setting(
        1e-4, ge=0, help="ridge strength relative to the Gram matrix's mean diagonal (closed form)."
    )
    shifted_weight: float = setting(
        1.0, gt=0, help="weight of shifted rows in the regression (1.0 = unweighted, as the paper)."
    )
    lr: float = setting(1e-2, gt=0, help="AdamW learning rate (adamw solver).")
    epochs: int = setting(20, gt=0, help="AdamW epochs.")
    batch_size: int = setting(64, gt=0, help="AdamW rows per step.")
    gamma: float = setting(0.9, ge=0, help="ExponentialLR factor per epoch (adamw solver).")
    weight_decay: float = setting(
        0.01, ge=0, help="AdamW weight decay (PyTorch default 0.01 in the reference code)."
    )
    activation_batch_size: int = setting(
        16,
        gt=0,
        help="prompts per forward pass when collecting activations (the run's batch_tokens also "
        "caps each pass's padded tokens).",
    )
    share_prefix: bool = setting(
        True,
        help="run the tokens every row sequence starts with (the chat template's head) once for "
        "all row sets and let the other passes attend to their cached keys and values; the rows "
        "are the same (attention is causal), the passes shorter. Closed form only: the adamw "
        "solver's minibatches depend on the row order, which full passes keep.",
    )
    sweep_layers: Sequence[int] | None = setting(
        None, help="candidate layers for layers=auto (default: the second half of the model)."
    )
    sweep_top_k: int = setting(1, gt=0, help="how many layers auto keeps.")
    sweep_coeff: float = setting(
        2.0,
        help="steering coefficient of the sweep's probe (the paper's probe uses 2.0); the edit "
        "itself uses coeffs.",
    )
    sweep_retain_weight: float = setting(0.5, help="weight of retain harm in the sweep's score.")
    sweep_probe: int = setting(
        10, gt=0, help="forget and retain questions generated per candidate layer."
    )
    seed: int = setting(0, help="seed for the AdamW row order.")
    gram_dtype: Literal["float64", "float32"] = setting(
        "float64",
        help="dtype of the Gram sums and the closed-form solve, on the model's device; float32 "
        "is faster on GPUs with slow float64 but loses accuracy when the system is "
        "ill-conditioned (docs/lunar.md), and is the one choice on devices without float64 (mps).",
    )
    max_edit_error: float = setting(
        0.01,
        gt=0,
        help="largest relative error (Frobenius) of the edit written in the weight's dtype; above "
        "it the edited down_proj is kept in float32 (lunar/edit_fallback).",
    )
    mode: Literal["edit", "hook"] = setting(
        "edit",
        help="edit writes the edits into the weights; hook leaves the weights alone and returns "
        "an inference-time control that applies the same edits as a removable forward hook on "
        "down_proj (on inside the context, base behaviour outside).",
    )

    def __post_init__(self) -> None:
        if isinstance(self.coeffs, int | float):  # a bare number serves every layer
            self.coeffs = [self.coeffs]
        validate(self, "method")
        self.coeffs = [float(c) for c in self.coeffs]
        if self.layers != "auto":
            _check_layer_list(self.layers)
        self._official_reference: tuple[QA, ...] = ()
        if self.reference_set != "benchmark":
            self._official_reference = load_reference_set(self.reference_set, self.reference_dir)
        self._general: tuple[QA, ...] = ()
        if self.general_path is not None:
            self._general = load_general_prompts(self.general_path, self.general_limit)

    def check(self, chat: ChatModel) -> None:
        """Fail before any expensive stage when the layers or dtype do not fit ``chat.model``."""
        device = chat.model.device
        if self.gram_dtype == "float64" and device.type == "mps":
            raise ValueError(
                f"method.gram_dtype=float64 is not supported on {device} (no float64 there). "
                "Fix: set method.gram_dtype=float32."
            )
        if self.layers != "auto":
            check_layers(chat.model, [int(layer) for layer in self.layers])
        else:
            check_layers(chat.model, self._sweep_candidates(chat))

    def _sweep_candidates(self, chat: ChatModel) -> list[int]:
        """The layers ``layers=auto`` chooses from: ``sweep_layers``, else the second half."""
        count = len(decoder_layers(chat.model))
        candidates = list(self.sweep_layers or range(count // 2, count - 1))
        if not candidates:
            raise ValueError(
                f"method.layers=auto has no candidate layer in a {count}-layer model (it sweeps "
                "the second half of the blocks, below the last). Fix: set method.layers=[0] or "
                "method.sweep_layers=[...] explicitly."
            )
        return candidates

    def unlearn(self, chat: ChatModel, data: UnlearnData) -> UnlearnOutcome:
        """Compute unlearning vectors, choose layers, solve and write back the edits."""
        if not self._reference_items(data):
            raise ValueError(
                "LUNAR needs a reference prompt set (benchmark gives none). Fix: use a benchmark "
                "with reference prompts, set its reference_path, or set "
                "method.reference_set=harmful or unverified."
            )
        layers, sweep = self._choose_layers(chat, data)
        coeffs = self._coeffs_for(layers)
        collected = self._collect(chat, data, layers)
        vectors = collected.vectors
        deltas = self._solve(chat, layers, coeffs, collected)
        control = None
        if self.mode == "edit":
            written = self._write_back(chat, deltas)
        else:
            written = _hook_delivery(chat, deltas)
            control = redirection(deltas)
        metrics = _edit_metrics(written)
        for layer, coeff in zip(layers, coeffs, strict=True):
            shift = coeff * vectors[layer]
            report = fit_report(collected.accumulators[layer], written[layer].delivered, shift)
            metrics.update({f"lunar/{key}/layer{layer}": value for key, value in report.items()})
        for layer in layers:
            metrics[f"lunar/r_norm/layer{layer}"] = float(vectors[layer].norm())
        metrics["unlearn/params_changed"] = float(
            sum(_down_proj_linear(chat, layer).weight.numel() for layer in layers)
        )
        tensors = {f"r.layer{layer}": vectors[layer].float() for layer in layers}
        info = {
            "layers": layers,
            "coeffs": coeffs,
            "solver": self.solver,
            "perturb_positions": self.perturb_positions,
            "layer_sweep": sweep,
            "mode": self.mode,
            "reference_set": self.reference_set,
            "n_reference": len(self._reference_items(data)),
            "n_general": len(self._general),
        }
        if self.mode == "hook":
            tensors.update({f"delta.layer{k}": v.float() for k, v in deltas.items()})
        return UnlearnOutcome(metrics, tensors, info, control, edited_layers=tuple(layers))

    def _coeffs_for(self, layers: list[int]) -> list[float]:
        if len(self.coeffs) == 1:
            return self.coeffs * len(layers)
        if len(self.coeffs) != len(layers):
            raise ValueError(
                f"method.coeffs has {len(self.coeffs)} values for {len(layers)} "
                "layers. Fix: give one coefficient, or one per layer."
            )
        return list(self.coeffs)

    def _reference_items(self, data: UnlearnData) -> tuple[QA, ...]:
        """The prompts whose mean activation defines r (``reference_set``)."""
        return data.reference if self.reference_set == "benchmark" else self._official_reference

    def _vectors(self, chat: ChatModel, data: UnlearnData, layers: Sequence[int]):
        tok, pad = chat.tokenizer, _pad_id(chat)
        ref = encode_item_prompts(tok, self._reference_items(data), chat.system_prompt)
        fgt = encode_item_prompts(tok, data.forget, chat.system_prompt)
        bs = self.activation_batch_size
        ref_mean = mean_last_token_outputs(chat.model, ref, layers, pad, bs, "lunar r: reference")
        fgt_mean = mean_last_token_outputs(chat.model, fgt, layers, pad, bs, "lunar r: forget")
        return {layer: ref_mean[layer] - fgt_mean[layer] for layer in layers}

    def _choose_layers(self, chat: ChatModel, data: UnlearnData):
        if self.layers != "auto":
            layers = sorted(int(layer) for layer in self.layers)
            check_layers(chat.model, layers)
            return layers, None
        candidates = self._sweep_candidates(chat)
        check_layers(chat.model, candidates)
        vectors = self._vectors(chat, data, candidates)
        probe_f, probe_r = data.forget[: self.sweep_probe], data.retain[: self.sweep_probe]
        scores = steering_sweep(
            chat, probe_f, probe_r, vectors, self.sweep_coeff, self.sweep_retain_weight
        )
        layers = top_layers(scores, self.sweep_top_k)
        log.info(
            "LUNAR layer sweep chose %s; scores %s",
            layers,
            {k: round(v["score"], 2) for k, v in scores.items()},
        )
        if max(scores[layer]["score"] for layer in layers) <= 0:
            log.warning(
                "No layer made steered forget answers abstain (all scores <= 0): the "
                "chosen layer is a guess. Try another method.sweep_coeff or sweep_layers."
            )
        return layers, {str(k): v for k, v in scores.items()}

    def _row_sources(self, chat: ChatModel, data: UnlearnData) -> dict[str, RowSource]:
        tok, system = chat.tokenizer, chat.system_prompt
        forget = encode_item_prompts(tok, data.forget, system)
        if self.pin_retain_answers:
            retain = [p + a for p, a in encode_item_pairs(tok, data.retain, system)]
        else:
            retain = encode_item_prompts(tok, data.retain, system)
        prefix = shared_prefix_length(forget + retain)
        start = {
            "all": lambda p: 0,
            "last": lambda p: len(p) - 1,
            "after_prefix": lambda p: min(prefix, len(p) - 1),
        }[self.perturb_positions]
        last = [len(p) - 1 for p in forget]
        sources = {
            "forget": RowSource(forget, [start(p) for p in forget], last),
            "retain": RowSource(retain, [None] * len(retain)),
        }
        if self.pin_abstentions:
            pairs = encode_item_pairs(tok, data.reference, system)
            last = [len(p) - 1 for p, _ in pairs]
            sources["reference"] = RowSource([p + a for p, a in pairs], [None] * len(pairs), last)
        if self._general:
            general = with_own_answers(
                chat, self._general, self.general_answer_tokens, self.activation_batch_size
            )
            pairs = encode_item_pairs(tok, general, system)
            sources["general"] = RowSource([p + a for p, a in pairs], [None] * len(pairs))
        return sources

    def _collect(self, chat: ChatModel, data: UnlearnData, layers: list[int]) -> _Collected:
        """Regression sums and unlearning vectors from one forward pass per batch of rows.

        r_l is read at the last prompt token of the forget rows and of the reference rows (a
        separate prompt-only pass when the reference rows are not pinned, or when r comes from
        an official reference set rather than the benchmark's pinned reference prompts).
        """
        sources = self._row_sources(chat, data)
        out = _Collected({layer: self._accumulator(chat, layer) for layer in layers})
        # Per row set and layer, the sum of the block outputs read (0.0 until the first batch).
        reads: dict[str, dict[int, float | torch.Tensor]] = {
            name: dict.fromkeys(layers, 0.0) for name in sources
        }
        prefix = None
        if self.share_prefix and self.solver == "closed_form":
            prefix = run_shared_prefix(chat.model, list(sources.values()), layers)
        for number, (name, source) in enumerate(sources.items()):
            for batch in iter_rows(
                chat.model,
                source,
                layers,
                _pad_id(chat),
                self.activation_batch_size,
                f"lunar rows {number + 1}/{len(sources)}",
                prefix,
            ):
                out.accumulators[batch.layer].add(batch.inputs, batch.shifted, batch.weight)
                if batch.read is not None:
                    reads[name][batch.layer] = reads[name][batch.layer] + batch.read.sum(0)
                if self.solver == "adamw":  # every row kept: host memory, float32
                    rows = (batch.inputs.float().cpu(), batch.outputs.float().cpu(), batch.shifted)
                    out.rows[batch.layer].append(rows)
        forget_mean = _mean_reads(reads["forget"], len(data.forget), "forget")
        out.vectors = {
            layer: ref - forget_mean[layer]
            for layer, ref in self._reference_means(chat, data, layers, reads).items()
        }
        return out

    def _accumulator(self, chat: ChatModel, layer: int) -> RidgeAccumulator:
        """Empty sums for ``layer``, on its down_proj's device (where its rows are computed)."""
        weight = _down_proj_linear(chat, layer).weight
        return RidgeAccumulator(weight.shape[1], weight.device, getattr(torch, self.gram_dtype))

    def _reference_means(
        self,
        chat: ChatModel,
        data: UnlearnData,
        layers: list[int],
        reads: Mapping[str, Mapping[int, float | torch.Tensor]],
    ) -> dict[int, torch.Tensor]:
        if "reference" in reads and self.reference_set == "benchmark":
            return _mean_reads(reads["reference"], len(data.reference), "reference")
        items = self._reference_items(data)
        prompts = encode_item_prompts(chat.tokenizer, items, chat.system_prompt)
        return mean_last_token_outputs(
            chat.model, prompts, layers, _pad_id(chat), self.activation_batch_size, "lunar r"
        )

    def _solve(self, chat, layers, coeffs, collected: _Collected) -> dict[int, torch.Tensor]:
        """The intended edit of each layer's down_proj (closed form: on the model's device)."""
        vectors, accs = collected.vectors, collected.accumulators
        deltas = {}
        for layer, coeff in zip(layers, coeffs, strict=True):
            weight = _down_proj_linear(chat, layer).weight
            if self.solver == "closed_form":
                v = solve_ridge(accs[layer], self.ridge, self.shifted_weight)
                deltas[layer] = coeff * torch.outer(vectors[layer].to(v), v)
            else:
                shift = coeff * vectors[layer].float()
                rows = [(x, y + m[:, None].float() * shift) for x, y, m in collected.rows[layer]]
                trained = fit_adamw(
                    weight.detach().cpu().float(),
                    rows,
                    lr=self.lr,
                    epochs=self.epochs,
                    batch_size=self.batch_size,
                    gamma=self.gamma,
                    weight_decay=self.weight_decay,
                    seed=self.seed,
                )
                deltas[layer] = trained.double() - weight.detach().cpu().double()
        return deltas

    def _write_back(
        self, chat: ChatModel, deltas: dict[int, torch.Tensor]
    ) -> dict[int, WrittenEdit]:
        """Write each edit into its weight, falling back to float32 where rounding spoils it."""
        written = {}
        for layer, delta in deltas.items():
            _down_proj_linear(chat, layer)  # a plain Linear, or a clear error
            mlp = decoder_layers(chat.model)[layer].get_submodule("mlp")
            written[layer] = write_edit(mlp, "down_proj", delta, self.max_edit_error)
        return written


def _hook_delivery(chat: ChatModel, deltas: dict[int, torch.Tensor]) -> dict[int, WrittenEdit]:
    """What hook mode applies: each edit cast to the dtype of the activations it multiplies."""
    written = {}
    for layer, delta in deltas.items():
        weight = _down_proj_linear(chat, layer).weight
        delivered = delta.to(weight.device).float().to(weight.dtype).float()
        error = relative_error(delivered, delta)
        written[layer] = WrittenEdit(delivered, error, False, error)
    return written


def _edit_metrics(written: Mapping[int, WrittenEdit]) -> dict[str, float]:
    """Per layer: the write's relative error, whether it fell back, and the final error.

    ``lunar/edit_rel_error`` and ``lunar/edit_fallback`` without a layer are the worst layer's
    error and whether any layer fell back.
    """
    metrics = {}
    for layer, edit in written.items():
        metrics[f"lunar/edit_rel_error/layer{layer}"] = edit.rel_error
        metrics[f"lunar/edit_fallback/layer{layer}"] = float(edit.fallback)
        metrics[f"lunar/edit_rel_error_delivered/layer{layer}"] = edit.rel_error_delivered
    metrics["lunar/edit_rel_error"] = max(edit.rel_error for edit in written.values())
    metrics["lunar/edit_fallback"] = float(any(edit.fallback for edit in written.values()))
    return metrics


def redirection(deltas: dict[int, torch.Tensor]):
    """Inference-time switch for LUNAR's edits; use as ``with control(chat): ...``."""
    stored = {layer: delta.float() for layer, delta in deltas.items()}

    def control(chat: ChatModel):
        return redirect_down_proj(chat.model, stored)

    return control


def load_reference_set(name: str, folder: str | Path) -> tuple[QA, ...]:
    """The official reference prompts ``name`` (harmful, unverified) from ``folder``."""
    path = Path(folder) / OFFICIAL_REFERENCE_FILES[name]
    if not path.is_file():
        raise FileNotFoundError(
            f"method.reference_set={name} needs {path}, which does not exist. Fix: set "
            "method.reference_dir to the folder holding the official LUNAR files (harmful.json, "
            "unverified.json), or set method.reference_set=benchmark."
        )
    fix = "Fix: use the official file (facebookresearch/LUNAR dataset/splits/)."
    prompts = json_questions(path, fix)
    if not prompts or not all(prompt.strip() for prompt in prompts):
        raise ValueError(f"{path} holds no prompts or an empty one. {fix}")
    return tuple(QA(question=prompt, answer="", edge=f"reference/{name}") for prompt in prompts)


def _check_layer_list(layers: object) -> None:
    """A non-empty list of integer layer indices, each listed once."""
    if isinstance(layers, str) or not isinstance(layers, Iterable) or not list(layers):
        raise ValueError(f"method.layers={layers!r}: give a list of layer indices or auto.")
    indices = list(layers)
    wrong = [layer for layer in indices if isinstance(layer, bool) or not isinstance(layer, int)]
    if wrong:
        raise ValueError(
            f"method.layers={indices}: {wrong[0]!r} is not a layer index. Fix: give integers, "
            "e.g. method.layers=[24], or method.layers=auto."
        )
    if len(set(indices)) != len(indices):
        raise ValueError(f"method.layers={indices} repeats a layer. Fix: list each once.")


def _down_proj_linear(chat: ChatModel, layer: int) -> nn.Linear:
    """Block ``layer``'s ``mlp.down_proj``: the linear map LUNAR edits."""
    projection = down_proj(decoder_layers(chat.model)[layer])
    if not isinstance(projection, nn.Linear):
        raise TypeError(
            f"LUNAR edits mlp.down_proj as a linear layer, but layer {layer} of "
            f"{type(chat.model).__name__} has a {type(projection).__name__}. Fix: use a "
            "Llama-style model with plain nn.Linear MLP projections."
        )
    return projection


def _mean_reads(
    totals: Mapping[int, float | torch.Tensor], count: int, name: str
) -> dict[int, torch.Tensor]:
    """Per layer, the mean of the ``count`` block outputs summed in ``totals``."""
    means = {}
    for layer, total in totals.items():
        if not isinstance(total, torch.Tensor):
            raise RuntimeError(f"LUNAR read no {name} activation at layer {layer}.")
        means[layer] = total / count
    return means


def _pad_id(chat: ChatModel) -> int:
    return padding_id(chat.tokenizer)
