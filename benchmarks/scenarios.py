"""Scenario generation throughput: generated frames/s and the share of time in the world model, the video decoder
and writing the clips, through the generator's own `run_samples` (what `openvica scenarios generate` runs).

    .venv/bin/python benchmarks/scenarios.py --json                                   # tiny random bundle, CPU
    .venv/bin/python benchmarks/scenarios.py --json --bundle openvica_sim/embedded/bundle   # the embedded default
    python benchmarks/scenarios.py --json --preset lwm-7b --device cuda --batch 8 32       # one GPU

Seed clips are synthetic (the world of openvica_sim.data.synthetic, written as a folder of clips); each seed clip
is branched `--branches` times, so the prefill is shared as in a real spec.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import DTYPES, device_name, emit, git_sha, log
from openvica_sim.bundle import create_random_bundle, load_bundle
from openvica_sim.data.clips import FolderClips
from openvica_sim.data.synthetic import random_drive, render_clip
from openvica_sim.scenarios.generate import Job, plan
from openvica_sim.scenarios.query import select
from openvica_sim.scenarios.spec import spec_from_dict
from openvica_sim.simulator import Simulator
from openvica_sim.video_io import write_image


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--preset", default="tiny", help="random bundle preset when no --bundle (tiny | test | lwm-7b)")
    p.add_argument("--bundle", default=None, help="a bundle folder instead of a random preset")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="fp32", choices=sorted(DTYPES), help="world model dtype (random presets)")
    p.add_argument("--batch", type=int, nargs="+", default=[4], help="samples per engine call")
    p.add_argument("--seed-clips", type=int, default=2)
    p.add_argument("--branches", type=int, default=2)
    p.add_argument("--horizon", type=int, default=4)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="only JSON lines on stdout")
    return p.parse_args(argv)


def main(argv=None) -> None:
    from openvica_sim.scenarios.generate import run_samples

    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="openvica-bench-scenarios-") as tmp:
        tmp = Path(tmp)
        if args.bundle is None:  # built on the device: a 7B in fp32 on the host would need 28 GB first
            log(f"building a random {args.preset!r} bundle on {device} ...")
            bundle = create_random_bundle(args.preset, seed=0, dtype=DTYPES[args.dtype], device=device)
        else:
            bundle = load_bundle(args.bundle, device=device)
        for i in range(args.seed_clips):  # synthetic seed clips, 2 frames each
            frames = render_clip(random_drive(np.random.default_rng(i)), 2)
            for k, frame in enumerate(frames):
                write_image(tmp / "clips" / f"clip-{i:03d}" / f"{k:06d}.png", frame)
        spec = spec_from_dict({"name": "bench", "fork": {"branches": args.branches}, "horizon": args.horizon})
        samples = plan(spec, select(FolderClips(tmp / "clips").infos(), spec))
        simulator = Simulator(bundle, temperature=1.0)
        common = {"bench": "scenarios", "git": git_sha(), "device": device_name(device),
                  "bundle": str(args.bundle or args.preset), "seed_clips": args.seed_clips, "branches": args.branches,
                  "horizon": args.horizon}
        if device.type == "cpu":
            common["threads"] = torch.get_num_threads()
        for batch in args.batch:
            out = tmp / f"out-{batch}"
            job = Job(out=str(out), spec=spec.to_dict(), clips=str(tmp / "clips"), attributes={})
            run_samples(simulator, Job(out=str(tmp / "warmup"), spec=spec.to_dict(), clips=str(tmp / "clips"),
                                       attributes={}), samples[:1])  # warm-up: prompt cache, allocator
            simulator.profile, simulator.timings = True, {}
            started = time.perf_counter()
            for k in range(0, len(samples), batch):
                run_samples(simulator, job, samples[k:k + batch])
            seconds = time.perf_counter() - started
            simulator.profile = False
            stages = {k: round(v, 3) for k, v in simulator.timings.items()}
            frames = len(samples) * args.horizon
            record = {**common, "batch": batch, "clips": len(samples), "frames": frames, "seconds": round(seconds, 3),
                      "frames_per_s": round(frames / seconds, 3), "stage_seconds": stages,
                      "share": {k: round(v / seconds, 3) for k, v in stages.items()}}
            emit(record)
            if not args.json:
                log(f"batch {batch}: {record['frames_per_s']:.3f} frames/s, shares {record['share']}")


if __name__ == "__main__":
    main()
