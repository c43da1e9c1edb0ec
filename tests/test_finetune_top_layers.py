"""Partial fine-tuning (``finetune.top_layers``): only the top decoder blocks train."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
from hydra.utils import instantiate
from torch.multiprocessing.spawn import spawn

from lunar_exp.finetune import FineTune
from lunar_exp.models import tiny_llama
from tests.conftest import compose_config, toy_benchmark

MODEL_KEY = {"name": "tiny", "seed": 0}
DEPTH = 4  # decoder blocks of the tiny Llama


def _stage(tmp_path, **overrides) -> FineTune:
    return FineTune(cache_dir=tmp_path, **{"lr": 1e-2, "epochs": 2, **overrides})


def _state(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _trained_names(count: int) -> tuple[str, ...]:
    blocks = tuple(f"model.layers.{i}." for i in range(DEPTH - count, DEPTH))
    return (*blocks, "model.norm.")


@pytest.mark.parametrize("count", [1, 2])
def test_only_the_top_blocks_and_final_norm_change(tmp_path, toy_data, count):
    chat = tiny_llama(seed=0)
    base = _state(chat.model)
    report = _stage(tmp_path, top_layers=count).run(chat, toy_data, MODEL_KEY)
    assert not report.cached and len(report.losses) == 2
    trained = _trained_names(count)
    for name, weight in _state(chat.model).items():
        if name.startswith(trained) and name.endswith("proj.weight"):
            assert not torch.equal(weight, base[name]), f"{name} did not train"
        elif not name.startswith(trained):
            assert torch.equal(weight, base[name]), f"{name} changed below the top {count}"
    assert not torch.equal(_state(chat.model)["model.norm.weight"], base["model.norm.weight"])


def test_every_weight_is_trainable_again_afterwards(tmp_path, toy_data):
    chat = tiny_llama(seed=0)
    _stage(tmp_path, top_layers=1).run(chat, toy_data, MODEL_KEY)
    assert all(param.requires_grad for param in chat.model.parameters())


def test_lora_gets_adapters_only_in_the_top_blocks(tmp_path, toy_data):
    chat = tiny_llama(seed=0)
    base = _state(chat.model)
    _stage(tmp_path, adapter="lora", top_layers=1, lora_rank=4).run(chat, toy_data, MODEL_KEY)
    changed = {name for name, w in _state(chat.model).items() if not torch.equal(w, base[name])}
    assert changed and all(name.startswith("model.layers.3.") for name in changed)
    assert all(param.requires_grad for param in chat.model.parameters())


def test_cache_key_is_unchanged_without_top_layers(tmp_path, toy_data):
    default = FineTune(cache_dir=tmp_path)
    assert set(default.hparams) == {"lr", "epochs", "batch_size", "weight_decay", "seed"}
    entries = {
        FineTune(cache_dir=tmp_path, top_layers=top).entry(MODEL_KEY, toy_data)
        for top in (None, 1, 2)
    }
    assert len(entries) == 3
    assert FineTune(cache_dir=tmp_path, top_layers=2).hparams["top_layers"] == 2


def test_the_default_configs_train_every_weight():
    for name in ("default", "lora", "tiny"):
        stage = instantiate(compose_config([f"finetune={name}"]).finetune)
        assert stage.top_layers is None, name
    stage = instantiate(compose_config(["finetune.top_layers=10"]).finetune)
    assert stage.top_layers == 10 and stage.hparams["top_layers"] == 10


@pytest.mark.parametrize("adapter", ["full", "lora"])
@pytest.mark.parametrize("count", [0, DEPTH + 1])
def test_out_of_range_is_one_clear_error(tmp_path, toy_data, count, adapter):
    chat = tiny_llama(seed=0)
    with pytest.raises(ValueError, match=rf"top_layers={count}.*{DEPTH} decoder blocks.*Fix"):
        stage = FineTune(cache_dir=tmp_path, top_layers=count, adapter=adapter)
        stage.run(chat, toy_data, MODEL_KEY)


def _rank(rank: int, port: int, cache_dir: str) -> None:
    """One of two CPU ranks (gloo): the sharded fine-tuning of the top block; saves the weights."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    try:
        chat = tiny_llama(seed=0)
        _stage(cache_dir, top_layers=1).run(chat, toy_benchmark().load().unlearn, MODEL_KEY)
        grads = all(param.requires_grad for param in chat.model.parameters())
        torch.save({"state": _state(chat.model), "grads": grads}, f"{cache_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_ranks_train_the_top_blocks_as_one_process(tmp_path, toy_data):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    spawn(_rank, args=(port, str(tmp_path / "sharded")), nprocs=2, join=True)
    single = tiny_llama(seed=0)
    base = _state(single.model)
    _stage(tmp_path / "single", top_layers=1).run(single, toy_data, MODEL_KEY)
    for rank in range(2):
        ranked = torch.load(tmp_path / "sharded" / f"rank{rank}.pt", weights_only=False)
        assert ranked["grads"]
        for name, weight in _state(single.model).items():
            torch.testing.assert_close(ranked["state"][name], weight, rtol=1e-4, atol=1e-4)
            if not name.startswith(_trained_names(1)):
                assert torch.equal(ranked["state"][name], base[name]), name
