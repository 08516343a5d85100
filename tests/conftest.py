"""Shared fixtures: tiny random models built once per session (no downloads, CPU)."""

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
