"""Ego commands as tokens (docs/design.md "Ego conditioning")."""

import numpy as np

from openvica_sim.actions import ActionCoding

coding = ActionCoding(codebook_size=8192)


def test_ids_follow_the_design_layout():
    assert coding.vision_ids(0.0, -0.6).tolist() == [8194, 8258]
    assert coding.vision_ids(40.0, 0.6).tolist() == [8194 + 63, 8258 + 63]
    assert coding.vision_ids(np.nan, np.nan).tolist() == [8322, 8323]
    assert coding.first_vision_id + coding.num_ids <= 8448, "fits LWM's spare vision ids"


def test_speed_bins_are_uniform_and_yaw_bins_fine_near_zero():
    edges = coding.bin_edges()
    assert np.allclose(np.diff(edges["speed_mps"]), 0.625)
    yaw = np.diff(edges["yaw_rate_rps"])
    assert yaw.min() < 0.005 and yaw.max() > 0.04 and np.argmin(yaw) in (31, 32)


def test_normalised_actions_map_to_physical_units_and_back():
    speed, yaw = coding.from_normalized(np.array([[-1, -1], [1, 1], [0, 0]]))
    assert speed.tolist() == [0, 40, 20] and yaw.tolist() == [-0.6, 0.6, 0]
    assert np.allclose(coding.to_normalized(speed, yaw), [[-1, -1], [1, 1], [0, 0]])


def test_values_outside_the_range_clip_to_the_end_bins():
    assert coding.vision_ids(99.0, -5.0).tolist() == [8194 + 63, 8258]
