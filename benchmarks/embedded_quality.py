"""The embedded default's quality on held-out synthetic clips (issue 7): one JSON line.

- psnr_dec_db / psnr_vdec_db: TOK then DEC / VDEC against the frames (target: >= 24 dB).
- wm_cross_entropy: the WM's teacher-forced next-code cross-entropy (nats), against log K (target: <= log K / 2).
- rollout_mse_own / rollout_mse_other: a 14-frame rollout from each clip's first 2 frames, against the world's own
  continuation and (mean) against the same frames of the other clips; rollout_nearer_own is the share of clips
  whose rollout is nearer its own continuation than a different clip (target: all of them);
  rollout_nearer_own_than_any the stricter share nearer their own than the most similar other clip.
  copy_last_* are the same measures for a baseline that repeats the last seed frame (a static world).

    .venv/bin/python benchmarks/embedded_quality.py --json                                # shipped bundle and seeds
    .venv/bin/python benchmarks/embedded_quality.py --json --heldout runs/embedded/tokens-val.zarr   # all 12 clips
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from _common import device_name, emit, git_sha, log
from openvica_sim import embedded
from openvica_sim.bundle import load_bundle
from openvica_sim.metrics.quality import continuation_distances, reconstruction_psnr, teacher_forced_cross_entropy
from openvica_sim.simulator import Simulator

CLIP_FRAMES, SEED_FRAMES = 16, 2


def heldout_frames(source: str | None, max_clips: int | None) -> tuple[list[str], np.ndarray]:
    """(clip ids, frames (C, 16, H, W, 3) uint8): the first 16 frames of each held-out clip."""
    if source and (Path(source) / "zarr.json").is_file():  # a store ingested with --store-frames
        import zarr

        from openvica_sim.data.store import PARTS, TokenStore

        clips = [c for c in TokenStore(source).clips if c["stop"] - c["start"] >= CLIP_FRAMES][:max_clips]
        frames = [np.asarray(zarr.open_group(Path(source) / PARTS / c["part"], mode="r")["frames"]
                             [c["start"]:c["start"] + CLIP_FRAMES]) for c in clips]
        return [c["clip_id"] for c in clips], np.stack(frames)
    from openvica_sim.envs.seeds import FolderSeedSource

    seeds = FolderSeedSource(source or embedded.seeds_path())
    ids = seeds.clip_ids[:max_clips]
    return ids, np.stack([seeds.frames(i, CLIP_FRAMES) for i in ids])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--bundle", default=None, help="bundle folder (default: the embedded bundle)")
    p.add_argument("--heldout", default=None, help="held-out store with frames, or a seed-clip folder "
                   "(default: the embedded seed clips)")
    p.add_argument("--clips", type=int, default=None, help="at most this many clips")
    p.add_argument("--top-k", type=int, default=None, help="rollout top-k (default: the bundle's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="only the JSON line on stdout")
    args = p.parse_args(argv)
    started = time.perf_counter()
    bundle = load_bundle(args.bundle or embedded.bundle_path())
    ids, frames = heldout_frames(args.heldout, args.clips)
    log(f"{len(ids)} held-out clips of {CLIP_FRAMES} frames")
    record = {"bench": "embedded_quality", "git": git_sha(), "device": device_name(torch.device("cpu")),
              "bundle": str(args.bundle or embedded.bundle_path()), "clips": len(ids)}
    record["psnr_dec_db"] = reconstruction_psnr(bundle, frames, "tokenizer")
    if bundle.video_decoder is not None:
        record["psnr_vdec_db"] = reconstruction_psnr(bundle, frames, "video_decoder")
    tokens = torch.stack([torch.cat([bundle.tokenizer.encode(x) for x in _preprocessed(clip)]) for clip in frames])
    K = bundle.world_model.config.codebook_size
    record["wm_cross_entropy"] = teacher_forced_cross_entropy(bundle, tokens)
    record["log_codebook_size"] = math.log(K)
    sim = Simulator(bundle, **({"top_k": args.top_k} if args.top_k else {"top_k": bundle.top_k}))
    rollout = sim.rollout(frames[:, :SEED_FRAMES], CLIP_FRAMES - SEED_FRAMES,
                          seeds=[args.seed + i for i in range(len(ids))], progress=not args.json)
    real = frames[:, SEED_FRAMES:]
    d = continuation_distances(rollout.frames, real)
    copy = continuation_distances(np.repeat(frames[:, SEED_FRAMES - 1:SEED_FRAMES], len(real[0]), axis=1), real)
    record.update(top_k=sim.top_k, rollout_mse_own=float(d["own"].mean()), rollout_mse_other=float(d["other"].mean()),
                  rollout_nearer_own=d["nearer_own"], rollout_nearer_own_than_any=d["nearer_own_than_any"],
                  copy_last_mse_own=float(copy["own"].mean()), copy_last_nearer_own_than_any=copy["nearer_own_than_any"],
                  seconds=round(time.perf_counter() - started, 1))
    emit(record)


def _preprocessed(clip: np.ndarray):
    from openvica_sim.frames import preprocess

    return preprocess(clip).split(16)


if __name__ == "__main__":
    main()
