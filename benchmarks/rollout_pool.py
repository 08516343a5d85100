"""Rollouts through the Ray simulator pool: frames/s with 1, 2, ... actors, and the scaling efficiency.

Each measurement runs the same rollouts (random seed tokens, `--frames` predicted frames each) through
`SimulatorPool.run(rollout_batch, ...)`, the code path scenario generation uses, after one warm-up batch per actor
(prompt cache, allocator). There are `--batches-per-actor` x the largest actor count batches, so every actor
gets the same number at every count; `scaling_efficiency` is frames/s with A actors over A x frames/s with one
(1.0 = linear). CPU actors reserve one Ray CPU each and run one torch thread (Ray sets OMP_NUM_THREADS).
The bundle is `--bundle` or a random one of `--preset` (a random model decodes as fast as a trained one),
written to a temporary folder that the actors load.

    .venv/bin/python benchmarks/rollout_pool.py --json --preset tiny --workers 1 2 --batch 4 --frames 2
    .venv/bin/python benchmarks/rollout_pool.py --json --preset lwm-7b --device cuda --batch 1 8 32 --frames 4
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import ray
import torch

from _common import device_name, emit, git_sha, log, timed
from openvica_sim.bundle import PRESETS, create_random_bundle, read_meta, save_bundle
from openvica_sim.distributed import RolloutRequest, SimulatorPool, connect, rollout_batch


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--bundle", default=None, help="a bundle folder (default: a random --preset bundle)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: one GPU per actor")
    p.add_argument("--workers", type=int, nargs="+", default=None, help="actor counts (default 1 2 on cpu, 1 on cuda)")
    p.add_argument("--batch", type=int, nargs="+", default=[4], help="rollouts per engine call")
    p.add_argument("--frames", type=int, default=2, help="predicted frames per rollout")
    p.add_argument("--batches-per-actor", type=int, default=2, help="timed batches per actor at the largest count")
    p.add_argument("--top-k", type=int, default=None, help="default: the bundle's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="JSON lines only (no table on stderr)")
    args = p.parse_args(argv)
    args.workers = args.workers or ([1] if args.device == "cuda" else [1, 2])
    if min(args.workers) < 1 or min(args.batch) < 1 or args.frames < 1 or args.batches_per_actor < 1:
        p.error("--workers, --batch, --frames and --batches-per-actor must be at least 1")
    return args


def make_bundle(args, folder: Path) -> str:
    """A random --preset bundle written to `folder`, made on the device and freed there before the actors load it."""
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32  # load_bundle's default on each device
    log(f"writing a random {args.preset!r} bundle to {folder} ...")
    bundle = create_random_bundle(args.preset, seed=args.seed, device=args.device, dtype=dtype)
    path = save_bundle(bundle, folder / args.preset)
    del bundle
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return str(path)


def requests(meta: dict, count: int, frames: int, seed: int) -> list[RolloutRequest]:
    grid = int(round(meta["tokens_per_frame"] ** 0.5))
    rng = np.random.default_rng(seed)
    return [RolloutRequest(seed=seed + i, num_frames=frames,
                           tokens=rng.integers(0, meta["codebook_size"], (2, grid, grid)))  # T = 2 seed frames
            for i in range(count)]


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    workdir = Path(tempfile.mkdtemp(prefix="rollout-pool-"))
    owns_ray = connect()  # one cluster for all measurements (RAY_ADDRESS, or a local one)
    records = []
    try:
        bundle = args.bundle or make_bundle(args, workdir)
        meta = read_meta(bundle)
        common = {"bench": "rollout_pool", "git": git_sha(), "device": device_name(device),
                  "dtype": "bf16" if args.device == "cuda" else "fp32", "preset": None if args.bundle else args.preset,
                  "frames": args.frames, "warmup": 1}
        kwargs = {} if args.top_k is None else {"top_k": args.top_k}
        for batch in args.batch:
            work = requests(meta, batch * max(args.workers) * args.batches_per_actor, args.frames, args.seed)
            single = None
            for workers in args.workers:
                log(f"{workers} actor(s), batch {batch}, {len(work)} rollouts ...")
                with SimulatorPool(bundle, num_workers=workers, use_gpu=args.device == "cuda",
                                   simulator_kwargs=kwargs) as pool:
                    pool.run(rollout_batch, work[:batch * workers], batch_size=batch, progress=False)  # warm-up
                    _, seconds = timed(lambda: pool.run(rollout_batch, work, batch_size=batch, progress=False), device)
                frames_per_s = len(work) * args.frames / seconds
                single = frames_per_s if workers == 1 else single
                record = {**common, "workers": workers, "batch": batch, "rollouts": len(work), "seconds": seconds,
                          "frames_per_s": frames_per_s,
                          "scaling_efficiency": None if single is None else frames_per_s / (workers * single)}
                emit(record)
                records.append(record)
    finally:
        if not args.json:
            log(f"{'workers':>7} {'batch':>5} {'rollouts':>8} {'frames/s':>9} {'efficiency':>10}")
            for r in records:
                eff = "-" if r["scaling_efficiency"] is None else f"{r['scaling_efficiency']:.2f}"
                log(f"{r['workers']:>7} {r['batch']:>5} {r['rollouts']:>8} {r['frames_per_s']:>9.2f} {eff:>10}")
        if owns_ray:
            ray.shutdown()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
