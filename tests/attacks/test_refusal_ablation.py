"""Refusal-direction ablation: finds a planted direction and projecting it out restores answers."""

from dataclasses import replace

import pytest
import torch

from lunar_exp.attacks.refusal_ablation import RefusalAblation, _select
from lunar_exp.attacks.runner import run_attacks
from lunar_exp.hooks import ablate_direction, capture_block_outputs, count_hooks
from lunar_exp.methods.lunar import LUNAR
from lunar_exp.prompts import encode_item_prompts
from tests.attacks.test_attacks_tiny import attack_target, fingerprint


def test_ablation_keeps_every_block_output_orthogonal_to_the_direction(tiny_chat, toy_data):
    prompts = encode_item_prompts(tiny_chat.tokenizer, toy_data.forget, tiny_chat.system_prompt)
    ids = torch.tensor([prompts[0]])
    direction = torch.randn(
        tiny_chat.model.config.hidden_size, generator=torch.Generator().manual_seed(0)
    )
    unit = direction / direction.norm()
    layers = range(tiny_chat.model.config.num_hidden_layers)
    with capture_block_outputs(tiny_chat.model, layers) as store:
        tiny_chat.model(ids)
        plain = {layer: store[layer] @ unit for layer in layers}
        with ablate_direction(tiny_chat.model, direction):
            tiny_chat.model(ids)
            ablated = {layer: store[layer] @ unit for layer in layers}
    assert count_hooks(tiny_chat.model) == 0
    for layer in layers:
        assert plain[layer].abs().max() > 0.01  # the stream had a component along d
        assert ablated[layer].abs().max() < 1e-5  # and no block writes one back


def test_ablating_the_planted_direction_restores_the_forget_answers(tiny_target, toy_data):
    # Plant: LUNAR adds c*r to layer 2's output for the forget prompts (c = 20 pushes the forget
    # answers' NLL from 1.50 to 2.54). The attacker, with the weights only, contrasts forget
    # and retain prompts on the unlearned model, finds r and projects it out everywhere.
    outcome = LUNAR(layers=[2], coeffs=[20.0]).unlearn(tiny_target, toy_data)
    target = attack_target(tiny_target, outcome)
    target.after = target.benchmark.evaluate(tiny_target, target.eval_sets)
    attack = RefusalAblation(prompts="forget")
    with target.control(tiny_target):
        found = attack._directions(target, [2])[2]
    saved = outcome.tensors["r.layer2"].float()
    assert torch.nn.functional.cosine_similarity(found, saved, dim=0).abs() > 0.9
    weights = fingerprint(tiny_target.model)
    results = run_attacks({"refusal_ablation": attack}, target)
    nll = results.metrics["attack/refusal_ablation/forget/answer_nll"]
    # measured: 2.54 after unlearning -> 2.02 under the ablation (1.50 on the target model)
    assert nll < target.after.metrics["forget/answer_nll"] - 0.3
    assert results.info["refusal_ablation"]["prompts"] == "forget"
    assert results.metrics["attack/refusal_ablation/layer"] in (0, 1, 2)
    assert all(weights[k].equal(v) for k, v in tiny_target.model.state_dict().items())
    assert count_hooks(tiny_target.model) == 0


def test_selection_takes_the_least_refusing_candidate_within_the_retain_guard():
    scores = {3: (2.0, 0.1), 5: (4.0, 0.9), 7: (3.0, 0.4)}  # layer: (refusal NLL, retain rise)
    assert _select(scores, max_rise=0.5) == 7  # 5 refuses least but breaks the retain answers
    assert _select(scores, max_rise=1.0) == 5
    assert _select({3: (2.0, 2.0), 5: (1.0, 3.0)}, max_rise=0.5) == 3  # none passes: least refusing


def test_abstain_prompts_are_required_unless_forget_prompts_are_chosen(tiny_chat, toy_data):
    bare = replace(toy_data, abstain=(), reference=())
    with pytest.raises(ValueError, match="Fix: set attack.refusal_ablation.prompts=forget"):
        RefusalAblation().check(tiny_chat, bare)
    RefusalAblation(prompts="forget").check(tiny_chat, bare)
