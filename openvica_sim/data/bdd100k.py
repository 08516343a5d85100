"""BDD100K reader: videos, clip attributes and per-frame ego motion from the dataset's own layout.

    root/videos/{train,val,test}/<id>.mov                    30 fps, 1280x720
    root/labels/det_20/det_{train,val}.json                  per-image records, image "<id>.jpg"
    root/labels/bdd100k_labels_images_{train,val}.json       legacy name of the same records
    root/labels/box_track_20/{train,val}/<id>.json           tracking labels: frames at 5 fps, boxes with ids
    root/info/100k/{train,val}/<id>.json                     startTime, locations/gps (~1 Hz), gyro

Ego motion follows docs/design.md "BDD100K ego motion". T is the number of frame times asked for.
The Zarr ingest (issue 4, point 2) builds on `list_videos` and `read_ego_motion`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")
MIN_YAW_SPEED_MPS = 2.0  # docs/design.md: below about 2 m/s the phone's course is noise, so yaw rate is unknown
BDD_VAL_500_SEED = 0
VAL_500_SIZE = 500
# Where the per-image label records may lie, first match wins: det_20 (the 2020 release) before the legacy file,
# and both in root/labels/ or root/ because unpacked archives differ in nesting.
_LABEL_NAMES = ("det_{split}.json", "bdd100k_labels_images_{split}.json")
_LABEL_DIRS = ("labels/det_20", "labels", ".")

# BDD100K's ten detection classes (det_20), in its order: COCO category ids are 1 + the index.
DETECTION_CLASSES = ("pedestrian", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle", "traffic light",
                     "traffic sign")
# The other names its label files use, as BDD100K's own evaluation configs map them: the legacy file's names for
# the same classes ("name_mapping"), and det_20's three classes that are scored as "ignore" regions of a class
# ("ignored_mapping": a detection there is neither a hit nor a false positive; COCO's iscrowd).
CATEGORY_ALIASES = {"person": "pedestrian", "bike": "bicycle", "motor": "motorcycle", "van": "car", "caravan": "car"}
IGNORED_CATEGORIES = {"other person": "pedestrian", "other vehicle": "car", "trailer": "truck"}


def detection_class(category: str) -> tuple[str | None, bool]:
    """(the DETECTION_CLASSES name of a BDD100K label category, whether it is an ignore region); (None, False) for
    a name outside both vocabularies (e.g. the legacy file's "lane" or "drivable area", which carry no box)."""
    if category in DETECTION_CLASSES:
        return category, False
    if category in CATEGORY_ALIASES:
        return CATEGORY_ALIASES[category], False
    if category in IGNORED_CATEGORIES:
        return IGNORED_CATEGORIES[category], True
    return None, False


def detection_boxes(labels: list) -> list[dict]:
    """The boxes of a label record's `labels` in det_20's vocabulary: [{category, box2d[, ignored: True][, id]}] for
    each label with a box2d and a known category (either layout's names); the rest are dropped."""
    out = []
    for label in labels or []:
        if not (isinstance(label, dict) and isinstance(label.get("box2d"), dict) and label.get("category")):
            continue
        category, ignored = detection_class(str(label["category"]))
        if category is not None:
            out.append({"category": category, "box2d": label["box2d"], **({"ignored": True} if ignored else {}),
                        **({"id": str(label["id"])} if label.get("id") is not None else {})})
    return out


@dataclass
class BddVideo:
    """One BDD100K clip: its video, its info file (None when the dataset has none) and its attributes."""

    id: str
    split: str
    path: Path
    info_path: Path | None
    attributes: dict = field(default_factory=dict)  # {"weather", "scene", "timeofday"}, {} when unlabelled
    # the labelled frame's boxes [{category, box2d}] (camera pixels) and its time in the video, when labelled
    labels: list = field(default_factory=list)
    label_time_s: float | None = None
    track_path: Path | None = None  # its box_track_20 file (`read_track_labels`), when the video has one


@dataclass
class EgoMotion:
    """Per-frame ego motion; NaN where unknown. `status` says why everything may be NaN."""

    speed_mps: np.ndarray  # (T,) float32
    yaw_rate_rps: np.ndarray  # (T,) float32, positive turning right (clockwise seen from above, like course)
    status: str  # "ok" | "missing" (no info file) | "empty" (no location samples) | "invalid" (unreadable)


def list_videos(root: str | os.PathLike, split: str) -> list[BddVideo]:
    """The videos of `split` under `root`, sorted by id, with info paths and attributes from the labels file.

    Raises:
        ValueError: `split` is not one of train, val, test.
        FileNotFoundError: `root/videos/<split>` does not exist.
    """
    if split not in SPLITS:
        raise ValueError(f"split={split!r}: choose one of {list(SPLITS)}")
    root = Path(root)
    video_dir = root / "videos" / split
    if not video_dir.is_dir():
        raise FileNotFoundError(
            f"no BDD100K video folder {video_dir}; expected root/videos/{{train,val,test}}/<id>.mov with labels "
            f"in root/labels/det_20/det_{{train,val}}.json and ego motion in root/info/100k/{{train,val}}/<id>.json")
    records = _read_label_records(root, split)
    info_dir = root / "info" / "100k" / split
    videos = []
    for path in sorted(video_dir.iterdir()):
        if path.suffix.lower() != ".mov" or not path.is_file():
            continue
        info_path = info_dir / f"{path.stem}.json"
        record = records.get(path.stem, {})
        track_path = root / TRACK_DIR / split / f"{path.stem}.json"
        videos.append(BddVideo(path.stem, split, path, info_path if info_path.is_file() else None,
                               dict(record.get("attributes", {})), record.get("labels", []),
                               record.get("label_time_s"), track_path if track_path.is_file() else None))
    return sorted(videos, key=lambda v: v.id)


TRACK_DIR = "labels/box_track_20"
TRACK_FPS = 5.0  # BDD100K's tracking labels annotate the videos at 5 fps


def read_track_labels(path: str | os.PathLike) -> list[tuple[float, list[dict]]]:
    """A box_track_20 file as [(time in the video, s; `detection_boxes` with their track "id")], by time. Its frames
    are Scalabel records {"name", "videoName", "frameIndex", "labels"}, frameIndex counting 5 fps frames from 0.

    Raises:
        ValueError: the file is not JSON or not a list of frame records (named).
    """
    path = Path(path)
    try:
        frames = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"tracking labels {path} are not valid JSON ({e}); re-extract them from the BDD100K "
                         f"archive (bdd100k_box_track_20_labels_trainval.zip)") from e
    if not isinstance(frames, list):
        raise ValueError(f"tracking labels {path} hold a {type(frames).__name__}, expected a list of frame records")
    out = []
    for frame in frames:
        index = _number(frame.get("frameIndex")) if isinstance(frame, dict) else None
        if index is None:
            continue
        out.append((index / TRACK_FPS, detection_boxes(frame.get("labels"))))
    return sorted(out, key=lambda x: x[0])


def find_labels_file(root: str | os.PathLike, split: str) -> Path | None:
    """The first per-image labels file of `split` found under `root` (see _LABEL_DIRS), or None."""
    for name in _LABEL_NAMES:
        for folder in _LABEL_DIRS:
            path = Path(root) / folder / name.format(split=split)
            if path.is_file():
                return path
    return None


LABEL_TIME_S = 10.0  # BDD100K labels the frame "just after 10 seconds" (paper IV-A) when a record has no timestamp


def _read_label_records(root: Path, split: str) -> dict[str, dict]:
    """Video id -> {"attributes", "labels" (`detection_boxes`, camera pixels), "label_time_s"}; the image
    `<id>.jpg` is the labelled frame of the video `<id>.mov`. Records without attributes or boxes give empty ones."""
    path = find_labels_file(root, split)
    if path is None:
        return {}
    try:
        records = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"labels file {path} is not valid JSON ({e}); re-extract it from the BDD100K archive") from e
    if not isinstance(records, list):
        raise ValueError(f"labels file {path} holds a {type(records).__name__}, expected a list of image records")
    out = {}
    for record in records:
        if isinstance(record, dict) and isinstance(record.get("name"), str):
            attributes = record.get("attributes")
            boxes = detection_boxes(record.get("labels"))
            timestamp = _number(record.get("timestamp"))
            out[Path(record["name"]).stem] = {
                "attributes": attributes if isinstance(attributes, dict) else {}, "labels": boxes,
                "label_time_s": LABEL_TIME_S if timestamp is None else timestamp / 1000.0}
    return out


def read_ego_motion(info_path: str | os.PathLike | None, frame_times_s) -> EgoMotion:
    """Speed and yaw rate at `frame_times_s` (seconds from the video start) from a BDD100K info file.

    Frame time t maps to startTime + 1000 t ms. The ~1 Hz `locations` (or `gps`) samples, deduplicated by
    timestamp, give the velocity vector (v sin c, v cos c) (east, north), interpolated linearly in time; yaw
    rate is the time derivative of its angle, never an interpolated course, which wraps at 360. Speed is the
    linearly interpolated scalar speed, which equals |v| at the samples and, unlike |v|, does not sag in turns.
    Yaw rate is NaN where a segment end lacks a course (-1) or either end, or the frame, is below
    MIN_YAW_SPEED_MPS. Everything outside the samples' time range is NaN.

    The info's `gyro` is not used: its axes are the phone's, mounted at an unknown angle, so its z is not
    the vehicle's yaw rate.

    Never raises on a bad file; the status says "missing", "empty" or "invalid" and the arrays are all NaN.
    """
    t = np.asarray(frame_times_s, np.float64).reshape(-1)  # (T,)
    nan = np.full(t.shape, np.nan, np.float32)
    if info_path is None or not Path(info_path).is_file():
        return EgoMotion(nan, nan.copy(), "missing")
    try:
        text = Path(info_path).read_text()
    except (OSError, UnicodeDecodeError):
        return EgoMotion(nan, nan.copy(), "invalid")
    if not text.strip():
        return EgoMotion(nan, nan.copy(), "empty")
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        return EgoMotion(nan, nan.copy(), "invalid")
    if not isinstance(info, dict):
        return EgoMotion(nan, nan.copy(), "invalid")
    raw = info.get("locations") or info.get("gps")
    if not raw:
        return EgoMotion(nan, nan.copy(), "empty")
    start_ms = _number(info.get("startTime"))
    samples = _samples(raw) if isinstance(raw, list) else None
    if start_ms is None or samples is None:
        return EgoMotion(nan, nan.copy(), "invalid")
    sample_t = (samples[0] - start_ms) / 1000.0  # (S,) seconds from the video start
    speed, yaw_rate = _interpolate(sample_t, samples[1], samples[2], t)
    return EgoMotion(speed.astype(np.float32), yaw_rate.astype(np.float32), "ok")


def _number(value) -> float | None:
    """`value` as a finite float, or None (bools and strings are not numbers here)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _samples(raw: list) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(timestamp ms, speed m/s, course degrees or NaN), sorted by time, first sample per timestamp kept.

    Samples without a timestamp or a non-negative speed are dropped; None when none is left.
    """
    seen = {}
    for sample in raw:
        if not isinstance(sample, dict):
            continue
        ts, speed, course = (_number(sample.get(k)) for k in ("timestamp", "speed", "course"))
        if ts is None or speed is None or speed < 0 or ts in seen:
            continue
        seen[ts] = (speed, course if course is not None and 0.0 <= course <= 360.0 else math.nan)
    if not seen:
        return None
    ts = np.array(sorted(seen), np.float64)
    values = np.array([seen[k] for k in ts], np.float64)  # (S, 2)
    return ts, values[:, 0], values[:, 1]


def _interpolate(sample_t, speed, course_deg, t) -> tuple[np.ndarray, np.ndarray]:
    """Speed and yaw rate at `t` from samples at `sample_t` (sorted, distinct), NaN outside their range."""
    out_speed = np.full(t.shape, np.nan)
    out_yaw = np.full(t.shape, np.nan)
    if len(sample_t) == 1:  # a single instant is covered
        at = t == sample_t[0]
        out_speed[at] = speed[0]
        return out_speed, out_yaw
    inside = (t >= sample_t[0]) & (t <= sample_t[-1])
    tt = t[inside]
    i = np.clip(np.searchsorted(sample_t, tt, side="right") - 1, 0, len(sample_t) - 2)  # segment [i, i + 1]
    dt = sample_t[i + 1] - sample_t[i]
    w = (tt - sample_t[i]) / dt  # in [0, 1]
    course = np.radians(course_deg)
    east, north = speed * np.sin(course), speed * np.cos(course)  # NaN where the course is missing
    e = east[i] + w * (east[i + 1] - east[i])
    n = north[i] + w * (north[i + 1] - north[i])
    # speed is the interpolated scalar, not |(e, n)|: the chord of a turning vector is shorter by
    # 1 - cos(turn / 2) mid-segment (0.5 % at 0.2 rad/s, 29 % for a 90 degree turn within a second), and a
    # sample without a course still has a speed
    seg_speed = speed[i] + w * (speed[i + 1] - speed[i])
    # d/dt atan2(e, n) = (n e' - e n') / (e^2 + n^2): the exact derivative of the interpolated vector's
    # angle, which is the unwrapped heading's rate, so 359 -> 1 degrees turns right by 2 degrees
    de, dn = (east[i + 1] - east[i]) / dt, (north[i + 1] - north[i]) / dt
    with np.errstate(invalid="ignore", divide="ignore"):
        yaw = (n * de - e * dn) / (e * e + n * n)
    slow = (np.minimum(speed[i], speed[i + 1]) < MIN_YAW_SPEED_MPS) | ~(seg_speed >= MIN_YAW_SPEED_MPS)
    out_speed[inside] = seg_speed
    out_yaw[inside] = np.where(slow, np.nan, yaw)
    return out_speed, out_yaw


def val_500(ids) -> list[str]:
    """A fixed choice of 500 validation ids: the sorted distinct ids, numpy default_rng(BDD_VAL_500_SEED)
    choosing 500 positions without replacement, returned sorted; all ids (sorted) when there are fewer.

    The choice depends only on the set of ids, so every machine evaluating on the full 10,000-clip val split
    gets the same 500 clips.
    """
    ids = sorted(set(ids))
    if len(ids) <= VAL_500_SIZE:
        return ids
    picks = np.random.default_rng(BDD_VAL_500_SEED).choice(len(ids), VAL_500_SIZE, replace=False)
    return sorted(ids[k] for k in picks)
