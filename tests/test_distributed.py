"""Ray scale-out (issue 10): the simulator pool, the vector env over actors and the ingest over Ray tasks.

One local cluster for the whole module. Its 4 logical CPUs hold the pool's 2 actors (a module fixture) plus the
env's 2 actors; the machine's cores are fewer, but idle actors cost no CPU. Work runs on the random "test" bundle
with the image decoder (no lookahead frame: half the decoding of VDEC) to stay fast. The ingest test comes first:
its tasks leave two idle Ray workers with torch and the models imported, and the pool's actors start in them.
"""

import os
import signal
from concurrent.futures import ThreadPoolExecutor

import gymnasium as gym
import numpy as np
import pytest
import torch

import openvica_sim  # noqa: F401  (registers OpenViCA-v0 and OpenViCA-Ray-v0)
from openvica_sim.bundle import load_bundle, save_bundle
from openvica_sim.cli import main
from openvica_sim.data.store import TokenStore
from openvica_sim.distributed import RolloutRequest, SimulatorPool, rollout_batch
from openvica_sim.envs import OpenViCAVectorEnv, RayVectorEnv
from openvica_sim.simulator import Simulator

SIMULATOR = {"top_k": 20, "decoder": "tokenizer"}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The actors run one torch thread each (Ray sets OMP_NUM_THREADS to their 1 CPU); so do the references here,
    which keeps them from fighting the actors for the cores. Results do not depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def cluster():
    import ray

    ray.init(num_cpus=4, num_gpus=0, include_dashboard=False, object_store_memory=256 << 20)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, test_bundle):
    return str(save_bundle(test_bundle, tmp_path_factory.mktemp("distributed") / "bundle"))


@pytest.fixture(scope="module")
def pool(cluster, bundle_dir):
    with SimulatorPool(bundle_dir, num_workers=2, simulator_kwargs=SIMULATOR) as pool:
        yield pool


@pytest.fixture(scope="module")
def requests():
    tokens = np.random.default_rng(0).integers(0, 64, (5, 2, 16, 16))  # the test preset's 64 codes, T = 2
    return [RolloutRequest(seed=100 + i, num_frames=1, tokens=tokens[i]) for i in range(5)]


@pytest.fixture(scope="module")
def reference(bundle_dir, requests):
    """The same rollouts in this process, all five in one engine call (5 rows; the pool's batches run 4)."""
    return rollout_batch(Simulator(load_bundle(bundle_dir), **SIMULATOR), requests)


def _assert_same_rollouts(results, reference):
    assert len(results) == len(reference)
    for got, want in zip(results, reference):
        assert np.array_equal(got.tokens, want.tokens) and np.array_equal(got.frames, want.frames)


def test_ray_ingest_writes_the_same_store_as_the_local_ingest_and_a_rerun_adds_nothing(
        cluster, bundle_dir, tmp_path, capsys):
    from openvica_sim.data.bdd_layout import write_bdd100k

    root = tmp_path / "bdd"
    manifest = write_bdd100k(root, "train", num_videos=3, seconds=1.0, seed=2, corrupt=1)
    ingest = ["data", "ingest", "--bdd-root", str(root), "--split", "train", "--bundle", bundle_dir]
    assert main([*ingest, "--out", str(tmp_path / "local.zarr")]) == 0
    assert main([*ingest, "--out", str(tmp_path / "ray.zarr"), "--ray", "--num-workers", "2"]) == 0
    local, remote = TokenStore(tmp_path / "local.zarr"), TokenStore(tmp_path / "ray.zarr")
    assert sorted(remote.clip_ids) == sorted(local.clip_ids) == sorted(set(manifest["ids"]) - set(manifest["corrupt"]))
    assert sorted(remote.index["parts"]) == ["part-00000", "part-00001"]
    for clip_id in local.clip_ids:
        want, got = local.clip(clip_id), remote.clip(clip_id)
        for key in ("tokens", "speed_mps", "yaw_rate_rps", "frame_time_s"):
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{clip_id} {key}")
    index = (tmp_path / "ray.zarr" / "index.json").read_text()
    capsys.readouterr()
    assert main([*ingest, "--out", str(tmp_path / "ray.zarr"), "--ray", "--num-workers", "2"]) == 0
    assert capsys.readouterr().err.count(" 0 clips written") == 2
    assert (tmp_path / "ray.zarr" / "index.json").read_text() == index


@pytest.mark.parametrize("batch_size", [1, 3])
def test_pool_rollouts_equal_in_process_rollouts_whatever_the_batch_size(pool, requests, reference, batch_size):
    results = {}
    for batch in pool.map(rollout_batch, requests, batch_size=batch_size, progress=False):
        assert batch.items == requests[batch.start:batch.start + batch_size]
        results.update(zip(range(batch.start, batch.start + len(batch.results)), batch.results))
    assert sorted(results) == list(range(len(requests)))
    _assert_same_rollouts([results[i] for i in range(len(requests))], reference)


def test_an_actor_killed_mid_map_has_its_batches_rerun_and_every_item_comes_back_once(pool, requests, reference):
    pids = pool.pids()
    failed_before, results = pool.failed_calls, {}
    for batch in pool.map(rollout_batch, requests, batch_size=1, progress=False):
        if not results:  # 2 calls went to each actor: actor 1 still runs one, or two
            os.kill(pids[1], signal.SIGKILL)
        assert batch.start not in results, "an item came back twice"
        results[batch.start] = batch.results[0]
    assert pool.failed_calls > failed_before, "the killed actor had no call in flight: nothing was requeued"
    _assert_same_rollouts([results[i] for i in range(len(requests))], reference)
    assert pool.num_workers == 2 and pool.pids()[1] != pids[1], "Ray restarts the actor (max_restarts)"


def test_an_error_raised_by_the_pool_function_propagates_with_its_message(pool, requests):
    mixed = [requests[0], RolloutRequest(seed=1, num_frames=2, tokens=requests[1].tokens)]
    with pytest.raises(ValueError, match="batch alike requests"):
        pool.run(rollout_batch, mixed, batch_size=2, progress=False)


def test_eval_video_rollouts_on_the_pool_equal_the_in_process_evaluation(pool, bundle_dir, tmp_path):
    from openvica_sim import embedded
    from openvica_sim.evaluation import VideoEvalSettings, evaluate_video

    common = dict(bundle=bundle_dir, clips=str(embedded.clips_path()), limit=3, num_frames=2, top_k=[1, 20],
                  decoders=["dec"], transcode=False, batch_size=2)
    local = evaluate_video(VideoEvalSettings(**common), tmp_path / "local", progress=False)
    remote = evaluate_video(VideoEvalSettings(**common), tmp_path / "ray", progress=False, pool=pool)
    cached = sorted((tmp_path / "local" / "rollouts").rglob("*.npz"))
    assert len(cached) == 6  # 3 clips x 2 values of k
    for path in cached:
        twin = tmp_path / "ray" / path.relative_to(tmp_path / "local")
        with np.load(path) as want, np.load(twin) as got:
            np.testing.assert_array_equal(got["tokens"], want["tokens"], err_msg=str(path))
    assert remote["results"] == local["results"]


def test_pool_refuses_a_loaded_bundle_and_names_the_fix(cluster, test_bundle):
    with pytest.raises(TypeError, match="save_bundle"):
        SimulatorPool(test_bundle, num_workers=1)


def test_pool_refuses_more_actors_than_the_cluster_can_place_instead_of_waiting_forever(cluster, bundle_dir):
    with pytest.raises(ValueError, match="5 CPU needed, 4 in the cluster; lower num_workers"):
        SimulatorPool(bundle_dir, num_workers=5)


def test_make_vec_ray_env_over_two_actors_equals_the_local_vector_env_for_20_steps_with_autoresets(
        cluster, bundle_dir):
    # 5 sub-envs: actors of 3 and 2 rows (each engine 4 wide) against one engine of 5 rows
    kwargs = dict(num_envs=5, bundle=bundle_dir, max_episode_steps=2, **SIMULATOR)
    actions = np.random.default_rng(0).uniform(-1, 1, (20, 5, 2)).astype(np.float32)

    def run(env):
        try:
            return env, [env.reset(seed=7)] + [env.step(a) for a in actions]
        finally:
            env.close()

    with ThreadPoolExecutor(1) as thread:  # the local run here while the actors step (two cores)
        remote = thread.submit(lambda: run(gym.make_vec("OpenViCA-Ray-v0", num_actors=2, **kwargs)))
        local, local_run = run(OpenViCAVectorEnv(**kwargs))
        remote, remote_run = remote.result()
    assert isinstance(remote, RayVectorEnv)
    assert remote.observation_space == local.observation_space and remote.action_space == local.action_space
    assert remote.metadata["autoreset_mode"] == local.metadata["autoreset_mode"]
    for k, (want, got) in enumerate(zip(local_run, remote_run)):
        *arrays_want, infos_want = want
        *arrays_got, infos_got = got
        for x, y in zip(arrays_want, arrays_got):
            assert x.dtype == y.dtype and np.array_equal(x, y), f"call {k}"
        assert sorted(infos_want) == sorted(infos_got), f"call {k}"
        for key in infos_want:  # surprise is NaN at (auto)resets: assert_array_equal treats NaNs as equal
            assert infos_want[key].dtype == infos_got[key].dtype, (k, key)
            np.testing.assert_array_equal(infos_want[key], infos_got[key], err_msg=f"call {k}, {key}")
    truncated_at = [k for k, out in enumerate(remote_run[1:], 1) if out[3].all()]
    assert truncated_at == [2, 5, 8, 11, 14, 17, 20], "2 steps (the 2nd truncated), the autoreset step, 2 steps, ..."
