"""BDD100K videos -> token store (docs/design.md "Data flow"; layout and crash safety in `store.py`).

One process ingests one shard, `videos[index::count]` of the sorted videos, into its own part `part-<index>`:
concurrent processes never write the same Zarr array. Resume is per clip: clips already in the part's index are
skipped, and a clip cut short by a crash has no index entry and is written again. A rerun on a finished store
writes nothing.

Bad inputs are reported, never fatal:
- a video that does not decode in full (corrupt, truncated, missing) or gives fewer than MIN_FRAMES frames at
  `fps` is skipped, with the reason in the report;
- a video without an info file (or an empty/unreadable one) is kept, with NaN ego motion and its `ego_status`
  ("missing", "empty", "invalid") in the clip index, and counted in the report: the tokens are still good
  training data for an unconditioned world model, and loaders filter on `ego_status` when they need actions.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from ..frames import CropView, boxes_to_model_view, postprocess, preprocess
from ..video_io import VideoDecodeError, read_video
from .bdd100k import list_videos, read_ego_motion, val_500
from .store import PartWriter, check_shard, consolidate

MIN_FRAMES = 2  # the world model's seed is two frames; a shorter clip cannot be used


@dataclass
class IngestReport:
    """What one `ingest` call did. `skipped` maps video id -> reason."""

    store: str
    part: str
    videos: int = 0  # videos of this shard (after `limit`)
    clips_written: int = 0
    clips_present: int = 0  # already in the part from an earlier run
    frames: int = 0  # frames written by this call
    skipped: dict[str, str] = field(default_factory=dict)
    ego_status: Counter = field(default_factory=Counter)  # of the clips written: ok / missing / empty / invalid
    seconds: float = 0.0
    store_clips: int = 0  # clips in the consolidated index at the end
    # wall seconds per stage (decode, preprocess, tokenize, ego, write), so the bottleneck is visible
    stage_seconds: Counter = field(default_factory=Counter)

    @property
    def summary(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        lines = [f"{self.part} of {self.store}: {self.videos} videos, {self.clips_written} clips written "
                 f"({self.frames} frames, {rate:.1f} frames/s), {self.clips_present} already present, "
                 f"{len(self.skipped)} skipped; the store now indexes {self.store_clips} clips"]
        no_ego = {k: v for k, v in self.ego_status.items() if k != "ok"}
        if no_ego:
            lines.append(f"  kept without ego motion (NaN): {dict(no_ego)}")
        lines += [f"  skipped {video_id}: {reason}" for video_id, reason in sorted(self.skipped.items())]
        return "\n".join(lines)


def ingest(bdd_root: str | os.PathLike, split: str, out: str | os.PathLike, bundle, fps: float = 4.0,
           limit: int | None = None, store_frames: bool = False, shard: tuple[int, int] = (0, 1),
           batch_size: int = 16, progress: bool = True, subset: str | None = None) -> IngestReport:
    """Tokenise the `split` videos of shard `shard = (index, count)` under `bdd_root` into the store `out`.

    Args:
        bundle: a loaded simulator bundle whose tokenizer encodes the frames (on the tokenizer's device), or a
            `Tokenizer` itself (a TOK fresh from training/tok.py, before any bundle exists).
        limit: ingest only the first `limit` videos of the shard (sorted by id).
        store_frames: also store the 256x256 uint8 model frames (for VDEC training and evaluation).
        subset: "val-500", the paper's fixed 500 validation videos (`bdd100k.val_500`), chosen before sharding.

    Raises:
        ValueError: a bad shard, batch size, fps or limit; a part written with other settings.
        FileNotFoundError: no `bdd_root/videos/<split>`.
    """
    index, count = check_shard(shard)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    if fps <= 0:
        raise ValueError(f"fps={fps} must be positive (the paper ingests at 4)")
    if limit is not None and limit < 0:
        raise ValueError(f"limit={limit} must be >= 0, or None for all videos")
    if subset not in (None, "val-500"):
        raise ValueError(f"subset={subset!r}: the only named subset is 'val-500' (or None for every video)")
    started = time.perf_counter()
    videos = list_videos(bdd_root, split)
    if subset == "val-500":
        chosen = set(val_500([v.id for v in videos]))
        videos = [v for v in videos if v.id in chosen]
    videos = videos[index::count]
    if limit is not None:
        videos = videos[:limit]
    tokenizer = getattr(bundle, "tokenizer", bundle)
    size = tokenizer.config.image_size
    writer = PartWriter(out, index, fps=fps, split=split, frame_size=size, store_frames=store_frames,
                        token_shape=(tokenizer.config.tokens_per_side,) * 2, codebook_size=tokenizer.config.codebook_size)
    report = IngestReport(store=str(out), part=writer.name, videos=len(videos))
    present = writer.clip_ids
    todo = [v for v in videos if v.id not in present]
    report.clips_present = len(videos) - len(todo)
    if todo and writer.complete:
        writer.set_complete(False)  # extending a finished part: it is incomplete until the last clip is in
    param = next(tokenizer.parameters())
    device = (param.device, param.dtype)
    bar = _progress(todo, progress, writer.name)
    for video in bar:
        t0 = time.perf_counter()
        try:
            camera = read_video(video.path, fps=fps)  # (T, H, W, 3) uint8
        except (VideoDecodeError, FileNotFoundError) as e:
            report.skipped[video.id] = str(e)
            continue
        finally:
            report.stage_seconds["decode"] += time.perf_counter() - t0
        if len(camera) < MIN_FRAMES:
            report.skipped[video.id] = f"{len(camera)} frame(s) at {fps} fps, fewer than {MIN_FRAMES}"
            continue
        tokens, model_frames = _tokenize(tokenizer, camera, batch_size, device, store_frames, report.stage_seconds)
        t0 = time.perf_counter()
        times = np.arange(len(camera), dtype=np.float64) / fps  # read_video's output frame k is at k / fps
        ego = read_ego_motion(video.info_path, times)
        report.stage_seconds["ego"] += time.perf_counter() - t0
        data = {"tokens": tokens, "speed_mps": ego.speed_mps, "yaw_rate_rps": ego.yaw_rate_rps,
                "frame_time_s": times.astype(np.float32)}
        if store_frames:
            data["frames"] = model_frames
        t0 = time.perf_counter()
        writer.append_clip({"clip_id": video.id, "video_id": video.id, "split": video.split, "fps": float(fps),
                            "ego_status": ego.status, "attributes": video.attributes,
                            "labels": _labelled_frames(video, camera.shape[1:3], len(camera), fps, size),
                            "camera_view": CropView.of(*camera.shape[1:3], size=size).as_dict()}, data)
        report.stage_seconds["write"] += time.perf_counter() - t0
        report.clips_written += 1
        report.frames += len(camera)
        report.ego_status[ego.status] += 1
        if progress:
            bar.set_postfix(frames_per_s=f"{report.frames / (time.perf_counter() - started):.1f}")
    writer.set_complete(True)  # last: the part counts only from here
    report.store_clips = len(consolidate(out)["clips"])
    report.seconds = time.perf_counter() - started
    return report


def _labelled_frames(video, camera_hw: tuple[int, int], num_frames: int, fps: float, size: int) -> list[dict]:
    """The video's ground-truth boxes as store frames: [{"frame": k, "boxes": [{category, box2d[, id]}], "source",
    "time_s"}], boxes in the pixels of the model's size x size view (`frames.boxes_to_model_view`), by frame.

    Two sources: BDD100K's tracking labels (box_track_20, 5 fps), each store frame taking the nearest tracking
    frame within half a store frame (at 4 fps every store frame has one, at most 0.1 s away: `time_s` says which);
    and det_20's one labelled frame (at 10 s), on the store frame nearest its time, which wins where both label a
    frame. Labels whose time lies past the clip are left out; a frame labelled with no objects still counts."""
    from .bdd100k import read_track_labels

    def frame_of(time_s: float) -> int | None:
        frame = int(round(time_s * fps))
        return frame if frame < num_frames and abs(frame / fps - time_s) <= 0.5 / fps + 1e-9 else None

    entries: dict[int, dict] = {}
    for time_s, boxes in read_track_labels(video.track_path) if video.track_path else []:
        frame = frame_of(time_s)
        if frame is not None and (frame not in entries or
                                  abs(frame / fps - time_s) < abs(frame / fps - entries[frame]["time_s"])):
            entries[frame] = {"frame": frame, "boxes": boxes, "source": "box_track_20", "time_s": time_s}
    if video.label_time_s is not None and (frame := frame_of(video.label_time_s)) is not None:
        entries[frame] = {"frame": frame, "boxes": video.labels, "source": "det_20", "time_s": video.label_time_s}
    return [{**e, "boxes": boxes_to_model_view(e["boxes"], *camera_hw, size=size)} for _, e in sorted(entries.items())]


@torch.inference_mode()
def _tokenize(tokenizer, camera: np.ndarray, batch_size: int, device, keep_frames: bool, seconds: Counter):
    """Camera frames (T, H, W, 3) uint8 -> tokens (T, h, w) uint16 and, with keep_frames, model frames
    (T, S, S, 3) uint8 (the preprocessed crop, as VDEC sees it); None otherwise. Adds stage times to `seconds`."""
    tokens, frames = [], []
    for i in range(0, len(camera), batch_size):
        t0 = time.perf_counter()
        x = preprocess(camera[i:i + batch_size], size=tokenizer.config.image_size).to(*device)  # (B, 3, S, S)
        if keep_frames:
            frames.append(postprocess(x.float()))
        t1 = time.perf_counter()
        tokens.append(tokenizer.encode(x).to(torch.int32).cpu().numpy().astype(np.uint16))
        seconds["preprocess"] += t1 - t0
        seconds["tokenize"] += time.perf_counter() - t1
    return np.concatenate(tokens), (np.concatenate(frames) if keep_frames else None)


def _progress(items, enabled: bool, name: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=f"ingest {name}", unit="video")
