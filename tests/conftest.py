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
