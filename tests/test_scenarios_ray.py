"""Distributed scenario generation (issue 10): `ray job submit` of the generator on a `ray start` cluster, with
2 CPU simulator actors, one of them SIGKILLed mid-run, gives the single-process dataset exactly."""

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from openvica_sim.scenarios import dataset as ds
from test_scenarios import TINY, all_tokens, dataset, scenario_inputs  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_job_submit_generates_the_single_process_dataset_despite_a_killed_actor(
        dataset, scenario_inputs, tmp_path):  # noqa: F811
    import psutil

    expected_dir, _ = dataset
    out = tmp_path / "on-ray"
    bin_dir = str(Path(sys.executable).parent)
    # `ray job submit -- python ...` runs the python on the PATH that started the cluster (DESIGN.md, Ray pitfalls)
    # RAY_AUTH_MODE: a `ray.init()` earlier in the session wrote ~/.ray/auth_token, after which Ray 2.60's `ray start`
    # enables token auth while `ray job submit` does not send the token; say it once for both
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "disabled"}
    ray = shutil.which("ray", path=env["PATH"])
    port, dashboard = _free_port(), _free_port()
    subprocess.run([ray, "start", "--head", f"--port={port}", f"--dashboard-port={dashboard}", "--num-cpus=2",
                    "--num-gpus=0", "--include-dashboard=true", "--disable-usage-stats"], env=env, check=True,
                   capture_output=True, timeout=180)
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

    killer = threading.Thread(target=kill_an_actor_after_the_first_clip, daemon=True)
    killer.start()
    try:
        job = subprocess.run(
            [ray, "job", "submit", f"--address=http://127.0.0.1:{dashboard}", "--working-dir", ".", "--",
             "python", "-m", "openvica_sim.scenarios.generate", "--spec", "night-rain", "--out", str(out),
             "--bundle", str(scenario_inputs["bundle"]), "--seeds", str(scenario_inputs["store"]), *TINY,
             "batch_size=1", "scaling.num_workers=2"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
        assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
    assert killed, "no simulator actor was found to kill"
    expected, got = all_tokens(expected_dir), all_tokens(out)
    assert sorted(got) == sorted(expected)  # none lost, none duplicated
    for clip_id in expected:
        np.testing.assert_array_equal(got[clip_id], expected[clip_id])
    assert not list((out / ds.CLIPS_DIR).glob(f"{ds.TMP_PREFIX}*"))  # none half-written
    assert len(ds.ScenarioDataset(out)) == 4
