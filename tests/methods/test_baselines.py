"""Each baseline on the tiny model: forget likelihood falls and only claimed parameters change."""

import pytest
import torch

from lunar_exp.hooks import capture_block_outputs, count_hooks
from lunar_exp.methods._loop import TrainLoop, answer_logprobs, encode_items
from lunar_exp.methods.altpo import AltPO
from lunar_exp.methods.ceu import CEU
from lunar_exp.methods.ga import GA
from lunar_exp.methods.graddiff import GradDiff
from lunar_exp.methods.idkdpo import IdkDPO
from lunar_exp.methods.npo import NPO
from lunar_exp.methods.pdu import PDU
from lunar_exp.methods.rmu import RMU
from lunar_exp.methods.satimp import SatImp
from lunar_exp.methods.simnpo import SimNPO
from lunar_exp.methods.undial import UNDIAL
from lunar_exp.methods.wga import WGA

FAST = TrainLoop(lr=1e-3, epochs=3, batch_size=2, weight_decay=0.0)


def forget_nll(chat, data):
    with torch.no_grad():
        _, nll = answer_logprobs(
            chat.model, encode_items(chat, data.forget), chat.tokenizer.pad_token_id
        )
    return nll.mean().item()


@pytest.mark.parametrize(
    "method",
    [
        GA(loop=FAST),
        GradDiff(loop=FAST),
        NPO(beta=0.1, loop=FAST),
        SimNPO(loop=FAST),
        IdkDPO(loop=FAST),
        WGA(loop=FAST),
        SatImp(loop=FAST),
        UNDIAL(loop=FAST),
        CEU(loop=FAST),
        AltPO(num_alternates=2, max_new_tokens=8, loop=FAST),
        PDU(alpha=1.0, dual_warmup_epochs=1, loop=FAST),
    ],
    ids=[
        "ga",
        "graddiff",
        "npo",
        "simnpo",
        "idkdpo",
        "wga",
        "satimp",
        "undial",
        "ceu",
        "altpo",
        "pdu",
    ],
)
def test_forget_likelihood_falls(tiny_target, toy_data, method):
    tiny_chat = tiny_target
    before = forget_nll(tiny_chat, toy_data)
    outcome = method.unlearn(tiny_chat, toy_data)
    assert forget_nll(tiny_chat, toy_data) > before
    n_params = sum(p.numel() for p in tiny_chat.model.parameters())
    assert outcome.metrics["unlearn/params_changed"] == n_params
    assert all(p.requires_grad for p in tiny_chat.model.parameters())
    assert not tiny_chat.model.training


def test_trainable_params_pattern_limits_what_changes(tiny_chat, toy_data):
    before = {n: p.detach().clone() for n, p in tiny_chat.model.named_parameters()}
    pattern = r"model\.layers\.1\.mlp\.down_proj\.weight"
    outcome = GA(trainable_params=pattern, loop=FAST).unlearn(tiny_chat, toy_data)
    changed = {n for n, p in tiny_chat.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed == {"model.layers.1.mlp.down_proj.weight"}
    assert outcome.metrics["unlearn/params_changed"] == 64 * 128


def test_rmu_moves_steered_activations_toward_the_target(tiny_chat, toy_data):
    rmu = RMU(
        layer=1,
        steering_coeff=5.0,
        trainable_params=r"model\.layers\.[01]\.",
        loop=TrainLoop(lr=3e-3, epochs=5, batch_size=2, weight_decay=0.0),
    )
    u = rmu.target_direction(tiny_chat.model.config.hidden_size)
    pairs = encode_items(tiny_chat, toy_data.forget)
    ids = torch.tensor([pairs[0][0] + pairs[0][1]])

    def distance():
        with torch.no_grad(), capture_block_outputs(tiny_chat.model, [1]) as store:
            tiny_chat.model(ids)
        return (store[1][0, -len(pairs[0][1]) :] - u).pow(2).mean().item()

    before_params = {n: p.detach().clone() for n, p in tiny_chat.model.named_parameters()}
    start = distance()
    rmu.unlearn(tiny_chat, toy_data)
    assert distance() < 0.5 * start
    changed = {
        n for n, p in tiny_chat.model.named_parameters() if not torch.equal(p, before_params[n])
    }
    assert changed and all(n.startswith(("model.layers.0.", "model.layers.1.")) for n in changed)
    assert count_hooks(tiny_chat.model) == 0


def test_bad_training_settings_are_clear_errors():
    with pytest.raises(
        ValueError, match=r"method.loop.lr=-1.0 is out of range. Fix: use a value > 0"
    ):
        GA(loop=TrainLoop(lr=-1.0))
    with pytest.raises(ValueError, match="No parameter matches"):
        from lunar_exp.methods._loop import select_params
        from lunar_exp.models import tiny_llama

        select_params(tiny_llama().model, "nothing_matches_this")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: NPO(beta=0.0), r"method.beta=0.0 is out of range. Fix: use a value > 0"),
        (lambda: SimNPO(beta=0.0), r"method.beta=0.0 is out of range"),
        (lambda: IdkDPO(beta=-1.0), r"method.beta=-1.0 is out of range"),
        (lambda: NPO(alpha=-0.5), r"method.alpha=-0.5 is out of range. Fix: use a value >= 0"),
        (lambda: GradDiff(gamma="x"), r"method.gamma='x' is not a number"),
        (lambda: SimNPO(delta="x"), r"method.delta='x' is not a number"),
        (lambda: RMU(layer=2.5), r"method.layer=2.5 is not an integer"),
        (lambda: RMU(steering_coeff="big"), r"method.steering_coeff='big' is not a number"),
        (lambda: WGA(beta=-1.0), r"method.beta=-1.0 is out of range. Fix: use a value >= 0"),
        (lambda: WGA(alpha="x"), r"method.alpha='x' is not a number"),
    ],
)
def test_bad_loss_settings_fail_when_the_method_is_built(build, message):
    # beta = 0 divided by zero in NPO's and SimNPO's losses after fine-tuning; a negative beta
    # silently turned IdkDPO's preference around.
    with pytest.raises(ValueError, match=message):
        build()


def test_rmu_reports_only_the_parameters_its_loss_reaches(tiny_chat, toy_data):
    # Every parameter may train (trainable_params=None), but the loss reads block 1's output:
    # blocks 2 and 3, the final norm and the LM head get no gradient and must not change or count.
    before = {n: p.detach().clone() for n, p in tiny_chat.model.named_parameters()}
    loop = TrainLoop(lr=3e-3, epochs=2, batch_size=2, weight_decay=0.01)
    rmu = RMU(layer=1, steering_coeff=5.0, loop=loop)
    outcome = rmu.unlearn(tiny_chat, toy_data)
    assert outcome.edited_layers == (1,)
    params = dict(tiny_chat.model.named_parameters())
    changed = {n for n, p in params.items() if not torch.equal(p, before[n])}
    assert changed and not any(
        n.startswith(("model.layers.2.", "model.layers.3.")) for n in changed
    )
    assert "model.norm.weight" not in changed
    assert outcome.metrics["unlearn/params_changed"] == sum(params[n].numel() for n in changed)
