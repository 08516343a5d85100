"""The dataset-level fields of a large scenario dataset (`scenarios.select.dataset_fields`): seconds and peak extra
memory for n clip records, by selection rule. `select.by: all` and `surprise` read no embeddings; `diverse` runs k
k-center picks over n codebook-usage histograms of dimension K.

    .venv/bin/python benchmarks/select_fields.py --clips 10000 --by all surprise
    .venv/bin/python benchmarks/select_fields.py --clips 10000 --by diverse --k 100 --codebook 1024
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from _common import emit, git_sha
from openvica_sim.scenarios import dataset as ds
from openvica_sim.scenarios.select import dataset_fields
from openvica_sim.scenarios.spec import spec_from_dict


def records(n: int, seed: int = 0) -> list[dict]:
    """n clip rows with the fields dataset_fields reads (surprise, gates, ids)."""
    rng = np.random.default_rng(seed)
    return [{"clip_id": f"c{i:06d}-f0000-b00", "num_seed_frames": 2, "surprise_mean": float(s),
             "flicker_flag": bool(f), "frozen_flag": False}
            for i, (s, f) in enumerate(zip(rng.gamma(4.0, 0.5, n), rng.random(n) < 0.05))]


def write_tokens(root: Path, rows: list[dict], codebook: int, frames: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for r in rows:
        folder = ds.clip_dir(root, r["clip_id"])
        folder.mkdir(parents=True)
        np.save(folder / "tokens.npy", rng.integers(0, codebook, (frames, 16, 16)).astype(np.uint16))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--clips", type=int, default=10_000)
    p.add_argument("--by", nargs="+", default=["all", "surprise"], choices=["all", "surprise", "diverse"])
    p.add_argument("--k", type=int, default=100, help="diverse: clips to pick")
    p.add_argument("--codebook", type=int, default=1024, help="diverse: K of the usage histograms")
    p.add_argument("--frames", type=int, default=16, help="diverse: frames per clip (T + N)")
    args = p.parse_args(argv)
    rows = records(args.clips)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if "diverse" in args.by:
            write_tokens(root, rows, args.codebook, args.frames)
        for by in args.by:
            spec = spec_from_dict({"select": {"by": by, "fraction": 0.1, "k": args.k}})
            tracemalloc.start()
            started = time.perf_counter()
            out = dataset_fields(rows, spec, root)
            seconds = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            emit({"bench": "select_fields", "git": git_sha(), "clips": args.clips, "by": by,
                  "k": args.k if by == "diverse" else None, "codebook": args.codebook if by == "diverse" else None,
                  "selected": sum(r["selected"] for r in out), "seconds": round(seconds, 3),
                  "peak_mib": round(peak / 2**20, 1)})


if __name__ == "__main__":
    main()
