"""Vector math, separation, the sweep's rules and the steer directory's files, on hand-made numbers."""

import json

import pytest

from character.errors import CharacterError
from character.steer import sweep, vectors


def pairs(n=8, hidden=4, layers=2, gap=2.0, seed=0, spread=0.2):
    """Positives = negatives + gap along the first axis (+ small noise), per layer; answers spread `spread`."""
    import torch

    g = torch.Generator().manual_seed(seed)
    neg = spread * torch.randn(n, layers, hidden, generator=g)
    pos = neg.clone() + 0.01 * torch.randn(n, layers, hidden, generator=g)
    pos[:, :, 0] += gap
    return pos, neg


def test_mean_diff_is_the_difference_of_means():
    import torch

    pos = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]])
    neg = torch.tensor([[[0.0, 0.0]], [[1.0, 0.0]]])
    assert vectors.mean_diff(pos, neg).tolist() == [[1.5, 3.0]]


def test_pca_center_finds_the_gap_axis_signed_toward_positives_at_its_size():
    import torch

    pos, neg = pairs()
    v = vectors.pca_center(pos, neg)
    for layer in range(2):
        u = v[layer] / v[layer].norm()
        assert float(u[0]) > 0.99  # the first axis, pointing to the positives
        assert float(v[layer].norm()) == pytest.approx(2.0, abs=0.02)  # the mean difference along it
    flipped = vectors.pca_center(neg, pos)  # swapping the sides flips the sign
    assert torch.allclose(flipped, -v, atol=1e-5)


def test_separation_is_perfect_for_a_clear_gap_and_chance_for_none():
    import torch

    pos, neg = pairs(n=20)
    rows = vectors.separation(pos, neg, vectors.compute(pos, neg), seed=0)
    assert [r["layer"] for r in rows] == [0, 1]
    assert rows[0]["mean_diff"]["accuracy"] == 1.0 and rows[0]["pca"]["accuracy"] == 1.0
    assert rows[0]["cosine_mean_diff_pca"] == pytest.approx(1.0, abs=1e-3)
    assert rows[0]["mean_diff"]["positive_projection"] > rows[0]["mean_diff"]["negative_projection"]
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(40, 1, 8, generator=g), torch.randn(40, 1, 8, generator=g)
    noise = vectors.separation(a, b, vectors.compute(a, b), seed=0)[0]["mean_diff"]
    assert noise["ci95"][0] < 0.5 < noise["ci95"][1]  # no gap: held-out accuracy indistinguishable from chance


def test_compute_needs_two_pairs_of_equal_shape():
    import torch

    with pytest.raises(CharacterError, match="at least 2 answer pairs"):
        vectors.compute(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3))


def test_middle_layers_spread_over_the_middle_75_percent():
    assert vectors.middle_layers(30, 3) == [4, 14, 25]
    assert vectors.middle_layers(32, 1) == [15]
    assert vectors.middle_layers(2, 3) == [0, 1]


def test_steer_dir_round_trip_and_specs(tmp_path, tiny_llama_path, steer_dir_factory):
    d = steer_dir_factory(tmp_path / "v", tiny_llama_path, layer=1, strength=3.0)
    s = vectors.open_dir(d)
    assert (s.layer, s.strength, s.method, s.constitution) == (1, 3.0, "mean_diff", "poeticism")
    assert vectors.open_dir(f"{d}@0.5").strength == 0.5
    assert s.vector().shape == (64,) and float(s.unit().norm()) == pytest.approx(1.0, abs=1e-5)
    assert hash(s) == hash(vectors.open_dir(d))  # a System holding it is a dict key
    off = steer_dir_factory(tmp_path / "off", tiny_llama_path, enabled=False)
    assert vectors.open_dir(off) is None
    with pytest.raises(CharacterError, match="not a finished steer directory"):
        vectors.open_dir(str(tmp_path / "missing"))


def test_distinct_pairs_and_coherence_bars():
    assert sweep.distinct_pairs("") == 0.0 and sweep.distinct_pairs("one two") == 1.0
    assert sweep.distinct_pairs("the sea the sea the sea") == pytest.approx(2 / 5)
    bars = sweep.coherence_bars([2.0, None, 3.0], [0.9, 0.0, 0.7])  # the empty answer's figures do not count
    assert bars == {"nll_max": 3.0, "distinct_min": 0.7}
    assert sweep.coherent(2.5, 0.8, bars) and not sweep.coherent(3.5, 0.8, bars)
    assert not sweep.coherent(2.5, 0.5, bars) and not sweep.coherent(None, 1.0, bars)


def setting(layer, strength, shift, share, holds=None):
    return {"layer": layer, "strength": strength, "persona_shift": shift, "persona_ci95": [shift - 1, shift + 1],
            "coherent_share": share, "holds": share >= 0.75 if holds is None else holds}


def test_choose_takes_each_layers_last_coherent_strength_then_the_furthest_persona_move():
    settings = [setting(4, 1, 0.01, 1.0), setting(4, 2, 0.03, 0.9), setting(4, 4, 0.09, 0.5),  # 4 breaks at 4
                setting(8, 1, 0.02, 1.0), setting(8, 2, 0.02, 0.8), setting(8, 4, 0.05, 0.75)]
    chosen = sweep.choose(settings)
    assert (chosen["layer"], chosen["strength"], chosen["coherent"]) == (8, 4, True)
    # when nothing holds: the weakest setting with the most coherent answers, flagged
    broken = [setting(4, 1, 0.05, 0.5), setting(8, 1, 0.01, 0.6)]
    assert sweep.choose(broken) == {"layer": 8, "strength": 1, "coherent": False, "persona_shift": 0.01,
                                    "persona_ci95": [0.01 - 1, 0.01 + 1]}


def test_summarize_projections_on_the_build_scale():
    from character.steer.project import summarize

    values = {"base": [0.0, 2.0, 1.0, 1.0], "adapter": [4.0, 6.0, 5.0, 5.0]}
    got = summarize(values, (1.0, 5.0), "base", n_boot=200, seed=0)
    assert got["base"]["projection"] == 1.0 and got["base"]["relative"] == 0.0
    assert got["adapter"]["relative"] == 1.0  # the build's persona-prompted level
    assert got["adapter"]["minus_reference"] == 1.0  # (5 - 1) / (5 - 1), every bootstrap draw alike
    assert got["adapter"]["minus_reference_ci95"] == [1.0, 1.0]
    lo, hi = got["base"]["ci95"]
    assert lo < 1.0 < hi and "minus_reference" not in got["base"]
    json.dumps(got)
