"""Which row widths round alike (issue 18, point 4): for each of the world model's weight shapes, the product of the
same first row at widths M = 1 .. --max-width, compared bit for bit with the widest. BLAS libraries pick kernels by
M (MKL's GEMV/GEMM split on CPUs, cuBLAS's heuristics on GPUs), so a decode step is batch invariant only at a
width where every shape rounds as at larger widths: the engine's fixed minimum width (`Simulator(min_rows=)`).

One JSON line per shape: the widths whose first row equals the widest width's ("same"), the smallest width from
which every larger one does ("invariant_from"), and the largest difference seen.

    .venv/bin/python benchmarks/batch_invariance.py --json --preset tiny                       # this CPU
    python benchmarks/batch_invariance.py --json --preset lwm-7b --device cuda --dtype bf16    # one GPU
"""

from __future__ import annotations

import argparse

import torch

from _common import DTYPES, device_name, emit, git_sha, log
from openvica_sim.models.world_model import PRESETS, WorldModelConfig


def shapes(config: WorldModelConfig) -> dict[str, tuple[int, int]]:
    """(in, out) of the decode step's products (the CPU path fuses q|k|v and gate|up; the head reads K code rows)."""
    d, kv = config.hidden_size, config.num_kv_heads * config.head_dim
    return {"qkv": (d, d + 2 * kv), "o": (d, d), "gate_up": (d, 2 * config.intermediate_size),
            "down": (config.intermediate_size, d), "code_head": (d, config.codebook_size)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default bf16 on cuda, fp32 on cpu")
    p.add_argument("--max-width", type=int, default=64)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    config = WorldModelConfig(**PRESETS[args.preset])
    generator = torch.Generator(device="cpu").manual_seed(0)
    for name, (n_in, n_out) in shapes(config).items():
        weight = (torch.randn(n_out, n_in, generator=generator) / n_in ** 0.5).to(device, dtype)
        x = torch.randn(args.max_width, n_in, generator=generator).to(device, dtype)
        with torch.inference_mode():
            rows = [(x[:m] @ weight.t())[0] for m in range(1, args.max_width + 1)]
        widest = rows[-1]
        same = [m for m, row in enumerate(rows, start=1) if torch.equal(row, widest)]
        invariant_from = next((m for m in range(1, args.max_width + 1) if all(k in same for k in range(m, args.max_width
                                                                                                        + 1))), None)
        worst = max(float((row.float() - widest.float()).abs().max()) for row in rows)
        emit({"bench": "batch_invariance", "git": git_sha(), "device": device_name(device),
              "dtype": str(dtype).removeprefix("torch."), "preset": args.preset, "shape": name, "in": n_in,
              "out": n_out, "max_width": args.max_width, "same": same, "invariant_from": invariant_from,
              "max_abs_diff": worst})
    if not args.json:
        log("widths whose first row equals the widest width's, per shape: above")


if __name__ == "__main__":
    main()
