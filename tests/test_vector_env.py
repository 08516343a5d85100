"""The native vector env (issue 3): one batched engine for N sub-envs, equal to N single envs.

Runs the random "test" preset bundle from a folder, on CPU. The engine decodes at least 4 rows whatever
the batch (docs/design.md "Determinism"), so a single env costs as much per frame as a vector env of 4.
"""

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode

import openvica_sim  # noqa: F401  (registers OpenViCA-v0)
from openvica_sim.bundle import create_random_bundle, save_bundle
from openvica_sim.envs import OpenViCAEnv, OpenViCAVectorEnv
from openvica_sim.data.clips import SyntheticClips

ENV_ID = "OpenViCA-v0"


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    return str(save_bundle(create_random_bundle("test", seed=0), tmp_path_factory.mktemp("bundles") / "test"))


def _run(envs, seed: int, actions: np.ndarray) -> list[tuple]:
    """reset(seed) then one step per action batch; every result, as returned."""
    results = [envs.reset(seed=seed)]
    for batch in actions:
        results.append(envs.step(batch))
    return results


def _assert_same_infos(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for key in a:
        if key == "surprise":  # NaN for the seed frames at (auto)reset
            np.testing.assert_array_equal(a[key], b[key])
        else:
            assert a[key].dtype == b[key].dtype and np.array_equal(a[key], b[key]), key


def test_make_vec_builds_the_native_vector_env_with_batched_spaces(bundle_dir):
    envs = gym.make_vec(ENV_ID, num_envs=3, vectorization_mode="vector_entry_point", bundle=bundle_dir)
    assert isinstance(envs, OpenViCAVectorEnv)
    assert envs.observation_space.shape == (3, 256, 256, 3) and envs.observation_space.dtype == np.uint8
    assert envs.action_space == gym.spaces.Box(-1.0, 1.0, (3, 2), np.float32)
    assert envs.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert envs.max_episode_steps == 14  # from the registration: the paper's horizon


def test_native_vector_env_equals_sync_vector_env_of_single_envs_over_an_episode_and_autoreset(bundle_dir):
    # 2 steps, truncation, the autoreset step, then the new episode's first step
    kwargs = dict(num_envs=2, bundle=bundle_dir, max_episode_steps=2)
    native = gym.make_vec(ENV_ID, vectorization_mode="vector_entry_point", **kwargs)
    sync = gym.make_vec(ENV_ID, vectorization_mode="sync", **kwargs)
    assert all(isinstance(env.unwrapped, OpenViCAEnv) for env in sync.envs)
    actions = np.random.default_rng(0).uniform(-1, 1, (4, 2, 2)).astype(np.float32)
    runs = _run(native, 5, actions), _run(sync, 5, actions)  # sub-env i seeded with 5 + i in both
    for k, (a, b) in enumerate(zip(*runs)):
        *arrays_a, infos_a = a
        *arrays_b, infos_b = b
        for x, y in zip(arrays_a, arrays_b):
            assert x.dtype == y.dtype and np.array_equal(x, y), f"call {k}"
        _assert_same_infos(infos_a, infos_b)
    _, _, _, truncated, _ = runs[0][2]
    assert truncated.all()
    obs, reward, terminated, truncated, infos = runs[0][3]  # the autoreset step
    assert np.array_equal(infos["frame_index"], [1, 1]) and np.isnan(infos["surprise"]).all()
    assert not (reward.any() or terminated.any() or truncated.any())


def test_random_actions_for_30_steps_through_4_envs_autoreset_every_10(bundle_dir):
    envs = gym.make_vec(ENV_ID, num_envs=4, vectorization_mode="vector_entry_point", bundle=bundle_dir,
                        decoder="tokenizer", max_episode_steps=10)
    envs.action_space.seed(0)
    obs, infos = envs.reset(seed=0)
    resets = []
    for step in range(1, 31):
        obs, rewards, terminated, truncated, infos = envs.step(envs.action_space.sample())
        assert obs in envs.observation_space and not terminated.any()
        assert all(infos[f"_{key}"].all() for key in ("tokens", "surprise", "frame_index", "clip_id"))
        assert infos["tokens"].shape == (4, 16, 16)
        if infos["frame_index"][0] == 1:
            resets.append(step)
        assert truncated.all() == (step in (10, 21))
    assert resets == [11, 22]


def test_reset_options_apply_to_all_sub_envs_or_one_each(bundle_dir):
    envs = OpenViCAVectorEnv(num_envs=2, bundle=bundle_dir, clips=SyntheticClips())
    _, infos = envs.reset(seed=0, options={"clip": "synthetic-001"})
    assert list(infos["clip_id"]) == ["synthetic-001"] * 2
    obs, infos = envs.reset(seed=0, options={"clip": ["synthetic-004", "synthetic-002"]})
    assert list(infos["clip_id"]) == ["synthetic-004", "synthetic-002"]
    single = OpenViCAEnv(bundle=bundle_dir, clips=SyntheticClips())
    assert np.array_equal(obs[1], single.reset(seed=1, options={"clip": "synthetic-002"})[0])


def test_partial_reset_is_refused_because_sub_envs_run_in_lockstep(bundle_dir):
    envs = OpenViCAVectorEnv(num_envs=2, bundle=bundle_dir)
    with pytest.raises(ValueError, match="lockstep"):
        envs.reset(seed=0, options={"reset_mask": np.array([True, False])})


def test_vector_env_refuses_actions_outside_the_space(bundle_dir):
    envs = OpenViCAVectorEnv(num_envs=2, bundle=bundle_dir)
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"-2\.0"):
        envs.step(np.array([[0.0, 0.0], [-2.0, 0.0]]))
    with pytest.raises(ValueError, match=r"expected \(2, 2\)"):
        envs.step(np.zeros(2))


def test_render_returns_every_sub_envs_current_frame(bundle_dir):
    envs = OpenViCAVectorEnv(num_envs=2, bundle=bundle_dir, render_mode="rgb_array")
    obs, _ = envs.reset(seed=0)
    frames = envs.render()
    assert len(frames) == 2 and all(np.array_equal(f, o) for f, o in zip(frames, obs))


def test_a_vector_env_gives_the_same_frames_whatever_torch_thread_count(bundle_dir):
    """Frames are defined at the codecs' fixed thread count (simulator.CODEC_THREADS), the world model's tokens do
    not depend on it here: so a Ray actor's one thread reproduces a laptop's two (issue 18, point 4)."""
    import torch

    threads = torch.get_num_threads()
    actions = np.zeros((2, 4, 2), np.float32)
    runs = []
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            envs = gym.make_vec(ENV_ID, num_envs=4, vectorization_mode="vector_entry_point", bundle=bundle_dir,
                                clips=SyntheticClips(num_clips=4, num_frames=4))
            runs.append([r[0] for r in _run(envs, 0, actions)])  # the observations
            envs.close()
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*runs):
        np.testing.assert_array_equal(one, two)
