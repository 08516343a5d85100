"""The BDD100K reader: listing videos with attributes, ego motion from info files, the fixed val subset."""

import json
import shutil

import numpy as np
import pytest

from openvica_sim.data import bdd_layout
from openvica_sim.data.bdd100k import BDD_VAL_500_SEED, list_videos, read_ego_motion, val_500
from openvica_sim.data.bdd_layout import FPS, write_bdd100k

START_MS = 1_500_000_000_000


@pytest.fixture(scope="module")
def bdd_tree(tmp_path_factory):
    """Six val drives of 6 s (one corrupt, one without info) at 72x128: the reader never decodes frames,
    so a small frame size keeps the suite fast while the layout and info files stay those of write_bdd100k."""
    root = tmp_path_factory.mktemp("bdd")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bdd_layout, "HEIGHT", 72)
        mp.setattr(bdd_layout, "WIDTH", 128)
        manifest = write_bdd100k(root, "val", num_videos=6, seconds=6.0, seed=3, corrupt=1, without_info=1)
    return root, manifest


def _info(tmp_path, locations, name="info.json", **extra):
    path = tmp_path / name
    path.write_text(json.dumps({"startTime": START_MS, "endTime": START_MS + 40_000, "locations": locations, **extra}))
    return path


def _loc(second, speed, course):
    return {"timestamp": START_MS + int(1000 * second), "latitude": 37.0, "longitude": -122.0,
            "speed": speed, "course": course}


def test_list_videos_finds_all_videos_sorted_with_det20_attributes_and_info_paths(bdd_tree):
    root, manifest = bdd_tree
    videos = list_videos(root, "val")
    assert [v.id for v in videos] == sorted(manifest["ids"])
    labels = {e["name"]: e["attributes"] for e in json.loads((root / "labels/det_20/det_val.json").read_text())}
    for v in videos:
        assert v.split == "val" and v.path == root / "videos" / "val" / f"{v.id}.mov"
        assert v.attributes == labels.get(f"{v.id}.jpg", {})  # the corrupt video has no label -> {}
        has_info = v.id not in manifest["without_info"] + manifest["corrupt"]
        assert (v.info_path == root / "info/100k/val" / f"{v.id}.json") if has_info else v.info_path is None
    assert [v.attributes for v in videos if v.id in manifest["corrupt"]] == [{}]
    assert all(set(v.attributes) == {"weather", "scene", "timeofday"}
               for v in videos if v.id not in manifest["corrupt"])


def test_list_videos_reads_attributes_from_legacy_labels_file(tmp_path):
    (tmp_path / "videos" / "train").mkdir(parents=True)
    for vid in ("b2", "a1"):
        (tmp_path / "videos" / "train" / f"{vid}.mov").write_bytes(b"")
    records = [{"name": "a1.jpg", "attributes": {"weather": "rainy", "scene": "city street", "timeofday": "night"},
                "timestamp": 10000, "labels": []}]
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "bdd100k_labels_images_train.json").write_text(json.dumps(records))
    videos = list_videos(tmp_path, "train")
    assert [v.id for v in videos] == ["a1", "b2"]
    assert videos[0].attributes == records[0]["attributes"] and videos[1].attributes == {}
    assert all(v.info_path is None for v in videos)
    # the legacy file at the root works too
    shutil.move(tmp_path / "labels" / "bdd100k_labels_images_train.json", tmp_path)
    assert list_videos(tmp_path, "train")[0].attributes == records[0]["attributes"]


ALL_CATEGORIES = {  # every box category of both layouts -> (det_20 class, ignore region)
    "pedestrian": ("pedestrian", False), "rider": ("rider", False), "car": ("car", False), "truck": ("truck", False),
    "bus": ("bus", False), "train": ("train", False), "motorcycle": ("motorcycle", False),
    "bicycle": ("bicycle", False), "traffic light": ("traffic light", False), "traffic sign": ("traffic sign", False),
    "other person": ("pedestrian", True), "other vehicle": ("car", True), "trailer": ("truck", True),  # det_20
    "person": ("pedestrian", False), "bike": ("bicycle", False), "motor": ("motorcycle", False),  # legacy file
}


@pytest.mark.parametrize("labels_file", ["labels/det_20/det_train.json", "labels/bdd100k_labels_images_train.json"])
def test_boxes_of_every_bdd100k_category_map_to_the_ten_classes_with_ignore_regions(tmp_path, labels_file):
    (tmp_path / "videos" / "train").mkdir(parents=True)
    (tmp_path / "videos" / "train" / "a1.mov").write_bytes(b"")
    box = {"x1": 1.0, "y1": 2.0, "x2": 30.0, "y2": 40.0}
    labels = [{"category": c, "box2d": box} for c in ALL_CATEGORIES]
    labels += [{"category": "drivable area", "poly2d": []}, {"category": "lane", "poly2d": []},  # legacy, no box
               {"category": "unknown thing", "box2d": box}]
    (tmp_path / labels_file).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / labels_file).write_text(json.dumps([{"name": "a1.jpg", "attributes": {}, "labels": labels}]))
    boxes = list_videos(tmp_path, "train")[0].labels
    assert [(b["category"], b.get("ignored", False)) for b in boxes] == list(ALL_CATEGORIES.values())
    assert all(b["box2d"] == box for b in boxes)


def test_tracking_labels_are_found_per_video_and_read_at_5_fps_in_det_20s_classes(tmp_path):
    from openvica_sim.data.bdd100k import read_track_labels

    (tmp_path / "videos" / "val").mkdir(parents=True)
    for vid in ("a1", "b2"):
        (tmp_path / "videos" / "val" / f"{vid}.mov").write_bytes(b"")
    track_dir = tmp_path / "labels" / "box_track_20" / "val"
    track_dir.mkdir(parents=True)
    box = {"x1": 1.0, "y1": 2.0, "x2": 30.0, "y2": 40.0}
    (track_dir / "a1.json").write_text(json.dumps([
        {"name": f"a1-{k + 1:07d}.jpg", "videoName": "a1", "frameIndex": k,
         "labels": [{"id": "7", "category": "pedestrian", "box2d": box}, {"id": "8", "category": "trailer", "box2d": box}]}
        for k in (2, 0, 1)]))
    a1, b2 = list_videos(tmp_path, "val")
    assert a1.track_path == track_dir / "a1.json" and b2.track_path is None
    track = read_track_labels(a1.track_path)
    assert [t for t, _ in track] == [0.0, 0.2, 0.4]  # by time, frameIndex / 5
    assert track[0][1] == [{"category": "pedestrian", "box2d": box, "id": "7"},
                           {"category": "truck", "box2d": box, "ignored": True, "id": "8"}]
    (track_dir / "b2.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"b2\.json.*not valid JSON"):
        read_track_labels(track_dir / "b2.json")


def test_list_videos_without_videos_folder_raises_naming_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "videos" / "val")):
        list_videos(tmp_path, "val")


def test_list_videos_rejects_unknown_split_and_lists_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="'train', 'val', 'test'"):
        list_videos(tmp_path, "validation")


def test_speed_and_yaw_rate_match_the_synthetic_drives(bdd_tree):
    root, manifest = bdd_tree
    t = np.arange(int(6.0 * FPS) + 1) / FPS  # (T,) every frame, 30 fps
    checked = 0
    for v in list_videos(root, "val"):
        ego = read_ego_motion(v.info_path, t)
        if v.info_path is None:
            assert ego.status == "missing" and np.isnan(ego.speed_mps).all()
            continue
        drive = manifest["drives"][v.id]
        assert ego.status == "ok" and ego.speed_mps.dtype == ego.yaw_rate_rps.dtype == np.float32
        speed, yaw_rate = drive.speed_at(t), drive.curvature * drive.speed_at(t)
        # linear interpolation of a speed with constant acceleration is exact (float32 and the info's ms rounding)
        # except in the 1 s segment where braking stops the car: there the error stays below |accel| * 1 s
        moving = speed > abs(drive.accel_mps2)
        np.testing.assert_allclose(ego.speed_mps[moving], speed[moving], rtol=1e-5, atol=1e-4)
        assert np.all(np.abs(ego.speed_mps - speed) <= abs(drive.accel_mps2) + 1e-4)
        fast = speed >= 2.0
        known = np.isfinite(ego.yaw_rate_rps)
        assert not np.any(known & ~fast)
        # both samples around a frame at 2 m/s + |accel| * 1 s are at 2 m/s or more, so its yaw rate is known
        assert known[speed >= 2.0 + abs(drive.accel_mps2)].all()
        # the angle of a linearly interpolated vector turns faster at the slower end: with speeds v0, v1 one
        # second apart its rate lies between yaw_rate * v0/v1 and * v1/v0; |accel| <= 1 m/s^2 and v >= 2 m/s
        bound = np.abs(yaw_rate) * 1.0 / np.maximum(speed - 1.0, 1.0) + 1e-3
        assert np.all(np.abs(ego.yaw_rate_rps[known] - yaw_rate[known]) <= bound[known])
        # the mean over the clip is right to within 2 %: the interpolation errors cancel across each second
        np.testing.assert_allclose(ego.yaw_rate_rps[known].mean(), yaw_rate[known].mean(), rtol=0.02, atol=1e-3)
        checked += known.sum()
    assert checked > 400  # most of the four drives' 181 frames


def test_course_wrapping_from_359_to_1_degree_is_a_small_right_turn(tmp_path):
    path = _info(tmp_path, [_loc(0, 10.0, 359.0), _loc(1, 10.0, 1.0), _loc(2, 10.0, 3.0)])
    ego = read_ego_motion(path, [0.0, 0.5, 1.0, 1.5, 2.0])
    # 2 degrees per second; the interpolated vector is shorter mid-segment, so its angle turns up to
    # 1 / cos(1 degree) ~ 1.0002 times faster there (tolerance 1e-3 relative)
    np.testing.assert_allclose(ego.yaw_rate_rps, np.radians(2.0), rtol=1e-3)
    np.testing.assert_allclose(ego.speed_mps, 10.0, rtol=1e-3)
    left = read_ego_motion(_info(tmp_path, [_loc(0, 10.0, 1.0), _loc(1, 10.0, 359.0)], "left.json"), [0.5])
    np.testing.assert_allclose(left.yaw_rate_rps, -np.radians(2.0), rtol=1e-3)


def test_frame_times_are_offset_by_start_time_and_repeated_samples_are_deduplicated(tmp_path):
    # the first location comes 1 s after startTime, the second is repeated (BDD often repeats samples)
    path = _info(tmp_path, [_loc(1, 4.0, 90.0), _loc(2, 8.0, 90.0), _loc(2, 8.0, 90.0), _loc(3, 12.0, 90.0)])
    ego = read_ego_motion(path, [0.5, 1.0, 1.5, 2.5, 3.0, 3.5])
    np.testing.assert_allclose(ego.speed_mps, [np.nan, 4.0, 6.0, 10.0, 12.0, np.nan], rtol=1e-6)
    np.testing.assert_allclose(ego.yaw_rate_rps, [np.nan, 0.0, 0.0, 0.0, 0.0, np.nan], atol=1e-7)


def test_missing_course_gives_nan_yaw_rate_but_keeps_speed(tmp_path):
    path = _info(tmp_path, [_loc(0, 10.0, 0.0), _loc(1, 12.0, -1), _loc(2, 14.0, 10.0), _loc(3, 14.0, 20.0)])
    ego = read_ego_motion(path, [0.5, 1.5, 2.5])
    np.testing.assert_allclose(ego.speed_mps, [11.0, 13.0, 14.0], rtol=1e-3)
    assert np.isnan(ego.yaw_rate_rps[:2]).all() and np.isfinite(ego.yaw_rate_rps[2])


def test_slow_speeds_give_nan_yaw_rate(tmp_path):
    path = _info(tmp_path, [_loc(0, 0.3, -1), _loc(1, 1.5, 45.0), _loc(2, 1.9, 50.0), _loc(3, 6.0, 60.0),
                            _loc(4, 8.0, 70.0)])
    ego = read_ego_motion(path, [0.5, 1.5, 2.5, 3.5])
    np.testing.assert_allclose(ego.speed_mps[:2], [0.9, 1.7], rtol=1e-3)
    assert np.isnan(ego.yaw_rate_rps[:3]).all()  # the 2 -> 3 s segment starts below 2 m/s
    assert np.isfinite(ego.yaw_rate_rps[3]) and ego.yaw_rate_rps[3] > 0


@pytest.mark.parametrize("content, status", [
    (None, "missing"),
    ("", "empty"),
    ("{}", "empty"),
    (json.dumps({"startTime": START_MS, "locations": []}), "empty"),
    ("not json {", "invalid"),
    ("[1, 2]", "invalid"),
    (json.dumps({"locations": [{"timestamp": START_MS, "speed": 3.0, "course": 0.0}]}), "invalid"),
    (json.dumps({"startTime": START_MS, "gps": [{"speed": "fast"}, 7]}), "invalid"),
])
def test_missing_empty_or_garbage_info_gives_nan_and_says_why(tmp_path, content, status):
    path = tmp_path / "info.json"
    if content is not None:
        path.write_text(content)
    ego = read_ego_motion(path if content is not None else None, np.arange(5) / FPS)
    assert ego.status == status
    assert ego.speed_mps.shape == ego.yaw_rate_rps.shape == (5,)
    assert np.isnan(ego.speed_mps).all() and np.isnan(ego.yaw_rate_rps).all()


def test_gps_key_is_read_when_locations_is_absent(tmp_path):
    path = tmp_path / "info.json"
    path.write_text(json.dumps({"startTime": START_MS, "gps": [_loc(0, 5.0, 0.0), _loc(1, 7.0, 0.0)]}))
    ego = read_ego_motion(path, [0.5])
    assert ego.status == "ok" and ego.speed_mps[0] == pytest.approx(6.0)


def test_val_500_is_reproducible_sorted_and_of_size_500():
    ids = [f"v{k:05d}" for k in range(10_000)]
    chosen = val_500(ids)
    assert BDD_VAL_500_SEED == 0
    assert len(chosen) == len(set(chosen)) == 500 and chosen == sorted(chosen) and set(chosen) <= set(ids)
    assert val_500(list(reversed(ids))) == chosen  # independent of the input order
    expected = sorted(np.array(ids)[np.random.default_rng(0).choice(10_000, 500, replace=False)].tolist())
    assert chosen == expected


def test_val_500_returns_all_ids_sorted_when_fewer_than_500():
    assert val_500(["c", "a", "b"]) == ["a", "b", "c"]
