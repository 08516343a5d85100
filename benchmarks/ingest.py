"""Ingest speed: BDD100K-layout videos -> token store, split into decode, preprocess, tokenize, ego and write time.

A synthetic BDD100K tree (1280x720, 30 fps H.264, the real layout) is written once into --work, then ingested
with a random bundle of --preset (a random tokenizer encodes exactly as fast as a trained one) into a fresh
store. One JSON line on stdout: videos/s and frames/s over the whole run, the seconds of each stage, and the
store's bytes per clip against raw uint16 tokens (the synthetic scenes are flat, so their tokens compress more
than real video's will: budget the raw size).

    .venv/bin/python benchmarks/ingest.py --json --videos 8 --seconds 10
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from _common import device_name, emit, git_sha, log
from openvica_sim.bundle import PRESETS, create_random_bundle
from openvica_sim.data.bdd_layout import write_bdd100k
from openvica_sim.data.ingest import ingest
from openvica_sim.data.store import PARTS, TokenStore


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0, help="length of each video")
    p.add_argument("--fps", type=float, default=4.0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--store-frames", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--work", default=None, help="folder for the synthetic tree and the store (default: a temp dir)")
    p.add_argument("--json", action="store_true", help="JSON only (no summary on stderr)")
    return p.parse_args(argv)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    work = Path(args.work or tempfile.mkdtemp(prefix="ingest-bench-"))
    tree = work / f"bdd-{args.videos}x{args.seconds:g}s"
    if not (tree / "videos" / "train").is_dir():
        log(f"writing {args.videos} synthetic videos to {tree}")
        write_bdd100k(tree, "train", num_videos=args.videos, seconds=args.seconds, seed=0, progress=not args.json)
    store = work / "store.zarr"
    shutil.rmtree(store, ignore_errors=True)
    bundle = create_random_bundle(args.preset, seed=0, video_decoder=False, device=args.device)
    started = time.perf_counter()
    report = ingest(tree, "train", store, bundle, fps=args.fps, batch_size=args.batch_size,
                    store_frames=args.store_frames, progress=not args.json)
    seconds = time.perf_counter() - started
    clips = len(TokenStore(store))
    tokens = TokenStore(store).index["num_frames"] * 16 * 16 * 2
    store_bytes = folder_bytes(store / PARTS) + (store / "index.json").stat().st_size
    record = {"benchmark": "ingest", "git": git_sha(), "device": device_name(torch.device(args.device)),
              "threads": torch.get_num_threads(), "preset": args.preset, "videos": report.videos,
              "video_seconds": args.seconds, "fps": args.fps, "frames": report.frames, "clips": clips,
              "store_frames": args.store_frames, "seconds": round(seconds, 3),
              "videos_per_s": round(report.videos / seconds, 3), "frames_per_s": round(report.frames / seconds, 2),
              "stage_seconds": {k: round(v, 3) for k, v in sorted(report.stage_seconds.items())},
              "bytes_per_clip": round(store_bytes / clips), "raw_token_bytes_per_clip": round(tokens / clips)}
    emit(record)
    if not args.json:
        log(report.summary)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
