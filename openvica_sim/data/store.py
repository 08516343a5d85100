"""The token store: tokenised BDD100K clips with per-frame ego motion, in Zarr v3 (docs/design.md "Zarr 3").

Layout (F = frames of a part, all its clips concatenated; one clip per video, clip_id = video id):

    store.zarr/zarr.json                          root group; attrs: format, version, index (the file name), parts,
                                                  num_clips, num_frames (written by `consolidate`)
    store.zarr/index.json                         consolidated index of the complete parts (`consolidate`)
    store.zarr/parts/zarr.json                    the group of the parts
    store.zarr/parts/part-NNNNN/                  one group per writer (ingest shard NNNNN), never shared
        tokens        (F, 16, 16) uint16   fill 65535 (never a valid token)   chunks (64, 16, 16)
        speed_mps     (F,)        float32  fill NaN                           chunks (4096,)
        yaw_rate_rps  (F,)        float32  fill NaN                           chunks (4096,)
        frame_time_s  (F,)        float32  fill NaN, seconds from the video start
        frames        (F, 256, 256, 3) uint8, only with store_frames          chunks (16, 256, 256, 3)
        attrs: format, version, fps, split, store_frames, num_frames (the committed length),
               clips: [{clip_id, video_id, split, start, stop, fps, ego_status, attributes, labels, camera_view}],
               complete (true only once the writer has finished; written last)

Zarr has no ragged arrays, so clips are concatenated along frames and found through their (start, stop).

Commit protocol (crash safety). A clip is appended by (1) resizing the arrays to `num_frames + T` and writing
rows [num_frames, num_frames + T), then (2) rewriting the part's attributes once, with the clip's index entry and
the new `num_frames`, in one `update_attributes` call. Zarr writes each key by temp file + rename, so step 2 is
atomic; a run killed before it leaves rows beyond `num_frames` that no index entry points at: readers never see them and the next append
overwrites them. `complete` is set false before a part is extended and true after its last clip.

Compression: Zarr 3's default codec for numeric arrays (zstd, level 0, no shuffle). Token chunks of 64 frames are
32 KiB raw (a 40 s BDD100K clip at 4 fps is 160 frames, 2.5 chunks); tokens of real video compress little (codes
are nearly uniformly used), so a clip costs about 80 KiB of tokens plus 3 x 640 B of ego motion: ~8 GB for the
100k clips. Frames (--store-frames) are ~196 KiB per frame raw, ~31 MB per clip, zstd gains little on them.
Measured on the synthetic test clips (test bundle, 8 frames each): tokens 131 B/frame after zstd (4x, the random
tokenizer's codes on flat synthetic scenes repeat), ego ~30 B/frame, ~400 B of index JSON per clip; real codes
will compress much less, so budget the raw 512 B/frame.

The index lives in attributes (JSON), so adding a clip rewrites the part's zarr.json: O(clips) per clip, fine for
the ~thousands of clips per shard; move it to arrays if parts grow much larger.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import zarr

FORMAT = "openvica-token-store"
VERSION = 1
TOKEN_FILL = 65535  # never a valid token: codebooks are smaller (checked in PartWriter)
TOKEN_CHUNK_FRAMES = 64
EGO_CHUNK_FRAMES = 4096
FRAME_CHUNK_FRAMES = 16
PARTS = "parts"
INDEX_FILE = "index.json"
PER_FRAME = ("speed_mps", "yaw_rate_rps", "frame_time_s")


def part_name(index: int) -> str:
    return f"part-{index:05d}"


def check_shard(shard: tuple[int, int]) -> tuple[int, int]:
    """(index, count) of a writer that writes items index, index + count, ... into part `index`; refused unless
    0 <= index < count (the ingest, the synthetic store and the re-encoder shard alike)."""
    index, count = shard
    if not (isinstance(index, int) and isinstance(count, int) and 0 <= index < count):
        raise ValueError(f"shard={shard}: expected (index, count) with 0 <= index < count, e.g. (0, 1)")
    return index, count


def _open_shared_group(path: Path) -> None:
    """Open or create a group that other shards' writers open at the same time: zarr's mode "a" checks that no node
    exists and then writes one, so a writer that loses that race finds the group made and opens it."""
    try:
        zarr.open_group(path, mode="a")
    except zarr.errors.ContainsGroupError:
        zarr.open_group(path, mode="r+")


class PartWriter:
    """The one writer of `root/parts/part-NNNNN`; opens an existing part to resume it.

    Raises:
        ValueError: the existing part was written with another fps, split, token grid or store_frames setting.
    """

    def __init__(self, root: str | os.PathLike, index: int, *, fps: float, split: str, token_shape=(16, 16),
                 frame_size: int = 256, store_frames: bool = False, codebook_size: int = 8192):
        if codebook_size >= TOKEN_FILL:
            raise ValueError(f"codebook_size={codebook_size} does not fit uint16 tokens below the fill value "
                             f"{TOKEN_FILL}; widen the token dtype in openvica_sim/data/store.py")
        self.root, self.name = Path(root), part_name(index)
        # the root and parts/ groups (every writer writes the same zarr.json), so that a plain Zarr client walks
        # from the root to every part's arrays: zarr.open_group(store)["parts"]["part-00000"]["tokens"]
        _open_shared_group(self.root)
        _open_shared_group(self.root / PARTS)
        self.group = zarr.open_group(self.root / PARTS / self.name, mode="a")
        settings = {"format": FORMAT, "version": VERSION, "fps": float(fps), "split": split,
                    "store_frames": bool(store_frames), "token_shape": list(token_shape)}
        attrs = dict(self.group.attrs)
        if attrs:
            differ = {k: (attrs.get(k), v) for k, v in settings.items() if attrs.get(k) != v}
            if differ:
                raise ValueError(
                    f"part {self.group.store_path} was written with other settings {differ} (stored, asked); "
                    f"ingest into a new store, or rerun with the stored settings")
        else:
            self.group.attrs.put({**settings, "num_frames": 0, "clips": [], "complete": False})
        h, w = token_shape
        arrays = {"tokens": ((h, w), "uint16", TOKEN_FILL, TOKEN_CHUNK_FRAMES),
                  **{k: ((), "float32", float("nan"), EGO_CHUNK_FRAMES) for k in PER_FRAME}}
        if store_frames:
            arrays["frames"] = ((frame_size, frame_size, 3), "uint8", 0, FRAME_CHUNK_FRAMES)
        self.arrays = {}
        for key, (shape, dtype, fill, chunk) in arrays.items():
            if key in self.group:
                self.arrays[key] = self.group[key]
            else:
                self.arrays[key] = self.group.create_array(key, shape=(0, *shape), chunks=(chunk, *shape),
                                                           dtype=dtype, fill_value=fill)

    @property
    def clips(self) -> list[dict]:
        return list(self.group.attrs["clips"])

    @property
    def clip_ids(self) -> set[str]:
        return {c["clip_id"] for c in self.group.attrs["clips"]}

    @property
    def complete(self) -> bool:
        return bool(self.group.attrs.get("complete", False))

    def set_complete(self, complete: bool) -> None:
        self.group.update_attributes({"complete": bool(complete)})

    def append_clip(self, entry: dict, data: dict[str, np.ndarray]) -> dict:
        """Write one clip's per-frame `data` (tokens, speed_mps, yaw_rate_rps, frame_time_s[, frames]) after the
        committed frames, then commit its index `entry` (clip_id, video_id, attributes, ...); return the entry."""
        missing = set(self.arrays) - set(data)
        if missing:
            raise ValueError(f"clip {entry.get('clip_id')!r} lacks arrays {sorted(missing)} that part "
                             f"{self.name} stores")
        num_frames = len(data["tokens"])
        if any(len(data[k]) != num_frames for k in self.arrays):
            raise ValueError(f"clip {entry.get('clip_id')!r}: arrays of different lengths "
                             f"{ {k: len(data[k]) for k in self.arrays} }")
        start = int(self.group.attrs["num_frames"])
        stop = start + num_frames
        for key, array in self.arrays.items():
            array.resize((stop, *array.shape[1:]))  # also drops rows a killed run left beyond `start`
            array[start:stop] = np.asarray(data[key], dtype=array.dtype)
        entry = {**entry, "start": start, "stop": stop}
        # one metadata write: the clip becomes visible with its index entry and length, never half. Not
        # `group.attrs.update(...)`: that is MutableMapping.update, one write per key, and a kill between the
        # "clips" and "num_frames" writes left a clip indexed over rows the next run overwrote (test_ingest).
        self.group.update_attributes({"clips": [*self.group.attrs["clips"], entry], "num_frames": stop,
                                      "complete": False})
        return entry


def consolidate(root: str | os.PathLike) -> dict:
    """Write `root/index.json` from the complete parts and return it.

    A clip id found in several parts (a store ingested under two shard layouts) is kept from the first part in
    name order and listed under "duplicates". Incomplete parts are listed under "incomplete" and left out.
    """
    root = Path(root)
    parts_dir = root / PARTS
    clips, seen, duplicates, incomplete, parts = [], set(), [], [], []
    for part_dir in sorted(parts_dir.glob("part-*")) if parts_dir.is_dir() else []:
        attrs = dict(zarr.open_group(part_dir, mode="r").attrs)
        if not attrs.get("complete"):
            incomplete.append(part_dir.name)
            continue
        parts.append(part_dir.name)
        for clip in attrs["clips"]:
            if clip["clip_id"] in seen:
                duplicates.append({"clip_id": clip["clip_id"], "part": part_dir.name})
                continue
            seen.add(clip["clip_id"])
            clips.append({**clip, "part": part_dir.name})
    index = {"format": FORMAT, "version": VERSION, "parts": parts, "incomplete": incomplete,
             "duplicates": duplicates, "num_frames": sum(c["stop"] - c["start"] for c in clips), "clips": clips}
    tmp = root / f".{INDEX_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(index))
    os.replace(tmp, root / INDEX_FILE)
    # what a Zarr client sees of it at the root (the clip list itself stays in index.json: 100k clips are ~40 MB)
    zarr.open_group(root, mode="a").attrs.put({
        "format": FORMAT, "version": VERSION, "index": INDEX_FILE, "parts": parts, "num_clips": len(clips),
        "num_frames": index["num_frames"]})
    return index


class TokenStore:
    """Read a token store through its consolidated index.

    `clip(clip_id)` -> {"tokens" (T, 16, 16) uint16, "speed_mps", "yaw_rate_rps", "frame_time_s" (T,) float32,
    ["frames" (T, 256, 256, 3) uint8], "clip_id", "video_id", "split", "fps", "ego_status", "attributes",
    "part", "start", "stop"}. `clips` lists the index entries ({part, start, stop, ...}) for data loaders.

    Raises:
        FileNotFoundError: no index.json under `path` (run the ingest to its end, or `consolidate(path)`).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        index_path = self.path / INDEX_FILE
        if not index_path.is_file():
            raise FileNotFoundError(
                f"no token store index {index_path}; finish the ingest (`openvica data ingest` consolidates at the "
                f"end) or call openvica_sim.data.store.consolidate({str(self.path)!r})")
        self.index = json.loads(index_path.read_text())
        self.clips: list[dict] = self.index["clips"]
        self._by_id = {c["clip_id"]: c for c in self.clips}
        self._groups: dict[str, zarr.Group] = {}

    @property
    def clip_ids(self) -> list[str]:
        return [c["clip_id"] for c in self.clips]

    def __len__(self) -> int:
        return len(self.clips)

    def __contains__(self, clip_id: str) -> bool:
        return clip_id in self._by_id

    @property
    def has_frames(self) -> bool:
        """Whether the clips carry their 256x256 frames (`openvica data ingest --store-frames`); reads no frames."""
        return bool(self.clips) and all(self._part(p).attrs.get("store_frames", False)
                                        for p in {c["part"] for c in self.clips})

    def _part(self, name: str) -> zarr.Group:
        group = self._groups.get(name)
        if group is None:
            group = self._groups[name] = zarr.open_group(self.path / PARTS / name, mode="r")
        return group

    def clip(self, clip_id: str, keys: tuple[str, ...] | None = None) -> dict:
        """One clip's arrays and index entry; only the arrays named in `keys` when given (a clip's frames are ~31 MB:
        a reader of tokens should not pay for them)."""
        if clip_id not in self._by_id:
            import difflib

            close = difflib.get_close_matches(clip_id, self._by_id, n=3)
            raise KeyError(f"no clip {clip_id!r} in {self.path} ({len(self)} clips); closest: {close}")
        entry = self._by_id[clip_id]
        group = self._part(entry["part"])
        rows = slice(entry["start"], entry["stop"])
        out = {key: group[key][rows] for key in keys or ("tokens", *PER_FRAME, "frames") if key in group}
        return {**out, **entry}
