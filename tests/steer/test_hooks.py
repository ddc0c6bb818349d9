"""The steering hooks on the tiny random Llama: strength 0 changes nothing, a positive strength changes greedy
output and moves the projection up, the hooks are gone after the block (also after an error), reading a layer
gives what output_hidden_states gives, and all of it works with a PEFT adapter active."""

import pytest

from character.engine import Request, Sampling
from character.engine.steering import add_vectors, decoder_layers, hooked, read_layers
from character.errors import CharacterError

GREEDY = Sampling(max_tokens=8, temperature=0)


def ask(text, **kw):
    return Request([{"role": "user", "content": text}], **kw)


def texts(engine, reqs):
    return [c.texts[0] for c in engine.generate(reqs, GREEDY)]


@pytest.fixture(scope="module")
def vector(tiny_engine):
    import torch

    return torch.randn(tiny_engine.model.config.hidden_size, generator=torch.Generator().manual_seed(1))


def test_strength_zero_is_unsteered_and_a_strong_vector_changes_greedy_output(tiny_engine, vector):
    reqs = [ask("Describe a harbour at dawn."), ask("What is two plus two?"), ask("Name a colour.")]
    plain = texts(tiny_engine, reqs)
    with add_vectors(tiny_engine.model, {1: vector}, strength=0.0):
        assert hooked(tiny_engine.model) == 1
        zero = texts(tiny_engine, reqs)
    with add_vectors(tiny_engine.model, {0: vector, 1: vector}, strength=20.0):
        strong = texts(tiny_engine, reqs)
    assert zero == plain
    assert strong != plain and all(s != p for s, p in zip(strong, plain))
    # the hooks went with the block: the same model object generates unsteered again
    assert hooked(tiny_engine.model) == 0
    assert texts(tiny_engine, reqs) == plain


def test_hooks_are_removed_after_an_error(tiny_engine, vector):
    with pytest.raises(RuntimeError):
        with add_vectors(tiny_engine.model, {1: vector}, strength=3.0):
            raise RuntimeError("boom")
    assert hooked(tiny_engine.model) == 0


def test_read_layers_matches_output_hidden_states(tiny_engine):
    import torch

    ids = torch.tensor([[1, 20, 30, 40, 50]])
    weights = torch.tensor([[[0.0, 0.0, 0.5, 0.5, 0.0]], [[0.0, 0.0, 0.0, 0.0, 1.0]]])  # (2, batch, time)
    with read_layers(tiny_engine.model, [0], weights) as got, torch.no_grad():
        out = tiny_engine.model(ids, output_hidden_states=True)
    h = out.hidden_states[1][0]  # decoder layer 0's output
    assert got[0].shape == (2, 1, h.shape[-1])
    assert torch.allclose(got[0][0, 0], (h[2] + h[3]) / 2, atol=1e-5)
    assert torch.allclose(got[0][1, 0], h[4], atol=1e-5)
    assert hooked(tiny_engine.model) == 0


def test_positive_strength_moves_the_projection_up_by_strength_times_norm(tiny_engine, vector):
    from character.steer import activations
    from character.steer.vectors import Steering, unit_vector

    rows = [([{"role": "user", "content": "Tell me about rivers."}], "They flow to the sea."),
            ([{"role": "user", "content": "Hi"}], "Hello there, friend.")]
    plain = activations.read(tiny_engine, rows, [1])

    class Vec(Steering):  # a Steering whose vector is the fixture's, without a directory
        def vector(self):
            return vector

    steered = activations.read(tiny_engine, rows, [1], steering=Vec("", "x", "mean_diff", 1, 2.5))
    u = unit_vector(vector.double()).float()
    moved = (steered[0, :, 0] - plain[0, :, 0]) @ u
    assert torch_allclose(moved, 2.5 * float(vector.norm()))
    assert hooked(tiny_engine.model) == 0


def torch_allclose(values, expected: float) -> bool:
    return all(abs(float(v) - expected) < 1e-3 * max(1.0, expected) for v in values)


def test_steering_with_an_adapter_active(tiny_llama_path, tiny_adapter, vector):
    from character.engine import EngineConfig, make_engine

    with make_engine(EngineConfig(model=tiny_llama_path, backend="hf", dtype="float32")) as e:
        reqs = [ask("Describe the moon.", adapter=tiny_adapter)]
        plain = texts(e, reqs)
        assert len(decoder_layers(e.model)) == 2  # found through the PeftModel wrapper
        with add_vectors(e.model, {1: vector}, strength=20.0):
            steered = texts(e, reqs)
        assert steered != plain and texts(e, reqs) == plain


def test_unknown_layer_and_model_without_layers_are_one_line_errors(tiny_engine, vector):
    import torch

    with pytest.raises(CharacterError, match="decoder layers 0..1"):
        with add_vectors(tiny_engine.model, {5: vector}):
            pass
    lin = torch.nn.Linear(2, 2)
    lin.config = type("C", (), {"num_hidden_layers": 3})()
    with pytest.raises(CharacterError, match="no list of 3 decoder layers"):
        decoder_layers(lin)
