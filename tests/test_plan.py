"""The memory planner's arithmetic on a hand-sized Llama (lunar_exp/plan/)."""

import pytest
from omegaconf import OmegaConf
from transformers import LlamaConfig

from lunar_exp.plan.arch import _arch, resolve_arch
from lunar_exp.plan.estimate import Setup, Training, _block_bytes, trained_params, training_parts

D, F, LAYERS, HEADS, KV_HEADS, VOCAB = 64, 128, 2, 4, 2, 100
KV_DIM = KV_HEADS * D // HEADS
# embedding (tied head) + per block q, k, v, o, gate/up/down, two norms + final norm
PARAMS = VOCAB * D + LAYERS * (D * D + 2 * D * KV_DIM + D * D + 3 * D * F + 2 * D) + D


@pytest.fixture(scope="module")
def arch():
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=D,
        intermediate_size=F,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        tie_word_embeddings=True,
    )
    return _arch(config, "hand", "test")


def _training(trained, checkpointing=False, batch=4, length=10, compute=4):
    return Training(
        trained=trained,
        batch=batch,
        lengths=(length,),
        depth=LAYERS,
        logits=True,
        checkpointing=checkpointing,
        compute_bytes=compute,
    )


def test_parameter_count_is_the_hand_count(arch):
    assert arch.n_params == PARAMS
    assert arch.kv_dim == KV_DIM


def test_one_process_fp32_weights_gradients_and_adamw(arch):
    parts = training_parts(
        arch, Setup(world=1, cuda=False, weight_bytes=4, batch_tokens=None), _training(PARAMS)
    )
    assert parts.weights == 4 * PARAMS  # fp32 weights
    assert parts.optimizer == 2 * 4 * PARAMS  # AdamW: two fp32 states per parameter
    tokens = 4 * 10
    saved = tokens * (LAYERS * _block_bytes(arch, 4, 10) + 3 * 4 * D + 4 * VOCAB)
    head_backward = (8 + 4) * VOCAB * tokens
    if parts.gradients == 4 * PARAMS:  # peak at the end of the backward
        assert parts.activations < saved
    else:  # peak at its start: the head's gradient only
        assert parts.gradients == 4 * VOCAB * D
        assert parts.activations == saved + head_backward


def test_block_bytes_follow_the_saved_tensor_count(arch):
    # q, k and v expanded to all heads, rotary copies, attention output, residual, two norms
    # (8 d + 2 d), gate, up, activation and product (4 f), per-head log-sum-exp, a mask row
    assert _block_bytes(arch, 4, 30) == 4 * (10 * D + 4 * F) + 4 * HEADS + 8 + 4 * 30
    assert _block_bytes(arch, 2, 30) == 2 * (10 * D + 4 * F) + 4 * HEADS + 8 + 4 * 30


def test_sharding_divides_masters_gradients_and_states_by_the_world_size(arch):
    one = training_parts(arch, Setup(1, True, 2, None), _training(PARAMS, batch=8, compute=2))
    four = training_parts(arch, Setup(4, True, 2, None), _training(PARAMS, batch=8, compute=2))
    assert one.optimizer == 8 * PARAMS and four.optimizer == 8 * PARAMS / 4
    gathered = 2 * (2 * arch.layer_params(0) + VOCAB * D + D)
    # fp32 masters sharded, two blocks and the root gathered in bf16; the bf16 model waits on
    # the host (CUDA) or stays (CPU)
    assert four.weights == 4 * PARAMS / 4 + gathered
    on_cpu = training_parts(arch, Setup(4, False, 2, None), _training(PARAMS, batch=8, compute=2))
    assert on_cpu.weights == 2 * PARAMS + 4 * PARAMS / 4 + gathered


def test_a_trainable_subset_counts_only_its_parameters(arch):
    assert trained_params(arch, r"\.mlp\.down_proj\.") == LAYERS * D * F
    assert trained_params(arch, None) == PARAMS
    # a loss reading block 0 reaches the embedding and block 0 only (RMU)
    assert trained_params(arch, None, depth=1) == VOCAB * D + arch.layer_params(0)


def test_checkpointing_keeps_one_input_per_block(arch):
    plain = training_parts(arch, Setup(1, False, 4, None), _training(10, batch=64, length=100))
    saved = training_parts(
        arch, Setup(1, False, 4, None), _training(10, checkpointing=True, batch=64, length=100)
    )
    assert saved.activations < plain.activations
    tokens = 64 * 100
    expected = tokens * (LAYERS * 4 * D + 3 * 4 * D + 4 * VOCAB)
    expected += (8 + 4) * VOCAB * tokens + _block_bytes(arch, 4, 100) * tokens
    assert saved.activations == expected


def test_an_unknown_model_is_one_clear_error():
    cfg = OmegaConf.create(
        {"plan": {"arch": None}, "model": {"_target_": "x", "path": "nobody/unknown-model-xyz"}}
    )
    with pytest.raises(ValueError, match=r"not a model the planner knows\. Fix: set plan\.arch"):
        resolve_arch(cfg)


def test_known_hub_ids_use_the_built_in_table():
    cfg = OmegaConf.create(
        {"plan": {"arch": None}, "model": {"_target_": "x", "path": "locuslab/tofu_ft_llama2-7b"}}
    )
    arch = resolve_arch(cfg)
    assert (arch.layers, arch.hidden, arch.intermediate, arch.vocab) == (32, 4096, 11008, 32000)
    assert 6.7e9 < arch.n_params < 6.8e9  # Llama-2-7b: 6.74B parameters


def test_small_batches_peak_at_the_end_of_the_backward(arch):
    parts = training_parts(arch, Setup(1, False, 4, None), _training(PARAMS, batch=1, length=2))
    assert parts.gradients == 4 * PARAMS  # every gradient, the activations mostly freed
    # AdamW's states plus the step's two fp32 temporaries of the largest tensor (gate/up: D x F)
    assert parts.optimizer == 8 * PARAMS + 2 * 4 * D * F
