"""Synthetic drives straight into a token store, at the model's view (no video encode, no 720p round trip).

    write_synthetic_store("train.zarr", tokenizer, num_drives=96, seconds=10, seed=0)    # openvica synthetic store

Drive i is drawn from `default_rng([S, i])`: with world="commanded" (the default) `random_commanded_drive`, an ego
that changes speed and lane and swerves on a road of changing bends; with world="cruise" `random_drive`, the drive of
`openvica synthetic bdd100k --seed S` video i (a lane keeper on a road of constant bend); with world="piecewise" the
commanded world's drive driven open loop by `random_piecewise_commands` (brakes, starts and turns off the road's bend
that show in the next frame, and that no frame before tells). It is rendered at 640x360
with the focal length that frame has after the paper's 0.5 downscale of 1280x720, and centre-cropped to 256x256:
the view `preprocess` makes of the BDD100K-layout video, without its H.264 coding. The store holds what
`openvica data ingest --store-frames` writes (tokens, frames, ego speed and yaw rate, frame times, attributes) plus
the synthetic world's ground truth on every frame: `labels` lists each frame's car boxes, in the crop's pixels.
Use `openvica synthetic bdd100k` + `openvica data ingest` when the ingest path itself is what is being exercised.
"""

from __future__ import annotations

import hashlib
import os
import time

import numpy as np
import torch

from openvica_sim.frames import CropView, boxes_to_model_view, center_crop, preprocess

from .store import PartWriter, check_shard, consolidate
from .synthetic import random_commanded_drive, random_drive, random_piecewise_commands, render_commands, render_drive

WORLDS = ("commanded", "cruise", "piecewise")

RENDER_HEIGHT, RENDER_WIDTH = 360, 640  # BDD100K's 1280x720 after the paper's 0.5 downscale
RENDER_FOCAL_PX = 0.8 * 1280 * 0.5  # bdd_layout renders 1280 wide with focal 0.8 * width


def drive_id(seed: int, index: int) -> str:
    """The clip id of drive `index` of `seed`: the same as the BDD100K-layout tree's video id."""
    return f"synth-{index:04d}-{hashlib.sha1(f'{seed}-{index}'.encode()).hexdigest()[:8]}"


@torch.inference_mode()
def write_synthetic_store(out: str | os.PathLike, tokenizer, num_drives: int = 8, seconds: float = 10.0,
                          fps: float = 4.0, seed: int = 0, split: str = "train", batch_size: int = 16,
                          world: str = "commanded", shard: tuple[int, int] = (0, 1), progress: bool = True) -> dict:
    """Render `num_drives` drives of `seconds` at `fps` into the store `out`, tokenised by `tokenizer` (a `Tokenizer`
    or a bundle); a rerun adds only the drives not yet in the store. With `shard` = (i, n) this process writes drives
    i, i + n, ... into part i, so n processes fill one store (the last to finish consolidates all of them). Returns
    the consolidated index.

    Raises:
        ValueError: num_drives < 1, seconds * fps < 2 frames, an unknown world, or a store part written with other
            settings.
    """
    if world not in WORLDS:
        raise ValueError(f"world={world!r}: choose one of {WORLDS}")
    index, count = check_shard(shard)
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    num_frames = int(round(seconds * fps))
    if num_drives < 1 or num_frames < 2:
        raise ValueError(f"num_drives={num_drives} must be >= 1 and seconds * fps = {seconds * fps:g} >= 2 frames")
    size = tokenizer.config.image_size
    writer = PartWriter(out, index, fps=fps, split=split, frame_size=size, store_frames=True,
                        token_shape=(tokenizer.config.tokens_per_side,) * 2, codebook_size=tokenizer.config.codebook_size)
    present = writer.clip_ids
    todo = [i for i in range(index, num_drives, count) if drive_id(seed, i) not in present]
    if todo and writer.complete:
        writer.set_complete(False)
    param = next(tokenizer.parameters())
    bar = _progress(todo, progress)
    started = time.perf_counter()
    for i in bar:
        rng = np.random.default_rng([seed, i])  # as bdd_layout.write_bdd100k draws video i
        drive = random_drive(rng) if world == "cruise" else random_commanded_drive(rng, seconds)
        if world == "piecewise":  # the commanded world's roads and weather, open-loop commands instead of its driver
            speed, yaw = random_piecewise_commands(rng, drive, num_frames - 1, fps)
            clip = render_commands(drive, speed, yaw, fps=fps, height=RENDER_HEIGHT, width=RENDER_WIDTH,
                                   rng_seed=int(rng.integers(2**31)), focal_px=RENDER_FOCAL_PX)
        else:
            clip = render_drive(drive, num_frames, fps=fps, height=RENDER_HEIGHT, width=RENDER_WIDTH,
                                rng_seed=int(rng.integers(2**31)), focal_px=RENDER_FOCAL_PX)
        frames = np.ascontiguousarray(center_crop(clip.frames.transpose(0, 3, 1, 2), size).transpose(0, 2, 3, 1))
        tokens = np.concatenate([tokenizer.encode(preprocess(frames[k:k + batch_size]).to(param.device, param.dtype))
                                 .cpu().numpy().astype(np.uint16) for k in range(0, num_frames, batch_size)])
        labels = [{"frame": k, "boxes": boxes_to_model_view(boxes, RENDER_HEIGHT, RENDER_WIDTH, size=size)}
                  for k, boxes in enumerate(clip.boxes)]  # 640x360 is already at the short side: a shift and a clip
        clip_id = drive_id(seed, i)
        writer.append_clip({"clip_id": clip_id, "video_id": clip_id, "split": split, "fps": float(fps),
                            "ego_status": "ok", "attributes": clip.attributes, "labels": labels,
                            "source": f"synthetic ({world})",
                            "camera_view": CropView.of(RENDER_HEIGHT, RENDER_WIDTH, size=size).as_dict()},
                           {"tokens": tokens, "frames": frames, "speed_mps": clip.speed_mps,
                            "yaw_rate_rps": clip.yaw_rate_rps,
                            "frame_time_s": (np.arange(num_frames) / fps).astype(np.float32)})
        if progress:
            bar.set_postfix(frames_per_s=f"{(todo.index(i) + 1) * num_frames / (time.perf_counter() - started):.1f}")
    writer.set_complete(True)
    return consolidate(out)


def _progress(items, enabled: bool):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc="synthetic store", unit="drive")
