"""Top-k sampling with hashed Gumbel noise (docs/design.md "Determinism")."""

import collections

import numpy as np
import torch

from openvica_sim.sampling import derive_seeds, sample_top_k, uniform


def test_draws_follow_the_softmax_restricted_to_the_top_k():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log()[None]
    counts = collections.Counter(sample_top_k(logits, torch.tensor([3]), pos, top_k=3, temperature=1.0).item()
                                 for pos in range(6000))
    assert 3 not in counts, "the 4th most probable id is outside the top 3"
    expected = probs[:3] / probs[:3].sum()
    observed = torch.tensor([counts[i] for i in range(3)]) / 6000
    assert torch.allclose(observed, expected, atol=0.02)  # 3 sigma of a 6000-draw binomial is about 0.02


def test_temperature_sharpens_and_zero_is_greedy():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    seeds = torch.tensor([1])
    cold = [sample_top_k(logits, seeds, p, 3, 0.2).item() for p in range(500)]
    assert cold.count(0) > 490
    assert all(sample_top_k(logits, seeds, p, 3, 0.0).item() == 0 for p in range(20))


def test_a_rows_draw_depends_on_its_seed_and_position_only():
    ids = torch.arange(50).repeat(3, 1)
    a = uniform(torch.tensor([7, 8, 9]), 12, ids)
    b = uniform(torch.tensor([1, 7, 2]), 12, ids)
    assert torch.equal(a[0], b[1]), "same seed and position, different neighbours"
    assert not torch.equal(a[0], uniform(torch.tensor([7]), 13, ids[:1])[0])
    assert 0 < a.min() and a.max() < 1


def test_uniforms_look_uniform():
    u = uniform(torch.tensor([42]), 0, torch.arange(100000)[None]).numpy().ravel()
    hist, _ = np.histogram(u, bins=10, range=(0, 1))
    assert np.all(np.abs(hist / 10000 - 1) < 0.05)


def test_derived_seeds_are_distinct_and_reproducible():
    assert derive_seeds(0, 4) == derive_seeds(0, 4)
    assert len(set(derive_seeds(0, 100) + derive_seeds(1, 100))) == 200
