"""The shipped embedded default (issue 7): loads, is small, reconstructs, predicts and keeps the road on held-out
synthetic clips. A broken or retrained-for-the-worse bundle fails here. Full-scale numbers:
`benchmarks/embedded_quality.py --json` (README)."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from openvica_sim import embedded
from openvica_sim.bundle import load_bundle
from openvica_sim.envs.seeds import FolderSeedSource
from openvica_sim.metrics.quality import continuation_distances, reconstruction_psnr, teacher_forced_cross_entropy

CLIPS = 3


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(embedded.bundle_path())


@pytest.fixture(scope="module")
def clips():
    seeds = FolderSeedSource(embedded.seeds_path())
    assert len(seeds) == 8
    return np.stack([seeds.frames(i, 16) for i in seeds.clip_ids[:CLIPS]])  # (C, 16, 256, 256, 3)


def test_the_bundle_is_the_tiny_family_and_under_40_mb(bundle):
    size = sum(f.stat().st_size for f in embedded.bundle_path().rglob("*") if f.is_file())
    assert size < 40e6, size
    assert bundle.tokenizer.config.tokens_per_side == 16 and bundle.frame_size == 256
    assert bundle.world_model.config.codebook_size == bundle.tokenizer.config.codebook_size == 1024
    assert type(bundle.world_model.llama).__name__ == "LlamaForCausalLM"
    assert bundle.video_decoder is not None and torch.equal(bundle.video_decoder.codebook, bundle.tokenizer.codebook)


def test_tokenizer_and_decoder_reconstruct_held_out_frames_at_24_db_or_more(bundle, clips):
    assert reconstruction_psnr(bundle, clips[:, :4], "tokenizer") >= 24.0


def test_the_world_model_predicts_held_out_codes_far_better_than_chance(bundle, clips):
    tokens = torch.stack([bundle.tokenizer.encode(c) for c in _model_frames(clips)])
    ce = teacher_forced_cross_entropy(bundle, tokens)
    assert ce <= 0.5 * math.log(bundle.world_model.config.codebook_size), ce


def test_rollouts_keep_the_road(bundle, clips):
    from openvica_sim.simulator import Simulator

    steps = 4
    out = Simulator(bundle).rollout(clips[:, :2], steps, seeds=list(range(CLIPS)))
    d = continuation_distances(out.frames, clips[:, 2:2 + steps])
    assert d["nearer_own"] == 1.0, d  # every rollout nearer its own continuation than a different clip


def test_gym_make_runs_the_embedded_default():
    env = gym.make("OpenViCA-v0")
    obs, info = env.reset(seed=0)
    assert info["clip_id"] in FolderSeedSource(embedded.seeds_path()).clip_ids
    assert env.unwrapped.bundle.world_model.config.codebook_size == 1024
    obs, *_ = env.step(env.action_space.sample())
    assert obs.shape == (256, 256, 3) and obs.dtype == np.uint8


def _model_frames(clips):
    from openvica_sim.frames import preprocess

    return [preprocess(c) for c in clips]
