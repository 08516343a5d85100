"""The quality cost of the fast-decoding options (issue 18), in nats per code: the world model's teacher-forced
surprise at held-out real clips under each option, minus the same without it. One JSON line per option.

- wavefront w: every code predicted as the wavefront schedule of width w predicts it (`Simulator.score` with
  `wavefront=w`: each code sees only the codes sampled before it), against raster;
- int8 / fp8 KV / int8 + fp8 KV: the codes fed through the engine's cached path (`score(cached=True)`) with int8
  weights (`WorldModel.quantize`) and/or the float8 e4m3 cache (`kv_dtype="fp8"`), fake-quantised on this CPU:
  the same arithmetic a GPU does with those formats, up to its kernels' rounding; against the plain cached path.

    .venv/bin/python benchmarks/decode_quality.py --json                          # the embedded default, 8 clips
    .venv/bin/python benchmarks/decode_quality.py --json --heldout runs/embedded/tokens-val.zarr --wavefront 1 2 4
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from _common import device_name, emit, git_sha, log
from openvica_sim import embedded
from openvica_sim.bundle import load_bundle
from openvica_sim.evaluation.clips import EvalClips
from openvica_sim.simulator import Simulator


def mean_surprise(values: list[np.ndarray]) -> float:
    return float(np.nanmean(np.concatenate(values)))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--bundle", default=None, help="default: the embedded bundle")
    p.add_argument("--heldout", default=None, help="a store with frames or a folder of clips (default: the shipped "
                   "seed clips)")
    p.add_argument("--frames", type=int, default=16, help="frames of each clip scored (from frame 2 on)")
    p.add_argument("--clips", type=int, default=None)
    p.add_argument("--wavefront", type=int, nargs="*", default=[1, 2, 4])
    p.add_argument("--quant", nargs="*", default=["int8", "fp8", "int8+fp8"], help="int8, fp8, int8+fp8")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    bundle_path = args.bundle or str(embedded.bundle_path())
    bundle = load_bundle(bundle_path, video_decoder=False)
    clips = EvalClips.open(args.heldout or embedded.clips_path(), args.frames, limit=args.clips)
    raster_order = bundle.layout.grid  # a wavefront as wide as a row is raster order, whatever the bundle's default
    sim = Simulator(bundle, decoder="tokenizer", wavefront=raster_order)
    tokens = [sim.encode(clips.frames(c)).cpu() for c in clips.clips]
    common = {"bench": "decode_quality", "git": git_sha(), "device": device_name(torch.device("cpu")),
              "bundle": bundle_path, "clips": len(tokens), "frames": args.frames}
    log(f"{len(tokens)} clips of {args.frames} frames")

    started = time.perf_counter()
    raster = mean_surprise(sim.score(tokens))
    emit({**common, "option": "raster", "surprise": raster, "delta_nats": 0.0,
          "seconds": round(time.perf_counter() - started, 1)})
    for width in args.wavefront:
        started = time.perf_counter()
        value = mean_surprise(Simulator(bundle, decoder="tokenizer", wavefront=width).score(tokens))
        emit({**common, "option": f"wavefront {width}", "wavefront": width, "surprise": value,
              "delta_nats": value - raster, "forwards_per_frame": 15 * min(width, 16) + 16,
              "seconds": round(time.perf_counter() - started, 1)})
    if args.quant:
        started = time.perf_counter()
        cached = mean_surprise(sim.score(tokens, cached=True))
        emit({**common, "option": "cached", "surprise": cached, "delta_nats": cached - raster,
              "seconds": round(time.perf_counter() - started, 1)})
        quantized = None
        for option in args.quant:
            if option not in ("int8", "fp8", "int8+fp8"):
                p.error(f"--quant {option!r}: choose among int8, fp8, int8+fp8")
            started = time.perf_counter()
            model = bundle
            if "int8" in option:
                if quantized is None:
                    quantized = copy.deepcopy(bundle)
                    quantized.world_model.quantize("int8")
                model = quantized
            value = mean_surprise(Simulator(model, decoder="tokenizer", wavefront=raster_order,
                                            kv_dtype="fp8" if "fp8" in option else None)
                                  .score(tokens, cached=True))
            emit({**common, "option": option, "surprise": value, "delta_nats": value - cached,
                  "seconds": round(time.perf_counter() - started, 1)})


if __name__ == "__main__":
    main()
