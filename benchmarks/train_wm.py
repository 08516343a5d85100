"""World-model training step speed: tokens/s, peak memory and (on GPU) model FLOPs utilisation.

One step = forward, masked cross-entropy, backward, AdamW, on random ids of the paper's layout: prompt + (T + N)
frames of 257 ids (4,112 image ids for T + N = 16), with random weights of a preset (a random model trains exactly
as fast as a trained one). `--lora` wraps it as training/wm.py does (r = 64 on every linear and embedding layer,
norms trained; frozen weights bf16 on GPU). One JSON line per batch size on stdout.

    .venv/bin/python benchmarks/train_wm.py --json --preset tiny --batch 1 4 --steps 3
    .venv/bin/python benchmarks/train_wm.py --json --preset lwm-7b --lora --device cuda --batch 1 --steps 5

Model FLOPs per token: 2 P (forward) + 2 P (backward through activations) + 2 P_t (weight gradients of the P_t
trainable parameters; 6 P for full training), plus attention 12 L D S (forward + backward) at sequence length S;
MFU = tokens/s x that / --peak-tflops (H100 SXM dense bf16: 989). Gradient checkpointing's recompute is not counted.
"""

from __future__ import annotations

import argparse
import resource

import torch

from _common import device_name, emit, git_sha, log, synchronize, timed
from openvica_sim.losses import world_model_loss
from openvica_sim.models.world_model import PRESETS, create_world_model
from openvica_sim.training.wm import add_lora, trainable_fraction


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 4])
    p.add_argument("--frames", type=int, default=16, help="T + N frames per sample (paper: 2 + 14)")
    p.add_argument("--prompt-length", type=int, default=27, help="text ids before the frames")
    p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    p.add_argument("--lora", action="store_true", help="LoRA r=64 as training/wm.py (the paper's 7B setting)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="for MFU (GPU only)")
    p.add_argument("--json", action="store_true")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    wm = create_world_model(args.preset, dtype=torch.bfloat16 if cuda and args.lora else torch.float32, device=device)
    model = wm.llama
    if args.lora:
        model = add_lora(model, {"r": 64, "alpha": 64, "dropout": 0.0})
    if cuda:
        model.gradient_checkpointing_enable()
    model.train()
    trainable, total = trainable_fraction(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    cfg = wm.config
    length = args.prompt_length + args.frames * (256 + 1)  # n' = 257 ids per frame
    layers, hidden = cfg.num_layers, cfg.hidden_size
    for batch in args.batch:
        ids = torch.randint(cfg.vision_id(0), cfg.vision_id(cfg.codebook_size), (batch, length + 1), device=device)
        inputs, targets = ids[:, :-1], ids[:, 1:]
        mask = torch.ones_like(targets, dtype=torch.bool)

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                logits = model(input_ids=inputs, use_cache=False).logits
            loss = world_model_loss(logits, targets, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss

        step()  # warm-up: allocations, autotuning
        if cuda:
            torch.cuda.reset_peak_memory_stats(device)
        times = [timed(step, device)[1] for _ in range(args.steps)]
        synchronize(device)
        seconds = sorted(times)[len(times) // 2]
        tokens_per_s = batch * length / seconds
        flops_per_token = 4 * total + 2 * trainable + 12 * layers * hidden * length
        record = {"benchmark": "train_wm", "git": git_sha(), "device": device_name(device),
                  "threads": torch.get_num_threads(), "preset": args.preset, "lora": args.lora, "batch": batch,
                  "sequence_length": length, "trainable_params": trainable, "total_params": total,
                  "trainable_percent": round(100 * trainable / total, 3), "step_s": round(seconds, 4),
                  "tokens_per_s": round(tokens_per_s, 1)}
        if cuda:
            record["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            record["mfu"] = round(tokens_per_s * flops_per_token / (args.peak_tflops * 1e12), 4)
        else:
            record["peak_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)
        emit(record)
        if not args.json:
            log(f"batch {batch}: {tokens_per_s:.0f} tokens/s, step {seconds:.3f} s")


if __name__ == "__main__":
    main()
