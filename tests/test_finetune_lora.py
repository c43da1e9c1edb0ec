"""LoRA fine-tuning through peft: adapters trained, merged, cached as a plain model."""

import pytest
import torch
from hydra.utils import instantiate
from peft import PeftModel
from transformers import LlamaForCausalLM

from lunar_exp import distributed
from lunar_exp.finetune import DEFAULT_LORA_TARGETS, FineTune
from lunar_exp.metrics.primitives import pair_batch, token_nll
from lunar_exp.models import tiny_llama
from lunar_exp.training import _tail_nll, supervised_finetune
from tests.conftest import compose_config

MODEL_KEY = {"name": "tiny", "seed": 0}
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _lora(tmp_path, **overrides) -> FineTune:
    settings = {"adapter": "lora", "lr": 1e-2, "epochs": 2, "lora_rank": 4, "lora_alpha": 8}
    return FineTune(cache_dir=tmp_path, **{**settings, **overrides})


def _state(model) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def test_merged_adapters_change_only_the_targeted_projections(tmp_path, toy_data):
    chat = tiny_llama(seed=0)
    base = _state(chat.model)
    report = _lora(tmp_path).run(chat, toy_data, MODEL_KEY)
    assert not report.cached and len(report.losses) == 2
    assert type(chat.model) is LlamaForCausalLM and not isinstance(chat.model, PeftModel)
    names = [name for name, _ in chat.model.named_modules()]
    assert not [name for name in names if "lora" in name.lower()]
    merged = _state(chat.model)
    assert set(merged) == set(base)
    for name, weight in merged.items():
        delta = (weight - base[name]).double()
        if name.endswith(tuple(f"{target}.weight" for target in TARGETS)):
            assert delta.abs().max() > 0, f"{name} did not change"
            assert torch.linalg.matrix_rank(delta, atol=1e-6) <= 4, f"{name} is not rank <= 4"
        else:
            assert torch.equal(weight, base[name]), f"{name} changed outside the adapters"
    assert all(param.requires_grad for param in chat.model.parameters())


def test_cache_round_trip_gives_the_merged_model(tmp_path, toy_data):
    trained = tiny_llama(seed=0)
    first = _lora(tmp_path).run(trained, toy_data, MODEL_KEY)
    loaded = tiny_llama(seed=0)
    second = _lora(tmp_path).run(loaded, toy_data, MODEL_KEY)
    assert second.cached and second.path == first.path and second.losses == first.losses
    assert type(loaded.model) is LlamaForCausalLM
    for name, weight in _state(trained.model).items():
        torch.testing.assert_close(_state(loaded.model)[name], weight)


def test_cache_key_holds_the_lora_settings(tmp_path, toy_data):
    full = FineTune(cache_dir=tmp_path)
    assert set(full.hparams) == {"lr", "epochs", "batch_size", "weight_decay", "seed"}
    entries = {
        full.entry(MODEL_KEY, toy_data),
        _lora(tmp_path).entry(MODEL_KEY, toy_data),
        _lora(tmp_path, lora_rank=8).entry(MODEL_KEY, toy_data),
        _lora(tmp_path, lora_alpha=16).entry(MODEL_KEY, toy_data),
        _lora(tmp_path, lora_dropout=0.0).entry(MODEL_KEY, toy_data),
        _lora(tmp_path, lora_targets=["q_proj", "v_proj"]).entry(MODEL_KEY, toy_data),
    }
    assert len(entries) == 6


def test_lora_config_is_the_official_pistol_recipe():
    stage = instantiate(compose_config(["finetune=lora"]).finetune)
    assert (stage.adapter, stage.lora_rank, stage.lora_alpha, stage.lora_dropout) == (
        "lora",
        8,
        32,
        0.05,
    )
    assert (stage.lr, stage.epochs, stage.batch_size) == (1e-4, 20, 16)
    assert stage.lora_targets == DEFAULT_LORA_TARGETS


def _as_rank_zero_of_two(monkeypatch):
    """Pretend to be rank 0 of a sharded run (no process group: agree returns its input)."""
    monkeypatch.setattr(distributed, "is_distributed", lambda: True)
    monkeypatch.setattr(distributed, "agree", lambda value: value)


def test_lora_refuses_sharded_training(tmp_path, toy_data, monkeypatch):
    _as_rank_zero_of_two(monkeypatch)
    with pytest.raises(ValueError, match="adapter=lora trains in one process only.*Fix"):
        _lora(tmp_path).run(tiny_llama(seed=0), toy_data, MODEL_KEY)


def test_sharded_runs_load_a_cached_lora_target(tmp_path, toy_data, monkeypatch):
    _lora(tmp_path).run(tiny_llama(seed=0), toy_data, MODEL_KEY)
    _as_rank_zero_of_two(monkeypatch)
    report = _lora(tmp_path).run(tiny_llama(seed=0), toy_data, MODEL_KEY)
    assert report.cached


def test_unknown_target_modules_are_one_clear_error(tmp_path, toy_data):
    with pytest.raises(ValueError, match=r"lora_targets=\['nope_proj'\].*Fix"):
        _lora(tmp_path, lora_targets=["nope_proj"]).run(tiny_llama(seed=0), toy_data, MODEL_KEY)


def test_empty_targets_and_bad_values_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="lora_targets is empty.*Fix"):
        _lora(tmp_path, lora_targets=[])
    with pytest.raises(ValueError, match="finetune.lora_rank"):
        _lora(tmp_path, lora_rank=0)
    with pytest.raises(ValueError, match="finetune.adapter"):
        FineTune(cache_dir=tmp_path, adapter="qlora")  # pyright: ignore[reportArgumentType]


def test_epoch_hook_sees_every_epoch(tmp_path, toy_data):
    seen = []
    FineTune(cache_dir=tmp_path, epochs=3).run(
        tiny_llama(seed=0),
        toy_data,
        MODEL_KEY,
        on_epoch_end=lambda epoch, model: seen.append((epoch, model.training)),
    )
    assert seen == [(1, False), (2, False), (3, False)]


def test_tail_loss_equals_the_full_loss():
    chat = tiny_llama(seed=0)
    pairs = [([1, 2, 3, 4, 5], [6, 7]), ([1, 2, 3], [8, 9, 10, 11]), ([4, 5, 6, 7, 8, 9], [3])]
    ids, mask, labels = pair_batch(pairs, 0)
    full, valid = token_nll(chat.model, ids, mask, labels)
    tail, tail_valid = _tail_nll(chat.model, ids, mask, labels, 4)
    assert tail_valid.sum() == valid.sum() == 7
    torch.testing.assert_close(tail.sum() / tail_valid.sum(), full.sum() / valid.sum())


def test_training_with_the_tail_loss_matches_the_full_loss(monkeypatch, toy_data):
    """Two identical runs, one through token_nll on every position: the same weights."""
    from lunar_exp import training
    from lunar_exp.prompts import encode_item_pairs

    models = []
    for tail in (True, False):
        chat = tiny_llama(seed=0)
        if not tail:
            monkeypatch.setattr(
                training, "_tail_nll", lambda m, i, k, lab, n: token_nll(m, i, k, lab)
            )
        pairs = encode_item_pairs(chat.tokenizer, toy_data.finetune_items(), chat.system_prompt)
        supervised_finetune(chat.model, pairs, 0, lr=1e-2, epochs=2, batch_size=4, seed=0)
        models.append(_state(chat.model))
    for name, weight in models[0].items():
        torch.testing.assert_close(weight, models[1][name], rtol=1e-4, atol=1e-5)
