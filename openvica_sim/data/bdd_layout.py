"""Synthetic drives written in BDD100K's folder layout, so the BDD100K readers can be tested without it.

    root/videos/{split}/<id>.mov                 30 fps, 1280x720 H.264
    root/labels/det_20/det_{split}.json          one labelled frame per video, image "<id>.jpg"
    root/labels/box_track_20/{split}/<id>.json   tracking labels: every car's box with its id, at 5 fps
    root/info/100k/{split}/<id>.json             startTime, endTime, locations and gyro at about 1 Hz

`corrupt` videos are random bytes and `without_info` videos have no info file, as in the real data.
Ego motion follows docs/design.md "BDD100K ego motion": speed in m/s, course in degrees clockwise from
north, -1 below 0.5 m/s.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..video_io import write_video
from .bdd100k import TRACK_DIR, TRACK_FPS
from .synthetic import drive_track, random_drive, render_drive

FPS = 30
HEIGHT, WIDTH = 720, 1280
LABEL_TIME_S = 10.0  # BDD100K labels the frame at 10 s
EARTH_RADIUS_M = 6_371_000.0
START_EPOCH_MS = 1_500_000_000_000  # mid-2017, when BDD100K was recorded


def write_bdd100k(root: str | os.PathLike, split: str = "train", num_videos: int = 3, seconds: float = 3.0,
                  seed: int = 0, corrupt: int = 0, without_info: int = 0, progress: bool = False) -> dict:
    """Write `num_videos` synthetic drives under `root`; return {"ids", "corrupt", "without_info", "drives"}.

    The last `corrupt` videos are random bytes (no label), the `without_info` before them lack the info file.
    Video i depends on (seed, i) only, so a larger `num_videos` extends a tree without changing its first videos.
    """
    if corrupt + without_info > num_videos:
        raise ValueError(f"corrupt={corrupt} + without_info={without_info} exceed num_videos={num_videos}")
    root = Path(root)
    video_dir, info_dir = root / "videos" / split, root / "info" / "100k" / split
    label_path = root / "labels" / "det_20" / f"det_{split}.json"
    track_dir = root / TRACK_DIR / split
    for folder in (video_dir, info_dir, label_path.parent, track_dir):
        folder.mkdir(parents=True, exist_ok=True)
    num_frames = max(1, int(round(seconds * FPS)))
    ids = [f"synth-{i:04d}-{hashlib.sha1(f'{seed}-{i}'.encode()).hexdigest()[:8]}" for i in range(num_videos)]
    broken = ids[num_videos - corrupt:] if corrupt else []
    no_info = ids[num_videos - corrupt - without_info:num_videos - corrupt] if without_info else []
    labels, drives = [], {}
    for i, video_id in _progress(list(enumerate(ids)), progress):
        rng = np.random.default_rng([seed, i])
        if video_id in broken:
            (video_dir / f"{video_id}.mov").write_bytes(rng.bytes(4096))
            continue
        drive = drives[video_id] = random_drive(rng)
        render_seed = int(rng.integers(2**31))
        clip = render_drive(drive, num_frames, fps=FPS, height=HEIGHT, width=WIDTH, rng_seed=render_seed)
        # write_video always muxes MP4 (ISO BMFF), which QuickTime/.mov readers and FFmpeg's probe accept
        write_video(video_dir / f"{video_id}.mov", clip.frames, fps=FPS)
        # the frame at 10 s, or in a shorter clip the last one on a 0.5 s step (a frame every 4 fps ingest keeps)
        labelled = min(int(LABEL_TIME_S * FPS), (num_frames - 1) // (FPS // 2) * (FPS // 2))
        labels.append({"name": f"{video_id}.jpg", "attributes": clip.attributes,
                       "timestamp": int(round(1000 * labelled / FPS)),
                       "labels": [{"id": str(b["id"]), "category": b["category"], "box2d": b["box2d"]}
                                  for b in clip.boxes[labelled]]})
        step = int(round(FPS / TRACK_FPS))  # the tracking labels' 5 fps: every 6th video frame
        (track_dir / f"{video_id}.json").write_text(json.dumps([
            {"name": f"{video_id}-{k // step + 1:07d}.jpg", "videoName": video_id, "frameIndex": k // step,
             "labels": [{"id": str(b["id"]), "category": b["category"], "box2d": b["box2d"]} for b in clip.boxes[k]]}
            for k in range(0, num_frames, step)]))
        if video_id not in no_info:
            start_ms = START_EPOCH_MS + 3_600_000 * (seed * num_videos + i)
            # the GPS log runs to the end of the last frame step: one 30 fps step longer than the frames
            info = _info(drive_track(drive, num_frames + 1, FPS, render_seed), seconds, start_ms, rng)
            (info_dir / f"{video_id}.json").write_text(json.dumps(info))
    label_path.write_text(json.dumps(labels))
    return {"ids": ids, "corrupt": broken, "without_info": no_info, "drives": drives}


def _info(track, seconds: float, start_ms: int, rng: np.random.Generator) -> dict:
    """BDD100K's info JSON of an ego track at the video's 30 fps: positions integrated from its motion, sampled at
    1 Hz with the speed and yaw rate of that instant (as a GPS receiver reports them)."""
    dt = 1.0 / FPS
    t = np.arange(len(track.speed_mps)) * dt  # (S,) the video's frame times
    speed, yaw_rate = track.speed_now_mps, track.yaw_rate_now_rps
    heading = float(rng.uniform(0, 2 * np.pi)) + np.concatenate([[0.0], np.cumsum(track.yaw_rate_rps[1:] * dt)])
    moved = track.speed_mps[1:] * dt  # metres each frame step (the mean speed over it)
    north = np.concatenate([[0.0], np.cumsum(moved * np.cos(heading[:-1]))])
    east = np.concatenate([[0.0], np.cumsum(moved * np.sin(heading[:-1]))])
    lat0, lon0 = 37.77 + float(rng.uniform(-0.1, 0.1)), -122.42 + float(rng.uniform(-0.1, 0.1))
    lat = lat0 + np.degrees(north / EARTH_RADIUS_M)
    lon = lon0 + np.degrees(east / (EARTH_RADIUS_M * np.cos(np.radians(lat0))))
    locations, gyro = [], []
    for s in range(int(np.floor(seconds)) + 1):
        k = min(int(round(s * FPS)), len(t) - 1)
        timestamp = start_ms + int(round(1000 * t[k]))
        course = float(np.degrees(heading[k]) % 360.0) if speed[k] >= 0.5 else -1.0
        locations.append({"timestamp": timestamp, "latitude": float(lat[k]), "longitude": float(lon[k]),
                          "speed": float(speed[k]), "course": course})
        gyro.append({"timestamp": timestamp, "x": 0.0, "y": 0.0, "z": float(yaw_rate[k])})
    return {"startTime": start_ms, "endTime": start_ms + int(round(1000 * seconds)),
            "locations": locations, "gyro": gyro}


def _progress(items, enabled: bool):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="synthetic BDD100K", unit="video")
