"""Ray actors run as many torch threads as the CPUs they reserved, whatever OMP_NUM_THREADS the driver had: Ray
passes an explicit OMP_NUM_THREADS on to its workers unchanged, and two 2-thread actors on 2 cores ran the rollout
pool at 0.35 of linear (benchmarks/rollout_pool.py, 2026-11-30). Its own cluster: the setting must be in the
environment when Ray starts its workers."""

import os

import gymnasium as gym
import pytest
import ray
import torch

import openvica_sim  # noqa: F401  (registers OpenViCA-Ray-v0)
from openvica_sim.bundle import save_bundle
from openvica_sim.distributed import SimulatorPool


@pytest.fixture(scope="module")
def cluster_started_with_omp_threads():
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "2"
    try:
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=128 << 20)
        yield
    finally:
        ray.shutdown()
        if before is None:
            del os.environ["OMP_NUM_THREADS"]
        else:
            os.environ["OMP_NUM_THREADS"] = before


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, test_bundle):
    return str(save_bundle(test_bundle, tmp_path_factory.mktemp("threads") / "bundle"))


def test_pool_actors_run_one_torch_thread_per_reserved_cpu_despite_an_inherited_omp_num_threads(
        cluster_started_with_omp_threads, bundle_dir):
    with SimulatorPool(bundle_dir, num_workers=1, cpus_per_actor=1, simulator_kwargs={"decoder": "tokenizer"}) as pool:
        (batch,) = pool.map(lambda simulator, items: [torch.get_num_threads() for _ in items], [0], progress=False)
    assert batch.results == [1]


def test_ray_vector_env_actors_do_too(cluster_started_with_omp_threads, bundle_dir):
    env = gym.make_vec("OpenViCA-Ray-v0", num_envs=1, num_actors=1, bundle=bundle_dir, decoder="tokenizer")
    try:
        assert ray.get(env._actors[0].__ray_call__.remote(lambda host: torch.get_num_threads())) == 1
    finally:
        env.close()
