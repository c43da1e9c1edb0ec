"""LUNAR's general prompts: loaded from CSV folders or JSON, pinned with the model's own answers."""

import json

import pytest
import torch

from lunar_exp.general_questions import load_general_prompts, with_own_answers
from lunar_exp.hooks import capture_down_proj
from lunar_exp.methods._activations import forward_until
from lunar_exp.methods.lunar import LUNAR
from lunar_exp.metrics.primitives import greedy_generate, pad_left, padding_id
from lunar_exp.prompts import encode_item_prompts

QUESTIONS = [
    "Who painted the Mona Lisa?",
    "What is the capital of Peru?",
    "How many legs does a spider have?",
    "Which planet is closest to the sun?",
    "Who wrote Hamlet?",
    "What is frozen water called?",
    "Which ocean is the largest?",
    "What gas do plants absorb?",
]


@pytest.fixture
def general_json(tmp_path):
    path = tmp_path / "general.json"
    path.write_text(json.dumps([{"question": q} for q in QUESTIONS]))
    return path


def test_loads_mmlu_style_csv_folders_and_json(tmp_path, general_json):
    folder = tmp_path / "dev"
    folder.mkdir()
    rows = "question,choice0,choice1,choice2,choice3,answer\n"
    (folder / "b_dev.csv").write_text(rows + "Second?,a,b,c,d,0\n")
    (folder / "a_dev.csv").write_text(rows + '"First, with a comma?",a,b,c,d,1\n')
    assert [qa.question for qa in load_general_prompts(folder, None)] == [
        "First, with a comma?",
        "Second?",
    ]
    loaded = load_general_prompts(general_json, 3)
    assert [qa.question for qa in loaded] == QUESTIONS[:3]
    assert all(qa.answer == "" for qa in loaded)
    instructions = tmp_path / "instructions.json"
    instructions.write_text(json.dumps([{"instruction": "Name a color."}]))
    assert load_general_prompts(instructions, None)[0].question == "Name a color."


def test_a_list_of_sources_is_read_in_order(tmp_path, general_json):
    folder = tmp_path / "dev"
    folder.mkdir()
    (folder / "a_dev.csv").write_text("question,answer\nFrom the folder?,0\n")
    loaded = load_general_prompts([str(folder), str(general_json)], 3)
    assert [qa.question for qa in loaded] == ["From the folder?", *QUESTIONS[:2]]
    method = LUNAR(layers=[1], general_path=[str(general_json), str(folder)])
    assert [qa.question for qa in method._general][-2:] == [QUESTIONS[-1], "From the folder?"]


@pytest.mark.parametrize(
    ("general_path", "message"),
    [([], r"names no source.*Fix"), (5, r"general_path=5 is not a path.*Fix"), ([1], r"Fix")],
)
def test_bad_general_path_values_are_clear_errors(general_path, message):
    with pytest.raises(ValueError, match=message):
        LUNAR(layers=[1], general_path=general_path)


@pytest.mark.parametrize("sources", [5, [1], ["mine.json", 3.0]])
def test_the_loader_names_the_option_that_gave_a_bad_source(sources):
    with pytest.raises(ValueError, match=r"my\.option=.* is not a path.*Fix.*my\.option="):
        load_general_prompts(sources, None, "my.option")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, r"does not exist.*Fix"),
        ("[]", r"holds no question.*Fix"),
        ('[{"text": "x"}]', r"not a JSON list of .*question.*Fix"),
        ('{"question": "x"}', r"not a JSON list of .*question.*Fix"),
    ],
)
def test_bad_general_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "general.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        LUNAR(layers=[1], general_path=str(path))


def test_csv_without_a_question_column_is_a_clear_error(tmp_path):
    (tmp_path / "x_dev.csv").write_text("prompt,answer\nWhy?,0\n")
    with pytest.raises(ValueError, match=r"no question column.*Fix"):
        load_general_prompts(tmp_path, None)


def test_own_answers_are_the_models_greedy_answers(tiny_target, general_json):
    items = load_general_prompts(general_json, 3)
    answered = with_own_answers(tiny_target, items, 6, 2)
    prompts = encode_item_prompts(tiny_target.tokenizer, items, tiny_target.system_prompt)
    greedy = greedy_generate(tiny_target.model, tiny_target.tokenizer, prompts, 6, 2, None)
    assert [qa.answer for qa in answered] == [text.strip() for text in greedy]
    assert with_own_answers(tiny_target, items, 0, 2) == items


def _edit_on(chat, items, delta, layer):
    """RMS norm of ``delta x`` over every prompt position of ``items`` at ``layer``."""
    prompts = encode_item_prompts(chat.tokenizer, items, chat.system_prompt)
    ids, mask = pad_left(prompts, padding_id(chat.tokenizer))
    with torch.inference_mode(), capture_down_proj(chat.model, [layer]) as store:
        forward_until(chat.model, ids, mask, layer)
    rows = store[layer][0][mask.bool()].double()
    return float((rows @ delta.T).norm(dim=1).pow(2).mean().sqrt())


def test_pinning_general_prompts_keeps_the_edit_off_them(tiny_target, toy_data, general_json):
    items = load_general_prompts(general_json, None)
    settings = {"layers": [2], "coeffs": [2.0], "mode": "hook", "ridge": 1e-6}
    plain = LUNAR(**settings).unlearn(tiny_target, toy_data)
    pinned = LUNAR(**settings, general_path=str(general_json), general_answer_tokens=4).unlearn(
        tiny_target, toy_data
    )
    assert pinned.info["n_general"] == len(QUESTIONS) and plain.info["n_general"] == 0
    assert pinned.metrics["lunar/rows_pinned/layer2"] > plain.metrics["lunar/rows_pinned/layer2"]
    before = _edit_on(tiny_target, items, plain.tensors["delta.layer2"].double(), 2)
    after = _edit_on(tiny_target, items, pinned.tensors["delta.layer2"].double(), 2)
    assert after < 0.6 * before  # measured 0.50 of it
    assert pinned.metrics["lunar/fit_shifted/layer2"] > 0.3  # the forget rows still move
