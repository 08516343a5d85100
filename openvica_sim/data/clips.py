"""Clip sources: where the clips the simulator starts from come from, one layer for the env, scenarios, evaluation
and benchmarks (docs/design.md "Layout").

    clips/                       FolderClips: one clip per entry, in name order
      drive-a/000.png 001.png    a subfolder of frames (PNG or JPEG), read in file-name order
      drive-b.mov                a video (.mov, .mp4, ...), read at the model's 4 fps like BDD100K
      attributes.json            optional {clip_id: {"weather": ..., "timeofday": ..., "scene": ...}}
      drive-a/attributes.json    or per clip
      drive-a/ego.json           optional {"speed_mps": [...], "yaw_rate_rps": [...]}, one value per frame
      drive-a/labels.json        optional ground truth, Scalabel frames [{"frameIndex", "labels": [{category, box2d}]}]
      drive-b.ego.json           a video's ego motion and labels sit beside it: <stem>.ego.json, <stem>.labels.json
    store.zarr/                  StoreClips: a token store (`openvica data ingest`, `openvica synthetic store`):
                                 tokens, ego motion, attributes, labels, camera view; frames with --store-frames
    (the synthetic world)        SyntheticClips: drives rendered on first use, with their ground truth

Every source gives clip ids and, per clip, `info` (attributes, frame count, fps, ego motion, labelled frames: what a
query reads, without frames), `frames` (camera frames from the start), `labels` (ground-truth boxes in the model
view's pixels, by frame) and `window` (frames, tokens, ego motion and labels of frames [start, start + length)).
The query over clips (`where`, ranges, `limit`) lives in `scenarios/query.py`; what a word means: `clips` are clip
sources and their clips, `seeds` are the sampler's random seeds, the seed frames are the T frames a rollout starts
from.

Dimensions: T frames, H x W pixels; frames are uint8 RGB (T, H, W, 3), any size (the engine crops).
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mov", ".mp4", ".mkv", ".avi", ".webm")
FPS = 4.0  # the model's frame rate (bundle.FPS): videos are read at it, folders of frames are taken at it


@dataclass
class ClipInfo:
    """What a query reads of a clip (no frames or tokens)."""

    clip_id: str
    attributes: dict
    num_frames: int
    speed_mps: np.ndarray  # (F,) float32, NaN unknown
    yaw_rate_rps: np.ndarray  # (F,)
    labelled_frames: list[int] = field(default_factory=list)  # frames with ground-truth boxes
    fps: float = FPS  # the clip's frame rate (a store's own; folders of frames are taken at the simulator's 4 fps)


@dataclass
class ClipWindow:
    """Frames [start, start + length) of a clip."""

    tokens: np.ndarray | None  # (T, h, w) int64 codes (stores), or None
    frames: np.ndarray | None  # (T, H, W, 3) uint8 camera frames (folders, the synthetic world, stores with
    # --store-frames), or None
    speed_mps: np.ndarray  # (T,) float32, NaN unknown
    yaw_rate_rps: np.ndarray  # (T,)
    labels: dict[int, list[dict]]  # {index in the window: [{category, box2d, ...}]} in the model's 256 x 256 view
    camera_view: dict | None = None  # `frames.CropView` of the camera frames the view was cropped from, if known


class ClipSource:
    """Clip ids and what each clip holds. Subclasses set `kind` and `clip_ids` and implement `_read`, `info` and
    `labels`; `window` reads through them."""

    kind: str
    clip_ids: list[str]
    has_frames = True  # a token store ingested without --store-frames has none

    def frames(self, clip_id: str, max_frames: int | None = None) -> np.ndarray:
        """The first `max_frames` frames (all when None) of a clip: uint8 (T, H, W, 3).

        Raises:
            ValueError: an unknown clip id (the message lists valid ones), or a source without frames.
        """
        self._check(clip_id)
        return self._read(clip_id, max_frames)

    def infos(self) -> list[ClipInfo]:
        """Every clip's `info`, in clip id order of the source."""
        return [self.info(c) for c in self.clip_ids]

    def info(self, clip_id: str) -> ClipInfo:
        raise NotImplementedError

    def labels(self, clip_id: str) -> dict[int, list[dict]]:
        """{frame: ground-truth boxes [{category, box2d, ...}] in the model view's pixels} of the labelled frames."""
        raise NotImplementedError

    def ego(self, clip_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(speed_mps, yaw_rate_rps), float32 (F,) each, NaN unknown."""
        info = self.info(clip_id)
        return info.speed_mps, info.yaw_rate_rps

    def camera_view(self, clip_id: str) -> dict | None:
        """The `frames.CropView` (as a dict) of the clip's camera frames, None where unknown."""
        return None

    def window(self, clip_id: str, start: int, length: int) -> ClipWindow:
        """Frames [start, start + length) of a clip with their ego motion and labels."""
        speed, yaw = self.ego(clip_id)
        rows = slice(start, start + length)
        labels = {i - start: boxes for i, boxes in self.labels(clip_id).items() if start <= i < start + length}
        frames = self.frames(clip_id, start + length)[rows] if self.has_frames else None
        return ClipWindow(tokens=None, frames=frames, speed_mps=speed[rows], yaw_rate_rps=yaw[rows], labels=labels,
                          camera_view=self.camera_view(clip_id))

    def _read(self, clip_id: str, max_frames: int | None) -> np.ndarray:
        raise NotImplementedError

    @functools.cached_property
    def _known(self) -> frozenset[str]:  # membership in O(1): infos() of a 100k-clip store checks every id
        return frozenset(self.clip_ids)

    def _check(self, clip_id: str) -> None:
        if clip_id not in self._known:
            close = difflib.get_close_matches(str(clip_id), self.clip_ids, n=1)
            hint = f"; did you mean {close[0]!r}" if close else ""
            shown = ", ".join(repr(c) for c in self.clip_ids[:5]) + (", ..." if len(self.clip_ids) > 5 else "")
            raise ValueError(f"unknown clip id {clip_id!r}{hint}? this clip source has {len(self.clip_ids)} clips: "
                             f"{shown}")

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __repr__(self) -> str:
        where = getattr(self, "path", None)
        return f"{type(self).__name__}({str(where) + ', ' if where else ''}{len(self.clip_ids)} clips)"


class FolderClips(ClipSource):
    """A folder with one clip per subfolder of frames (PNG/JPEG, in file-name order) or per video file, with
    optional attributes, ego motion and labels (the module docstring's layout).

    A clip's id is the subfolder's name or the video's file name without its suffix. Videos are read at `fps`
    (default the model's 4 fps), so a 30 fps camera clip is sampled as in training.

    Raises:
        ValueError: a folder without clips, or two clips of one name.
    """

    kind = "folder"

    def __init__(self, path: str | os.PathLike, fps: float = FPS):
        self.path, self.fps = Path(path), fps
        self._paths: dict[str, Path] = {}
        for entry in sorted(self.path.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir() and image_files(entry):
                self._paths[entry.name] = entry
            elif entry.is_file() and entry.suffix.lower() in VIDEO_SUFFIXES:
                if entry.stem in self._paths:
                    raise ValueError(f"clip folder {self.path} holds two clips named {entry.stem!r}; rename one")
                self._paths[entry.stem] = entry
        if not self._paths:
            raise ValueError(f"clip folder {self.path} holds no clips: expected subfolders of "
                             f"{'/'.join(IMAGE_SUFFIXES)} frames or video files ({'/'.join(VIDEO_SUFFIXES)})")
        self.clip_ids = list(self._paths)
        attributes = self.path / "attributes.json"
        self._attributes = json.loads(attributes.read_text()) if attributes.is_file() else {}
        self._cached: tuple[str, np.ndarray] | None = None  # one video at a time: a query reads one, then the next
        self._hw: dict[str, tuple[int, int]] = {}  # frame size per clip: labels and camera_view both need it

    def _read(self, clip_id: str, max_frames: int | None) -> np.ndarray:
        from openvica_sim.video_io import read_image, read_video

        path = self._paths[clip_id]
        if path.is_file():
            if self._cached is not None and self._cached[0] == clip_id:
                return self._cached[1][:max_frames].copy()
            if max_frames is not None:  # an env reset's first T frames: decode no further
                return read_video(path, fps=self.fps, max_frames=max_frames)
            self._cached = (clip_id, read_video(path, fps=self.fps))
            return self._cached[1].copy()
        frames = [read_image(p) for p in image_files(path)[:max_frames]]
        sizes = {f.shape for f in frames}
        if len(sizes) > 1:
            raise ValueError(f"clip {clip_id!r} ({path}) mixes frame sizes {sorted(sizes)}; all its frames must match")
        return np.stack(frames)

    def num_frames(self, clip_id: str) -> int:
        """Without decoding: the frame files of a subfolder; a video is decoded once to count."""
        self._check(clip_id)
        path = self._paths[clip_id]
        return len(image_files(path)) if path.is_dir() else len(self._read(clip_id, None))

    def frame_hw(self, clip_id: str) -> tuple[int, int]:
        if clip_id not in self._hw:
            self._hw[clip_id] = tuple(self.frames(clip_id, 1).shape[1:3])
        return self._hw[clip_id]

    def ego(self, clip_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(speed_mps, yaw_rate_rps), float32 (F,) each, from the clip's ego.json (null: unknown); NaN without one."""
        n = self.num_frames(clip_id)
        path = self._sidecar(clip_id, "ego")
        if not path.is_file():
            return np.full(n, np.nan, np.float32), np.full(n, np.nan, np.float32)
        data = json.loads(path.read_text())
        out = []
        for key in ("speed_mps", "yaw_rate_rps"):
            values = [math.nan if v is None else float(v) for v in data.get(key, [])][:n]
            out.append(np.asarray(values + [math.nan] * (n - len(values)), np.float32))
        return out[0], out[1]

    def info(self, clip_id: str) -> ClipInfo:
        self._check(clip_id)
        speed, yaw = self.ego(clip_id)
        folder = self._paths[clip_id]
        attributes = self._attributes.get(clip_id) or (_read_json(folder / "attributes.json") if folder.is_dir()
                                                       else None) or {}
        return ClipInfo(clip_id, dict(attributes), len(speed), speed, yaw, sorted(self.labels(clip_id)), self.fps)

    def labels(self, clip_id: str) -> dict[int, list[dict]]:
        from openvica_sim.frames import boxes_to_model_view

        self._check(clip_id)
        path = self._sidecar(clip_id, "labels")
        if not path.is_file():
            return {}
        hw = self.frame_hw(clip_id)
        return {int(f["frameIndex"]): boxes_to_model_view(
            [{"category": b["category"], "box2d": b["box2d"]} for b in f.get("labels", []) if "box2d" in b], *hw)
            for f in json.loads(path.read_text())}

    def camera_view(self, clip_id: str) -> dict:
        from openvica_sim.frames import CropView

        return CropView.of(*self.frame_hw(clip_id)).as_dict()

    def _sidecar(self, clip_id: str, name: str) -> Path:
        """<name>.json inside a clip's subfolder, or a video's <stem>.<name>.json beside it."""
        path = self._paths[clip_id]
        return path / f"{name}.json" if path.is_dir() else path.with_name(f"{clip_id}.{name}.json")


class StoreClips(ClipSource):
    """The clips of a token store, by their store clip ids: tokens, ego motion, attributes, labels, and frames when
    ingested with --store-frames.

    Raises:
        FileNotFoundError: no store at `path`.
        ValueError: an empty store.
    """

    kind = "store"

    def __init__(self, path: str | os.PathLike):
        from openvica_sim.data.store import TokenStore

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no token store at {self.path}")
        self.store = TokenStore(self.path)
        if not len(self.store):
            raise ValueError(f"token store {self.path} holds no clips")
        self.has_frames = self.store.has_frames
        self.clip_ids = self.store.clip_ids
        self._entries = {c["clip_id"]: c for c in self.store.clips}
        self._ego: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # per part: ego motion in two reads, not two per clip

    def _read(self, clip_id: str, max_frames: int | None) -> np.ndarray:
        if not self.has_frames:
            raise ValueError(f"token store {self.path} holds tokens only, no frames: ingest again with "
                             f"`openvica data ingest ... --store-frames`, or pass a folder of clips")
        return np.asarray(self.store.clip(clip_id, keys=("frames",))["frames"][:max_frames])

    def info(self, clip_id: str) -> ClipInfo:
        self._check(clip_id)
        entry = self._entries[clip_id]
        speed, yaw = self._part_ego(entry["part"])
        rows = slice(entry["start"], entry["stop"])
        return ClipInfo(clip_id, dict(entry.get("attributes") or {}), entry["stop"] - entry["start"], speed[rows],
                        yaw[rows], [int(x["frame"]) for x in entry.get("labels") or []], float(entry.get("fps") or FPS))

    def labels(self, clip_id: str) -> dict[int, list[dict]]:
        self._check(clip_id)
        return {int(x["frame"]): list(x["boxes"]) for x in self._entries[clip_id].get("labels") or []}

    def camera_view(self, clip_id: str) -> dict | None:
        return self._entries[clip_id].get("camera_view")  # stores ingested before it was kept: unknown

    def window(self, clip_id: str, start: int, length: int) -> ClipWindow:
        self._check(clip_id)
        clip = self.store.clip(clip_id)
        rows = slice(start, start + length)
        labels = {i - start: boxes for i, boxes in self.labels(clip_id).items() if start <= i < start + length}
        return ClipWindow(tokens=clip["tokens"][rows].astype(np.int64),
                          frames=clip["frames"][rows] if "frames" in clip else None,
                          speed_mps=clip["speed_mps"][rows], yaw_rate_rps=clip["yaw_rate_rps"][rows], labels=labels,
                          camera_view=self.camera_view(clip_id))

    def _part_ego(self, part: str) -> tuple[np.ndarray, np.ndarray]:
        if part not in self._ego:
            import zarr

            from openvica_sim.data.store import PARTS

            group = zarr.open_group(self.path / PARTS / part, mode="r")
            self._ego[part] = np.asarray(group["speed_mps"][:]), np.asarray(group["yaw_rate_rps"][:])
        return self._ego[part]


class SyntheticClips(ClipSource):
    """Clips of the synthetic driving world (`openvica_sim.data.synthetic`): clip i is
    `random_drive(np.random.default_rng(i))`, id "synthetic-%03d", rendered at 256x256 on first use and kept, with
    its ground truth (ego motion, car boxes on every frame)."""

    kind = "synthetic"

    def __init__(self, num_clips: int = 8, num_frames: int = 16):
        if num_clips < 1 or num_frames < 1:
            raise ValueError(f"num_clips={num_clips} and num_frames={num_frames} must be at least 1")
        self.num_frames = num_frames
        self.clip_ids = [f"synthetic-{i:03d}" for i in range(num_clips)]
        self._clips: dict = {}

    def _clip(self, clip_id: str):
        if clip_id not in self._clips:
            from openvica_sim.data.synthetic import random_drive, render_drive

            drive = random_drive(np.random.default_rng(self.clip_ids.index(clip_id)))
            self._clips[clip_id] = render_drive(drive, self.num_frames, fps=FPS)
        return self._clips[clip_id]

    def _read(self, clip_id: str, max_frames: int | None) -> np.ndarray:
        return self._clip(clip_id).frames[:max_frames].copy()

    def info(self, clip_id: str) -> ClipInfo:
        self._check(clip_id)
        clip = self._clip(clip_id)
        return ClipInfo(clip_id, dict(clip.attributes), self.num_frames, clip.speed_mps, clip.yaw_rate_rps,
                        list(range(self.num_frames)), FPS)

    def labels(self, clip_id: str) -> dict[int, list[dict]]:
        self._check(clip_id)
        return {i: list(boxes) for i, boxes in enumerate(self._clip(clip_id).boxes)}

    def camera_view(self, clip_id: str) -> dict:
        from openvica_sim.frames import CropView

        return CropView.of(256, 256).as_dict()


def default_clips() -> FolderClips:
    """The clips `gym.make("OpenViCA-v0")` starts from when given none: the embedded default's 8 held-out clips of
    the synthetic world (16 frames each, as the embedded bundle saw its training data)."""
    from openvica_sim import embedded

    return FolderClips(embedded.clips_path())


def open_clips(clips: ClipSource | str | os.PathLike | None) -> ClipSource:
    """A clip source from a `clips` argument: None (the embedded default's clips), a ClipSource, a token store
    (`*.zarr`, or any folder with the store's index.json) or a folder of clips.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: a folder without clips, or a path that is a file.
        TypeError: anything else.
    """
    if clips is None:
        return default_clips()
    if isinstance(clips, ClipSource):
        return clips
    if not isinstance(clips, (str, os.PathLike)):
        raise TypeError(f"clips={clips!r}: pass a folder of clips, a token store, a ClipSource, or None for the "
                        f"default clips")
    path = Path(clips)
    if path.suffix == ".zarr" or (path / "index.json").is_file() or (path / "zarr.json").is_file():
        return StoreClips(path)  # a missing *.zarr: "no token store at ..."
    if not path.exists():
        raise FileNotFoundError(f"no clips at {path}: pass a token store (`openvica data ingest`) or a folder of "
                                f"clips (one subfolder of frames or one video file per clip)")
    if not path.is_dir():
        raise ValueError(f"clips={str(path)!r} is a file; pass the folder that holds the clips (one subfolder of "
                         f"frames or one video file per clip)")
    return FolderClips(path)


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None
