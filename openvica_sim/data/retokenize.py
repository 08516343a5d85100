"""A token store's frames re-encoded by another tokenizer, into a new store (`openvica data retokenize`).

Fine-tuning TOK (training/tok.py) changes every token, so the world model (training/wm.py) needs the training clips
encoded anew; a store ingested with --store-frames keeps the 256x256 frames that were encoded, so this is a
re-encode, with no video decoded or synthetic drive rendered again. Everything else of a clip (ego motion, frame
times, attributes, labels, camera view) is copied as it is, frames included.

    retokenize_store("train.zarr", "train-tok2.zarr", tokenizer)          # one process
    retokenize_store(..., shard=(i, n))                                   # n processes, part i each

Like the ingest, the process with shard (i, n) writes clips i, i + n, ... (in the source's index order) into its own
part i, resumes clip by clip, and consolidates the index at the end (the last shard to finish indexes all parts).
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from ..frames import preprocess
from .store import PER_FRAME, PartWriter, TokenStore, check_shard, consolidate


@torch.inference_mode()
def retokenize_store(source: str | os.PathLike, out: str | os.PathLike, tokenizer, shard: tuple[int, int] = (0, 1),
                     batch_size: int = 16, progress: bool = True) -> dict:
    """Encode every frame of `source` (a store with frames) with `tokenizer` (a `Tokenizer` or a bundle) into the
    store `out`; returns `out`'s consolidated index.

    Raises:
        ValueError: `source` has no frames, `out` is `source`, or the shard is not (i, n) with 0 <= i < n.
    """
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    index, count = check_shard(shard)
    store = TokenStore(source)
    if os.path.realpath(store.path) == os.path.realpath(out):
        raise ValueError(f"out={out} is the source store: write the re-encoded tokens into a new store")
    if not store.has_frames:
        raise ValueError(f"{source} keeps no frames to re-encode; ingest it with --store-frames (or re-ingest the "
                         f"videos with the new tokenizer: `openvica data ingest --tokenizer ...`)")
    first = store.clips[0]
    writer = PartWriter(out, index, fps=float(first["fps"]), split=first["split"],
                        token_shape=(tokenizer.config.tokens_per_side,) * 2, frame_size=tokenizer.config.image_size,
                        store_frames=True, codebook_size=tokenizer.config.codebook_size)
    present = writer.clip_ids
    todo = [c for c in store.clips[index::count] if c["clip_id"] not in present]
    if todo and writer.complete:
        writer.set_complete(False)
    param = next(tokenizer.parameters())
    bar = todo
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(todo, desc="retokenize", unit="clip")
    started, frames_done = time.perf_counter(), 0
    for entry in bar:
        clip = store.clip(entry["clip_id"], keys=(*PER_FRAME, "frames"))
        frames = clip["frames"]
        tokens = np.concatenate([tokenizer.encode(preprocess(frames[k:k + batch_size]).to(param.device, param.dtype))
                                 .cpu().numpy().astype(np.uint16) for k in range(0, len(frames), batch_size)])
        kept = {k: v for k, v in entry.items() if k not in ("part", "start", "stop")}
        writer.append_clip(kept, {"tokens": tokens, "frames": frames, **{k: clip[k] for k in PER_FRAME}})
        frames_done += len(frames)
        if progress:
            bar.set_postfix(frames_per_s=f"{frames_done / (time.perf_counter() - started):.1f}")
    writer.set_complete(True)
    return consolidate(out)
