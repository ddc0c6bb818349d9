"""Forward hooks on a transformers model's decoder layers: read the residual stream, or add a vector to it.

Activation steering (Turner et al. 2023, "Activation Addition"; Zou et al. 2023, representation engineering, whose
code is repeng) adds a fixed vector to the hidden state a decoder layer writes into the residual stream, at every
position; persona vectors (Chen et al. 2025) use the same vectors to monitor a model, by projecting its activations
onto them. Both need only two hooks, written here against plain `torch.nn.Module` forward hooks:

    with add_vectors(model, {12: v}, strength=4.0):      # every forward inside adds 4 * v to layer 12's output
        model.generate(...)
    with read_layers(model, [6, 12], weights) as got:    # weights (..., batch, time): how to average positions
        model(**batch)
    got[12]                                              # (..., batch, hidden), float32, on the CPU

Layer i is the output of decoder layer i (`output_hidden_states[i + 1]`). The hooks are removed when the block
exits, on an error too, so the same model object runs unsteered afterwards. A PEFT wrapper is looked through: the
hooks sit on the base model's layers, which the adapters' forward passes go through. Imports torch when called.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from character.errors import CharacterError


def decoder_layers(model):
    """The model's decoder layers (a ModuleList): the first ModuleList as long as the text config's layer count."""
    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    n = getattr(config, "num_hidden_layers", None)
    for module in base.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n:
            return module
    raise CharacterError(f"{type(base).__name__}: found no list of {n} decoder layers to hook; steering supports "
                         "decoder-only transformers models (Llama, Qwen, Gemma, Mistral, ...)")


def _hidden(output):
    return output[0] if isinstance(output, tuple) else output


def _check(layers, wanted) -> None:
    bad = [i for i in wanted if not 0 <= i < len(layers)]
    if bad:
        raise CharacterError(f"layer {bad[0]}: the model has decoder layers 0..{len(layers) - 1}")


@contextmanager
def add_vectors(model, vectors: dict, strength: float = 1.0) -> Iterator[None]:
    """Inside the block, each forward pass adds `strength * vectors[i]` (a tensor of the hidden size) to the output
    of decoder layer i, at every position. Strength 0 adds exact zeros: the outputs are the unsteered ones."""
    layers = decoder_layers(model)
    _check(layers, vectors)
    handles = []

    def hook_for(vector):
        cast: dict = {}  # the scaled vector in the hidden state's dtype and device, made on the first call

        def hook(module, args, output):
            h = _hidden(output)
            key = (h.dtype, h.device)
            if key not in cast:
                cast[key] = (vector.float() * float(strength)).to(device=h.device, dtype=h.dtype)
            h = h + cast[key]
            return (h, *output[1:]) if isinstance(output, tuple) else h

        hook.character_steering = True
        return hook

    try:
        for i, vector in vectors.items():
            handles.append(layers[i].register_forward_hook(hook_for(vector)))
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def read_layers(model, layers: list[int], weights) -> Iterator[dict]:
    """Inside the block, a forward pass fills `got[i]` with decoder layer i's output averaged over positions by
    `weights` (shape (..., batch, time), rows summing to 1; e.g. 1/k on an answer's k tokens, 0 elsewhere):
    `got[i]` has shape (..., batch, hidden), float32 on the CPU. One forward pass per block."""
    import torch

    modules = decoder_layers(model)
    _check(modules, layers)
    got: dict = {}
    handles = []

    def hook_for(i):
        def hook(module, args, output):
            h = _hidden(output)
            w = weights.to(device=h.device, dtype=torch.float32)
            got[i] = torch.einsum("...bt,bth->...bh", w, h.float()).cpu()

        hook.character_steering = True
        return hook

    try:
        for i in layers:
            handles.append(modules[i].register_forward_hook(hook_for(i)))
        yield got
    finally:
        for handle in handles:
            handle.remove()


def hooked(model) -> int:
    """How many of these hooks the decoder layers hold (0 when nothing is steering or reading them; transformers'
    own output-capturing hooks are not counted)."""
    return sum(getattr(fn, "character_steering", False) for layer in decoder_layers(model)
               for fn in layer._forward_hooks.values())
