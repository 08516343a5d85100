"""Clip sources (issue 20, point 6): one layer over folders of clips, token stores and the synthetic world."""

import json

import numpy as np
import pytest

from openvica_sim.data.clips import ClipSource, FolderClips, StoreClips, SyntheticClips, open_clips
from openvica_sim.video_io import write_image


@pytest.fixture
def folder(tmp_path):
    """Two clips of 1280x720 frames: one with attributes, ego motion and a labelled frame, one bare."""
    rng = np.random.default_rng(0)
    for name, n in (("a", 4), ("b", 3)):
        for k in range(n):
            write_image(tmp_path / name / f"{k:03d}.png", rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8))
    (tmp_path / "attributes.json").write_text(json.dumps({"a": {"weather": "rainy", "timeofday": "night"}}))
    (tmp_path / "a" / "ego.json").write_text(json.dumps({"speed_mps": [5.0, None, 7.0, 8.0],
                                                          "yaw_rate_rps": [0.0, 0.1, 0.2, 0.3]}))
    (tmp_path / "a" / "labels.json").write_text(json.dumps([{"frameIndex": 2, "labels": [
        {"category": "car", "box2d": {"x1": 500, "y1": 300, "x2": 700, "y2": 420}}]}]))
    return tmp_path


def test_a_folder_of_clips_gives_attributes_ego_motion_and_labels_in_the_model_view(folder):
    clips = open_clips(folder)
    assert isinstance(clips, FolderClips) and clips.clip_ids == ["a", "b"]
    a, b = clips.info("a"), clips.info("b")
    assert a.attributes == {"weather": "rainy", "timeofday": "night"} and a.num_frames == 4 and a.labelled_frames == [2]
    assert np.isnan(a.speed_mps[1]) and a.speed_mps[2] == 7.0  # null: unknown
    assert b.attributes == {} and np.isnan(b.speed_mps).all() and len(b.speed_mps) == 3
    window = clips.window("a", 1, 2)  # frames 1 and 2: the labelled frame is the window's second
    assert window.frames.shape == (2, 720, 1280, 3) and window.tokens is None
    assert window.labels == {1: [{"category": "car", "box2d": {"x1": 58.0, "y1": 98.0, "x2": 158.0, "y2": 158.0}}]}
    assert (window.camera_view["camera_width"], window.camera_view["left"]) == (1280, 192)


def test_a_token_store_gives_tokens_frames_labels_and_the_camera_view_it_was_cropped_from(frame_store):
    clips = open_clips(frame_store)
    assert isinstance(clips, StoreClips) and clips.has_frames
    clip_id = clips.clip_ids[0]
    info = clips.info(clip_id)
    window = clips.window(clip_id, 0, 2)
    assert window.tokens.shape == (2, 16, 16) and window.frames.shape == (2, 256, 256, 3)
    assert np.array_equal(window.speed_mps, info.speed_mps[:2], equal_nan=True)
    assert np.array_equal(clips.frames(clip_id, 2), window.frames)


def test_the_synthetic_world_labels_every_frame_of_its_clips():
    clips = SyntheticClips(num_clips=2, num_frames=3)
    info = clips.info("synthetic-001")
    assert info.labelled_frames == [0, 1, 2] and np.isfinite(info.speed_mps).all()
    assert set(clips.labels("synthetic-001")) == {0, 1, 2}
    assert clips.frames("synthetic-001").shape == (3, 256, 256, 3)


def test_bad_clip_sources_are_refused_with_what_to_pass(tmp_path):
    with pytest.raises(FileNotFoundError, match="no clips at"):
        open_clips(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no clips"):
        open_clips(tmp_path / "empty")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        open_clips(tmp_path / "file.txt")
    with pytest.raises(TypeError, match="ClipSource"):
        open_clips(42)
    with pytest.raises(ValueError, match="unknown clip id 'synthetic-9'.*did you mean"):
        SyntheticClips().info("synthetic-9")
    assert isinstance(open_clips(SyntheticClips()), ClipSource)
