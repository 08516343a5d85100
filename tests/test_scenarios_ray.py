"""Distributed scenario generation (issue 10): `ray job submit` of the generator on a `ray start` cluster, with
2 CPU simulator actors, one of them SIGKILLed mid-run, gives the single-process dataset exactly."""

import threading
import time

import numpy as np

from openvica_sim.scenarios import dataset as ds
from test_scenarios import TINY, all_tokens, dataset, scenario_inputs  # noqa: F401  (fixtures)


def test_ray_job_submit_generates_the_single_process_dataset_despite_a_killed_actor(
        dataset, scenario_inputs, tmp_path, ray_cluster):  # noqa: F811
    import psutil

    expected_dir, _ = dataset
    out = tmp_path / "on-ray"
    killed = []

    def kill_an_actor_after_the_first_clip():
        deadline = time.time() + 600
        while time.time() < deadline and not killed:
            if ds.committed_clip_ids(out):
                actors = [p for p in psutil.process_iter(["cmdline"])
                          if "SimulatorActor" in " ".join(p.info["cmdline"] or [])]
                if actors:
                    actors[0].kill()
                    killed.append(actors[0].pid)
            time.sleep(0.05)

    threading.Thread(target=kill_an_actor_after_the_first_clip, daemon=True).start()
    job = ray_cluster.submit("python", "-m", "openvica_sim.scenarios.generate", "--spec", "night-rain", "--out",
                             str(out), "--bundle", str(scenario_inputs["bundle"]), "--clips",
                             str(scenario_inputs["store"]), *TINY, "batch_size=1", "scaling.num_workers=2")
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert killed, "no simulator actor was found to kill"
    expected, got = all_tokens(expected_dir), all_tokens(out)
    assert sorted(got) == sorted(expected)  # none lost, none duplicated
    for clip_id in expected:
        np.testing.assert_array_equal(got[clip_id], expected[clip_id])
    assert not list((out / ds.CLIPS_DIR).glob(f"{ds.TMP_PREFIX}*"))  # none half-written
    assert len(ds.ScenarioDataset(out)) == 4
