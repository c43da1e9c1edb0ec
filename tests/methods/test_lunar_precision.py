"""LUNAR's precision: sums on the model's device, the delivered edit checked, float32 fallback."""

import copy
import dataclasses
import math
import types

import pytest
import torch
from torch import nn

from lunar_exp.hooks import count_hooks, decoder_layers, down_proj
from lunar_exp.methods._lunar_edit import Float32Linear, relative_error, write_edit
from lunar_exp.methods._lunar_solvers import RidgeAccumulator, fit_report, solve_ridge
from lunar_exp.methods.lunar import LUNAR

# c = 1e-4 makes the tiny target's edit entries ~1e-6 against weights ~1e-2: bfloat16 (8
# significant bits, spacing ~4e-5 there) rounds most of them away.
SMALL = 1e-4


def down_proj_of(chat, layer) -> nn.Linear:
    projection = down_proj(decoder_layers(chat.model)[layer])
    assert isinstance(projection, nn.Linear)
    return projection


def in_dtype(chat, dtype):
    """A copy of ``chat`` whose model is a copy in ``dtype``."""
    return dataclasses.replace(chat, model=copy.deepcopy(chat.model).to(dtype))


def test_a_bf16_edit_that_rounds_away_falls_back_to_float32(tiny_target, toy_data):
    chat = in_dtype(tiny_target, torch.bfloat16)
    before = down_proj_of(chat, 2).weight.detach().float().clone()
    # hook mode leaves the weights alone and keeps the solved edit: the intended one
    hooked = LUNAR(layers=[2], coeffs=[SMALL], mode="hook").unlearn(chat, toy_data)
    intended = hooked.tensors["delta.layer2"]
    lunar = LUNAR(layers=[2], coeffs=[SMALL])
    m = lunar.unlearn(chat, toy_data).metrics
    assert m["lunar/edit_rel_error/layer2"] > 0.5 > lunar.max_edit_error
    assert m["lunar/edit_rel_error"] == m["lunar/edit_rel_error/layer2"]
    assert m["lunar/edit_fallback/layer2"] == 1.0 and m["lunar/edit_fallback"] == 1.0
    assert m["lunar/edit_rel_error_delivered/layer2"] < 1e-3  # float32 rounding of W + D
    projection = down_proj_of(chat, 2)
    assert isinstance(projection, Float32Linear) and projection.weight.dtype == torch.float32
    assert down_proj_of(chat, 1).weight.dtype == torch.bfloat16  # nothing else changed dtype
    delivered = projection.weight.detach() - before
    assert relative_error(delivered, intended) < lunar.max_edit_error
    logits = chat.model(input_ids=torch.tensor([[1, 2, 3]])).logits
    assert logits.dtype == torch.bfloat16 and torch.isfinite(logits).all()
    assert count_hooks(chat.model) == 0


def test_without_the_fallback_the_report_shows_the_rounded_edit(tiny_target, toy_data):
    # The bf16 weights then hold the rounded edit: its fit is reported, not the solved one's.
    fits = {}
    for tolerance in (1e9, 0.05):
        chat = in_dtype(tiny_target, torch.bfloat16)
        outcome = LUNAR(layers=[2], coeffs=[SMALL], max_edit_error=tolerance).unlearn(
            chat, toy_data
        )
        assert outcome.metrics["lunar/edit_fallback"] == float(tolerance < 1)
        assert isinstance(down_proj_of(chat, 2), Float32Linear) == (tolerance < 1)
        fits[tolerance] = outcome.metrics["lunar/fit_shifted/layer2"]
    assert abs(fits[1e9] - fits[0.05]) > 0.2 * abs(fits[0.05])


def test_a_float32_model_gets_the_edit_exactly_without_fallback(tiny_target, toy_data):
    m = LUNAR(layers=[1, 2], coeffs=[2.0]).unlearn(tiny_target, toy_data).metrics
    for layer in (1, 2):
        assert m[f"lunar/edit_rel_error/layer{layer}"] < 1e-5
        assert m[f"lunar/edit_fallback/layer{layer}"] == 0.0
        assert type(down_proj_of(tiny_target, layer)) is nn.Linear


def test_hook_mode_reports_the_edit_in_the_activations_dtype(tiny_target, toy_data):
    chat = in_dtype(tiny_target, torch.bfloat16)
    m = LUNAR(layers=[2], coeffs=[2.0], mode="hook").unlearn(chat, toy_data).metrics
    assert 1e-5 < m["lunar/edit_rel_error/layer2"] < 0.01  # the edit cast to bf16 (2^-9)
    assert m["lunar/edit_fallback"] == 0.0 and type(down_proj_of(chat, 2)) is nn.Linear


@pytest.mark.parametrize("gram_dtype", ["float64", "float32"])
def test_the_regression_sums_stay_on_the_model_device(
    tiny_target, toy_data, monkeypatch, gram_dtype
):
    # No d_ff-wide row tensor is copied to the host: the Gram sums are accumulated where the
    # model runs, in gram_dtype.
    d_ff = tiny_target.model.config.intermediate_size
    copied = []
    to_host = torch.Tensor.cpu

    def spy(self, *args, **kwargs):
        copied.append(tuple(self.shape))
        return to_host(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "cpu", spy)
    lunar = LUNAR(layers=[1, 2], gram_dtype=gram_dtype)
    collected = lunar._collect(tiny_target, toy_data, [1, 2])
    assert copied and not [shape for shape in copied if len(shape) == 2 and shape[-1] == d_ff]
    for acc in collected.accumulators.values():
        assert acc.gram_pinned.dtype == getattr(torch, gram_dtype)
        assert acc.gram_pinned.device == tiny_target.model.device


def test_accumulate_and_solve_run_where_the_accumulator_is():
    # On the meta device any host round trip (float(), .cpu(), .item()) would raise.
    acc = RidgeAccumulator(8, device="meta", dtype=torch.float32)
    acc.add(
        torch.empty(5, 8, device="meta", dtype=torch.bfloat16), torch.tensor([1, 0, 1, 0, 0]) > 0
    )
    v = solve_ridge(acc, ridge=1e-4, shifted_weight=1.0)
    assert v.device.type == "meta" and v.dtype == torch.float32 and v.shape == (8,)
    assert (acc.n_shifted, acc.n_pinned) == (2, 3)


def test_float32_sums_are_close_to_float64_on_a_well_posed_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 16, generator=g)
    shifted = torch.arange(300) < 60
    solved = {}
    for dtype in (torch.float64, torch.float32):
        acc = RidgeAccumulator(16, dtype=dtype)
        acc.add(x, shifted)
        solved[dtype] = solve_ridge(acc, ridge=1e-4, shifted_weight=1.0)
    assert relative_error(solved[torch.float32], solved[torch.float64]) < 1e-5


def test_fit_report_of_any_edit_by_hand():
    # fit = mean over shifted rows of s.(D x) / |s|^2; leak = sqrt(mean over pinned |D x|^2)/|s|,
    # computed here row by row; D has a part orthogonal to s that only the leak sees.
    g = torch.Generator().manual_seed(1)
    x = torch.randn(12, 6, generator=g, dtype=torch.float64)
    shifted = torch.arange(12) < 4
    s = torch.tensor([1.0, 2.0, 0.0], dtype=torch.float64)
    v = torch.randn(6, generator=g, dtype=torch.float64)
    other = torch.tensor([2.0, -1.0, 0.5], dtype=torch.float64)  # other . s = 0
    delta = torch.outer(s, v) + torch.outer(other, torch.randn(6, generator=g, dtype=torch.float64))
    acc = RidgeAccumulator(6)
    acc.add(x, shifted)
    moved = x @ delta.T
    fit = float((moved[shifted] @ s).mean() / (s @ s))
    leak = math.sqrt(float(moved[~shifted].pow(2).sum(1).mean())) / float(s.norm())
    report = fit_report(acc, delta, s)
    assert report["fit_shifted"] == pytest.approx(fit, rel=1e-9)
    assert report["leak_pinned_rms"] == pytest.approx(leak, rel=1e-9)
    rank_one = fit_report(acc, torch.outer(s, v), s)  # the rank-1 part: v.x on pinned rows
    assert rank_one["leak_pinned_rms"] == pytest.approx(
        math.sqrt(float((x[~shifted] @ v).pow(2).mean())), rel=1e-9
    )
    assert report["leak_pinned_rms"] > rank_one["leak_pinned_rms"]


def test_write_edit_keeps_the_bias_and_the_layer_in_float32():
    parent = nn.Module()
    parent.proj = nn.Linear(4, 3, bias=True).to(torch.bfloat16)
    bias = parent.proj.bias.detach().clone()
    delta = torch.full((3, 4), 1e-6, dtype=torch.float64)
    edit = write_edit(parent, "proj", delta, max_error=0.05)
    assert edit.fallback and isinstance(parent.proj, Float32Linear)
    assert torch.equal(parent.proj.bias.detach(), bias.float())
    x = torch.randn(2, 4).to(torch.bfloat16)
    assert parent.proj(x).dtype == torch.bfloat16


def test_float64_sums_on_a_device_without_float64_is_a_clear_error():
    chat = types.SimpleNamespace(model=types.SimpleNamespace(device=torch.device("mps")))
    with pytest.raises(ValueError, match=r"gram_dtype=float64 is not supported.*Fix: set"):
        LUNAR(layers=[1]).check(chat)  # type: ignore[arg-type]


def test_bad_precision_settings_fail_when_the_method_is_built():
    with pytest.raises(ValueError, match=r"method.max_edit_error=0.0 is out of range"):
        LUNAR(max_edit_error=0.0)
    with pytest.raises(ValueError, match=r"method.gram_dtype"):
        LUNAR(gram_dtype="float16")  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_cuda_the_sums_the_solve_and_the_fallback_stay_on_the_gpu(tiny_target, toy_data):
    model = copy.deepcopy(tiny_target.model).to("cuda", torch.bfloat16)
    chat = dataclasses.replace(tiny_target, model=model)
    lunar = LUNAR(layers=[2], coeffs=[SMALL])
    for acc in lunar._collect(chat, toy_data, [2]).accumulators.values():
        assert acc.gram_pinned.device.type == "cuda" and acc.gram_pinned.dtype == torch.float64
    m = lunar.unlearn(chat, toy_data).metrics
    assert m["lunar/edit_fallback"] == 1.0 and m["lunar/edit_rel_error_delivered/layer2"] < 1e-3
    projection = down_proj_of(chat, 2)
    assert isinstance(projection, Float32Linear) and projection.weight.device.type == "cuda"
