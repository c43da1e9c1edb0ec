"""Probe recovery: read the forget answers from the unlearned model's intermediate layers.

For each probed layer ``i`` the attacker trains a translator ``h -> h + W h + b`` (zero-initialised,
so training starts from the logit lens) in front of the model's own final norm and LM head, on
the retain items' teacher-forced answer tokens only: the tuned lens of Belrose et al. 2023, the
"fresh head on the first i blocks" probe of open-unlearning. The head never sees a forget answer.
It then measures, per layer, how many forget answer tokens the head predicts (teacher-forced
token accuracy and NLL; also the untrained logit lens): the curve ``attack/probe/layer_<i>/...``
and the plot ``probe_layers.png`` in the run dir.

``attack/probe/forget/rouge1_recall`` and ``attack/probe/deviation_score`` are the benchmark's
own evaluation of the model with the best layer's head in place of the blocks above it (block
``i``'s output goes through the translator; the blocks above pass it on unchanged), so the
answers are generated, not teacher-forced. The best layer is the one with the highest forget
token accuracy: the evaluator reports the strongest probe, as for the worst case over attacks.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from lunar_exp import distributed
from lunar_exp.attacks._common import AttackTarget, check_attack_layers
from lunar_exp.benchmarks.common.directions import knowledge_directions
from lunar_exp.hooks import capture_block_outputs, decoder_layers, map_block_output, skip_blocks
from lunar_exp.interfaces import QA, ChatModel, EvalResult, UnlearnData
from lunar_exp.methods._activations import forward_until
from lunar_exp.metrics.primitives import batches, padding_id, pair_batch
from lunar_exp.prompts import encode_item_pairs
from lunar_exp.settings import setting, validate

log = logging.getLogger(__name__)
PLOT_FILE = "probe_layers.png"


@dataclass(kw_only=True)
class Probe:
    """Train a retain-only head on each probed layer; score forget answers through it."""

    layers: list[int] | None = setting(
        None, help="layers to probe; null: n_layers evenly spaced from the first to the last."
    )
    n_layers: int = setting(6, ge=1, help="layers probed when layers is null.")
    steps: int = setting(40, ge=1, help="full-batch Adam steps per layer's head.")
    lr: float = setting(1e-3, gt=0, help="Adam learning rate of the heads.")
    max_tokens: int = setting(2048, ge=1, help="most retain answer tokens the heads train on.")
    negatives: int = setting(
        4096, ge=0, help="random non-answer tokens in the heads' sampled training softmax."
    )
    batch_size: int = setting(16, ge=1, help="items per forward pass when reading activations.")
    seed: int = setting(0, help="initialisation and order of the heads' training.")

    def __post_init__(self) -> None:
        validate(self, "attack.probe")

    def check(self, chat: ChatModel, data: UnlearnData) -> None:
        """Fail early on layers out of range or a benchmark without retain items."""
        if self.layers is not None:
            check_attack_layers(chat.model, self.layers, "layers")
        if not data.retain:
            raise ValueError(
                "attack probe trains its heads on retain items and this benchmark has none. "
                "Fix: drop probe from attack=[...]."
            )

    def evaluate(self, target: AttackTarget) -> tuple[EvalResult, dict[str, object]]:
        """Per-layer curve, then the benchmark's evaluation through the best layer's head."""
        chat = target.chat
        layers = self._layers(chat)
        with target.control(chat):
            retain = _answer_states(chat, target.data.retain, layers, self.batch_size)
            forget = _answer_states(chat, target.data.forget, layers, self.batch_size)
        head = _Head(chat.model)
        curve: dict[str, float] = {}
        translators: dict[int, nn.Linear] = {}
        for layer in tqdm(layers, desc="probe layers", leave=False):
            states, labels = retain[0][layer][: self.max_tokens], retain[1][: self.max_tokens]
            translators[layer] = self._fit(head, states, labels)
            curve |= _layer_metrics(layer, head, translators[layer], retain, forget)
        best = max(layers, key=lambda layer: curve[f"layer_{layer}/forget/token_accuracy"])
        log.info("probe: best layer %s; generating through its head", best)
        result = self._generate_through(target, best, translators[best])
        result.metrics.update(curve)
        for layer in layers:
            result.directions.update(_layer_directions(layer))
        _plot(target.run_dir, layers, curve, best)
        return result, {"best_layer": best, "layers": layers}

    def _layers(self, chat: ChatModel) -> list[int]:
        if self.layers is not None:
            return sorted({int(layer) for layer in self.layers})
        count = len(decoder_layers(chat.model))
        picks = torch.linspace(0, count - 1, min(self.n_layers, count)).round().long()
        return sorted({int(layer) for layer in picks})

    def _fit(self, head: _Head, states: torch.Tensor, labels: torch.Tensor) -> nn.Linear:
        """A zero-initialised translator trained to predict ``labels`` from ``states``.

        The softmax runs over the retain answer tokens plus ``negatives`` random other tokens
        (a sampled softmax: the full 49k-token head costs ~3 s per step on one CPU thread).
        """
        generator = torch.Generator().manual_seed(self.seed)
        rows, targets = _sampled_vocabulary(labels, len(head.weight), self.negatives, generator)
        torch.manual_seed(self.seed)
        translator = nn.Linear(states.shape[-1], states.shape[-1])
        nn.init.zeros_(translator.weight)
        nn.init.zeros_(translator.bias)
        optimizer = torch.optim.Adam(translator.parameters(), lr=self.lr)
        with torch.enable_grad():
            for _ in range(self.steps):
                optimizer.zero_grad()
                logits = head(states + translator(states), rows)
                loss = nn.functional.cross_entropy(logits, targets)
                loss.backward()
                optimizer.step()
        return translator.requires_grad_(False)

    def _generate_through(self, target: AttackTarget, layer: int, translator: nn.Linear):
        model = target.chat.model
        above = list(range(layer + 1, len(decoder_layers(model))))
        device = next(model.parameters()).device
        moved = copy.deepcopy(translator).to(device)

        def through(hidden: torch.Tensor) -> torch.Tensor:
            return hidden + moved(hidden.float()).to(hidden.dtype)

        with map_block_output(model, layer, _Lambda(through)), skip_blocks(model, above):
            return target.evaluate()


class _Lambda(nn.Module):
    """A function as a module (what :func:`lunar_exp.hooks.map_block_output` takes)."""

    def __init__(self, function) -> None:
        super().__init__()
        self.function = function

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.function(hidden)


class _Head(nn.Module):
    """The model's final norm and LM head, frozen copies on the CPU in float32."""

    def __init__(self, model) -> None:
        super().__init__()
        self.norm = copy.deepcopy(model.get_submodule("model.norm")).float().cpu()
        self.norm.requires_grad_(False)
        self.weight = model.get_output_embeddings().weight.detach().float().cpu()

    def forward(self, states: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Logits over the whole vocabulary, or over the token ids ``rows`` only."""
        weight = self.weight if rows is None else self.weight[rows]
        return nn.functional.linear(self.norm(states), weight)


# Hidden states at each layer for the positions that predict an answer token, and those tokens.
States = tuple[dict[int, torch.Tensor], torch.Tensor]


@torch.no_grad()  # not inference_mode: the heads train on these tensors
def _answer_states(
    chat: ChatModel, items: Sequence[QA], layers: list[int], batch_size: int
) -> States:
    """Block outputs (float32, CPU) at every position whose next token is an answer token."""
    pairs = encode_item_pairs(chat.tokenizer, items, chat.system_prompt)
    pad = padding_id(chat.tokenizer)
    per_layer: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
    labels: list[torch.Tensor] = []
    lengths = [len(p) + len(a) for p, a in pairs]
    with capture_block_outputs(chat.model, layers) as store:
        for index in batches(len(pairs), batch_size, "probe states", lengths):
            ids, mask, label = pair_batch([pairs[i] for i in index], pad)
            forward_until(chat.model, ids, mask, max(layers))
            wanted = label[:, 1:] != -100
            labels.append(label[:, 1:][wanted])
            for layer in layers:
                per_layer[layer].append(
                    store[layer][:, :-1][wanted.to(store[layer].device)].float().cpu()
                )
    return {layer: torch.cat(parts) for layer, parts in per_layer.items()}, torch.cat(labels)


def _sampled_vocabulary(
    labels: torch.Tensor, vocab: int, negatives: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """The training softmax's token ids (the labels' own, then random others), relabelled labels."""
    own = torch.unique(labels)
    others = torch.ones(vocab, dtype=torch.bool)
    others[own] = False
    pool = others.nonzero().squeeze(-1)
    picked = pool[torch.randperm(len(pool), generator=generator)[:negatives]]
    rows = torch.cat([own, picked])
    return rows, torch.searchsorted(own, labels)


@torch.inference_mode()
def _scores(
    head: _Head, translator: nn.Linear | None, states: torch.Tensor, labels: torch.Tensor
) -> tuple[float, float]:
    """Token accuracy and mean token NLL of ``labels`` through the head (no translator: lens)."""
    moved = states if translator is None else states + translator(states)
    logits = head(moved)
    accuracy = float((logits.argmax(-1) == labels).float().mean())
    return accuracy, float(nn.functional.cross_entropy(logits, labels))


def _layer_metrics(
    layer: int, head: _Head, translator: nn.Linear, retain: States, forget: States
) -> dict[str, float]:
    """Probe and logit-lens scores of one layer on the retain and forget answers."""
    out: dict[str, float] = {}
    for split, (states, labels) in (("retain", retain), ("forget", forget)):
        accuracy, nll = _scores(head, translator, states[layer], labels)
        lens_accuracy, _ = _scores(head, None, states[layer], labels)
        out[f"layer_{layer}/{split}/token_accuracy"] = accuracy
        out[f"layer_{layer}/{split}/answer_nll"] = nll
        out[f"layer_{layer}/{split}/lens_token_accuracy"] = lens_accuracy
    return out


def _layer_directions(layer: int) -> dict[str, bool]:
    grows, shrinks = ("token_accuracy", "lens_token_accuracy"), ("answer_nll",)
    return {
        **knowledge_directions(f"layer_{layer}/retain", grows, shrinks),
        **knowledge_directions(f"layer_{layer}/forget", grows, shrinks),
    }


def _plot(run_dir: Path | None, layers: list[int], curve: dict[str, float], best: int) -> None:
    """Forget and retain token accuracy per probed layer, to ``run_dir/probe_layers.png``."""
    if run_dir is None or not distributed.is_main():
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for split, key, style in (
        ("forget", "token_accuracy", "o-"),
        ("retain", "token_accuracy", "s-"),
        ("forget", "lens_token_accuracy", "x--"),
    ):
        values = [curve[f"layer_{layer}/{split}/{key}"] for layer in layers]
        label = f"{split}, {'retain-trained head' if key == 'token_accuracy' else 'logit lens'}"
        ax.plot(layers, values, style, label=label)
    ax.axvline(best, color="grey", linestyle=":", label=f"best layer {best}")
    ax.set_xlabel("layer")
    ax.set_ylabel("answer token accuracy (teacher-forced)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run_dir / PLOT_FILE, dpi=120)
    plt.close(fig)
