"""The shipped embedded default (issues 7 and 19): a simulator that keeps the scene and follows its commands, measured
by the evaluation harness (`openvica eval video`, with the shipped ego-motion probe) on shipped held-out clips it
never saw in training. A broken or retrained-for-the-worse bundle fails here. The full-scale numbers, on 12 held-out
drives: `benchmarks/embedded_quality.py --json` (docs/embedded-default.md)."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from openvica_sim import embedded
from openvica_sim.bundle import load_bundle
from openvica_sim.data.clips import FolderClips
from openvica_sim.evaluation import VideoEvalSettings, evaluate_video

CLIPS, STEPS = 4, 14  # the horizon: 14 predicted frames after 2 seed frames


@pytest.fixture(scope="module")
def bundle():
    return load_bundle(embedded.bundle_path())


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    """The harness on the first 4 shipped clips: 14 frames replaying each clip's own ego commands, VDEC, the bundle's
    top-k and decoding schedule, and the probe's adherence branches (swapped commands, left, right, brake, ...)."""
    return evaluate_video(VideoEvalSettings(bundle=str(embedded.bundle_path()), clips=str(embedded.clips_path()),
                                            limit=CLIPS, num_frames=STEPS, decoders=["vdec"],
                                            ego_probe=str(embedded.ego_probe_path())),
                          tmp_path_factory.mktemp("embedded"), progress=False)


@pytest.fixture(scope="module")
def rows(evaluation):
    return {r["system"]: r for r in evaluation["results"]}


def test_the_bundle_is_the_embedded_family_action_conditioned_and_under_40_mb(bundle):
    size = sum(f.stat().st_size for f in embedded.bundle_path().rglob("*") if f.is_file())
    assert size < 40e6, size
    assert bundle.tokenizer.config.tokens_per_side == 16 and bundle.frame_size == 256
    assert bundle.world_model.config.codebook_size == bundle.tokenizer.config.codebook_size == 256
    assert bundle.action_conditioned
    assert type(bundle.world_model.llama).__name__ == "LlamaForCausalLM"
    assert bundle.video_decoder is not None and torch.equal(bundle.video_decoder.codebook, bundle.tokenizer.codebook)


def test_tokenizer_and_video_decoder_reconstruct_held_out_frames_at_26_db_or_more(rows):
    assert rows["tok+vdec"]["psnr"] >= 26.0, rows["tok+vdec"]["psnr"]


def test_the_world_model_is_sure_of_held_out_drives(rows):
    """At most 1 nat per code at the real continuation (teacher-forced, by the bundle's own decoding schedule)."""
    assert rows["tok+vdec"]["surprise"] <= 1.0, rows["tok+vdec"]["surprise"]


def test_replaying_the_true_commands_stays_nearer_the_real_drive_than_repeating_the_last_seed_frame(rows):
    rollout, copy = rows["tok+wm+vdec"], rows["copy-last"]
    assert rollout["mse"] < copy["mse"], (rollout["mse"], copy["mse"])
    nearer = np.asarray(rollout["per_clip"]["mse"]) < np.asarray(copy["per_clip"]["mse"])
    assert nearer.sum() >= 3, (rollout["per_clip"]["mse"], copy["per_clip"]["mse"])


# The bars that the shipped bundle does not meet yet (docs/embedded-default.md, 12 held-out drives: markings
# kept 0.14 at frame 4 against TOK+VDEC's 0.70; left vs right and brake at chance, replay ratio 0.99). Strict: a
# bundle that meets them fails here, so that the mark comes off.
NOT_YET = pytest.mark.xfail(strict=True, reason="issue 19: rollouts blur markings and commands within 1-2 frames")


@NOT_YET
def test_lane_markings_and_cars_of_the_seed_are_still_there_at_frame_4(rows):
    """The scene checks (`metrics.scene`) at predicted frame 4: at least half of what TOK+VDEC keeps of the real frame."""
    for name in ("marking_recall", "car_recall"):
        kept, reference = (rows[s]["per_frame"][name][3] for s in ("tok+wm+vdec", "tok+vdec"))
        assert kept >= 0.5 * reference, (name, kept, reference)


@NOT_YET
def test_commands_steer_the_rollout(evaluation):
    """From the same seed frames: left turns left of right, braking slows down, replaying the clip's own commands
    moves as the real drive did far better than another clip's commands (the shipped probe's estimates)."""
    adherence = evaluation["adherence"]
    assert adherence["counterfactual"]["left_vs_right"] == 1.0, adherence["counterfactual"]
    assert adherence["counterfactual"]["brake"] == 1.0, adherence["counterfactual"]
    assert adherence["replay"]["ratio"] <= 0.6, adherence["replay"]


def test_gym_make_runs_the_embedded_default_and_its_action_steers():
    env = gym.make("OpenViCA-v0")
    obs, info = env.reset(seed=0)
    assert info["clip_id"] in FolderClips(embedded.clips_path()).clip_ids
    assert env.unwrapped.action_conditioned
    obs, *_ = env.step(env.action_space.sample())
    assert obs.shape == (256, 256, 3) and obs.dtype == np.uint8
