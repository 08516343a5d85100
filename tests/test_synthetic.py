"""The synthetic driving world: determinism, boxes, motion, weather, ego motion and the BDD100K layout."""

import json

import numpy as np
import pytest

from openvica_sim.data.bdd_layout import FPS, write_bdd100k
from openvica_sim.data.synthetic import Drive, render_clip, render_drive
from openvica_sim.video_io import VideoDecodeError, read_video, write_contact_sheet


def test_deterministic_and_render_clip_agrees():
    drive = Drive(speed_mps=14.0, yaw_rate_rps=0.05, weather="rain", num_cars=4)
    a, b = render_drive(drive, 3, rng_seed=7), render_drive(drive, 3, rng_seed=7)
    np.testing.assert_array_equal(a.frames, b.frames)
    assert a.boxes == b.boxes
    assert not np.array_equal(a.frames, render_drive(drive, 3, rng_seed=8).frames)
    frames = render_clip(drive, 3, height=64, width=96)
    assert frames.shape == (3, 64, 96, 3) and frames.dtype == np.uint8


def test_boxes_inside_frame_and_nearer_cars_larger():
    clip = render_drive(Drive(num_cars=6), 4, height=128, width=160, rng_seed=3)
    assert any(clip.boxes)
    for frame_boxes in clip.boxes:
        for box in frame_boxes:
            b = box["box2d"]
            assert box["category"] == "car" and isinstance(box["id"], int)
            assert 0 <= b["x1"] < b["x2"] <= 159 and 0 <= b["y1"] < b["y2"] <= 127
        # nearer cars stand lower in the image (their ground line is further below the horizon) and are taller
        by_bottom = sorted(frame_boxes, key=lambda box: box["box2d"]["y2"])
        heights = [box["box2d"]["y2"] - box["box2d"]["y1"] for box in by_bottom if box["box2d"]["y2"] < 127]
        assert heights == sorted(heights)


def test_dashes_move_with_speed():
    road = slice(80, 128)  # rows well below the horizon (57)
    moving = render_drive(Drive(speed_mps=10.0, num_cars=0), 2, height=128, width=128).frames
    parked = render_drive(Drive(speed_mps=0.0, num_cars=0), 2, height=128, width=128).frames
    assert np.abs(moving[1, road].astype(int) - moving[0, road]).sum() > 0
    np.testing.assert_array_equal(parked[1], parked[0])


def test_weather_and_time_of_day():
    def frame(**kwargs):
        return render_drive(Drive(num_cars=2, **kwargs), 1, height=96, width=128).frames[0].astype(np.float32)

    day, night, fog, rain, snow = (frame(), frame(timeofday="night"), frame(weather="fog"), frame(weather="rain"),
                                   frame(weather="snow"))
    assert night.mean() < 0.5 * day.mean()
    assert fog.std() < 0.85 * day.std()
    assert rain.mean() < day.mean() and snow.mean() > day.mean()
    attributes = render_drive(Drive(weather="fog", timeofday="dusk"), 1, height=32, width=32).attributes
    assert attributes == {"weather": "foggy", "timeofday": "dawn/dusk", "scene": "highway"}
    with pytest.raises(ValueError, match="weather"):
        render_drive(Drive(weather="hail"), 1)


def test_ego_motion_ground_truth_is_the_mean_motion_over_each_frame_step():
    clip = render_drive(Drive(speed_mps=3.0, yaw_rate_rps=0.06, accel_mps2=-2.0), 5, fps=2.0, height=32, width=32)
    # frame 0 the start; then the mean speed over (t - 0.5 s, t]: 2.5, 1.5, 0.5, 0 (to the 1/40 s integration step)
    np.testing.assert_allclose(clip.speed_mps, [3.0, 2.5, 1.5, 0.5, 0.0], atol=0.03)
    np.testing.assert_allclose(clip.yaw_rate_rps, 0.02 * clip.speed_mps, rtol=1e-5, atol=1e-9)  # curvature 0.06/3
    np.testing.assert_allclose(clip.lateral_m, 0.0, atol=1e-9)  # a lane keeper on the legacy road stays centred


def test_hd_frame_and_contact_sheet(tmp_path):
    clip = render_drive(Drive(num_cars=3, weather="snow"), 1, height=720, width=1280)
    assert clip.frames.shape == (1, 720, 1280, 3)
    variants = [render_drive(Drive(yaw_rate_rps=0.04, timeofday=tod, weather=weather, num_cars=4), 3, fps=2.0,
                             rng_seed=1).frames
                for tod, weather in [("day", "clear"), ("dusk", "rain"), ("day", "fog"), ("night", "snow")]]
    sheet = write_contact_sheet(tmp_path / "variants.png", variants, labels=["clear", "rain", "fog", "night snow"])
    assert sheet.stat().st_size > 0


def test_bdd100k_layout(tmp_path):
    manifest = write_bdd100k(tmp_path, split="val", num_videos=3, seconds=1.0, seed=1, corrupt=1, without_info=1)
    ids = manifest["ids"]
    assert len(ids) == 3 and all(i.startswith(f"synth-{n:04d}-") for n, i in enumerate(ids))
    assert manifest["corrupt"] == [ids[2]] and manifest["without_info"] == [ids[1]]
    frames = read_video(tmp_path / "videos" / "val" / f"{ids[0]}.mov", fps=4)
    assert frames.shape[1:] == (720, 1280, 3) and 4 <= len(frames) <= 5
    with pytest.raises(VideoDecodeError):
        read_video(tmp_path / "videos" / "val" / f"{ids[2]}.mov", fps=4)
    labels = json.loads((tmp_path / "labels" / "det_20" / "det_val.json").read_text())
    assert [entry["name"] for entry in labels] == [f"{ids[0]}.jpg", f"{ids[1]}.jpg"]
    for entry in labels:
        assert set(entry) >= {"name", "attributes", "timestamp", "labels"}
        assert set(entry["attributes"]) == {"weather", "timeofday", "scene"}
        for label in entry["labels"]:
            assert set(label) >= {"id", "category", "box2d"} and set(label["box2d"]) == {"x1", "y1", "x2", "y2"}
    assert not (tmp_path / "info" / "100k" / "val" / f"{ids[1]}.json").exists()
    info = json.loads((tmp_path / "info" / "100k" / "val" / f"{ids[0]}.json").read_text())
    assert info["endTime"] - info["startTime"] == 1000
    stamps = [loc["timestamp"] for loc in info["locations"]]
    assert stamps == sorted(set(stamps)) and stamps[0] == info["startTime"] and len(info["gyro"]) == len(stamps)
    drive = manifest["drives"][ids[0]]
    speeds = drive.speed_at((np.array(stamps) - info["startTime"]) / 1000)
    # the info file follows the rendered ego: its speed at each sample's instant
    np.testing.assert_allclose([loc["speed"] for loc in info["locations"]], speeds, atol=1e-6)
    lat, lon = (np.radians([loc[k] for loc in info["locations"]]) for k in ("latitude", "longitude"))
    step_m = 6_371_000 * np.hypot(np.diff(lat), np.diff(lon) * np.cos(lat[0]))  # metres driven each second
    np.testing.assert_allclose(step_m, drive.distance_at(1.0), rtol=0.05, atol=0.1)
    for loc in info["locations"]:
        assert loc["course"] == -1 if loc["speed"] < 0.5 else 0 <= loc["course"] < 360
    assert FPS == 30


def test_commands_steer_the_ego_and_show_in_the_frames():
    from openvica_sim.data.synthetic import render_commands

    drive = Drive(speed_mps=12.0, num_cars=0)
    straight = render_commands(drive, [12.0] * 6, [0.0] * 6, height=64, width=64)
    left = render_commands(drive, [12.0] * 6, [-0.3] * 6, height=64, width=64)
    brake = render_commands(drive, list(np.maximum(12 - 6 * np.arange(1, 9) / 4, 0)), [0.0] * 8, height=64, width=64)
    assert len(straight.frames) == 7 and np.allclose(left.yaw_rate_rps[1:], -0.3)
    assert np.all(np.diff(left.lateral_m) < 0) and np.all(left.heading_rad[1:] < 0)  # left: + is right
    np.testing.assert_allclose(straight.lateral_m, 0.0, atol=1e-9)
    np.testing.assert_allclose(brake.speed_mps, [12, 10.5, 9, 7.5, 6, 4.5, 3, 1.5, 0])  # frame k: command k - 1
    flow = lambda a, b: np.abs(a.astype(int) - b).mean()  # noqa: E731 -- how much the picture moves
    assert flow(brake.frames[-1], brake.frames[-2]) < 0.5 * flow(brake.frames[1], brake.frames[0])  # braking
    assert np.abs(left.frames[-1].astype(int) - straight.frames[-1]).mean() > 10  # the road has turned away


def test_a_commanded_drive_changes_lane_speed_and_heading_over_its_seconds():
    from openvica_sim.data.synthetic import random_commanded_drive

    rng = np.random.default_rng(3)
    clip = render_drive(random_commanded_drive(rng, seconds=10), 40, height=32, width=32)
    assert clip.speed_mps.max() - clip.speed_mps.min() > 3  # new target speeds
    assert np.abs(np.diff(clip.lateral_m)).max() > 0.2  # a lane change
    assert np.all(np.abs(clip.lateral_m) < 1.5 * 3.6 + 1.0)  # but it stays on the road


def test_piecewise_commands_brake_start_and_turn_off_the_bend_and_show_on_the_next_frame():
    """The open-loop command programs of `--world piecewise`: speed changes within the driver's limits, turns of up to
    0.3 rad/s against the road's bend, and a rendered drive whose frame k + 1 has command k as its ground truth."""
    from openvica_sim.data.synthetic import random_commanded_drive, random_piecewise_commands, render_commands

    turns, accels, offsets = [], [], []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        drive = random_commanded_drive(rng, seconds=10)
        speed, yaw = random_piecewise_commands(rng, drive, 39)
        assert speed.shape == yaw.shape == (39,) and np.all((speed >= 0) & (speed <= 30))
        clip = render_commands(drive, speed, yaw, height=32, width=32)
        np.testing.assert_allclose(clip.speed_mps[1:], speed, atol=1e-4)  # frame k + 1: command k
        np.testing.assert_allclose(clip.yaw_rate_rps[1:], yaw, atol=1e-4)
        turns.append(yaw - drive.curvature_at(clip.track.s_m[:-1]) * speed)  # yaw rate off the road's bend
        accels.append(np.diff(speed) * 4)
        offsets.append(np.abs(clip.lateral_m).max())
    turns, accels = np.concatenate(turns), np.concatenate(accels)
    # the bend is read where the commands expect the ego to be: all but a few steps across a change of bend
    assert np.mean(np.abs(turns) <= 0.3 + 1e-6) > 0.95 and (turns < -0.04).any() and (turns > 0.04).any()
    assert accels.min() >= -6.0 - 1e-6 and accels.max() <= 2.5 + 1e-6 and accels.min() < -1 and accels.max() > 0.5
    assert max(offsets) < 20  # turns head back toward the road before the ego is far off it
