"""The embedded default's quality on held-out synthetic clips, by the evaluation harness (`openvica eval video`):
one JSON line of the numbers the README's embedded-default table gives, and the harness's full output in --out.

- psnr_dec_db / psnr_vdec_db: TOK then DEC / VDEC on the real frames (the transcoding rows).
- surprise_real: the WM's teacher-forced surprise at the real continuation, nats per code (chance: log K).
- rollout_mse / copy_last_mse: mean squared error of the rollout's frames (top-k of the bundle, VDEC) and of the
  last seed frame repeated, against the real continuation; rollout_nearer_than_copy_last: share of clips whose
  rollout is nearer than the copy (a world model that keeps the scene and moves it on wins here); *_recall_frame4:
  the scene checks (`metrics.scene`: the real frame's lane-marking pixels and car boxes found again) at predicted
  frame 4.
- rollout_psnr_db, rollout_ssim, rollout_surprise: the rollout row's means; adherence: the ego-motion probe's
  measures (`metrics.ego`) when the embedded probe is shipped; ego_information_nats: what the ego ids tell the WM
  (teacher-forced surprise at the real frames with every ego id "unknown" minus with the true ones).

FID, FVD, CMMD and LPIPS need the published feature networks (not shipped): pass them as to `openvica eval video`.

    .venv/bin/python benchmarks/embedded_quality.py --json                                # the 8 shipped clips
    .venv/bin/python benchmarks/embedded_quality.py --json --heldout runs/embedded/val.zarr   # all 12 held-out drives
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from _common import device_name, emit, git_sha, log
from openvica_sim import embedded
from openvica_sim.evaluation import FeatureNetworks, VideoEvalSettings, evaluate_video


def summary(result: dict) -> dict:
    rows = {(r["system"], r["k"], r["decoder"]): r for r in result["results"]}
    s = result["settings"]
    decoder = s["decoders"][0]
    rollout = rows[(f"tok+wm+{decoder}", s["top_k"][0], decoder)]
    copy = rows[("copy-last", None, None)]
    own, baseline = np.asarray(rollout["per_clip"]["mse"]), np.asarray(copy["per_clip"]["mse"])
    out = {"clips": s["num_clips"], "top_k": s["top_k"][0], "temperature": s["temperature"], "decoder": decoder,
           "psnr_dec_db": rows.get(("tok+dec", None, "dec"), {}).get("psnr"),
           "psnr_vdec_db": rows.get(("tok+vdec", None, "vdec"), {}).get("psnr"),
           "surprise_real": rows[("tok+dec", None, "dec")]["surprise"],
           "log_codebook_size": None,
           "rollout_mse": rollout["mse"], "copy_last_mse": copy["mse"],
           "rollout_nearer_than_copy_last": float(np.mean(own < baseline)),
           "rollout_psnr_db": rollout["psnr"], "rollout_ssim": rollout["ssim"], "rollout_surprise": rollout["surprise"],
           "fid": rollout["fid"], "fvd": rollout["fvd"], "cmmd": rollout["cmmd"], "lpips": rollout["lpips"]}
    for name in ("marking_recall", "car_recall"):  # the scene checks at predicted frame 4, and their means
        for system, row in (("rollout", rollout), ("copy_last", copy), ("tok_vdec", rows.get(("tok+vdec", None, "vdec")))):
            per_frame = (row or {}).get("per_frame", {}).get(name) or []
            out[f"{system}_{name}_frame4"] = per_frame[3] if len(per_frame) > 3 else None
        out[f"rollout_{name}"] = rollout.get(name)
    if result.get("ego_information"):
        out["ego_information_nats"] = result["ego_information"]["nats_per_code"]
    if result.get("adherence") and "replay" in result["adherence"]:
        a = result["adherence"]
        out["adherence"] = {"ratio": a["replay"]["ratio"], "replay_error_speed_mps": a["replay"]["replay_error_speed_mps"],
                            "replay_error_yaw_rate_rps": a["replay"]["replay_error_yaw_rate_rps"],
                            "counterfactual_accuracy": a["counterfactual"]["accuracy"],
                            "left_vs_right": a["counterfactual"]["left_vs_right"],
                            "brake_vs_straight": a["counterfactual"]["brake"],
                            "counterfactual": a["counterfactual"],
                            "action_conditioned": a["action_conditioned"]}
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--bundle", default=None, help="bundle folder (default: the embedded bundle)")
    p.add_argument("--heldout", default=None, help="held-out store with frames, or a folder of clips "
                   "(default: the embedded seed clips)")
    p.add_argument("--clips", type=int, default=None, help="at most this many clips")
    p.add_argument("--top-k", type=int, default=None, help="rollout top-k (default: the bundle's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="keep the harness's folder (metrics.json, report.md, pictures) here")
    p.add_argument("--inception", default=None)
    p.add_argument("--i3d", default=None)
    p.add_argument("--clip-model", default=None)
    p.add_argument("--lpips-net", default=None)
    p.add_argument("--ego-probe", default=None, help="ego-motion probe folder (default: the shipped one)")
    p.add_argument("--json", action="store_true", help="only the JSON line on stdout")
    args = p.parse_args(argv)
    started = time.perf_counter()
    bundle = args.bundle or str(embedded.bundle_path())
    probe = args.ego_probe or embedded.ego_probe_path()
    settings = VideoEvalSettings(
        bundle=bundle, clips=args.heldout or str(embedded.clips_path()), limit=args.clips, seed=args.seed,
        top_k=[args.top_k] if args.top_k else None, ego_probe=str(probe) if probe else None,
        networks=FeatureNetworks(inception=args.inception, i3d=args.i3d, clip_model=args.clip_model,
                                 lpips_net=args.lpips_net))
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="embedded-quality-"))
    log(f"evaluating {bundle} on {settings.clips} into {out}")
    result = evaluate_video(settings, out, progress=not args.json)
    record = {"bench": "embedded_quality", "git": git_sha(), "device": device_name(torch.device("cpu")),
              "bundle": bundle, "out": str(out), **summary(result),
              "seconds": round(time.perf_counter() - started, 1)}
    from openvica_sim.bundle import read_meta

    record["log_codebook_size"] = float(np.log(read_meta(bundle)["codebook_size"]))
    emit(record)


if __name__ == "__main__":
    main()
