"""What an evaluation writes: metrics.json (every number and setting), report.md (the paper's tables, with the
paper's numbers beside ours), plots (metric vs predicted frame index, vs top-k) and samples.png (real vs generated).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

# The paper's numbers (val-500, N = 14; Tables V and VI; Table III's proposed TOK+DEC on BDDimg val).
PAPER_VIDEO = {
    ("tok+dec", None): {"fid": 7.19, "cmmd": 0.048, "fvd": 104.35},
    ("tok+vdec", None): {"fid": 8.85, "cmmd": 0.155, "fvd": 74.29},
    **{("tok+wm+dec", k): dict(zip(("fid", "cmmd", "fvd"), v)) for k, v in {
        1: (28.04, 0.255, 644.71), 5: (20.26, 0.114, 296.95), 10: (18.23, 0.092, 243.97),
        50: (14.72, 0.083, 178.97), 200: (12.22, 0.081, 160.48), 1000: (11.29, 0.090, 163.80)}.items()},
    **{("tok+wm+vdec", k): dict(zip(("fid", "cmmd", "fvd"), v)) for k, v in {
        1: (28.61, 0.411, 646.03), 5: (22.14, 0.244, 276.93), 10: (19.94, 0.215, 210.71),
        50: (16.67, 0.229, 153.19), 200: (14.22, 0.241, 136.41), 1000: (13.29, 0.248, 132.16)}.items()},
}
PAPER_IMAGES = {"psnr": 25.14, "ssim": 0.7649, "ms_ssim": 0.8991, "lpips": 0.1035, "fid": 3.97, "cmmd": 0.048}
SYSTEM_NAMES = {"copy-last": "copy the last seed frame", "tok+dec": "TOK+DEC", "tok+vdec": "TOK+VDEC", "tok+wm+dec": "TOK+WM+DEC",
                "tok+wm+vdec": "OpenViCA (TOK+WM+VDEC)"}


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(_finite(data), indent=2) + "\n")
    os.replace(tmp, path)


def write_video_report(out: Path, result: dict, samples: dict) -> None:
    """metrics.json, report.md, per_frame.png, top_k.png (with two or more k) and samples.png into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", result)
    pictures = [_plot_per_frame(out / "per_frame.png", result["results"])]
    pictures.append(_plot_top_k(out / "top_k.png", result["results"]))
    if samples["real"]:
        from openvica_sim.video_io import write_contact_sheet

        rows, labels = [], []
        for clip_id, real, generated in zip(samples["clip_ids"], samples["real"], samples["generated"]):
            rows += [real, generated]
            labels += [f"{clip_id}: real", f"{clip_id}: generated ({samples['label']})"]
        seeds = result["settings"]["seed_frames"]
        write_contact_sheet(out / "samples.png", rows, labels=labels, num_seed_frames=seeds)
        pictures.append("samples.png")
    (out / "report.md").write_text(video_markdown(result, [p for p in pictures if p]))


def video_markdown(result: dict, pictures: list[str]) -> str:
    s = result["settings"]
    n = s["num_frames"]
    lines = [f"# Evaluation: {Path(s['bundle']).name} on {s['num_clips']} clips", "",
             f"Bundle `{s['bundle']}` (sha256 {s['bundle_sha256'][:12]}), clips {s['clips']} (list sha256 "
             f"{s['clip_list_sha256'][:12]}), T = {s['seed_frames']} seed frames, N = {n} predicted, seed {s['seed']}, "
             f"temperature {s['temperature']}, {s['device']} {s['dtype']}; rollouts {s['rollout_s']} s, in all "
             f"{s['seconds']} s. Ego commands: {s['actions']}.", "",
             "## Table V / VI layout: distribution metrics (lower is better; paper: val-500)", "",
             f"| System | k | decoder | FID{n} | CMMD{n} | FVD{n} | paper FID14 | paper CMMD14 | paper FVD14 |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in result["results"]:
        paper = PAPER_VIDEO.get((row["system"], row["k"]), {})
        lines.append(f"| {SYSTEM_NAMES.get(row['system'], row['system'])} | {_k(row['k'])} | {row['decoder'] or '-'} | "
                     f"{_f(row['fid'], 2)} | {_f(row['cmmd'], 3)} | {_f(row['fvd'], 2)} | {_f(paper.get('fid'), 2)} | "
                     f"{_f(paper.get('cmmd'), 3)} | {_f(paper.get('fvd'), 2)} |")
    lines += ["", "## Against the real continuation, frame by frame (means over clips and frames)", "",
              "| System | k | decoder | MSE | PSNR (dB) | SSIM | MS-SSIM | LPIPS | markings kept | cars kept "
              "| surprise (nats/code) |",
              "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in result["results"]:
        lines.append(f"| {SYSTEM_NAMES.get(row['system'], row['system'])} | {_k(row['k'])} | {row['decoder'] or '-'} | "
                     f"{_f(row['mse'], 1)} | {_f(row['psnr'], 2)} | {_f(row['ssim'], 4)} | {_f(row['ms_ssim'], 4)} | {_f(row['lpips'], 4)} "
                     f"| {_f(row.get('marking_recall'), 2)} | {_f(row.get('car_recall'), 2)} | {_f(row['surprise'], 3)} |")
    lines += ["", "MSE in uint8 units squared. Markings and cars kept (the synthetic world's scene checks, "
              "`metrics.scene`): the share of the real frame's lane-marking pixels with a marking within 2 pixels in "
              "the generated frame, and of its cars that still stand out from the road (real consecutive frames "
              "score about 0.5 on markings: dashes move). Surprise: the WM's mean surprise at the generated frames; "
              "on the transcoding rows, its teacher-forced surprise at the real frames.", ""]
    adherence = result.get("adherence")
    if adherence and "replay" in adherence:
        r, c = adherence["replay"], adherence["counterfactual"]
        lines += ["## Ego-command adherence (the ego-motion probe's estimates)", "",
                  f"At top-k {adherence['k']}, {adherence['decoder']}, {r['clips']} clips. "
                  + (adherence["note"] or ""), "",
                  "| measure | speed | yaw rate | combined |", "| --- | ---: | ---: | ---: |",
                  f"| replay error (own commands) | {_f(r['replay_error_speed_mps'], 3)} m/s | "
                  f"{_f(r['replay_error_yaw_rate_rps'], 4)} rad/s | |",
                  f"| swapped error (another clip's commands, vs own) | {_f(r['swapped_error_speed_mps'], 3)} m/s | "
                  f"{_f(r['swapped_error_yaw_rate_rps'], 4)} rad/s | |",
                  f"| ratio replay / swapped (1: commands ignored) | {_f(r['ratio_speed'], 3)} | "
                  f"{_f(r['ratio_yaw_rate'], 3)} | {_f(r['ratio'], 3)} |",
                  f"| following error (another clip's commands, vs them) | {_f(r['following_error_speed_mps'], 3)} m/s"
                  f" | {_f(r['following_error_yaw_rate_rps'], 4)} rad/s | |", "",
                  "| counterfactual branch | left | right | brake | accelerate | mean | left vs right |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
                  f"| share going the commanded way (chance 0.5) | {_f(c['left'], 2)} | {_f(c['right'], 2)} | "
                  f"{_f(c['brake'], 2)} | {_f(c['accelerate'], 2)} | {_f(c['accuracy'], 2)} | "
                  f"{_f(c['left_vs_right'], 2)} |", ""]
    elif adherence:
        lines += ["## Ego-command adherence", "", adherence.get("note", ""), ""]
    information = result.get("ego_information")
    if information:
        lines += ["## What the ego ids tell the world model", "",
                  f"Teacher-forced surprise at the real frames of {information['clips']} clips with their ego motion: "
                  f"{_f(information['surprise_with_ego'], 4)} nats per code; with every ego id \"unknown\": "
                  f"{_f(information['surprise_without_ego'], 4)}; the ego ids' information: "
                  f"**{_f(information['nats_per_code'], 4)} nats per code** (0: the commands are ignored).", ""]
    if result.get("skipped"):
        lines += ["## Not computed", ""] + [f"- {k}: {v}" for k, v in result["skipped"].items()] + [""]
    lines += ["## Pictures", ""] + [f"![{p}]({p})" for p in pictures] + [""]
    return "\n".join(lines)


def images_markdown(result: dict) -> str:
    s = result["settings"]
    row = result["results"][0]
    return "\n".join([
        f"# Image reconstruction (TOK+DEC): {Path(s['bundle']).name} on {s['num_images']} images", "",
        f"Bundle `{s['bundle']}` (sha256 {s['bundle_sha256'][:12]}), images {s['images']}, {s['device']}; "
        f"{s['seconds']} s.", "",
        "| | PSNR (dB) | SSIM | MS-SSIM | LPIPS | FID | CMMD |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| ours | {_f(row['psnr'], 2)} | {_f(row['ssim'], 4)} | {_f(row['ms_ssim'], 4)} | {_f(row['lpips'], 4)} | "
        f"{_f(row['fid'], 2)} | {_f(row['cmmd'], 3)} |",
        f"| paper, Table III proposed (BDDimg val) | {PAPER_IMAGES['psnr']} | {PAPER_IMAGES['ssim']} | "
        f"{PAPER_IMAGES['ms_ssim']} | {PAPER_IMAGES['lpips']} | {PAPER_IMAGES['fid']} | {PAPER_IMAGES['cmmd']} |", "",
        *(["## Not computed", ""] + [f"- {k}: {v}" for k, v in result["skipped"].items()] if result["skipped"] else []),
        ""])


TITLES = {"psnr": "PSNR (dB)", "ssim": "SSIM", "lpips": "LPIPS", "surprise": "surprise (nats)", "fid": "FID",
          "fvd": "FVD", "cmmd": "CMMD"}


def _plot_per_frame(path: Path, rows: list[dict]) -> str | None:
    metrics = [m for m in ("psnr", "ssim", "lpips", "surprise") if any(m in r["per_frame"] for r in rows)]

    def draw(ax, metric):
        for row in rows:
            values = row["per_frame"].get(metric)
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, linestyle=_style(row["decoder"]),
                        label=f"{SYSTEM_NAMES.get(row['system'], row['system'])} {_k(row['k'], 'k=')}")

    return _panels(path, metrics, draw, "predicted frame (0.25 s each)") if metrics else None


def _plot_top_k(path: Path, rows: list[dict]) -> str | None:
    wm = [r for r in rows if r["k"] is not None]
    metrics = [m for m in ("fid", "fvd", "cmmd", "psnr") if any(r.get(m) is not None for r in wm)]
    if len({r["k"] for r in wm}) < 2 or not metrics:
        return None

    def draw(ax, metric):
        for system in sorted({r["system"] for r in wm}):
            points = sorted((r["k"], r[metric]) for r in wm if r["system"] == system and r[metric] is not None)
            if points:
                ax.plot(*zip(*points), marker="o", linestyle=_style(system.rsplit("+", 1)[-1]),
                        label=SYSTEM_NAMES.get(system, system))
        ax.set_xscale("log")

    return _panels(path, metrics, draw, "top-k")


def _panels(path: Path, metrics: list[str], draw, xlabel: str) -> str:
    """One panel per metric, `draw(ax, metric)` filling each; saved as PNG at `path`; returns its file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        draw(ax, metric)
        ax.set_xlabel(xlabel)
        ax.set_title(TITLES[metric])
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def _style(decoder: str | None) -> str:
    """DEC rows dashed, the rest solid."""
    return "--" if decoder == "dec" else "-"


def _k(k, prefix: str = "") -> str:
    return "-" if k is None else f"{prefix}{k}"


def _f(value, digits: int) -> str:
    return "-" if value is None or (isinstance(value, float) and not math.isfinite(value)) else f"{value:.{digits}f}"


def _finite(data):
    """JSON has no NaN or infinity: such floats become null."""
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    if isinstance(data, (float, np.floating)):
        return float(data) if math.isfinite(data) else None
    if isinstance(data, np.integer):
        return int(data)
    return data
