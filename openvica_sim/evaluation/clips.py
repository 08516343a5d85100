"""The clips an evaluation runs on: a token store with frames or a folder of clips, a fixed list, a window each.

    EvalClips.open("val-500.zarr", list_name="val-500", limit=None, length=17)

Each clip gives a window of `length` model-view frames (uint8 256x256, what the tokenizer reads) from `start_frame`:
the T seed frames, the N frames of the real continuation and, when the clip is long enough, one more frame, VDEC's
lookahead for the transcoding rows. Its ego motion (speed m/s and yaw rate rad/s per frame, NaN where unknown)
comes from the store, or from a folder clip's `ego.json`. Frames are read on demand, one clip at a time.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from openvica_sim.frames import model_view


@dataclass
class EvalClip:
    clip_id: str
    num_frames: int  # frames of the window this clip has (>= T + N; T + N + 1 with VDEC's lookahead)
    speed_mps: np.ndarray  # (num_frames,) float64, NaN unknown
    yaw_rate_rps: np.ndarray  # (num_frames,)
    boxes: dict[int, list[dict]] | None = None  # {frame in the window: ground-truth boxes}, from a store's labels


class EvalClips:
    """The evaluated clips, in list order, and a reader of their windows."""

    def __init__(self, source, clips: list[EvalClip], start_frame: int, description: str):
        self.source, self.clips, self.start_frame, self.description = source, clips, start_frame, description

    @classmethod
    def open(cls, path: str | os.PathLike, length: int, list_name: str | None = None, limit: int | None = None,
             start_frame: int = 0, min_length: int | None = None) -> "EvalClips":
        """Clips of `path` (a store ingested with --store-frames, or a folder of clips) with at least
        `min_length` (default `length`) frames from `start_frame`, filtered by `list_name` ("val-500" or a text
        file of clip ids, one per line) and cut at `limit`.

        Raises:
            FileNotFoundError: no store or folder at `path`, or no list file.
            ValueError: a tokens-only store, a list naming clips the source lacks, or no clip long enough.
        """
        from openvica_sim.envs.seeds import open_seed_source

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no clips at {path}: pass a token store ingested with --store-frames or a folder "
                                    f"of clips (one subfolder of frames or one video per clip)")
        source = open_seed_source(path)
        ids = list(source.clip_ids)
        if list_name is not None:
            ids = _apply_list(ids, list_name, path)
        min_length = length if min_length is None else min_length
        clips, short = [], []
        for clip_id in ids:
            speed, yaw, available = _ego_and_length(source, clip_id)
            usable = available - start_frame
            if usable < min_length:
                short.append(clip_id)
                continue
            n = min(usable, length)
            window = slice(start_frame, start_frame + n)
            clips.append(EvalClip(clip_id, n, _pad(speed, available)[window], _pad(yaw, available)[window],
                                  _boxes(source, clip_id, start_frame, n)))
            if limit is not None and len(clips) >= limit:
                break
        if not clips:
            raise ValueError(f"no clip of {path} has {min_length} frames from frame {start_frame} ({len(short)} too "
                             f"short); evaluation needs the T seed frames and the N frames of the continuation")
        return cls(source, clips, start_frame, f"{path}" + (f" --list {list_name}" if list_name else ""))

    @property
    def ids(self) -> list[str]:
        return [c.clip_id for c in self.clips]

    def frames(self, clip: EvalClip) -> np.ndarray:
        """The clip's window as model-view frames uint8 (num_frames, 256, 256, 3)."""
        raw = self.source.frames(clip.clip_id, self.start_frame + clip.num_frames)[self.start_frame:]
        return model_view(raw)

    def list_hash(self) -> str:
        """sha256 of the evaluated (clip id, start frame, window length) list: what metrics.json records."""
        text = json.dumps([[c.clip_id, self.start_frame, c.num_frames] for c in self.clips])
        return hashlib.sha256(text.encode()).hexdigest()

    def __len__(self) -> int:
        return len(self.clips)


def _apply_list(ids: list[str], list_name: str, path: Path) -> list[str]:
    if list_name == "val-500":
        from openvica_sim.data.bdd100k import val_500

        return val_500(ids)
    list_file = Path(list_name)
    if not list_file.is_file():
        raise FileNotFoundError(f"--list {list_name}: neither 'val-500' nor a file of clip ids (one per line)")
    wanted = [line.strip() for line in list_file.read_text().splitlines() if line.strip()]
    missing = sorted(set(wanted) - set(ids))
    if missing:
        raise ValueError(f"--list {list_file} names {len(missing)} clip(s) that {path} does not hold, e.g. "
                         f"{missing[:3]}; evaluate the clips the list names or fix the list")
    return wanted


def _ego_and_length(source, clip_id: str) -> tuple[np.ndarray, np.ndarray, int]:
    """(speed, yaw rate, number of frames) of a clip without reading its frames where the source allows."""
    store = getattr(source, "store", None)
    if store is not None:  # a token store: its index and ego arrays
        clip = store.clip(clip_id, keys=("speed_mps", "yaw_rate_rps"))
        return (np.asarray(clip["speed_mps"], np.float64), np.asarray(clip["yaw_rate_rps"], np.float64),
                int(clip["stop"] - clip["start"]))
    folder = getattr(source, "_paths", {}).get(clip_id)
    ego = folder / "ego.json" if folder is not None and folder.is_dir() else None
    if ego is not None and ego.is_file():
        data = json.loads(ego.read_text())
        speed = np.asarray([np.nan if v is None else v for v in data.get("speed_mps", [])], np.float64)
        yaw = np.asarray([np.nan if v is None else v for v in data.get("yaw_rate_rps", [])], np.float64)
    else:
        speed = yaw = np.zeros(0)
    if folder is not None and folder.is_dir():
        from openvica_sim.envs.seeds import _image_files

        return speed, yaw, len(_image_files(folder))
    return speed, yaw, len(source.frames(clip_id))  # a video: decode it once to count


def _boxes(source, clip_id: str, start: int, length: int) -> dict[int, list[dict]] | None:
    """A store clip's labelled frames in the window, by their index in it (the synthetic world labels every frame)."""
    store = getattr(source, "store", None)
    if store is None:
        return None
    labels = store._by_id[clip_id].get("labels") or []
    return {int(x["frame"]) - start: list(x["boxes"]) for x in labels if start <= int(x["frame"]) < start + length}


def _pad(values: np.ndarray, length: int) -> np.ndarray:
    out = np.full(length, np.nan)
    out[:min(length, len(values))] = values[:length]
    return out
