"""Attack mechanics on the tiny model: copies and hooks leave the unlearned model untouched."""

import pytest
import torch
from hydra.utils import instantiate

from lunar_exp.attacks._common import AttackTarget, edited_layers
from lunar_exp.attacks.grid_quantize import GridQuantizeQ41, round_to_q4_1
from lunar_exp.attacks.quantize import Quantize
from lunar_exp.attacks.reverse_direction import _compare_to_saved
from lunar_exp.attacks.runner import run_attacks
from lunar_exp.hooks import count_hooks
from lunar_exp.interfaces import UnlearnOutcome
from lunar_exp.methods.lunar import LUNAR
from lunar_exp.metrics.primitives import greedy_generate
from lunar_exp.prompts import encode_item_prompts
from tests.conftest import compose_config, toy_benchmark
from tests.legacy_directions import assert_declared_as_before, assert_directions_as_before

ATTACKS = [
    "layer_skip",
    "reverse_direction",
    "reverse_direction_recomputed",
    "quantize_int8",
    "quantize_int4",
    "quantize_nf4",
    "quantize_q4_1_grid",
    "relearn",
    "paraphrase",
    "refusal_ablation",
    "probe",
    "relearn_benign",
    "in_context",
]


def attacks_from_config(names, overrides=()):
    cfg = compose_config(["+exp=smoke", f"attack=[{','.join(names)}]", *overrides])
    return {name: instantiate(node) for name, node in cfg.attack.items()}


def attack_target(chat, outcome, after=None) -> AttackTarget:
    benchmark = toy_benchmark()
    bench = benchmark.load()
    return AttackTarget(
        chat, bench.unlearn, benchmark, bench.eval_sets, bench.generation, outcome, after
    )


def unlearned(tiny_target, toy_data):
    outcome = LUNAR(layers=[2], coeffs=[2.0]).unlearn(tiny_target, toy_data)
    target = attack_target(tiny_target, outcome)
    target.after = target.benchmark.evaluate(tiny_target, target.eval_sets)
    assert_declared_as_before(target.after)
    return target


def fingerprint(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_attack_all_composes_every_attack():
    cfg = compose_config(["+exp=smoke", "attack=all"])
    assert list(cfg.attack) == ATTACKS
    assert dict(compose_config(["+exp=smoke"]).attack) == {}


def test_every_attack_leaves_the_unlearned_weights_bit_identical(tiny_target, toy_data):
    target = unlearned(tiny_target, toy_data)
    before = fingerprint(tiny_target.model)
    attacks = attacks_from_config(ATTACKS, ["attack.relearn.n_items=1"])
    results = run_attacks(attacks, target)
    metrics, records = results.metrics, results.records
    after = fingerprint(tiny_target.model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert count_hooks(tiny_target.model) == 0
    for name in ATTACKS:
        assert f"attack/{name}/forget/rouge1_recall" in metrics
        assert f"attack/{name}/deviation_score" in metrics
        assert records[f"attack/{name}/forget"]
    for key in ("forget/rouge1_recall", "deviation_score"):
        assert metrics[f"attack/worst/{key}"] == max(metrics[f"attack/{n}/{key}"] for n in ATTACKS)
    assert results.info["worst"]["forget_attack"] in ATTACKS
    assert_directions_as_before(metrics, results.directions)


@pytest.mark.parametrize(
    "name", ["quantize_int8", "quantize_int4", "quantize_nf4", "quantize_q4_1_grid"]
)
def test_quantized_weights_differ_and_the_model_still_generates(tiny_target, toy_data, name):
    target = unlearned(tiny_target, toy_data)
    results = run_attacks(attacks_from_config([name]), target)
    metrics, records = results.metrics, results.records
    assert 0 < metrics[f"attack/{name}/weights/relative_change"] < 0.2
    assert metrics[f"attack/{name}/weights/changed_fraction"] > 0.5
    responses = [row["response"] for row in records[f"attack/{name}/forget"]]
    assert all(isinstance(text, str) and text for text in responses)


def test_int4_moves_weights_more_than_int8(tiny_target, toy_data):
    target = unlearned(tiny_target, toy_data)
    metrics = run_attacks(attacks_from_config(["quantize_int8", "quantize_int4"]), target).metrics
    int8 = metrics["attack/quantize_int8/weights/relative_change"]
    assert metrics["attack/quantize_int4/weights/relative_change"] > 4 * int8


def test_q4_1_rounding_is_idempotent_and_exact_on_its_own_grid():
    torch.manual_seed(0)
    weight = torch.randn(8, 64)
    once = round_to_q4_1(weight)
    assert not torch.equal(once, weight)
    assert torch.equal(round_to_q4_1(once), once)
    levels = once.reshape(-1, 32)
    for group in levels:
        assert len(torch.unique(group)) <= 16


def test_relearn_trains_a_copy_on_the_forget_slice(tiny_target, toy_data):
    target = unlearned(tiny_target, toy_data)
    attacks = attacks_from_config(["relearn"], ["attack.relearn.n_items=1"])
    metrics = run_attacks(attacks, target).metrics
    before = metrics["attack/relearn/trained/answer_nll_before"]
    assert metrics["attack/relearn/trained/answer_nll_after"] < before
    # the tiny model does not generalise between facts; the held-out drop is tested on the
    # embedded model (tests/e2e/test_attacks_embedded.py)
    assert "attack/relearn/held_out/answer_nll_after" in metrics
    assert metrics["attack/relearn/n_held_out"] == len(toy_data.forget) - 1


def test_reverse_direction_uses_saved_vectors_for_lunar_and_recomputes_for_others(
    tiny_target, toy_data
):
    target = unlearned(tiny_target, toy_data)
    info = run_attacks(attacks_from_config(["reverse_direction"]), target).info
    assert info["reverse_direction"]["direction"] == "saved"
    assert info["reverse_direction"]["coeffs"] == [2.0]
    target.outcome = type(target.outcome)({}, {}, {})  # a method with no vectors and no layers
    info = run_attacks(attacks_from_config(["reverse_direction"]), target).info
    assert info["reverse_direction"] == {"layers": [2], "coeffs": [2.0], "direction": "recomputed"}


def test_recomputed_direction_on_a_lunar_model_lies_along_the_saved_one(tiny_target, toy_data):
    # LUNAR's edit is rank one (c * r v^T), so every activation it moves, moves along r: the
    # direction an attacker re-estimates on the unlearned model is a multiple of the saved r.
    # Forget activations moved towards the reference, so the multiple is below 1; on the
    # embedded model, where the edit realises the whole shift, it is 1 - c (the slow test).
    outcome = LUNAR(layers=[2], coeffs=[3.0]).unlearn(tiny_target, toy_data)
    target = attack_target(tiny_target, outcome)
    results = run_attacks(attacks_from_config(["reverse_direction_recomputed"]), target)
    metrics, info = results.metrics, results.info
    assert info["reverse_direction_recomputed"]["direction"] == "recomputed"
    prefix = "attack/reverse_direction_recomputed/direction/layer2"
    assert abs(metrics[f"{prefix}/cos_to_saved"]) > 0.999
    assert metrics[f"{prefix}/scale_to_saved"] < 0.9


def test_compare_to_saved_reports_cosine_and_projection():
    saved = torch.tensor([1.0, 2.0, 0.0, -1.0])
    noise = torch.tensor([0.0, 0.0, 0.3, 0.0])
    report = _compare_to_saved({5: -3.0 * saved + noise}, {"r.layer5": saved})
    cos = float(-3.0 * 6.0 / (6.0**0.5 * (9.0 * 6.0 + 0.09) ** 0.5))  # (r'.r) / (|r'| |r|)
    assert report["direction/layer5/cos_to_saved"] == pytest.approx(cos)
    assert report["direction/layer5/scale_to_saved"] == pytest.approx(-3.0)  # (r'.r) / (r.r)
    assert _compare_to_saved({5: saved}, {}) == {}


def test_paraphrase_asks_the_paraphrased_questions(tiny_target, toy_data):
    target = unlearned(tiny_target, toy_data)
    records = run_attacks(attacks_from_config(["paraphrase"]), target).records
    asked = [row["question"] for row in records["attack/paraphrase/forget"]]
    assert asked == [item.paraphrase for item in toy_data.forget]
    assert asked != [item.question for item in toy_data.forget]


def test_hook_mode_matches_edit_mode_and_switches_off(tiny_target, toy_data):
    prompts = encode_item_prompts(tiny_target.tokenizer, toy_data.forget, tiny_target.system_prompt)
    ids = torch.tensor([prompts[0]])
    base = tiny_target.model(ids).logits
    weights = fingerprint(tiny_target.model)
    hooked = LUNAR(layers=[2], coeffs=[2.0], mode="hook").unlearn(tiny_target, toy_data)
    assert all(torch.equal(weights[k], v) for k, v in tiny_target.model.state_dict().items())
    with hooked.control(tiny_target):
        on = tiny_target.model(ids).logits
        assert count_hooks(tiny_target.model) == 1
    off = tiny_target.model(ids).logits
    assert count_hooks(tiny_target.model) == 0
    assert torch.equal(off, base) and not torch.allclose(on, base)
    LUNAR(layers=[2], coeffs=[2.0], mode="edit").unlearn(tiny_target, toy_data)
    edited = tiny_target.model(ids).logits
    torch.testing.assert_close(on, edited, rtol=1e-4, atol=1e-4)


def test_hook_mode_generation_changes_only_inside_the_control(tiny_target, toy_data):
    tok = tiny_target.tokenizer
    prompts = encode_item_prompts(tok, toy_data.forget, tiny_target.system_prompt)
    base = greedy_generate(tiny_target.model, tok, prompts, 8, 8)
    outcome = LUNAR(layers=[2], coeffs=[50.0], mode="hook").unlearn(tiny_target, toy_data)
    with outcome.control(tiny_target):
        steered = greedy_generate(tiny_target.model, tok, prompts, 8, 8)
    assert steered != base
    assert greedy_generate(tiny_target.model, tok, prompts, 8, 8) == base


def test_attack_layer_out_of_range_is_a_clear_error(tiny_chat, toy_data):
    attack = attacks_from_config(["layer_skip"], ["attack.layer_skip.layers=[7]"])["layer_skip"]
    with pytest.raises(ValueError, match=r"out of range for a 4-layer model. Fix: set attack"):
        attack.check(tiny_chat, toy_data)


@pytest.mark.parametrize("blocksize", [0, 48, 8192])
def test_nf4_block_size_is_checked_before_the_run(blocksize):
    # bitsandbytes raised "invalid blocksize" only after unlearning, at attack time.
    with pytest.raises(ValueError, match=f"blocksize={blocksize} is not an NF4 block size. Fix"):
        Quantize(weights="nf4", blocksize=blocksize)
    Quantize(weights="int8", blocksize=blocksize)  # quanto's int8/int4 do not use it


def test_q4_1_group_size_must_be_a_positive_integer():
    # group_size=0 divided by zero in the check against the model's row lengths.
    for bad in (0, "abc"):
        with pytest.raises(ValueError, match=r"attack.quantize_q4_1_grid.group_size="):
            GridQuantizeQ41(group_size=bad)


@pytest.mark.parametrize(("edited", "expected"), [((1,), [1]), ((0, 2), [0, 2]), ((), [2])])
def test_layer_attacks_aim_at_the_layers_the_method_reports(tiny_chat, edited, expected):
    # UnlearnOutcome.edited_layers is the one source; () falls back to 0.8 x depth (here 2).
    target = attack_target(tiny_chat, UnlearnOutcome(edited_layers=edited))
    assert edited_layers(target, None) == expected
    assert edited_layers(target, [3]) == [3]  # the attack's own layers win


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Quantize(weights="int3"), "attack.quantize.weights='int3': use int8, int4 or nf4"),
        (lambda: GridQuantizeQ41(group_size=0), "attack.quantize_q4_1_grid.group_size=0 is out"),
    ],
)
def test_attack_settings_are_checked_when_built(build, message):
    with pytest.raises(ValueError, match=message):
        build()
