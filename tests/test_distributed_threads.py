"""A CPU pool actor runs as many torch threads as the CPUs it reserved, whatever OMP_NUM_THREADS the driver had:
Ray passes an explicit OMP_NUM_THREADS on to its workers unchanged, and two 2-thread actors on 2 cores ran the
rollout pool at 0.35 of linear (benchmarks/rollout_pool.py, 2026-11-30). Its own cluster: the setting must be in
the environment when Ray starts its workers."""

import pytest
import torch

from openvica_sim.bundle import save_bundle
from openvica_sim.distributed import SimulatorPool


@pytest.fixture()
def cluster_started_with_omp_threads(monkeypatch):
    import ray

    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, object_store_memory=128 << 20)
    yield
    ray.shutdown()


def test_cpu_actors_run_one_torch_thread_per_reserved_cpu_despite_an_inherited_omp_num_threads(
        cluster_started_with_omp_threads, test_bundle, tmp_path):
    bundle = str(save_bundle(test_bundle, tmp_path / "bundle"))
    with SimulatorPool(bundle, num_workers=1, cpus_per_actor=1, simulator_kwargs={"decoder": "tokenizer"}) as pool:
        (batch,) = pool.map(lambda simulator, items: [torch.get_num_threads() for _ in items], [0], progress=False)
    assert batch.results == [1]
