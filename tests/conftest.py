"""Shared fixtures: tiny random models built once per session (no downloads, CPU)."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def test_bundle():
    from openvica_sim.bundle import create_random_bundle

    return create_random_bundle("test", seed=0)


@pytest.fixture(scope="session")
def action_bundle():
    from openvica_sim.bundle import create_random_bundle

    return create_random_bundle("test", seed=0, action_conditioned=True)


@pytest.fixture(scope="session")
def seed_frames():
    """Three clips of two 320x180 camera frames (preprocessing scales and crops them)."""
    return np.random.default_rng(0).integers(0, 256, (3, 2, 180, 320, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def frame_store(tmp_path_factory, test_bundle):
    """A synthetic store with 256x256 frames (TOK and VDEC training): 2 clips of 8 frames at 4 fps."""
    from openvica_sim.data.bdd_layout import write_bdd100k
    from openvica_sim.data.ingest import ingest

    root = tmp_path_factory.mktemp("frame-store")
    write_bdd100k(root, "train", num_videos=2, seconds=2.0, seed=5)
    ingest(root, "train", root / "store.zarr", test_bundle, store_frames=True, progress=False)
    return root / "store.zarr"


@pytest.fixture(scope="session")
def loss_networks(tmp_path_factory):
    """Small random VGG16 (torchvision's file format) and DINOv2 (a transformers folder) for the loss terms."""
    from openvica_sim.models.perceptual import VGG16Features
    from openvica_sim.models.teacher import create_random_dinov2

    root = tmp_path_factory.mktemp("loss-networks")
    torch.manual_seed(0)
    vgg = VGG16Features(widths=(4, 8, 8, 16, 16))
    state = {f"features.{k}": v for k, v in vgg.features.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)  # torchvision's file has the classifier too; it is ignored
    torch.save(state, root / "vgg16.pth")
    create_random_dinov2(root / "dinov2")
    return {"perceptual_net": root / "vgg16.pth", "teacher": root / "dinov2"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RayCluster:
    """A `ray start --head` cluster of 2 CPUs for `ray job submit` tests; `submit(*command)` runs a job from the
    repository root and returns the finished process."""

    def __init__(self):
        self.repo = Path(__file__).resolve().parent.parent
        bin_dir = str(Path(sys.executable).parent)
        # `ray job submit -- python ...` runs the python on the PATH that started the cluster (docs/design.md, Ray
        # pitfalls). RAY_AUTH_MODE: once a `ray.init()` has written ~/.ray/auth_token, Ray 2.60's `ray start` enables
        # token auth while `ray job submit` does not send the token; say "disabled" to both.
        self.env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_AUTH_MODE": "disabled"}
        self.ray = shutil.which("ray", path=self.env["PATH"])
        self.dashboard = _free_port()
        subprocess.run([self.ray, "start", "--head", f"--port={_free_port()}", f"--dashboard-port={self.dashboard}",
                        "--num-cpus=2", "--num-gpus=0", "--include-dashboard=true", "--disable-usage-stats"],
                       env=self.env, check=True, capture_output=True, timeout=180)

    def submit(self, *command: str, timeout: float = 900):
        return subprocess.run([self.ray, "job", "submit", f"--address=http://127.0.0.1:{self.dashboard}",
                               "--working-dir", ".", "--", *command], cwd=self.repo, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def stop(self) -> None:
        subprocess.run([self.ray, "stop", "--force"], env=self.env, capture_output=True, timeout=120)


@pytest.fixture
def ray_cluster():
    cluster = RayCluster()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def feature_networks(tmp_path_factory):
    """Tiny random Inception, I3D, CLIP and LPIPS backbones in the real file formats."""
    from openvica_sim.metrics.random_networks import write_feature_networks

    return write_feature_networks(tmp_path_factory.mktemp("feature-networks"))


@pytest.fixture(scope="session")
def synthetic_clips():
    """Six clips of 8 frames of the synthetic world, 256x256: smooth motion, for metrics that must see it."""
    from openvica_sim.data.synthetic import random_drive, render_clip

    return np.stack([render_clip(random_drive(np.random.default_rng(100 + i)), 8) for i in range(6)])
