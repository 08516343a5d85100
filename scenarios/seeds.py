"""Seed clips of a scenario: a token store or a folder of clips, and the spec's seed query over them.

    store.zarr/                   `openvica data ingest`: tokens, ego motion, attributes, the labelled frame's boxes
    clips/                        a folder (as the env's seed folders): one subfolder of frames or one video per clip,
      attributes.json             optional {clip_id: {"weather": ..., "timeofday": ..., "scene": ...}}
      <clip>/labels.json          optional ground truth, Scalabel frames [{"frameIndex", "labels": [{category, box2d}]}]
      <clip>/ego.json             optional {"speed_mps": [...], "yaw_rate_rps": [...]}, one value per frame

The query (spec `seeds`) keeps clips whose attributes are in the `where` lists and whose ego motion over the
window the scenario uses (the seed frames and the horizon after them, [at, at + T + N)) lies in the ranges;
unknown ego motion fails a bounded range. Matches are sorted by clip id and cut at `limit`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .spec import Spec


@dataclass
class SeedInfo:
    """What the query reads of a clip (no frames or tokens)."""

    clip_id: str
    attributes: dict
    num_frames: int
    speed_mps: np.ndarray  # (F,) float32, NaN unknown
    yaw_rate_rps: np.ndarray  # (F,)
    labelled_frames: list[int] = field(default_factory=list)  # frames with ground-truth boxes
    fps: float = 4.0  # the clip's frame rate (a store's own; folders of frames are taken at the simulator's 4 fps)


@dataclass
class SeedWindow:
    """Frames [start, start + T) of a clip, as a scenario's seed."""

    tokens: np.ndarray | None  # (T, h, w) int64 codes (stores), or None
    frames: np.ndarray | None  # (T, H, W, 3) uint8 camera frames (folders; stores with --store-frames), or None
    speed_mps: np.ndarray  # (T,)
    yaw_rate_rps: np.ndarray  # (T,)
    labels: dict[int, list[dict]]  # {index in the window: [{category, box2d}]} in the model's 256 x 256 view


class StoreSeeds:
    """Seed clips from a token store (`openvica data ingest`)."""

    kind = "store"

    def __init__(self, path: str | os.PathLike):
        from openvica_sim.data.store import TokenStore

        self.path = Path(path)
        self.store = TokenStore(self.path)

    def clips(self) -> list[SeedInfo]:
        out, ego = [], {}
        for entry in self.store.clips:
            part = entry["part"]
            if part not in ego:  # ego motion of a whole part in two reads, not two per clip
                ego[part] = _part_ego(self.path, part)
            speed, yaw = ego[part]
            rows = slice(entry["start"], entry["stop"])
            out.append(SeedInfo(entry["clip_id"], dict(entry.get("attributes") or {}), entry["stop"] - entry["start"],
                                speed[rows], yaw[rows], [int(x["frame"]) for x in entry.get("labels") or []],
                                float(entry.get("fps") or 4.0)))
        return out

    def window(self, clip_id: str, start: int, length: int) -> SeedWindow:
        clip = self.store.clip(clip_id)
        rows = slice(start, start + length)
        labels = {int(x["frame"]) - start: list(x["boxes"]) for x in clip.get("labels") or []
                  if start <= int(x["frame"]) < start + length}
        return SeedWindow(tokens=clip["tokens"][rows].astype(np.int64),
                          frames=clip["frames"][rows] if "frames" in clip else None,
                          speed_mps=clip["speed_mps"][rows], yaw_rate_rps=clip["yaw_rate_rps"][rows], labels=labels)


class FolderSeeds:
    """Seed clips from a folder of clips (the env's seed folders), with optional attributes, labels and ego."""

    kind = "folder"

    def __init__(self, path: str | os.PathLike):
        from openvica_sim.envs.seeds import FolderSeedSource

        self.path = Path(path)
        self.source = FolderSeedSource(self.path)
        attributes = self.path / "attributes.json"
        self.attributes = json.loads(attributes.read_text()) if attributes.is_file() else {}
        self._frames: dict[str, np.ndarray] = {}

    def _clip_frames(self, clip_id: str) -> np.ndarray:
        if clip_id not in self._frames:
            self._frames.clear()  # one clip at a time: a window reads one clip, then the next
            self._frames[clip_id] = self.source.frames(clip_id)
        return self._frames[clip_id]

    def _ego(self, clip_id: str, num_frames: int) -> tuple[np.ndarray, np.ndarray]:
        path = self.path / clip_id / "ego.json"
        nan = np.full(num_frames, np.nan, np.float32)
        if not path.is_file():
            return nan, nan.copy()
        ego = json.loads(path.read_text())
        return tuple(np.asarray(ego.get(k, [math.nan] * num_frames), np.float32)[:num_frames]
                     for k in ("speed_mps", "yaw_rate_rps"))

    def _labels(self, clip_id: str, frame_hw: tuple[int, int]) -> dict[int, list[dict]]:
        from openvica_sim.frames import boxes_to_model_view

        path = self.path / clip_id / "labels.json"
        if not path.is_file():
            return {}
        frames = json.loads(path.read_text())
        return {int(f["frameIndex"]): boxes_to_model_view(
            [{"category": b["category"], "box2d": b["box2d"]} for b in f.get("labels", []) if "box2d" in b], *frame_hw)
            for f in frames}

    def clips(self) -> list[SeedInfo]:
        out = []
        for clip_id in self.source.clip_ids:
            frames = self._clip_frames(clip_id)
            speed, yaw = self._ego(clip_id, len(frames))
            labelled = sorted(self._labels(clip_id, frames.shape[1:3]))
            attributes = self.attributes.get(clip_id) or _read_json(self.path / clip_id / "attributes.json") or {}
            out.append(SeedInfo(clip_id, dict(attributes), len(frames), speed, yaw, labelled))
        return out

    def window(self, clip_id: str, start: int, length: int) -> SeedWindow:
        frames = self._clip_frames(clip_id)
        speed, yaw = self._ego(clip_id, len(frames))
        labels = {i - start: boxes for i, boxes in self._labels(clip_id, frames.shape[1:3]).items()
                  if start <= i < start + length}
        rows = slice(start, start + length)
        return SeedWindow(tokens=None, frames=frames[rows], speed_mps=speed[rows], yaw_rate_rps=yaw[rows],
                          labels=labels)


def open_seeds(path: str | os.PathLike) -> StoreSeeds | FolderSeeds:
    """A token store (a folder with index.json) or a folder of clips.

    Raises:
        FileNotFoundError: nothing at `path`.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no seed clips at {path}: pass a token store (`openvica data ingest`) or a folder "
                                f"of clips with --seeds (or seeds.source in the spec)")
    if (path / "index.json").is_file() or (path / "zarr.json").is_file():
        return StoreSeeds(path)
    return FolderSeeds(path)


# ---- the query ----------------------------------------------------------------------------------------------------

@dataclass
class Match:
    """A seed clip the query selected, with the frame its seed window starts at."""

    info: SeedInfo
    fork_frame: int

    @property
    def clip_id(self) -> str:
        return self.info.clip_id


def select(clips: list[SeedInfo], spec: Spec) -> list[Match]:
    """The clips that `spec.seeds` selects, with their fork frame, first by clip id, at most `limit`."""
    q, T, N = spec.seeds, spec.fork.seed_frames, spec.horizon
    matches = []
    for info in sorted(clips, key=lambda c: c.clip_id):
        if any(info.attributes.get(key) not in values for key, values in q.where.items()):
            continue
        if spec.fork.at in ("labelled", "auto"):
            at = labelled_fork(info, T)
            if at is None:
                if spec.fork.at == "labelled":
                    continue
                at = 0
        else:
            at = spec.fork.at
        if at < 0 or at + T > info.num_frames:
            continue
        stats = ego_stats(info, at, T + N)
        if all(_within(stats[name], getattr(q, name)) for name in stats):
            matches.append(Match(info, at))
        if q.limit is not None and len(matches) >= q.limit:
            break
    return matches


def labelled_fork(info: SeedInfo, T: int) -> int | None:
    """The first fork frame whose T seed frames all carry ground truth (tracking labels label every frame), else
    the one whose last seed frame is the first labelled frame (det_20's single frame: its boxes transfer); None when
    the clip has no labelled frame at T - 1 or later."""
    labelled = set(info.labelled_frames)
    fits = [f - T + 1 for f in sorted(labelled) if f - T + 1 >= 0]
    for at in fits:
        if all(at + k in labelled for k in range(T)):
            return at
    return fits[0] if fits else None


def ego_stats(info: SeedInfo, start: int, length: int) -> dict[str, float]:
    """Mean speed, mean |yaw rate| and strongest deceleration (m/s^2, braking positive, at the clip's own fps) over
    frames [start, start + length) of the clip (NaN when unknown)."""
    rows = slice(start, min(start + length, info.num_frames))
    speed, yaw = info.speed_mps[rows].astype(np.float64), info.yaw_rate_rps[rows].astype(np.float64)
    decel = -np.diff(speed) * info.fps
    with np.errstate(all="ignore"):
        return {"speed_mps": float(np.nanmean(speed)) if np.isfinite(speed).any() else math.nan,
                "abs_yaw_rate": float(np.nanmean(np.abs(yaw))) if np.isfinite(yaw).any() else math.nan,
                "decel_mps2": float(np.nanmax(decel)) if np.isfinite(decel).any() else math.nan}


def slice_counts(matches: list[Match]) -> list[dict]:
    """Matches per (weather, timeofday, scene), most first: the dry run's table."""
    from collections import Counter

    counts = Counter(tuple(m.info.attributes.get(k, "") for k in ("weather", "timeofday", "scene")) for m in matches)
    return [{"weather": w, "timeofday": t, "scene": s, "clips": n} for (w, t, s), n in counts.most_common()]


def _within(value: float, bounds) -> bool:
    low, high = bounds
    if low is None and high is None:
        return True
    if not math.isfinite(value):
        return False
    return (low is None or value >= low) and (high is None or value <= high)


def _part_ego(root: Path, part: str) -> tuple[np.ndarray, np.ndarray]:
    import zarr

    from openvica_sim.data.store import PARTS

    group = zarr.open_group(root / PARTS / part, mode="r")
    return np.asarray(group["speed_mps"][:]), np.asarray(group["yaw_rate_rps"][:])


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None
