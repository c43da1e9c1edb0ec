"""Forward hooks, only ever installed inside context managers that remove them in ``finally``."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from transformers import PreTrainedModel


def decoder_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The list of decoder blocks of a Llama-style causal LM."""
    try:
        layers = model.get_submodule("model.layers")
    except AttributeError:
        layers = None
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(
            f"{type(model).__name__} has no model.layers: only decoder-only "
            "Llama-style models (Llama, Mistral, Qwen2, Gemma, SmolLM) are supported."
        )
    return layers


def down_proj(block: nn.Module) -> nn.Module:
    """The MLP output projection of a Llama-style decoder block (LUNAR's edited weight)."""
    mlp = block.get_submodule("mlp")
    return mlp.get_submodule("down_proj")


def check_layers(model: PreTrainedModel, layers: Sequence[int], need_next: bool = True) -> None:
    """Raise a clear error when a layer index is out of range for ``model``."""
    count = len(decoder_layers(model))
    top = count - 2 if need_next else count - 1
    bad = [layer for layer in layers if not 0 <= layer <= top]
    if bad and top < 0:
        raise ValueError(
            f"Layer index {bad} is out of range: a {count}-layer model has no layer to edit "
            "(the unlearning vector is read at the next block's input). Fix: use a model with "
            "at least 2 layers."
        )
    if bad:
        raise ValueError(
            f"Layer index {bad} is out of range for a {count}-layer model. "
            f"Fix: choose method.layers within 0..{top} (or method.layers=auto)."
        )


def _hidden(output: object) -> torch.Tensor:
    """A decoder block returns a tensor or a tuple whose first item is the hidden state."""
    hidden = output[0] if isinstance(output, tuple) else output
    assert isinstance(hidden, torch.Tensor), f"unexpected block output {type(hidden).__name__}"
    return hidden


@contextmanager
def capture_block_outputs(
    model: PreTrainedModel, layers: Sequence[int], detach: bool = True
) -> Iterator[dict]:
    """Record the output of each block in ``layers`` (= the input of the next block).

    Yields a dict ``layer -> tensor [batch, seq, d_model]`` refreshed on every forward pass; with
    ``detach=False`` the tensors keep their graph (for losses on hidden states, as in RMU).
    """
    store: dict[int, torch.Tensor] = {}
    blocks = decoder_layers(model)
    handles = []
    try:
        for layer in layers:

            def hook(_module, _args, output, layer=layer):
                hidden = _hidden(output)
                store[layer] = hidden.detach() if detach else hidden

            handles.append(blocks[layer].register_forward_hook(hook))
        yield store
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def add_to_block_outputs(
    model: PreTrainedModel, shifts: Mapping[int, torch.Tensor]
) -> Iterator[None]:
    """Add ``shifts[layer]`` to the output of block ``layer`` at every position (steering)."""
    blocks = decoder_layers(model)
    handles = []
    try:
        for layer, shift in shifts.items():

            def hook(_module, _args, output, shift=shift):
                hidden = _hidden(output)
                moved = hidden + shift.to(hidden.dtype).to(hidden.device)
                return (moved, *output[1:]) if isinstance(output, tuple) else moved

            handles.append(blocks[layer].register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def capture_down_proj(model: PreTrainedModel, layers: Sequence[int]) -> Iterator[dict]:
    """Record the input and output of ``mlp.down_proj`` of each layer in one forward pass.

    Yields a dict ``layer -> (input [batch, seq, d_ff], output [batch, seq, d_model])``. Hooking
    the projection itself (not block output minus residual) is exact and works for models with a
    post-MLP norm.
    """
    store: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    blocks = decoder_layers(model)
    handles = []
    try:
        for layer in layers:

            def hook(_module, args, output, layer=layer):
                store[layer] = (args[0].detach(), output.detach())

            handles.append(down_proj(blocks[layer]).register_forward_hook(hook))
        yield store
    finally:
        for handle in handles:
            handle.remove()


class ForwardStopped(Exception):
    """Raised by :func:`stop_after_block` to end a forward pass early."""


@contextmanager
def stop_after_block(model: PreTrainedModel, layer: int) -> Iterator[None]:
    """End the forward pass in the ``with`` body once block ``layer`` has run.

    For passes that only read activations up to ``layer``: the blocks above it (and the LM head)
    never run, and the pass returns nothing. Hooks installed on block ``layer`` before this one
    still see its output.
    """

    def hook(_module, _args, _output):
        raise ForwardStopped

    handle = decoder_layers(model)[layer].register_forward_hook(hook)
    try:
        yield
    except ForwardStopped:
        pass
    finally:
        handle.remove()


def count_hooks(model: PreTrainedModel) -> int:
    """Number of forward (pre-)hooks installed anywhere in ``model`` (tests assert it is 0)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@contextmanager
def skip_blocks(model: PreTrainedModel, layers: Sequence[int]) -> Iterator[None]:
    """Make each block in ``layers`` an identity: its output hidden state is its input.

    This is LUNAR's layer-skip attack (reference ``get_skip_fwd_hook``): the edited block still
    runs, but its result is replaced by the residual stream it received.
    """
    blocks = decoder_layers(model)
    handles = []
    try:
        for layer in layers:

            def hook(_module, args, kwargs, output):
                incoming = args[0] if args else kwargs["hidden_states"]
                return (incoming, *output[1:]) if isinstance(output, tuple) else incoming

            handles.append(blocks[layer].register_forward_hook(hook, with_kwargs=True))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def redirect_down_proj(
    model: PreTrainedModel, deltas: Mapping[int, torch.Tensor]
) -> Iterator[None]:
    """Add ``deltas[layer]`` to ``mlp.down_proj``'s weight of each layer, as a removable hook.

    The projection's output becomes ``(W + delta) x``, exactly what writing the edit back gives,
    while the stored weights stay untouched; leaving the context removes the edit.
    """
    blocks = decoder_layers(model)
    handles = []
    try:
        for layer, delta in deltas.items():

            def hook(_module, args, output, delta=delta):
                x = args[0]
                return output + torch.nn.functional.linear(x, delta.to(x.device, x.dtype))

            handles.append(down_proj(blocks[layer]).register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


def residual_writers(model: PreTrainedModel) -> list[nn.Module]:
    """Every module that writes into the residual stream of a Llama-style model.

    The token embedding, then each block's attention output projection (``self_attn.o_proj``)
    and MLP output projection (``mlp.down_proj``), in order.
    """
    writers: list[nn.Module] = [model.get_input_embeddings()]
    for block in decoder_layers(model):
        writers.append(block.get_submodule("self_attn").get_submodule("o_proj"))
        writers.append(down_proj(block))
    return writers


@contextmanager
def ablate_direction(model: PreTrainedModel, direction: torch.Tensor) -> Iterator[None]:
    """Project ``direction`` out of everything written to the residual stream (Arditi et al.).

    Each writer's output ``x`` becomes ``x - (x . d) d`` with ``d`` the unit direction, at every
    position, so no layer can add a component along ``d``: the residual stream stays orthogonal
    to it throughout (the paper's "directional ablation").
    """
    unit = direction.float() / direction.float().norm().clamp(min=1e-12)
    handles = []
    try:
        for module in residual_writers(model):

            def hook(_module, _args, output):
                d = unit.to(output.device, output.dtype)
                return output - (output @ d).unsqueeze(-1) * d

            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def map_block_output(model: PreTrainedModel, layer: int, transform: nn.Module) -> Iterator[None]:
    """Replace block ``layer``'s output hidden state ``h`` by ``transform(h)`` at every position."""
    block = decoder_layers(model)[layer]

    def hook(_module, _args, output):
        hidden = _hidden(output)
        moved = transform(hidden).to(hidden.dtype)
        return (moved, *output[1:]) if isinstance(output, tuple) else moved

    handle = block.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
