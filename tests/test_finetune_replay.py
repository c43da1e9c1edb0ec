"""Replay in the fine-tuning stage (``finetune.replay_path``): general questions, own answers."""

import json

import pytest
from hydra.utils import instantiate

import lunar_exp.finetune as finetune_module
from lunar_exp.finetune import FineTune
from lunar_exp.interfaces import QA
from lunar_exp.metrics.primitives import greedy_generate
from lunar_exp.models import tiny_llama
from lunar_exp.prompts import encode_item_pairs, encode_item_prompts
from tests.conftest import compose_config

MODEL_KEY = {"name": "tiny", "seed": 0}
QUESTIONS = ["Who painted the Mona Lisa?", "What is the capital of Peru?", "Who wrote Hamlet?"]


@pytest.fixture
def replay_file(tmp_path):
    path = tmp_path / "replay.json"
    path.write_text(json.dumps([{"question": q} for q in QUESTIONS]))
    return path


def test_replay_trains_the_base_models_own_answers(tmp_path, toy_data, replay_file, monkeypatch):
    chat = tiny_llama(seed=0)
    items = [QA(question=q, answer="", edge="general") for q in QUESTIONS[:2]]
    prompts = encode_item_prompts(chat.tokenizer, items, chat.system_prompt)
    own = [a.strip() for a in greedy_generate(chat.model, chat.tokenizer, prompts, 5, 2, None)]
    trained_on = []

    def spy(model, pairs, *args, **kwargs):
        trained_on.extend(pairs)
        return [0.0]

    monkeypatch.setattr(finetune_module, "supervised_finetune", spy)
    stage = FineTune(
        cache_dir=tmp_path, replay_path=str(replay_file), replay_limit=2, replay_answer_tokens=5
    )
    stage.run(chat, toy_data, MODEL_KEY)
    pairs = zip(QUESTIONS[:2], own, strict=True)
    replayed = [QA(question=q, answer=a, edge="general") for q, a in pairs]
    expected = encode_item_pairs(
        chat.tokenizer, toy_data.finetune_items() + tuple(replayed), chat.system_prompt
    )
    assert trained_on == expected


def test_replay_changes_the_cache_key_and_none_keeps_it(tmp_path, toy_data, replay_file):
    plain = FineTune(cache_dir=tmp_path)
    assert set(plain.hparams) == {"lr", "epochs", "batch_size", "weight_decay", "seed"}
    replay = FineTune(cache_dir=tmp_path, replay_path=str(replay_file))
    assert replay.hparams["replay"] == QUESTIONS
    entries = {
        stage.entry(MODEL_KEY, toy_data)
        for stage in (
            plain,
            replay,
            FineTune(cache_dir=tmp_path, replay_path=str(replay_file), replay_limit=1),
            FineTune(cache_dir=tmp_path, replay_path=str(replay_file), replay_answer_tokens=8),
        )
    }
    assert len(entries) == 4


def test_missing_replay_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"finetune\.replay_path=.*Fix.*finetune\."):
        FineTune(cache_dir=tmp_path, replay_path=str(tmp_path / "nope.json"))
    # a disabled stage never trains, so its replay set is not read
    assert FineTune(enabled=False, replay_path=str(tmp_path / "nope.json")).hparams


def test_the_configs_replay_nothing_by_default():
    for name in ("default", "lora", "tiny"):
        stage = instantiate(compose_config([f"finetune={name}"]).finetune)
        assert stage.replay_path is None and "replay" not in stage.hparams, name
