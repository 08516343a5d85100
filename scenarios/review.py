"""The review page of a scenario dataset: review/index.html with contact sheets per slice and per surprise decile,
a histogram of surprise and the gate counts, for a person to look at before trusting the numbers."""

from __future__ import annotations

import html
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from . import dataset as ds
from .spec import Spec

THUMB = 96  # pixels per frame in the contact sheets
PER_SHEET = 4  # clips per contact sheet


def write_review(root: str | Path, rows: list[dict], spec: Spec) -> Path:
    """Write review/: index.html, surprise.png, slice-*.png, decile-*.png; return the page's path."""
    root = Path(root)
    folder = root / ds.REVIEW_DIR
    folder.mkdir(parents=True, exist_ok=True)
    shown = [r for r in rows if r["selected"]] or rows
    sections = []
    _histogram(folder / "surprise.png", rows)
    slices = defaultdict(list)
    for r in shown:
        slices[" / ".join(r[k] or "-" for k in ds.SLICE_KEYS)].append(r)
    for i, (name, members) in enumerate(sorted(slices.items())):
        image = f"slice-{i:02d}.png"
        _sheet(root, folder / image, sorted(members, key=lambda r: -r["surprise_mean"])[:PER_SHEET])
        sections.append((f"slice: {name} ({len(members)} clips, most surprising first)", image))
    deciles = defaultdict(list)
    for r in rows:
        deciles[r["surprise_decile"]].append(r)
    for d in sorted(deciles):
        image = f"decile-{d}.png"
        members = sorted(deciles[d], key=lambda r: r["clip_id"])[:PER_SHEET]
        _sheet(root, folder / image, members)
        low, high = min(r["surprise_mean"] for r in deciles[d]), max(r["surprise_mean"] for r in deciles[d])
        sections.append((f"surprise decile {d}: {len(deciles[d])} clips, mean surprise {low:.3f} .. {high:.3f}", image))
    page = folder / "index.html"
    ds.atomic_write_text(page, _page(spec, rows, sections))
    return page


def _sheet(root: Path, path: Path, rows: list[dict]) -> None:
    from PIL import Image

    from openvica_sim.video_io import read_image, write_contact_sheet

    clips, labels = [], []
    for r in rows:
        frames = sorted((ds.clip_dir(root, r["clip_id"]) / "frames").glob("*.jpg"))
        clips.append(np.stack([np.asarray(Image.fromarray(read_image(p)).resize((THUMB, THUMB), Image.BILINEAR))
                               for p in frames]))
        labels.append(f"{r['clip_id']}  surprise {r['surprise_mean']:.3f}  {r['status']}")
    write_contact_sheet(path, clips, labels=labels, num_seed_frames=rows[0]["num_seed_frames"])


def _histogram(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=100)
    values = [r["surprise_mean"] for r in rows]
    selected = [r["surprise_mean"] for r in rows if r["selected"]]
    ax.hist(values, bins=min(30, max(5, len(values) // 3)), color="#bbbbbb", label="all clips")
    if len(selected) < len(values):
        ax.hist(selected, bins=min(30, max(5, len(values) // 3)), range=(min(values), max(values)), color="#e08020",
                label="selected")
    ax.set_xlabel("mean surprise of a clip's generated frames (nats per code)")
    ax.set_ylabel("clips")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _page(spec: Spec, rows: list[dict], sections: list[tuple[str, str]]) -> str:
    e = html.escape
    gates = {k: sum(bool(r[k]) for r in rows) for k in ("flicker_flag", "frozen_flag", "surprise_outlier")}
    top = sorted(rows, key=lambda r: -r["surprise_mean"])[:50]
    table = "\n".join(
        f"<tr><td><a href='../{ds.CLIPS_DIR}/{e(r['clip_id'])}/video.mp4'>{e(r['clip_id'])}</a></td>"
        f"<td>{e(r['weather'])}</td><td>{e(r['timeofday'])}</td><td>{e(r['scene'])}</td>"
        f"<td>{r['surprise_mean']:.3f}</td><td>{r['flicker']:.2f}</td><td>{e(r['status'])}</td>"
        f"<td>{'yes' if r['selected'] else ''}</td></tr>" for r in top)
    images = "\n".join(f"<h3>{e(title)}</h3><img src='{e(image)}'>" for title, image in sections)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>scenario dataset {e(spec.name)}</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:2px 8px;text-align:left}} img{{max-width:100%}}</style>
</head><body>
<h1>{e(spec.name)}</h1><p>{e(spec.description)}</p>
<p>{len(rows)} clips, {sum(r['selected'] for r in rows)} selected ({e(spec.select.by)}); spec hash {spec.hash};
gates: {gates['flicker_flag']} flicker, {gates['frozen_flag']} frozen, {gates['surprise_outlier']} surprise outliers.
Blue frames are seed frames, orange ones generated.</p>
<details><summary>spec</summary><pre>{e(json.dumps(spec.to_dict(), indent=1))}</pre></details>
<h2>Surprise</h2><img src="surprise.png">
<h2>Contact sheets</h2>
{images}
<h2>The 50 most surprising clips</h2>
<table><tr><th>clip</th><th>weather</th><th>time of day</th><th>scene</th><th>surprise</th><th>flicker</th>
<th>status</th><th>selected</th></tr>
{table}
</table></body></html>
"""
