"""The Gymnasium env OpenViCA-v0 (issue 3): registration, spaces, episodes, seeding, branching, errors.

Every env here runs the random "test" preset bundle from a folder, on CPU; a generated frame costs about
half a second, so episodes are kept to a few steps.
"""

import warnings

import gymnasium as gym
import numpy as np
import pytest

import openvica_sim
from openvica_sim.bundle import create_random_bundle, save_bundle
from openvica_sim.data.synthetic import Drive, render_clip
from openvica_sim.envs import OpenViCAEnv, register_envs
from openvica_sim.data.clips import FolderClips, SyntheticClips
from openvica_sim.frames import model_view, postprocess, preprocess
from openvica_sim.video_io import write_image, write_video

ENV_ID = "OpenViCA-v0"
STEPS = 3


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return str(save_bundle(create_random_bundle("test", seed=0), tmp_path_factory.mktemp("bundles") / "test"))


@pytest.fixture(scope="module")
def action_bundle_dir(tmp_path_factory):
    bundle = create_random_bundle("test", seed=0, action_conditioned=True)
    return str(save_bundle(bundle, tmp_path_factory.mktemp("bundles") / "test-actions"))


@pytest.fixture(scope="module")
def episode(bundle_dir):
    """One seeded episode of STEPS steps, recorded: reset, then every step with what render showed after it."""
    env = gym.make(ENV_ID, bundle=bundle_dir, max_episode_steps=STEPS, render_mode="rgb_array",
                   reward_fn=lambda obs, info: info["surprise"] + obs.mean())
    env.action_space.seed(0)
    record = {"reset": env.reset(seed=0), "steps": [], "renders": []}
    for _ in range(STEPS):
        record["steps"].append(env.step(env.action_space.sample()))
        record["renders"].append(env.render())
    env.close()
    return record


def _rollout(env, seed: int, steps: int, actions=None):
    obs, info = env.reset(seed=seed)
    frames, tokens = [obs], [info["tokens"]]
    for k in range(steps):
        obs, _, _, _, info = env.step(np.zeros(2, np.float32) if actions is None else actions[k])
        frames.append(obs)
        tokens.append(info["tokens"])
    return np.stack(frames), np.stack(tokens)


# ---- registration ---------------------------------------------------------------------------------
def test_import_registers_openvica_v0_with_the_vector_entry_point_and_the_papers_horizon():
    spec = gym.spec(ENV_ID)
    assert spec.entry_point == "openvica_sim.envs.openvica_env:OpenViCAEnv"
    assert spec.vector_entry_point == "openvica_sim.envs.vector:OpenViCAVectorEnv"
    assert spec.max_episode_steps == 14
    assert openvica_sim.__version__


def test_registering_again_keeps_the_spec_and_warns_nothing():
    spec = gym.spec(ENV_ID)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        register_envs()
    assert gym.spec(ENV_ID) is spec


# ---- the API --------------------------------------------------------------------------------------
def test_env_passes_gymnasiums_env_checker(bundle_dir):
    from gymnasium.utils.env_checker import check_env

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(gym.make(ENV_ID, bundle=bundle_dir, max_episode_steps=STEPS).unwrapped)
    assert [str(w.message) for w in caught if issubclass(w.category, UserWarning)] == []  # its API warnings


def test_env_without_arguments_runs_the_embedded_default_on_its_held_out_clips():
    from openvica_sim import embedded

    env = gym.make(ENV_ID)
    obs, info = env.reset(seed=0)
    assert info["clip_id"] in FolderClips(embedded.clips_path()).clip_ids
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert obs.shape == (256, 256, 3) and obs.dtype == np.uint8
    assert (reward, terminated, truncated) == (0.0, False, False)
    assert env.unwrapped.bundle.world_model.config.codebook_size == 256  # the embedded preset's K


def test_spaces_are_the_frame_and_the_normalised_ego_command(bundle_dir):
    env = gym.make(ENV_ID, bundle=bundle_dir)
    assert env.observation_space == gym.spaces.Box(0, 255, (256, 256, 3), np.uint8)
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    coding = env.unwrapped.action_coding
    assert coding.from_normalized(np.array([1.0, -1.0])) == (40.0, -0.6)  # m/s, rad/s
    assert env.unwrapped.action_conditioned is False


def test_unconditioned_bundle_accepts_and_ignores_actions(bundle_dir):
    env = gym.make(ENV_ID, bundle=bundle_dir, decoder="tokenizer")
    still, _ = _rollout(env, seed=3, steps=1, actions=[np.array([-1.0, 0.0])])
    swerving, _ = _rollout(env, seed=3, steps=1, actions=[np.array([1.0, 1.0])])
    assert np.array_equal(still, swerving)


def test_ego_conditioned_bundle_steers_the_world_model_with_the_action(action_bundle_dir):
    env = gym.make(ENV_ID, bundle=action_bundle_dir, decoder="tokenizer")
    assert env.unwrapped.action_conditioned is True
    surprises = []
    for action in ([-1.0, 0.0], [1.0, 1.0]):  # stopped; 40 m/s turning right at 0.6 rad/s
        env.reset(seed=3)
        surprises.append(env.step(np.array(action, np.float32))[4]["surprise"])
    # the world model's likelihoods change with the command, so the action reached it (a random model's logits
    # move too little to change its samples, so compare likelihoods, not tokens)
    assert surprises[0] != surprises[1]


def test_reset_returns_the_last_seed_frame_as_the_model_sees_it(bundle_dir):
    env = gym.make(ENV_ID, bundle=bundle_dir)
    camera = render_clip(Drive(speed_mps=20.0), 2, height=360, width=640)  # a 640x360 camera clip
    obs, info = env.reset(seed=0, options={"frames": camera})
    assert np.array_equal(obs, postprocess(preprocess(camera[-1])))  # the 256x256 centre crop
    assert info["clip_id"] is None and info["frame_index"] == 1
    assert info["tokens"].shape == (16, 16) and np.isnan(info["surprise"])


def test_an_ingested_store_seeds_episodes_by_its_clip_ids(bundle_dir, frame_store):
    from openvica_sim.data.store import TokenStore

    store = TokenStore(frame_store)
    clip_id = store.clip_ids[1]
    env = gym.make(ENV_ID, bundle=bundle_dir, clips=str(frame_store))
    obs, info = env.reset(options={"clip": clip_id, "seed_frames": 3})
    assert info["clip_id"] == clip_id and info["frame_index"] == 2
    assert np.array_equal(obs, store.clip(clip_id, keys=("frames",))["frames"][2])


def test_reset_option_clip_seeds_the_episode_with_that_clips_first_frames(bundle_dir):
    env = gym.make(ENV_ID, bundle=bundle_dir, clips=SyntheticClips())
    obs, info = env.reset(options={"clip": "synthetic-003", "seed_frames": 3})
    assert info["clip_id"] == "synthetic-003" and info["frame_index"] == 2
    assert np.array_equal(obs, SyntheticClips().frames("synthetic-003")[2])


def test_step_emits_the_next_frame_with_its_tokens_surprise_and_index(episode):
    obs, reward, terminated, truncated, info = episode["steps"][0]
    assert obs.shape == (256, 256, 3) and obs.dtype == np.uint8
    assert info["frame_index"] == 2 and info["clip_id"] == episode["reset"][1]["clip_id"]
    assert info["tokens"].shape == (16, 16) and info["tokens"].dtype == np.int64
    assert np.isfinite(info["surprise"]) and info["surprise"] > 0
    assert [s[4]["frame_index"] for s in episode["steps"]] == [2, 3, 4]


def test_reward_is_reward_fn_of_the_observation_and_info(episode):
    for obs, reward, _, _, info in episode["steps"]:
        assert reward == pytest.approx(info["surprise"] + obs.mean())


def test_episode_never_terminates_and_is_truncated_after_max_episode_steps(episode):
    assert [s[2] for s in episode["steps"]] == [False] * STEPS
    assert [s[3] for s in episode["steps"]] == [False] * (STEPS - 1) + [True]


def test_render_returns_the_current_frame(episode):
    for (obs, *_), frame in zip(episode["steps"], episode["renders"]):
        assert np.array_equal(frame, obs)


def test_same_seed_gives_the_same_episode(bundle_dir, episode):
    env = gym.make(ENV_ID, bundle=bundle_dir)
    env.action_space.seed(0)
    assert np.array_equal(env.reset(seed=0)[0], episode["reset"][0])
    for obs, *_, info in episode["steps"]:
        again, *_, again_info = env.step(env.action_space.sample())
        assert np.array_equal(again, obs) and np.array_equal(again_info["tokens"], info["tokens"])


def test_another_seed_gives_another_episode(bundle_dir, episode):
    env = gym.make(ENV_ID, bundle=bundle_dir)
    env.reset(seed=1, options={"clip": episode["reset"][1]["clip_id"]})
    *_, info = env.step(np.zeros(2, np.float32))
    assert not np.array_equal(info["tokens"], episode["steps"][0][4]["tokens"])


def test_long_episodes_slide_the_context_and_run_in_bounded_memory(bundle_dir):
    env = gym.make(ENV_ID, bundle=bundle_dir, decoder="tokenizer", max_episode_steps=-1)  # -1: no TimeLimit
    env.reset(seed=0)
    sim, state = env.unwrapped.simulator, env.unwrapped._state
    max_len = state.cache.max_len  # the KV cache is preallocated for the context window, never grown
    for _ in range(40):  # 42 frames: the 16-frame context window slides 4 times
        obs, _, terminated, truncated, info = env.step(np.zeros(2, np.float32))
        assert state.history.shape[1] <= sim.context_frames and state.cache.length <= max_len
    assert info["frame_index"] == 41 and not (terminated or truncated)
    assert state.cache.max_len == max_len
    assert np.isfinite(info["surprise"]) and obs.shape == (256, 256, 3)


# ---- branching ------------------------------------------------------------------------------------
def test_set_state_branches_futures_that_repeat_with_the_same_seed_and_differ_with_another(bundle_dir):
    env = gym.make(ENV_ID, bundle=bundle_dir).unwrapped
    env.reset(seed=0)
    env.step(np.zeros(2, np.float32))
    moment = env.get_state()

    def future():
        return [env.step(np.zeros(2, np.float32)) for _ in range(2)]

    first = future()
    env.set_state(moment)
    same = future()
    env.set_state(moment, seed=7)
    other = future()
    for (obs, *_, info), (obs2, *_, info2) in zip(first, same):
        assert np.array_equal(obs, obs2) and np.array_equal(info["tokens"], info2["tokens"])
    # the next frame's codes were drawn before the branch (the video decoder's lookahead); the one after differ
    assert np.array_equal(other[0][4]["tokens"], first[0][4]["tokens"])
    assert not np.array_equal(other[1][4]["tokens"], first[1][4]["tokens"])


# ---- clip sources ---------------------------------------------------------------------------------
def test_a_folder_of_clips_reads_frame_folders_and_videos_at_4_fps(bundle_dir, tmp_path):
    clip = render_clip(Drive(speed_mps=10.0), 4)
    (tmp_path / "frames-clip").mkdir()
    for i, frame in enumerate(clip):
        write_image(tmp_path / "frames-clip" / f"{i:03d}.png", frame)
    write_video(tmp_path / "video-clip.mp4", np.repeat(clip, 2, axis=0), fps=8)  # 8 fps: read every 2nd frame
    env = gym.make(ENV_ID, bundle=bundle_dir, clips=str(tmp_path))
    assert env.unwrapped.clip_source.clip_ids == ["frames-clip", "video-clip"]
    obs, info = env.reset(options={"clip": "frames-clip"})
    assert np.array_equal(obs, clip[1])
    obs, info = env.reset(options={"clip": "video-clip"})
    assert np.abs(obs.astype(int) - clip[1]).mean() < 3  # H.264 at crf 18: close, not exact


# ---- errors ---------------------------------------------------------------------------------------
def test_missing_bundle_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no simulator bundle"):
        gym.make(ENV_ID, bundle=str(tmp_path / "missing"))


def test_a_missing_clip_store_raises_file_not_found(bundle_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="no token store"):
        gym.make(ENV_ID, bundle=bundle_dir, clips=str(tmp_path / "clips.zarr"))


def test_a_tokens_only_store_is_refused_with_the_ingest_option_that_adds_frames(bundle_dir, tmp_path):
    from openvica_sim.data.store import PartWriter, consolidate

    root = tmp_path / "tokens.zarr"
    writer = PartWriter(root, 0, fps=4.0, split="val", codebook_size=64)
    nan = np.full(3, np.nan, np.float32)
    writer.append_clip({"clip_id": "a", "video_id": "a", "split": "val", "fps": 4.0, "attributes": {}},
                       {"tokens": np.zeros((3, 16, 16), np.uint16), "speed_mps": nan, "yaw_rate_rps": nan,
                        "frame_time_s": np.arange(3, dtype=np.float32) / 4})
    writer.set_complete(True)
    consolidate(root)
    with pytest.raises(ValueError, match="--store-frames"):
        gym.make(ENV_ID, bundle=bundle_dir, clips=str(root))


def test_unknown_clip_id_names_valid_ones(bundle_dir):
    env = gym.make(ENV_ID, bundle=bundle_dir, clips=SyntheticClips())
    with pytest.raises(ValueError, match="'synthetic-099'.*did you mean.*'synthetic-000'"):
        env.reset(options={"clip": "synthetic-099"})


def test_seed_frames_of_a_wrong_shape_or_dtype_are_refused(bundle_dir):
    env = gym.make(ENV_ID, bundle=bundle_dir)
    frames = np.zeros((2, 256, 256, 3), np.uint8)
    with pytest.raises(ValueError, match=r"\(T, H, W, 3\)"):
        env.reset(options={"frames": frames[0]})
    with pytest.raises(ValueError, match="channels last"):
        env.reset(options={"frames": np.zeros((2, 3, 256, 256), np.uint8)})
    with pytest.raises(TypeError, match="uint8"):
        env.reset(options={"frames": frames.astype(np.float32)})


def test_too_few_seed_frames_are_refused(bundle_dir):
    env = gym.make(ENV_ID, bundle=bundle_dir)
    with pytest.raises(ValueError, match="at least 2 seed frames"):
        env.reset(options={"frames": np.zeros((1, 256, 256, 3), np.uint8)})
    with pytest.raises(ValueError, match="seed_frames=1"):
        env.reset(options={"seed_frames": 1})


def test_action_outside_the_space_is_refused_with_its_value(bundle_dir):
    env = OpenViCAEnv(bundle=bundle_dir)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action \[1\.5, 0\.0\] lies outside"):
        env.step(np.array([1.5, 0.0]))
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        env.step(np.zeros(3))


def test_unknown_reset_option_is_refused(bundle_dir):
    env = gym.make(ENV_ID, bundle=bundle_dir)
    with pytest.raises(ValueError, match="'weather'.*'clip'"):
        env.reset(options={"weather": "rain"})


def test_step_before_reset_asks_for_reset(bundle_dir):
    with pytest.raises(gym.error.ResetNeeded):
        OpenViCAEnv(bundle=bundle_dir).step(np.zeros(2, np.float32))


def test_model_view_is_the_identity_on_model_sized_frames():
    frames = np.random.default_rng(0).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    assert np.array_equal(model_view(frames), frames)
