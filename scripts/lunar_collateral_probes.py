"""Follow-up probes of docs/lunar_collateral.md on the TOFU twin's cached target (layer 24, c = 4).

Usage: THREADS=1 python scripts/lunar_collateral_probes.py MODE [LAYERS]
MODE: curve (steer with s*r at the edited layer, s = 0.25..2, no edit), layers (the edit at each
layer of LAYERS, e.g. 16,20,27, with c = 2 and 4), mmlu / muse (general questions pinned with the
target's own answers: MMLU dev, or MUSE-News + MUSE-Books knowmem retain questions; plain, with
shifted_weight 10, with c = 8), lastgen (perturb_positions=last with general questions pinned),
self (the target model writing its own general questions). Prints one JSON line per setting.
Pinning is done by appending the general items to the retain items (what method.general_path
does, without its own source). Evaluation items are measured, never pinned.
"""

import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lunar_collateral import _as_qa, _behaviour, _geometry
from omegaconf import OmegaConf

from lunar_exp.general_questions import load_general_prompts, with_own_answers
from lunar_exp.hooks import add_to_block_outputs
from lunar_exp.interfaces import QA
from lunar_exp.pipeline import model_cache_key, seed_everything
from lunar_exp.prompts import encode_prompts

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LUNAR_EXP_DATA", ROOT.parent / "shared" / "benchdata"))
which = sys.argv[1]
with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
    cfg = compose("config", overrides=["+exp=tofu_smollm", "threads=2"])
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
seed_everything(0)
bench = instantiate(cfg.benchmark).load()
data = bench.unlearn
chat = instantiate(cfg.model)
instantiate(cfg.finetune).run(chat, data, model_cache_key(cfg))


def _answered(items):
    """``items`` with the target model's own 32-token greedy answers."""
    return list(with_own_answers(chat, items, 32, 16))


sets = {
    "forget": list(data.forget),
    "retain": list(data.retain)[:20],
    "real_authors": _as_qa(bench.eval_sets["real_authors"]),
    "world_facts": _as_qa(bench.eval_sets["world_facts"]),
}
base = OmegaConf.to_container(cfg.method, resolve=True)
assert isinstance(base, dict)
base.pop("requests", None)


def show(tag, rows):
    rounded = {k: {a: round(b, 3) for a, b in v.items()} for k, v in rows.items()}
    print(tag, json.dumps(rounded), flush=True)


def muse_questions():
    qs = []
    for part in ["news", "books"]:
        records = json.loads((DATA / f"muse/{part}/knowmem/retain2_qa.json").read_text())
        qs += [QA(question=d["question"], answer="", edge=part) for d in records]
    return qs


def self_questions(n_per=8):
    kinds = ["novelist", "poet", "painter", "scientist", "composer", "philosopher", "inventor",
             "president", "king or queen", "city", "country", "river", "mountain", "invention",
             "historical event", "war", "book", "film", "planet", "chemical element", "sport",
             "musician", "explorer", "religion", "language"]  # fmt: skip
    tok = chat.tokenizer
    out = []
    for kind in kinds:
        request = (
            f"Ask one short trivia question about a famous {kind}. Reply with the question only."
        )
        p = encode_prompts(tok, [request], chat.system_prompt)[0]
        ids = torch.tensor([p] * n_per)
        torch.manual_seed(len(out))
        gen = chat.model.generate(
            ids, attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_p=0.95,
            max_new_tokens=32, pad_token_id=tok.eos_token_id,
        )  # fmt: skip
        for g in gen:
            q = tok.decode(g[len(p) :], skip_special_tokens=True).strip().split("\n")[0]
            if q.endswith("?") and q not in {x.question for x in out}:
                out.append(QA(question=q, answer="", edge="self"))
    return out


def measure(tag, change, pins, layer=24):
    method = instantiate({**base, **change, "mode": "hook"})
    outcome = method.unlearn(chat, dataclasses.replace(data, retain=data.retain + tuple(pins)))
    r = outcome.tensors[f"r.layer{layer}"].double()
    d = outcome.tensors[f"delta.layer{layer}"].double()
    c = outcome.info["coeffs"][0]
    v = d.T @ r / (c * float(r @ r))
    rows = {}
    for k, items in sets.items():
        g = _geometry(chat, items, layer, r, v, data)
        with outcome.control(chat):
            b = _behaviour(chat, items, 32)
        rows[k] = {**g, **b}
    show(tag, rows)


mmlu_dir = DATA / "mmlu" / "dev"
if which == "curve":
    outcome = instantiate({**base, "mode": "hook"}).unlearn(chat, data)
    r = outcome.tensors["r.layer24"]
    for s in [0.25, 0.5, 1.0, 2.0]:
        rows = {}
        with add_to_block_outputs(chat.model, {24: (s * r).float()}):
            for k, v in sets.items():
                rows[k] = _behaviour(chat, v, 32)
        show(f"steer s={s}", rows)
elif which in ("mmlu", "muse", "self"):
    if which == "mmlu":
        general = _answered(load_general_prompts(mmlu_dir, 285))
    elif which == "muse":
        general = _answered(muse_questions())
    else:
        t = time.time()
        qs = self_questions()
        print("self questions", len(qs), round(time.time() - t), [q.question for q in qs[:30]])
        general = _answered(qs)
    sets["general"] = general[:40]
    for change in [{}, {"shifted_weight": 10.0}, {"coeffs": [8.0]}]:
        measure(f"{which} {change}", change, general)
elif which == "layers":
    for layer in [int(x) for x in sys.argv[2].split(",")]:
        for c in [2.0, 4.0]:
            measure(f"layer {layer} c={c}", {"layers": [layer], "coeffs": [c]}, (), layer)
elif which == "lastgen":
    general = _answered(load_general_prompts(mmlu_dir, 285))
    general_muse = _answered(muse_questions())
    sets["general"] = general[:40]
    last = {"perturb_positions": "last"}
    measure("mmlu last c4", last, general)
    measure("mmlu last c8", {**last, "coeffs": [8.0]}, general)
    measure("mmlu+muse last c4", last, general + general_muse)
    measure("mmlu+muse after_prefix c4", {}, general + general_muse)
