"""Where LUNAR's redirection lands beyond the forget set: geometry at the edited layer and refusals.

Usage: python scripts/lunar_collateral.py [--out docs/lunar_collateral] [--variants a,b] [overrides]
e.g. python scripts/lunar_collateral.py +exp=tofu_smollm threads=2

On the run's cached target model, for each LUNAR variant (``VARIANTS``), in hook mode (the weights
stay the target's): the edit ``c r v^T`` of the edited layer, and per prompt set (the benchmark's
forget/retain/reference prompts, its evaluation sets, and the candidate general prompts that the
variants may pin) where the set lies at that layer and what the edit does to it:

- ``t``: the last prompt token's block output on the line from the forget mean (0) to the
  reference mean (1), ``(h - mean_forget) . r / |r|^2`` (before the edit);
- ``v.x``: the share of ``c r`` the edit adds at the last prompt token (1 = all of it, as on the
  forget prompts it was solved for); ``v.x mean``: averaged over the positions after the template
  head;
- greedy answers under the edit: refusal rate and ROUGE-1 recall.

Evaluation items are only measured, never pinned: the general prompts are MMLU's dev questions
(``--general-dir``; utility=mmlu scores the test split), answered by the target model itself.
Writes ``<out>.json`` and ``<out>.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from statistics import fmean

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lunar_exp.general_questions import load_general_prompts, with_own_answers
from lunar_exp.hooks import capture_block_outputs, capture_down_proj
from lunar_exp.interfaces import QA
from lunar_exp.methods._activations import forward_until, mean_last_token_outputs
from lunar_exp.metrics.primitives import batches, greedy_generate, pad_left, padding_id
from lunar_exp.metrics.text import is_refusal, rouge_recall
from lunar_exp.pipeline import model_cache_key, seed_everything
from lunar_exp.prompts import encode_item_prompts, shared_prefix_length

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {
    "default": {},
    "last token shifted": {"perturb_positions": "last"},
    "general prompts pinned": {"_pin_general": True},
    "general pinned, last token": {"perturb_positions": "last", "_pin_general": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "lunar_collateral"))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--general-dir", default=None, help="MMLU dev folder (default: data_dir)")
    parser.add_argument("--general-limit", type=int, default=285)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=args.overrides)
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    seed_everything(cfg.seed)
    bench = instantiate(cfg.benchmark).load()
    data = bench.unlearn
    chat = instantiate(cfg.model)
    instantiate(cfg.finetune).run(chat, data, model_cache_key(cfg))
    general_dir = Path(args.general_dir or Path(cfg.paths.data_dir) / "mmlu" / "dev")
    questions = load_general_prompts(general_dir, args.general_limit)
    general = list(with_own_answers(chat, questions, args.max_new_tokens, 16))
    sets = {
        "forget": list(data.forget),
        "retain": list(data.retain)[:40],
        "reference": list(data.reference)[:40],
        **{name: _as_qa(items) for name, items in bench.eval_sets.items() if name != "forget"},
        "general (pinned by some variants)": general,
    }
    sets.pop("holdout", None)
    base = OmegaConf.to_container(cfg.method, resolve=True)
    base.pop("requests", None)
    report = {"command": _command(args), "sets": {k: len(v) for k, v in sets.items()}}
    report["variants"] = []
    for name in args.variants.split(","):
        change = dict(VARIANTS[name])
        pin_general = change.pop("_pin_general", False)
        method = instantiate({**base, **change, "mode": "hook"})
        unlearn_data = (
            dataclasses.replace(data, retain=data.retain + tuple(general)) if pin_general else data
        )
        start = time.perf_counter()
        outcome = method.unlearn(chat, unlearn_data)
        seconds = time.perf_counter() - start
        layer = int(outcome.info["layers"][0])
        coeff = float(outcome.info["coeffs"][0])
        r = outcome.tensors[f"r.layer{layer}"].double()
        delta = outcome.tensors[f"delta.layer{layer}"].double()
        v = delta.T @ r / (coeff * float(r @ r))
        rows = {}
        for set_name, items in sets.items():
            geometry = _geometry(chat, items, layer, r, v, data)
            assert outcome.control is not None
            with outcome.control(chat):
                behaviour = _behaviour(chat, items, args.max_new_tokens)
            rows[set_name] = {**geometry, **behaviour}
            print(name, set_name, {k: round(x, 3) for k, x in rows[set_name].items()}, flush=True)
        report["variants"].append(
            {
                "variant": name,
                "settings": {**change, "pin_general": pin_general},
                "layer": layer,
                "coeff": coeff,
                "unlearn_seconds": round(seconds, 1),
                "fit_shifted": outcome.metrics.get(f"lunar/fit_shifted/layer{layer}"),
                "leak_pinned_rms": outcome.metrics.get(f"lunar/leak_pinned_rms/layer{layer}"),
                "sets": rows,
            }
        )
        _write(Path(args.out), report)


def _as_qa(items) -> list[QA]:
    return [QA(question=it.question, answer=it.answer, edge="eval") for it in items]


@torch.inference_mode()
def _geometry(chat, items, layer: int, r, v, data) -> dict[str, float]:
    """Position on the forget-reference line and the edit's share of c r, before the edit."""
    tok = chat.tokenizer
    prompts = encode_item_prompts(tok, items, chat.system_prompt)
    forget = encode_item_prompts(tok, data.forget, chat.system_prompt)
    head = shared_prefix_length(forget + prompts)
    forget_mean = _forget_mean(chat, data, layer)
    ts, last_vx, mean_vx = [], [], []
    with (
        capture_block_outputs(chat.model, [layer]) as blocks,
        capture_down_proj(chat.model, [layer]) as mlp,
    ):
        for index in batches(len(prompts), 16, None, [len(p) for p in prompts]):
            batch = [prompts[i] for i in index]
            ids, mask = pad_left(batch, padding_id(tok))
            forward_until(chat.model, ids, mask, layer)
            h = blocks[layer][:, -1, :].double()
            x = mlp[layer][0].double()
            ts += ((h - forget_mean) @ r / float(r @ r)).tolist()
            proj = x @ v
            for row, prompt in enumerate(batch):
                last_vx.append(float(proj[row, -1]))
                after = proj[row, -(len(prompt) - head) :] if len(prompt) > head else proj[row, -1:]
                mean_vx.append(float(after.mean()))
    return {"t": fmean(ts), "v.x last": fmean(last_vx), "v.x mean": fmean(mean_vx)}


_FORGET_MEANS: dict[int, torch.Tensor] = {}


def _forget_mean(chat, data, layer: int) -> torch.Tensor:
    if layer not in _FORGET_MEANS:
        prompts = encode_item_prompts(chat.tokenizer, data.forget, chat.system_prompt)
        means = mean_last_token_outputs(
            chat.model, prompts, [layer], padding_id(chat.tokenizer), 16, "forget mean"
        )
        _FORGET_MEANS[layer] = means[layer]
    return _FORGET_MEANS[layer]


def _behaviour(chat, items, max_new_tokens: int) -> dict[str, float]:
    prompts = encode_item_prompts(chat.tokenizer, items, chat.system_prompt)
    responses = greedy_generate(chat.model, chat.tokenizer, prompts, max_new_tokens, 16, None)
    refusal = fmean(float(is_refusal(text)) for text in responses)
    answered = [(qa.answer, text) for qa, text in zip(items, responses, strict=True) if qa.answer]
    rouge = (
        fmean(rouge_recall(*map(list, zip(*answered, strict=True)))["rouge1_recall"])
        if answered
        else float("nan")
    )
    return {"refusal": refusal, "rouge1": rouge}


def _command(args) -> str:
    return "python scripts/lunar_collateral.py " + " ".join(args.overrides)


def _write(out: Path, report: dict) -> None:
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"`{report['command']}`", ""]
    for variant in report["variants"]:
        lines += [
            f"### {variant['variant']} (layer {variant['layer']}, c = {variant['coeff']}, "
            f"fit_shifted {variant['fit_shifted']:.3f}, leak_pinned_rms "
            f"{variant['leak_pinned_rms']:.3f})",
            "",
            "| prompts | t (forget 0, reference 1) | v.x last | v.x mean | refusal | ROUGE-1 |",
            "|---|---|---|---|---|---|",
        ]
        for name, row in variant["sets"].items():
            cells = [row[k] for k in ("t", "v.x last", "v.x mean", "refusal", "rouge1")]
            lines.append(f"| {name} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
