"""Where the env's seed clips come from: a folder of clips, or the synthetic world (the default).

A seed source is a list of clip ids and a way to read a clip's first frames. The env draws a clip id
with its `np_random`, reads its first T frames (the paper's T = 2 seed frames) and continues them.

    clips/                       a folder seed source: one clip per entry, in name order
      drive-a/000.png 001.png    a subfolder of frames (PNG or JPEG), read in file-name order
      drive-b.mov                a video (.mov, .mp4, ...), read at the model's 4 fps like BDD100K

Dimensions: T frames, H x W pixels; frames are uint8 RGB (T, H, W, 3), any size (the engine crops).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import numpy as np

from openvica_sim.bundle import FPS
from openvica_sim.data.synthetic import random_drive, render_clip
from openvica_sim.video_io import read_image, read_video

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
VIDEO_SUFFIXES = (".mov", ".mp4", ".mkv", ".avi", ".webm")


class SeedSource:
    """Clip ids and their frames. Subclasses set `clip_ids` and implement `_read`."""

    clip_ids: list[str]

    def frames(self, clip_id: str, max_frames: int | None = None) -> np.ndarray:
        """The first `max_frames` frames (all when None) of a clip: uint8 (T, H, W, 3).

        Raises:
            ValueError: an unknown clip id (the message lists valid ones).
        """
        if clip_id not in self.clip_ids:
            raise ValueError(self._unknown_clip_message(clip_id))
        return self._read(clip_id, max_frames)

    def _read(self, clip_id: str, max_frames: int | None) -> np.ndarray:
        raise NotImplementedError

    def _unknown_clip_message(self, clip_id: str) -> str:
        close = difflib.get_close_matches(str(clip_id), self.clip_ids, n=1)
        hint = f"; did you mean {close[0]!r}" if close else ""
        shown = ", ".join(repr(c) for c in self.clip_ids[:5]) + (", ..." if len(self.clip_ids) > 5 else "")
        return f"unknown clip id {clip_id!r}{hint}? this seed source has {len(self.clip_ids)} clips: {shown}"

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.clip_ids)} clips)"


class SyntheticSeedSource(SeedSource):
    """Clips of the synthetic driving world (`openvica_sim.data.synthetic`): clip i is
    `random_drive(np.random.default_rng(i))`, id "synthetic-%03d". Rendered on first use, then kept."""

    def __init__(self, num_clips: int = 8, num_frames: int = 16):
        if num_clips < 1 or num_frames < 1:
            raise ValueError(f"num_clips={num_clips} and num_frames={num_frames} must be at least 1")
        self.num_frames = num_frames
        self.clip_ids = [f"synthetic-{i:03d}" for i in range(num_clips)]
        self._clips: dict[str, np.ndarray] = {}

    def _read(self, clip_id: str, max_frames: int | None) -> np.ndarray:
        if clip_id not in self._clips:
            index = self.clip_ids.index(clip_id)
            self._clips[clip_id] = render_clip(random_drive(np.random.default_rng(index)), self.num_frames, fps=FPS)
        return self._clips[clip_id][:max_frames].copy()


class FolderSeedSource(SeedSource):
    """A folder with one clip per subfolder of frames (PNG/JPEG, in file-name order) or per video file.

    A clip's id is the subfolder's name or the video's file name without its suffix. Videos are read at
    `fps` (default the model's 4 fps), so a 30 fps camera clip is sampled as in training.
    """

    def __init__(self, path: str | os.PathLike, fps: float = FPS):
        self.path, self.fps = Path(path), fps
        self._paths: dict[str, Path] = {}
        for entry in sorted(self.path.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir() and _image_files(entry):
                self._paths[entry.name] = entry
            elif entry.is_file() and entry.suffix.lower() in VIDEO_SUFFIXES:
                if entry.stem in self._paths:
                    raise ValueError(f"seed folder {self.path} holds two clips named {entry.stem!r}; rename one")
                self._paths[entry.stem] = entry
        if not self._paths:
            raise ValueError(f"seed folder {self.path} holds no clips: expected subfolders of {'/'.join(IMAGE_SUFFIXES)} "
                             f"frames or video files ({'/'.join(VIDEO_SUFFIXES)})")
        self.clip_ids = list(self._paths)

    def _read(self, clip_id: str, max_frames: int | None) -> np.ndarray:
        path = self._paths[clip_id]
        if path.is_file():
            return read_video(path, fps=self.fps, max_frames=max_frames)
        frames = [read_image(p) for p in _image_files(path)[:max_frames]]
        sizes = {f.shape for f in frames}
        if len(sizes) > 1:
            raise ValueError(f"clip {clip_id!r} ({path}) mixes frame sizes {sorted(sizes)}; all its frames must match")
        return np.stack(frames)

    def __repr__(self) -> str:
        return f"FolderSeedSource({str(self.path)!r}, {len(self.clip_ids)} clips)"


class StoreSeedSource(SeedSource):
    """The clips of a token store from `openvica data ingest --store-frames`, by their store clip ids.

    The env starts from pixels (its TOK encodes the seed frames, as for any camera), so the store must hold the
    model-view frames; a tokens-only store is refused with the command that adds them.
    """

    def __init__(self, path: str | os.PathLike):
        from openvica_sim.data.store import TokenStore

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no token store at {self.path}")
        self.store = TokenStore(self.path)
        if not len(self.store):
            raise ValueError(f"token store {self.path} holds no clips")
        if not self.store.has_frames:
            raise ValueError(f"token store {self.path} holds tokens only; the env needs the seed frames: ingest again "
                             f"with `openvica data ingest ... --store-frames`, or pass a folder of clips")
        self.clip_ids = self.store.clip_ids

    def _read(self, clip_id: str, max_frames: int | None) -> np.ndarray:
        return np.asarray(self.store.clip(clip_id, keys=("frames",))["frames"][:max_frames])

    def __repr__(self) -> str:
        return f"StoreSeedSource({str(self.path)!r}, {len(self.clip_ids)} clips)"


def default_seed_source() -> SeedSource:
    """The seed clips `gym.make("OpenViCA-v0")` uses when given none: the embedded default's 8 held-out clips of
    the synthetic world (16 frames each, as the embedded bundle saw its training data)."""
    from openvica_sim import embedded

    return FolderSeedSource(embedded.seeds_path())


def open_seed_source(seeds: SeedSource | str | os.PathLike | None) -> SeedSource:
    """A seed source from the env's `seeds` argument: None (the default), a SeedSource, a folder, or a token store.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: a Zarr store (`*.zarr`) ingested without its frames.
        ValueError: a folder without clips, or a path that is a file.
        TypeError: anything else.
    """
    if seeds is None:
        return default_seed_source()
    if isinstance(seeds, SeedSource):
        return seeds
    if not isinstance(seeds, (str, os.PathLike)):
        raise TypeError(f"seeds={seeds!r}: pass a folder of clips, a SeedSource, or None for the default clips")
    path = Path(seeds)
    if path.suffix == ".zarr":
        return StoreSeedSource(path)
    if not path.exists():
        raise FileNotFoundError(f"no seed clips at {path}: the folder does not exist")
    if not path.is_dir():
        raise ValueError(f"seeds={str(path)!r} is a file; pass the folder that holds the clips (one subfolder of "
                         f"frames or one video file per clip)")
    return FolderSeedSource(path)


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
