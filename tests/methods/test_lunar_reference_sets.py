"""LUNAR's reference prompt sets: the benchmark's abstention prompts or the official files."""

import json

import pytest
import torch

from lunar_exp.methods import build_method
from lunar_exp.methods._activations import mean_last_token_outputs
from lunar_exp.methods.lunar import LUNAR, load_reference_set
from lunar_exp.prompts import encode_item_prompts
from tests.conftest import SHARED, compose_config

OFFICIAL = SHARED / "lunar"


def _expected_r(chat, data, prompts, layer):
    """mean(reference last-token output) - mean(forget last-token output) at ``layer``."""
    pad = chat.tokenizer.pad_token_id
    ref = encode_item_prompts(chat.tokenizer, prompts, chat.system_prompt)
    fgt = encode_item_prompts(chat.tokenizer, data.forget, chat.system_prompt)
    ref_mean = mean_last_token_outputs(chat.model, ref, [layer], pad, 16, "r")[layer]
    fgt_mean = mean_last_token_outputs(chat.model, fgt, [layer], pad, 16, "r")[layer]
    return (ref_mean - fgt_mean).float()


@pytest.mark.parametrize(("name", "count"), [("harmful", 260), ("unverified", 199)])
def test_official_sets_load_every_prompt(name, count):
    items = load_reference_set(name, OFFICIAL)
    assert len(items) == count
    assert all(qa.question.strip() and qa.edge == f"reference/{name}" for qa in items)


@pytest.mark.parametrize("name", ["harmful", "unverified"])
def test_official_set_defines_r(tiny_target, toy_data, name):
    method = LUNAR(layers=[1], coeffs=[2.0], reference_set=name, reference_dir=str(OFFICIAL))
    reference = load_reference_set(name, OFFICIAL)
    expected = _expected_r(tiny_target, toy_data, reference, 1)
    benchmark_r = _expected_r(tiny_target, toy_data, toy_data.reference, 1)
    outcome = method.unlearn(tiny_target, toy_data)
    got = outcome.tensors["r.layer1"]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(got, benchmark_r, atol=1e-3)
    assert outcome.info["reference_set"] == name
    assert outcome.info["n_reference"] == len(reference)


def test_benchmark_set_is_the_default_and_defines_r(tiny_target, toy_data):
    method = LUNAR(layers=[1], coeffs=[2.0])
    assert method.reference_set == "benchmark"
    expected = _expected_r(tiny_target, toy_data, toy_data.reference, 1)
    outcome = method.unlearn(tiny_target, toy_data)
    torch.testing.assert_close(outcome.tensors["r.layer1"], expected, rtol=1e-4, atol=1e-5)


def test_layer_sweep_uses_the_selected_set(tiny_target, toy_data):
    method = LUNAR(layers="auto", reference_set="unverified", reference_dir=str(OFFICIAL))
    vectors = method._vectors(tiny_target, toy_data, [1, 2])
    reference = load_reference_set("unverified", OFFICIAL)
    expected = _expected_r(tiny_target, toy_data, reference, 2)
    torch.testing.assert_close(vectors[2].float(), expected, rtol=1e-4, atol=1e-5)


def test_config_points_at_the_shared_data_dir():
    cfg = compose_config(["method=lunar", "method.reference_set=harmful"])
    method = build_method(cfg.method)
    assert isinstance(method, LUNAR)
    assert method.reference_set == "harmful"
    assert method.reference_dir.endswith("lunar")
    assert method.reference_dir == f"{cfg.paths.data_dir}/lunar"
    assert len(method._official_reference) == 260


def test_unknown_set_is_one_clear_error():
    with pytest.raises(ValueError, match=r"method\.reference_set=.*Fix"):
        LUNAR(reference_set="everything")  # pyright: ignore[reportArgumentType]


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"harmful\.json.*Fix: set method\.reference_dir"):
        LUNAR(reference_set="harmful", reference_dir=str(tmp_path))


@pytest.mark.parametrize("content", ['{"instruction": "x"}', "[]", '[{"prompt": "x"}]', "[{"])
def test_malformed_file_is_one_clear_error(tmp_path, content):
    (tmp_path / "unverified.json").write_text(content)
    with pytest.raises(ValueError, match="Fix: use the official file"):
        LUNAR(reference_set="unverified", reference_dir=str(tmp_path))


def test_benchmark_set_needs_no_file(tmp_path):
    method = LUNAR(reference_set="benchmark", reference_dir=str(tmp_path / "absent"))
    assert method.reference_set == "benchmark"


def test_official_json_format_is_instruction_records():
    records = json.loads((OFFICIAL / "harmful.json").read_text())
    assert set(records[0]) == {"instruction", "category"}
