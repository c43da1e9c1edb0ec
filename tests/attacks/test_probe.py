"""Probe: a retain-trained head on an intermediate layer reads answers the top block destroyed."""

import torch

from lunar_exp.attacks.probe import PLOT_FILE, Probe
from lunar_exp.attacks.runner import run_attacks
from lunar_exp.hooks import count_hooks, decoder_layers
from lunar_exp.interfaces import UnlearnOutcome
from tests.attacks.test_attacks_tiny import attack_target, fingerprint


def top_block_scrambled(tiny_target):
    # Plant: the answers stay readable in layers 0-2, but noise in the last block's MLP output
    # projection scrambles every answer the model itself gives (forget answer NLL 1.50 -> 5.13).
    down = decoder_layers(tiny_target.model)[3].mlp.down_proj.weight
    with torch.no_grad():
        down.add_(2.0 * torch.randn(down.shape, generator=torch.Generator().manual_seed(0)))
    target = attack_target(tiny_target, UnlearnOutcome())
    target.after = target.benchmark.evaluate(tiny_target, target.eval_sets)
    return target


def test_a_retain_trained_head_below_the_scrambled_block_recovers_the_forget_answers(
    tiny_target, tmp_path
):
    target = top_block_scrambled(tiny_target)
    target.run_dir = tmp_path
    weights = fingerprint(tiny_target.model)
    results = run_attacks({"probe": Probe(layers=[1, 2])}, target)
    metrics, after = results.metrics, target.after.metrics
    # measured: answer NLL 5.13 -> 1.53 and ROUGE-1 0.0 -> 0.7 through layer 2's head
    assert metrics["attack/probe/forget/answer_nll"] < after["forget/answer_nll"] - 2.0
    assert metrics["attack/probe/forget/rouge1_recall"] >= after["forget/rouge1_recall"] + 0.3
    assert "attack/probe/deviation_score" in metrics
    best = metrics["attack/probe/best_layer"]
    accuracy = {
        layer: metrics[f"attack/probe/layer_{layer}/forget/token_accuracy"] for layer in (1, 2)
    }
    assert best == max(accuracy, key=lambda layer: accuracy[layer])
    # training on retain answers beats the untrained logit lens on them
    for layer in (1, 2):
        prefix = f"attack/probe/layer_{layer}/retain"
        assert metrics[f"{prefix}/token_accuracy"] > metrics[f"{prefix}/lens_token_accuracy"]
    assert (tmp_path / PLOT_FILE).stat().st_size > 0
    assert all(weights[k].equal(v) for k, v in tiny_target.model.state_dict().items())
    assert count_hooks(tiny_target.model) == 0


def test_heads_train_on_retain_answers_only(tiny_target, toy_data, monkeypatch):
    # The forget answers reach only the scoring, never a head's training batch.
    import lunar_exp.attacks.probe as probe

    trained_on: list[int] = []
    fit = Probe._fit

    def recording_fit(self, head, states, labels):
        trained_on.append(len(labels))
        return fit(self, head, states, labels)

    monkeypatch.setattr(Probe, "_fit", recording_fit)
    target = attack_target(tiny_target, UnlearnOutcome())
    Probe(layers=[2]).evaluate(target)
    retain_tokens = len(probe._answer_states(tiny_target, toy_data.retain, [2], 8)[1])
    assert trained_on == [retain_tokens]


def test_default_layers_are_spread_over_the_depth(tiny_chat):
    assert Probe(n_layers=3)._layers(tiny_chat) == [0, 2, 3]  # linspace(0, 3, 3) rounded
    assert Probe(layers=[2, 1, 2])._layers(tiny_chat) == [1, 2]
