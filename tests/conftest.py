import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from lunar_exp.benchmarks.qa.synthetic import SyntheticBenchmark
from lunar_exp.models import tiny_llama
from lunar_exp.prompts import encode_pairs
from lunar_exp.training import supervised_finetune

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SHARED = ROOT.parent / "shared" / "benchdata"

torch.set_num_threads(1)


def compose_config(overrides: list[str] | None = None, hydra_cfg: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides or [], return_hydra_config=hydra_cfg)


@pytest.fixture
def tiny_chat():
    return tiny_llama(seed=0)


def toy_benchmark():
    return SyntheticBenchmark(
        n_entities=4, facts_per_entity=2, forget_edges=["person_00"], n_abstain=4, n_reference=4
    )


@pytest.fixture
def toy_bench_data():
    return toy_benchmark().load()


@pytest.fixture
def toy_data(toy_bench_data):
    return toy_bench_data.unlearn


@pytest.fixture(scope="session")
def _tiny_target_state():
    """A tiny model fine-tuned on the toy data, so there is something to unlearn."""
    chat = tiny_llama(seed=0)
    items = toy_benchmark().load().unlearn.finetune_items()
    pairs = encode_pairs(
        chat.tokenizer, [q.question for q in items], [q.answer for q in items], chat.system_prompt
    )
    supervised_finetune(
        chat.model, pairs, chat.tokenizer.pad_token_id, lr=1e-2, epochs=30, batch_size=8, seed=0
    )
    return {k: v.clone() for k, v in chat.model.state_dict().items()}


@pytest.fixture
def tiny_target(_tiny_target_state):
    chat = tiny_llama(seed=0)
    chat.model.load_state_dict(_tiny_target_state)
    return chat


def run_cli(
    args: list[str], tmp_path: Path, timeout: int = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run `python -m lunar_exp` with outputs and caches under tmp_path."""
    env = dict(
        os.environ, LUNAR_EXP_CACHE=str(tmp_path / "cache"), HYDRA_FULL_ERROR="0", **(env or {})
    )
    flags = [a for a in args if a.startswith("-")]
    overrides = [a for a in args if not a.startswith("-")]
    output = f"paths.output_root={tmp_path / 'out'}"
    cmd = [sys.executable, "-m", "lunar_exp", *flags, output, *overrides]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def needs_shared():
    return pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/benchdata is absent")
