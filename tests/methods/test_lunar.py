"""LUNAR on the tiny model: hooks are removed, only the chosen down_proj changes, edits fit."""

import contextlib

import pytest
import torch

from lunar_exp.hooks import add_to_block_outputs, capture_block_outputs, count_hooks, decoder_layers
from lunar_exp.methods._activations import mean_last_token_outputs
from lunar_exp.methods.lunar import LUNAR
from lunar_exp.metrics.primitives import pad_left, padding_id
from lunar_exp.prompts import encode_item_prompts


def snapshot(model):
    return {name: p.detach().clone() for name, p in model.named_parameters()}


@pytest.mark.parametrize("solver", ["closed_form", "adamw"])
def test_unlearn_edits_only_the_chosen_down_proj_and_removes_hooks(tiny_chat, toy_data, solver):
    before = snapshot(tiny_chat.model)
    outcome = LUNAR(layers=[1, 2], coeffs=[2.0, 1.0], solver=solver, epochs=2).unlearn(
        tiny_chat, toy_data
    )
    changed = {n for n, p in tiny_chat.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"model.layers.1.mlp.down_proj.weight", "model.layers.2.mlp.down_proj.weight"}
    assert count_hooks(tiny_chat.model) == 0
    assert set(outcome.tensors) == {"r.layer1", "r.layer2"}
    assert outcome.info["layers"] == [1, 2]
    assert outcome.edited_layers == (1, 2)  # what layer skip and reverse direction attack
    assert outcome.metrics["lunar/rows_shifted/layer1"] > 0


def test_closed_form_redirects_forget_prompts(tiny_chat, toy_data):
    lunar = LUNAR(layers=[2], coeffs=[2.0], ridge=1e-8)
    outcome = lunar.unlearn(tiny_chat, toy_data)
    # the tiny model has d_ff=128 and a few hundred rows, so the fit is partial but real
    assert outcome.metrics["lunar/fit_shifted/layer2"] > 0.3
    assert (
        outcome.metrics["lunar/leak_pinned_rms/layer2"]
        < outcome.metrics["lunar/fit_shifted/layer2"]
    )


def test_auto_layers_runs_the_steering_sweep(tiny_chat, toy_data):
    outcome = LUNAR(layers="auto", coeffs=2.0, sweep_probe=2).unlearn(tiny_chat, toy_data)
    assert set(outcome.info["layer_sweep"]) == {"2"}  # 4 layers: candidates 2..2
    assert outcome.info["layers"] == [2]
    assert count_hooks(tiny_chat.model) == 0


@pytest.mark.parametrize("layers", [[3], [-1], [99]])
def test_layer_out_of_range_is_a_clear_error(tiny_chat, toy_data, layers):
    with pytest.raises(ValueError, match=r"out of range.*Fix: choose method.layers within 0..2"):
        LUNAR(layers=layers).unlearn(tiny_chat, toy_data)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"layers": [1, 1]}, r"method.layers=\[1, 1\] repeats a layer"),
        ({"layers": ["abc"]}, r"'abc' is not a layer index. Fix: give integers"),
        ({"activation_batch_size": 0}, r"method.activation_batch_size=0 is out of range.*> 0"),
        ({"ridge": -1.0}, r"method.ridge=-1.0 is out of range. Fix: use a value >= 0"),
        ({"shifted_weight": 0.0}, r"method.shifted_weight=0.0 is out of range"),
        ({"epochs": 0}, r"method.epochs=0 is out of range"),
        ({"sweep_probe": "ten"}, r"method.sweep_probe='ten' is not an integer"),
    ],
)
def test_bad_settings_fail_when_the_method_is_built(settings, message):
    with pytest.raises(ValueError, match=message):
        LUNAR(**settings)


def test_settings_at_their_bounds_are_accepted():
    LUNAR(layers=[2, 1], ridge=0.0, gamma=0.0, weight_decay=0.0, activation_batch_size=1)


def test_hooks_are_removed_when_the_forward_pass_fails(tiny_chat):
    shift = torch.zeros(tiny_chat.model.config.hidden_size)
    with pytest.raises(RuntimeError), add_to_block_outputs(tiny_chat.model, {0: shift}):
        assert count_hooks(tiny_chat.model) == 1
        raise RuntimeError("boom")
    assert count_hooks(tiny_chat.model) == 0


def test_coefficient_count_must_match_layers(tiny_chat, toy_data):
    with pytest.raises(ValueError, match="coeffs has 2 values for 1 layers"):
        LUNAR(layers=[2], coeffs=[1.0, 2.0]).unlearn(tiny_chat, toy_data)


def test_activation_passes_stop_after_the_deepest_needed_block(tiny_chat, toy_data):
    # Reading block 1 must give what a full forward pass gives, without running blocks 2..3.
    tok, model = tiny_chat.tokenizer, tiny_chat.model
    prompts = encode_item_prompts(tok, toy_data.forget, tiny_chat.system_prompt)
    pad = padding_id(tok)
    ran = []
    with contextlib.ExitStack() as stack:
        for index, block in enumerate(decoder_layers(model)):
            hook = block.register_forward_hook(lambda *_, index=index: ran.append(index))
            stack.callback(hook.remove)
        means = mean_last_token_outputs(model, prompts, [0, 1], pad, 4, "test")
    assert set(ran) == {0, 1}
    ids, mask = pad_left(prompts, pad)
    with capture_block_outputs(model, [1]) as store, torch.inference_mode():
        model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0))
        full = store[1][:, -1, :].double().mean(0)
    torch.testing.assert_close(means[1], full)
    assert count_hooks(model) == 0


@pytest.mark.parametrize("pin_abstentions", [True, False])
def test_vectors_read_in_the_row_passes_equal_prompt_only_passes(
    tiny_target, toy_data, pin_abstentions
):
    # r_l read at the last prompt token of prompt + answer rows (causal attention) must equal
    # r_l from passes over the prompts alone, as LUNAR.md defines it.
    lunar = LUNAR(layers=[1, 2], pin_abstentions=pin_abstentions, activation_batch_size=3)
    fused = lunar._collect(tiny_target, toy_data, [1, 2]).vectors
    prompt_only = lunar._vectors(tiny_target, toy_data, [1, 2])
    for layer in (1, 2):
        assert prompt_only[layer].norm() > 0.1
        torch.testing.assert_close(fused[layer], prompt_only[layer], rtol=1e-5, atol=1e-5)


def test_unlearning_runs_one_pass_per_batch_of_rows(tiny_chat, toy_data):
    # With the abstention rows pinned, r comes from the row passes: no separate r passes.
    lunar = LUNAR(layers=[2], activation_batch_size=3, share_prefix=False)
    sources = lunar._row_sources(tiny_chat, toy_data).values()
    expected = sum(-(-len(source.sequences) // 3) for source in sources)
    passes = []
    block = decoder_layers(tiny_chat.model)[0]
    hook = block.register_forward_hook(lambda *_: passes.append(1))
    try:
        lunar.unlearn(tiny_chat, toy_data)
    finally:
        hook.remove()
    assert len(passes) == expected


def test_the_shared_prefix_runs_once_for_all_row_sets(tiny_target, toy_data):
    # Forget, retain and abstention rows start with the same template head: one pass of it
    # (batch 1), then one pass per batch of each row set.
    lunar = LUNAR(layers=[2], activation_batch_size=3)
    sources = lunar._row_sources(tiny_target, toy_data).values()
    assert len(sources) == 3
    batches = sum(-(-len(source.sequences) // 3) for source in sources)
    sizes = []
    hook = decoder_layers(tiny_target.model)[0].register_forward_hook(
        lambda _m, args, _o: sizes.append(args[0].shape[0])
    )
    try:
        lunar._collect(tiny_target, toy_data, [2])
    finally:
        hook.remove()
    assert len(sizes) == batches + 1 and sizes[0] == 1  # the prefix first, then the rows


@pytest.mark.parametrize("perturb_positions", ["after_prefix", "all", "last"])
def test_shared_prefix_gives_the_rows_of_full_passes(tiny_target, toy_data, perturb_positions):
    # The template head every sequence starts with runs once (weighted by the sequence count);
    # the regression's sums, counts, stored rows and r must equal those of full passes.
    tokens = []
    hook = decoder_layers(tiny_target.model)[0].register_forward_hook(
        lambda _m, args, _o: tokens.append(args[0].shape[0] * args[0].shape[1])
    )
    collected = {}
    try:
        for share in (False, True):
            lunar = LUNAR(
                layers=[1, 2],
                perturb_positions=perturb_positions,
                share_prefix=share,
                activation_batch_size=3,
            )
            tokens.clear()
            collected[share] = (lunar._collect(tiny_target, toy_data, [1, 2]), sum(tokens))
    finally:
        hook.remove()
    (full, full_tokens), (shared, shared_tokens) = collected[False], collected[True]
    assert shared_tokens < 0.8 * full_tokens
    for layer in (1, 2):
        a, b = full.accumulators[layer], shared.accumulators[layer]
        assert (a.n_shifted, a.n_pinned) == (b.n_shifted, b.n_pinned)
        assert a.n_shifted > 0
        for name in ("gram_shifted", "gram_pinned", "sum_shifted"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(full.vectors[layer], shared.vectors[layer], rtol=1e-5, atol=1e-5)


def test_adamw_keeps_the_row_order_of_full_passes(tiny_target, toy_data):
    # AdamW's minibatches depend on the row order (docs/lunar_recipe.md: DS 1.1 / 10.1 / 20.0
    # for row seeds 0 / 1 / 2), so its rows must come from full passes, prefix included.
    rows = LUNAR(layers=[1], solver="adamw")._collect(tiny_target, toy_data, [1]).rows[1]
    sources = LUNAR(layers=[1])._row_sources(tiny_target, toy_data).values()
    assert sum(len(x) for x, _, _ in rows) == sum(len(s) for src in sources for s in src.sequences)
