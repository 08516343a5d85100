"""PyTorch datasets over the token store, for training (docs/design.md "Training runs", "Zarr 3").

Views of the same clips, each a list of windows of consecutive frames inside one clip (a window never
crosses a clip boundary; clips shorter than the window give none):

    TokenWindows   WM training    tokens (W, 16, 16) int64, speed_mps / yaw_rate_rps (W,) float32, W = T + N
    ImageSamples   TOK/DEC        one frame, float32 (3, 256, 256) in [-1, 1]           (needs --store-frames)
    FrameWindows   VDEC training  frames float32 (W, 3, 256, 256) in [-1, 1] + tokens (W, 16, 16), W = 3
                                                                                         (needs --store-frames)
    EgoFrameWindows  ego probe    frame pairs + the ego motion of the second              (needs --store-frames)
    LabelledFrames   detector     one labelled frame + its boxes, padded                  (needs --store-frames)

Ego motion stays in physical units with NaN for unknown; the trainer turns it into action ids with
`ActionCoding.vision_ids` (NaN -> the "unknown" ids, docs/design.md "Ego conditioning").

Order and sharding. `epoch_order(epoch)` shuffles all windows with a generator seeded by (seed, epoch), the same
permutation on every rank, drops the last `len % world_size` windows of that permutation, and returns
`order[rank::world_size]`. Every rank thus gets exactly `len(self)` windows, so DDP ranks run the same number of
steps and never wait on each other at the end of an epoch; the ranks are disjoint, and the dropped remainder
changes from epoch to epoch when shuffling. Call `set_epoch(epoch)` at the start of each epoch (as with
torch's DistributedSampler); use a plain sequential sampler on top, not another shuffling or distributed one.

Reading. A sample reads only its rows [start, start + W) of its part's arrays. Each process opens a part's zarr
arrays once, lazily, and caches them keyed by its pid, so DataLoader workers (forked or spawned) reopen the
store instead of sharing handles with the parent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import zarr
from torch.utils.data import Dataset

from openvica_sim.data.store import PARTS, TokenStore
from openvica_sim.frames import preprocess


class _StoreWindows(Dataset):
    """Windows of `window` consecutive frames inside each clip, every `stride` frames, shuffled and sharded."""

    keys: tuple[str, ...] = ()  # the store arrays a sample reads
    needs_frames = False

    def __init__(self, store: TokenStore | str | os.PathLike, window: int, stride: int = 1, seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True):
        if window < 1 or stride < 1:
            raise ValueError(f"window={window} and stride={stride} must both be >= 1")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank={rank} is not in [0, world_size={world_size}); "
                             f"pass the process's global rank and the world size")
        store = store if isinstance(store, TokenStore) else TokenStore(store)
        self.path = Path(store.path)
        self.clips = [{k: c[k] for k in ("clip_id", "part", "start", "stop")} for c in store.clips]
        self.window, self.stride, self.seed = int(window), int(stride), int(seed)
        self.rank, self.world_size, self.shuffle = int(rank), int(world_size), bool(shuffle)
        if self.needs_frames:
            self._check_frames()
        # (clip index, first frame within the clip) of every window, in store order
        self.windows = [(i, s) for i, c in enumerate(self.clips)
                        for s in range(0, c["stop"] - c["start"] - self.window + 1, self.stride)]
        if len(self.windows) < self.world_size:
            longest = max((c["stop"] - c["start"] for c in self.clips), default=0)
            raise ValueError(
                f"{len(self.windows)} windows of {self.window} frames in {self.path} ({len(self.clips)} clips, "
                f"the longest {longest} frames) leave nothing for some of world_size={self.world_size} ranks; "
                f"use a shorter window, fewer ranks or a larger store")
        self._arrays: dict[str, dict[str, zarr.Array]] = {}
        self._pid = os.getpid()
        self.set_epoch(0)

    # ---- order ---------------------------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's window indices for `epoch`: a (seed, epoch) permutation, remainder dropped, strided."""
        n = len(self.windows)
        if self.shuffle:
            order = np.random.default_rng([self.seed, int(epoch)]).permutation(n)
        else:
            order = np.arange(n)
        order = order[: n - n % self.world_size]  # equal length on every rank (see the module docstring)
        return order[self.rank::self.world_size].tolist()

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        self._order = self.epoch_order(self.epoch)

    def __len__(self) -> int:
        return len(self._order)

    def __getitem__(self, index: int) -> dict:
        clip_index, offset = self.windows[self._order[index]]
        clip = self.clips[clip_index]
        start = clip["start"] + offset
        rows = {key: self._array(clip["part"], key)[start:start + self.window] for key in self.keys}
        return self._sample(rows, clip["clip_id"], offset)

    def _sample(self, rows: dict[str, np.ndarray], clip_id: str, start: int) -> dict:
        raise NotImplementedError

    # ---- reading -------------------------------------------------------------------------------------
    def _array(self, part: str, key: str) -> zarr.Array:
        if self._pid != os.getpid():  # a forked DataLoader worker: do not reuse the parent's handles
            self._arrays, self._pid = {}, os.getpid()
        arrays = self._arrays.get(part)
        if arrays is None:
            group = zarr.open_group(self.path / PARTS / part, mode="r")
            arrays = self._arrays[part] = {k: group[k] for k in self.keys}
        return arrays[key]

    def _check_frames(self) -> None:
        parts = sorted({c["part"] for c in self.clips})
        missing = [p for p in parts if "frames" not in zarr.open_group(self.path / PARTS / p, mode="r")]
        if missing:
            raise ValueError(
                f"{type(self).__name__} needs frames, but the token store {self.path} has none in parts "
                f"{missing}; ingest with --store-frames (`openvica data ingest ... --store-frames`, "
                f"store_frames=True) into a new store")

    def __getstate__(self) -> dict:  # spawned workers and pickling: no zarr handles, reopen lazily
        return {**self.__dict__, "_arrays": {}}


class TokenWindows(_StoreWindows):
    """World-model training windows: `window` = T + N consecutive frames (paper: 2 + 14 = 16).

    A sample: {"tokens": int64 (W, 16, 16), "speed_mps", "yaw_rate_rps": float32 (W,) (NaN = unknown),
    "clip_id": str, "start": first frame of the window within its clip}.
    """

    keys = ("tokens", "speed_mps", "yaw_rate_rps")

    def __init__(self, store: TokenStore | str | os.PathLike, window: int = 16, stride: int = 1, seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True):
        super().__init__(store, window, stride, seed, rank, world_size, shuffle)

    def _sample(self, rows, clip_id, start):
        return {"tokens": torch.from_numpy(rows["tokens"].astype(np.int64)),
                "speed_mps": torch.from_numpy(rows["speed_mps"].astype(np.float32)),
                "yaw_rate_rps": torch.from_numpy(rows["yaw_rate_rps"].astype(np.float32)),
                "clip_id": clip_id, "start": start}


class ImageSamples(_StoreWindows):
    """Single frames for tokenizer (TOK/DEC) training: every frame of every clip, shuffled and sharded.

    A sample: {"frames": float32 (3, 256, 256) in [-1, 1], "clip_id": str, "start": the frame within its clip}.

    Raises:
        ValueError: the store was ingested without --store-frames.
    """

    keys = ("frames",)
    needs_frames = True

    def __init__(self, store: TokenStore | str | os.PathLike, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        super().__init__(store, 1, 1, seed, rank, world_size, shuffle)

    def _sample(self, rows, clip_id, start):
        return {"frames": preprocess(rows["frames"][0]), "clip_id": clip_id, "start": start}


class FrameWindows(_StoreWindows):
    """Video-decoder (VDEC) training windows of `window` consecutive frames with their tokens.

    A sample: {"frames": float32 (W, 3, 256, 256) in [-1, 1], "tokens": int64 (W, 16, 16), "clip_id", "start"}.

    Raises:
        ValueError: the store was ingested without --store-frames.
    """

    keys = ("frames", "tokens")
    needs_frames = True

    def __init__(self, store: TokenStore | str | os.PathLike, window: int = 3, stride: int = 1, seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True):
        super().__init__(store, window, stride, seed, rank, world_size, shuffle)

    def _sample(self, rows, clip_id, start):
        return {"frames": preprocess(rows["frames"]), "tokens": torch.from_numpy(rows["tokens"].astype(np.int64)),
                "clip_id": clip_id, "start": start}


class EgoFrameWindows(_StoreWindows):
    """Ego-motion probe windows (`training/probe.py`): `window` consecutive frames and the ego motion of the last one,
    the store's motion over its frame step. Windows whose last frame's speed or yaw rate is unknown are left out.

    A sample: {"frames": float32 (W, 3, 256, 256) in [-1, 1], "speed_mps", "yaw_rate_rps": float32 () of the last
    frame, "clip_id", "start"}.

    Raises:
        ValueError: the store was ingested without --store-frames, or has too few labelled windows.
    """

    keys = ("frames", "speed_mps", "yaw_rate_rps")
    needs_frames = True

    def __init__(self, store: TokenStore | str | os.PathLike, window: int = 2, stride: int = 1, seed: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True):
        super().__init__(store, window, stride, seed, rank, world_size, shuffle)
        known = {}
        for part in sorted({c["part"] for c in self.clips}):
            group = zarr.open_group(self.path / PARTS / part, mode="r")
            known[part] = np.isfinite(np.asarray(group["speed_mps"])) & np.isfinite(np.asarray(group["yaw_rate_rps"]))
        self.windows = [(i, s) for i, s in self.windows
                        if known[self.clips[i]["part"]][self.clips[i]["start"] + s + self.window - 1]]
        if len(self.windows) < max(1, self.world_size):
            raise ValueError(f"{self.path} has {len(self.windows)} windows of {self.window} frames with known ego "
                             f"motion, too few for world_size={self.world_size}; ingest clips with info files")
        self.set_epoch(0)

    def _sample(self, rows, clip_id, start):
        return {"frames": preprocess(rows["frames"]), "speed_mps": torch.tensor(float(rows["speed_mps"][-1])),
                "yaw_rate_rps": torch.tensor(float(rows["yaw_rate_rps"][-1])), "clip_id": clip_id, "start": start}


class LabelledFrames(_StoreWindows):
    """Detector training samples (`training/detector.py`): the store frames that carry ground-truth boxes (the
    clips' `labels`, in the model view's pixels) with the boxes of `classes`; boxes of other classes and ignore
    regions are left out.

    A sample: {"frames": float32 (3, 256, 256) in [-1, 1], "boxes": float32 (M, 4) x1, y1, x2, y2, "classes": int64
    (M,) indices into `classes`, -1 past the frame's boxes, "clip_id", "start"}; M = `max_boxes` (a frame with more
    keeps its first M).

    Raises:
        ValueError: the store was ingested without --store-frames, or has no labelled frames.
    """

    keys = ("frames",)
    needs_frames = True

    def __init__(self, store: TokenStore | str | os.PathLike, classes: tuple[str, ...] = ("car",), max_boxes: int = 32,
                 seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True):
        store = store if isinstance(store, TokenStore) else TokenStore(store)
        super().__init__(store, 1, 1, seed, rank, world_size, shuffle)
        self.classes, self.max_boxes = tuple(classes), int(max_boxes)
        self.labels: dict[tuple[int, int], list[tuple[int, tuple[float, ...]]]] = {}
        for i, clip in enumerate(store.clips):
            for entry in clip.get("labels", []):
                self.labels[(i, int(entry["frame"]))] = [
                    (self.classes.index(b["category"]), tuple(float(b["box2d"][k]) for k in ("x1", "y1", "x2", "y2")))
                    for b in entry["boxes"] if b["category"] in self.classes and not b.get("ignored")]
        self.windows = [w for w in self.windows if w in self.labels]
        if len(self.windows) < max(1, self.world_size):
            raise ValueError(f"{self.path} has {len(self.windows)} labelled frames, too few for world_size="
                             f"{self.world_size}; ingest BDD100K with its labels or write a synthetic store "
                             f"(`openvica synthetic store`), which labels every frame")
        self.set_epoch(0)

    def __getitem__(self, index: int) -> dict:
        sample = super().__getitem__(index)
        boxes = self.labels[self.windows[self._order[index]]][: self.max_boxes]
        sample["boxes"] = torch.zeros(self.max_boxes, 4)
        sample["classes"] = torch.full((self.max_boxes,), -1, dtype=torch.int64)
        for m, (c, box) in enumerate(boxes):
            sample["boxes"][m] = torch.tensor(box)
            sample["classes"][m] = c
        return sample

    def _sample(self, rows, clip_id, start):
        return {"frames": preprocess(rows["frames"][0]), "clip_id": clip_id, "start": start}


def ego_statistics(store: TokenStore | str | os.PathLike) -> dict[str, float]:
    """Mean and std of the known per-frame ego motion of a store: {"speed_mean_mps", "speed_std_mps",
    "yaw_mean_rps", "yaw_std_rps"} (the ego-motion probe's label standardisation)."""
    store = store if isinstance(store, TokenStore) else TokenStore(store)
    speed, yaw = [], []
    for part in sorted({c["part"] for c in store.clips}):
        group = zarr.open_group(Path(store.path) / PARTS / part, mode="r")
        rows = np.concatenate([np.arange(c["start"], c["stop"]) for c in store.clips if c["part"] == part])
        speed.append(np.asarray(group["speed_mps"])[rows])
        yaw.append(np.asarray(group["yaw_rate_rps"])[rows])
    speed, yaw = np.concatenate(speed), np.concatenate(yaw)
    known = np.isfinite(speed) & np.isfinite(yaw)
    if known.sum() < 2:
        raise ValueError(f"{store.path} has {int(known.sum())} frames with known ego motion; the probe needs labels")
    return {"speed_mean_mps": float(speed[known].mean()), "speed_std_mps": float(max(speed[known].std(), 1e-3)),
            "yaw_mean_rps": float(yaw[known].mean()), "yaw_std_rps": float(max(yaw[known].std(), 1e-4))}
