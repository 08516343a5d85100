"""The evaluation harness's own speed and memory (`openvica eval video`) on a random bundle of a preset: how long
the paper's protocol takes per clip, split into rollouts and scoring, and the peak GPU memory. A random model
decodes exactly as fast as a trained one; its numbers are noise and are not what this measures.

Clips are synthetic drives (`render_clip`) written as a folder of PNG clips; the feature networks are random ones
in the real file formats (`metrics.random_networks`: tiny Inception and I3D, and with --full-clip a CLIP of
ViT-L/14-336's real shapes, the heaviest of them). One JSON line on stdout.

    .venv/bin/python benchmarks/eval_video.py --json --preset test --clips 4 --frames 3        # CPU, seconds
    python benchmarks/eval_video.py --json --preset lwm-7b --device cuda --clips 32 --frames 14 --top-k 100 1000 \\
        --batch-size 32 --full-clip                                                          # one GPU
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import DTYPES, device_name, emit, git_sha, log
from openvica_sim.bundle import PRESETS, create_random_bundle
from openvica_sim.data.synthetic import random_drive, render_clip
from openvica_sim.evaluation import FeatureNetworks, VideoEvalSettings, evaluate_video
from openvica_sim.metrics.random_networks import write_feature_networks
from openvica_sim.video_io import write_image


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="test")
    p.add_argument("--clips", type=int, default=4)
    p.add_argument("--frames", type=int, default=14, help="N predicted frames per clip")
    p.add_argument("--top-k", type=int, nargs="+", default=[100])
    p.add_argument("--decoder", nargs="+", choices=["vdec", "dec"], default=["vdec", "dec"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="the WM's; default bf16 on cuda, fp32 on cpu")
    p.add_argument("--full-clip", action="store_true", help="CMMD's CLIP at ViT-L/14-336's real size (random)")
    p.add_argument("--out", default=None, help="keep the evaluation folder here (default: a temporary one)")
    p.add_argument("--json", action="store_true", help="only the JSON line on stdout")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    root = Path(tempfile.mkdtemp(prefix="eval-bench-"))
    T = 2
    for i in range(args.clips):  # a folder of clips: T + N + 1 frames each, the lookahead frame included
        for k, frame in enumerate(render_clip(random_drive(np.random.default_rng(i)), T + args.frames + 1)):
            write_image(root / "clips" / f"clip-{i:03d}" / f"{k:06d}.png", frame)
    nets = write_feature_networks(root / "networks", full_clip=args.full_clip)
    log(f"{args.clips} clips and random feature networks in {root}; building a random {args.preset} bundle")
    bundle = create_random_bundle(args.preset, seed=0, device=device, dtype=dtype)
    settings = VideoEvalSettings(
        bundle=f"random {args.preset}", clips=str(root / "clips"), num_frames=args.frames, top_k=args.top_k,
        decoders=args.decoder, batch_size=args.batch_size, device=args.device,
        networks=FeatureNetworks(inception=nets["inception"], i3d=nets["i3d"], clip_model=nets["clip"],
                                 lpips_net=nets["alexnet"], device=args.device))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = time.perf_counter()
    result = evaluate_video(settings, args.out or root / "eval", progress=not args.json, bundle=bundle)
    seconds = time.perf_counter() - started
    s = result["settings"]
    record = {"bench": "eval_video", "git": git_sha(), "device": device_name(device), "preset": args.preset,
              "dtype": str(dtype).removeprefix("torch."), "clips": args.clips, "frames": args.frames,
              "top_k": args.top_k, "decoders": args.decoder, "batch": args.batch_size, "full_clip": args.full_clip,
              "rows": len(result["results"]), "seconds": round(seconds, 1), "rollout_s": s["rollout_s"],
              "scoring_s": round(seconds - s["rollout_s"], 1),
              "rollout_frames_per_s": round(args.clips * len(args.top_k) * (args.frames + 1) / s["rollout_s"], 3)}
    if device.type == "cuda":
        record["peak_mem_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    emit(record)


if __name__ == "__main__":
    main()
