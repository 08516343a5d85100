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
        from openvica_sim.data.clips import open_clips

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no clips at {path}: pass a token store ingested with --store-frames or a folder "
                                    f"of clips (one subfolder of frames or one video per clip)")
        source = open_clips(path)
        if not source.has_frames:
            raise ValueError(f"token store {path} holds tokens only; evaluation compares frames: ingest again with "
                             f"`openvica data ingest ... --store-frames`, or pass a folder of clips")
        ids = list(source.clip_ids)
        if list_name is not None:
            ids = _apply_list(ids, list_name, path)
        min_length = length if min_length is None else min_length
        clips, short = [], []
        for clip_id in ids:
            speed, yaw = source.ego(clip_id)  # a store's ego arrays, a folder's ego.json (a video is decoded to count)
            usable = len(speed) - start_frame
            if usable < min_length:
                short.append(clip_id)
                continue
            n = min(usable, length)
            window = slice(start_frame, start_frame + n)
            boxes = None if source.kind == "folder" else {  # a folder labels few frames, if any: no scene checks
                i - start_frame: b for i, b in source.labels(clip_id).items() if start_frame <= i < start_frame + n}
            clips.append(EvalClip(clip_id, n, speed[window].astype(np.float64), yaw[window].astype(np.float64), boxes))
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

