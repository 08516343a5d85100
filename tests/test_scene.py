"""The synthetic world's scene checks (issue 19, `metrics.scene`), on real rendered frames first: a frame finds all
its own lane markings and cars, a flat frame none, the next frame of a drive most of them."""

import numpy as np
import pytest

from openvica_sim.data.synthetic import Drive, render_drive
from openvica_sim.frames import boxes_to_model_view, center_crop
from openvica_sim.metrics.scene import car_recall, marking_mask, marking_recall


@pytest.fixture(scope="module", params=["day", "night"])
def drive_frames(request):
    clip = render_drive(Drive(speed_mps=10.0, num_cars=4, timeofday=request.param), 4, height=360, width=640,
                        focal_px=512, rng_seed=2)  # the model's view of a BDD100K-sized camera, as the store has it
    frames = np.ascontiguousarray(center_crop(clip.frames.transpose(0, 3, 1, 2), 256).transpose(0, 2, 3, 1))
    return frames, [boxes_to_model_view(b, 360, 640) for b in clip.boxes]


def test_the_markings_of_a_frame_are_found_in_itself_and_not_in_a_flat_frame(drive_frames):
    frames, _ = drive_frames
    assert marking_mask(frames).sum(axis=(1, 2)).min() > 200  # lane lines, dashes, by day and by night
    np.testing.assert_allclose(marking_recall(frames, frames), 1.0)
    flat = np.broadcast_to(frames.mean(axis=(1, 2), keepdims=True).astype(np.uint8), frames.shape)
    np.testing.assert_allclose(marking_recall(flat, frames), 0.0)
    assert np.all(marking_recall(frames[1:], frames[:-1]) > 0.2)  # the next frame: the dashes moved on, lines stay


def test_cars_are_found_where_the_ground_truth_puts_them(drive_frames):
    frames, boxes = drive_frames
    assert np.nanmin(car_recall(frames, frames, boxes)) == 1.0
    flat = np.broadcast_to(frames.mean(axis=(1, 2), keepdims=True).astype(np.uint8), frames.shape)
    assert np.nanmax(car_recall(flat, frames, boxes)) == 0.0
