"""build_method returns a Method; LUNAR's layer list and down_proj checks fail clearly."""

import pytest
import torch
from omegaconf import OmegaConf

from lunar_exp.methods import build_method
from lunar_exp.methods.lunar import LUNAR


def test_build_method_drops_pipeline_keys_and_returns_a_method():
    node = OmegaConf.create(
        {"_target_": "lunar_exp.methods.lunar.LUNAR", "layers": [1], "requests": [["a"]]}
    )
    method = build_method(node)
    assert isinstance(method, LUNAR) and list(method.layers) == [1]


def test_build_method_rejects_a_target_without_unlearn():
    node = OmegaConf.create({"_target_": "collections.OrderedDict"})
    with pytest.raises(ValueError, match=r"built a OrderedDict, which has no unlearn.*Fix"):
        build_method(node)


def test_a_bare_number_of_layers_is_a_clear_error():
    with pytest.raises(ValueError, match=r"method.layers=5: give a list of layer indices or auto"):
        LUNAR(layers=5)


def test_lunar_needs_a_linear_down_proj(tiny_chat, toy_data):
    block = tiny_chat.model.model.layers[1]
    linear = block.mlp.down_proj
    block.mlp.down_proj = torch.nn.Identity()
    try:
        with pytest.raises(TypeError, match=r"layer 1 of .* has a Identity. Fix"):
            LUNAR(layers=[1]).unlearn(tiny_chat, toy_data)
    finally:
        block.mlp.down_proj = linear
