"""The shipped embedded default (issue 7): loads, is small, reconstructs, predicts and keeps the road on held-out
synthetic clips, measured by the evaluation harness (`openvica eval video`) on 3 shipped clips. A broken or
retrained-for-the-worse bundle fails here. Full-scale numbers: `benchmarks/embedded_quality.py --json` (README)."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from openvica_sim import embedded
from openvica_sim.bundle import load_bundle
from openvica_sim.data.clips import FolderClips
from openvica_sim.evaluation import VideoEvalSettings, evaluate_video
from openvica_sim.metrics.reconstruction import mse

CLIPS, STEPS = 3, 4


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(embedded.bundle_path())


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    """The harness on the first 3 shipped clips, 4 predicted frames, both decoders, the bundle's top-k."""
    result = evaluate_video(VideoEvalSettings(bundle=str(embedded.bundle_path()), clips=str(embedded.clips_path()),
                                              limit=CLIPS, num_frames=STEPS), tmp_path_factory.mktemp("embedded"),
                            progress=False)
    return {(r["system"], r["k"], r["decoder"]): r for r in result["results"]}


def test_the_bundle_is_the_tiny_family_and_under_40_mb(bundle):
    size = sum(f.stat().st_size for f in embedded.bundle_path().rglob("*") if f.is_file())
    assert size < 40e6, size
    assert bundle.tokenizer.config.tokens_per_side == 16 and bundle.frame_size == 256
    assert bundle.world_model.config.codebook_size == bundle.tokenizer.config.codebook_size == 1024
    assert type(bundle.world_model.llama).__name__ == "LlamaForCausalLM"
    assert bundle.video_decoder is not None and torch.equal(bundle.video_decoder.codebook, bundle.tokenizer.codebook)


def test_tokenizer_and_decoders_reconstruct_held_out_frames_at_24_db_or_more(evaluation):
    assert evaluation[("tok+dec", None, "dec")]["psnr"] >= 24.0
    assert evaluation[("tok+vdec", None, "vdec")]["psnr"] >= 24.0


def test_the_world_model_predicts_held_out_codes_far_better_than_chance(evaluation, bundle):
    surprise = evaluation[("tok+dec", None, "dec")]["surprise"]  # teacher-forced, on the real continuation
    assert surprise <= 0.5 * math.log(bundle.world_model.config.codebook_size), surprise


def test_rollouts_keep_the_road(bundle, evaluation):
    """Each clip's rollout is nearer its own continuation than the same frames of a different clip."""
    from openvica_sim.simulator import Simulator

    source = FolderClips(embedded.clips_path())
    clips = np.stack([source.frames(i, 2 + STEPS) for i in source.clip_ids[:CLIPS]])
    out = Simulator(bundle).rollout(clips[:, :2], STEPS, seeds=list(range(CLIPS)))
    for i in range(CLIPS):
        own = mse(out.frames[i], clips[i, 2:]).mean()
        others = [mse(out.frames[i], clips[j, 2:]).mean() for j in range(CLIPS) if j != i]
        assert own < np.mean(others), (i, own, others)
    k = bundle.top_k
    assert evaluation[("tok+wm+vdec", k, "vdec")]["mse"] < 0.5 * np.mean([  # the harness's rows agree
        mse(out.frames[i], clips[(i + 1) % CLIPS, 2:]).mean() for i in range(CLIPS)])


def test_gym_make_runs_the_embedded_default():
    env = gym.make("OpenViCA-v0")
    obs, info = env.reset(seed=0)
    assert info["clip_id"] in FolderClips(embedded.clips_path()).clip_ids
    assert env.unwrapped.bundle.world_model.config.codebook_size == 1024
    obs, *_ = env.step(env.action_space.sample())
    assert obs.shape == (256, 256, 3) and obs.dtype == np.uint8
