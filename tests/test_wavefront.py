"""The sequence layout and wavefront (diagonal) decoding (issue 18, point 2): one layout owns where every id sits; a
wavefront of width w decodes a frame in 15 w + 16 forwards; width 16 is raster order bit for bit; and what the
engine samples under a wavefront is what an uncached forward with the same visibility predicts."""

import numpy as np
import pytest
import torch

from openvica_sim.models.sequence import SequenceLayout, Wavefront
from openvica_sim.models.world_model import WorldModel
from openvica_sim.simulator import Simulator


@pytest.fixture(scope="module")
def seed_tokens():
    return np.random.default_rng(0).integers(0, 64, (2, 2, 16, 16))  # the test preset's 64 codes, T = 2


def test_the_layout_puts_ego_ids_codes_and_end_of_frame_in_order_and_inverts():
    layout = SequenceLayout(text_vocab_size=384, codebook_size=64, grid=16, action_conditioned=True)
    codes = torch.randint(0, 64, (3, 2, 16, 16))
    ego = torch.full((3, 2, 2), 70)
    frames = layout.frame_ids(codes, ego)
    assert frames.shape == (3, 2, 259) and layout.frame_length == 259 and layout.code_offset == 2
    assert torch.equal(frames[..., :2], ego + 384) and torch.all(frames[..., -1] == layout.end_of_frame_id)
    assert torch.equal(layout.codes(frames), codes)
    assert list(layout.first_codes(3, prompt_length=10)) == [12, 271, 530]
    plain = SequenceLayout(384, 64)
    assert plain.frame_length == 257 and plain.frame_ids(codes).shape == (3, 2, 257)
    targets = plain.frame_ids(codes).reshape(-1)
    assert plain.code_targets(targets).sum() == codes.numel()  # end-of-frame is not a target


@pytest.mark.parametrize("width", [1, 2, 4])
def test_a_wavefront_frame_takes_15w_plus_16_steps_and_samples_every_code_once(width):
    schedule = Wavefront(16, width)
    assert schedule.num_steps == 15 * width + 16
    sampled = np.concatenate([schedule.codes_at(s) for s in range(schedule.num_steps)])
    assert sorted(sampled) == list(range(256))
    assert list(schedule.codes_at(width)) == [width, 16]  # row 1 starts once row 0 has `width` codes
    assert [j for j in range(256) if schedule.needs_stand_in(j)] == list(range(16, 256, 16))


def test_width_16_and_more_is_raster_order():
    for width in (16, 40):
        schedule = Wavefront(16, width)
        assert schedule.raster and schedule.num_steps == 256 and list(schedule.steps) == list(range(256))
        assert not any(schedule.needs_stand_in(j) for j in range(256))
    with pytest.raises(ValueError, match="width=0"):
        Wavefront(16, 0)


def test_wavefront_16_gives_the_raster_engines_tokens_bit_for_bit(test_bundle, seed_tokens):
    raster = Simulator(test_bundle, top_k=20, decoder="tokenizer", context_frames=4)
    wave = Simulator(test_bundle, top_k=20, decoder="tokenizer", context_frames=4, wavefront=16)
    a, b = raster.start(tokens=seed_tokens, seeds=[1, 2]), wave.start(tokens=seed_tokens, seeds=[1, 2])
    tokens_a, surprise_a = raster.predict(a, 4)  # past the 4-frame context: a slide and re-prefill too
    tokens_b, surprise_b = wave.predict(b, 4)
    assert torch.equal(tokens_a, tokens_b) and torch.equal(surprise_a, surprise_b)


def test_a_frame_costs_15w_plus_16_forwards(test_bundle, seed_tokens, monkeypatch):
    calls = []
    for name in ("forward_cached", "forward_at"):
        original = getattr(WorldModel, name)
        monkeypatch.setattr(WorldModel, name, lambda self, *a, _o=original, **k: calls.append(1) or _o(self, *a, **k))
    sim = Simulator(test_bundle, top_k=20, decoder="tokenizer", wavefront=2)
    state = sim.start(tokens=seed_tokens, seeds=[1, 2])
    calls.clear()
    sim.predict(state, 2)
    assert len(calls) == 2 * 46


@pytest.mark.parametrize("width", [1, 2, 4])
def test_the_engines_wavefront_surprise_equals_an_uncached_forward_with_the_same_visibility(test_bundle, seed_tokens,
                                                                                              width):
    sim = Simulator(test_bundle, top_k=20, decoder="tokenizer", wavefront=width)
    state = sim.start(tokens=seed_tokens, seeds=[3, 4])
    tokens, engine_surprise = sim.predict(state, 2)
    clip = np.concatenate([seed_tokens, tokens.numpy()], axis=1)  # (2, 4, 16, 16): 2 seed + 2 generated
    scored = np.stack(sim.score(list(clip)))  # teacher-forced, under the same wavefront schedule
    np.testing.assert_allclose(scored[:, 2:], engine_surprise.numpy(), rtol=1e-4, atol=1e-5)
    raster = np.stack(Simulator(test_bundle, decoder="tokenizer").score(list(clip)))
    assert not np.allclose(raster[:, 2:], scored[:, 2:])  # the schedule does change what each code sees


def test_wavefront_rollouts_are_batch_invariant(test_bundle, seed_tokens):
    sim = Simulator(test_bundle, top_k=20, decoder="tokenizer", wavefront=2)
    alone, _ = sim.predict(sim.start(tokens=seed_tokens[:1], seeds=[5]), 2)
    batched, _ = sim.predict(sim.start(tokens=np.concatenate([seed_tokens, seed_tokens[:1]]), seeds=[9, 7, 5]), 2)
    assert torch.equal(alone[0], batched[2])


def test_the_uncached_forward_with_explicit_positions_is_transformers_forward_under_a_causal_mask(test_bundle):
    wm = test_bundle.world_model
    ids = torch.randint(0, wm.config.vocab_size, (2, 40))
    causal = torch.tril(torch.ones(40, 40, dtype=torch.bool))
    torch.testing.assert_close(wm.hidden_states_at(ids, torch.arange(40), causal), wm.hidden_states(ids),
                               rtol=1e-5, atol=1e-5)
