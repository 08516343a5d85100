"""`openvica scenarios mine`: rank the real clips of a token store by surprise, to find the rare moments in fleet data.

    openvica scenarios mine --clips bdd-val.zarr --bundle BUNDLE --out surprise.parquet --by max --top 8

Every clip is scored by the world model under teacher forcing (`Simulator.score`): a frame's surprise is the mean
over its codes of -log p(code | prompt, the frames before it), softmax over the K codes at temperature 1, the number
the env reports for generated frames (docs/design.md "Scenarios"), so mined and generated clips are comparable. Windows of
the T + N = 16 frames the WM was trained on slide by `stride` frames; every frame from the T = 2nd on is scored once,
the first two are NaN. Action-conditioned bundles see each frame's ego ids from the store's speed and yaw rate, as in
training.

Writes FILE.parquet (COLUMNS, one row per clip, sorted by rank) and FILE_top.png, a contact sheet of the `top` clips
around their peak frame (the store's frames when it holds them, else DEC's decoding of the tokens); the command then
prints a JSON summary. The parquet's schema metadata "openvica" records the store, bundle, ranking and stride.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from openvica_sim.bundle import Bundle, load_bundle, read_meta
from openvica_sim.data.store import TokenStore
from openvica_sim.metrics import sliding_windows
from openvica_sim.simulator import MIN_SEED_FRAMES, TRAINED_CONTEXT_FRAMES, Simulator

from .dataset import SLICE_KEYS

RANK_BY = ("max", "mean")
SHEET_FRAMES = 8  # frames of each top clip on the contact sheet, around its peak
STORE_KEYS = ("tokens", "speed_mps", "yaw_rate_rps")  # what scoring reads of a clip: never its frames

# surprise.parquet, one row per clip of the store, sorted by rank.
COLUMNS = {
    "clip_id": "str: the store's clip id (BDD100K: the video id)",
    "weather": "str", "timeofday": "str", "scene": "str: the clip's attributes, \"\" when missing",
    "attributes": "str: all the clip's attributes, JSON",
    "num_frames": "int: frames of the clip",
    "surprise": "list<float>: per frame, nats per code; NaN for the first T = 2 frames (no context)",
    "surprise_mean": "float: mean over the scored frames (NaN when none)",
    "surprise_max": "float: max over the scored frames (NaN when none)",
    "peak_frame": "int: index of the most surprising frame, -1 when none is scored",
    "rank": "int: 0 = most surprising by surprise_max or surprise_mean (--by); unscored clips last",
}


def mine(store, bundle, out, batch_size: int = 8, stride: int = 8, by: str = "max", top: int = 8,
         limit: int | None = None, device: str = "cpu", progress: bool = True):
    """Score every clip of a token store, write `out` (parquet) and its top clips' contact sheet; return the table.

    Args:
        store: a token store folder (`openvica data ingest --out`) or a `TokenStore`.
        bundle: a bundle folder, loaded on `device` without its video decoder, or a loaded `Bundle` (used as is).
        out: the parquet file; the contact sheet is written beside it (`contact_sheet_path(out)`).
        batch_size: windows of 16 frames per world-model forward.
        stride: frames between window starts, 1 .. 14 (default 8, the engine's slide).
        by: "max" or "mean": rank by a clip's most surprising frame or by its mean.
        top: clips on the contact sheet (0: none).
        limit: score only the first `limit` clips of the store's index.
    Returns:
        a `pyarrow.Table` with COLUMNS, one row per clip sorted by rank, as written to `out`.
    Raises:
        FileNotFoundError: no token store or no bundle at the path.
        ValueError: a bad option; a clip whose token grid or codes do not fit the bundle's tokenizer.
    """
    _check_options(by, top, limit, batch_size, stride)
    store = store if isinstance(store, TokenStore) else _open_store(store)
    bundle_name = "<in-memory bundle>" if isinstance(bundle, Bundle) else str(bundle)
    meta = bundle.meta() if isinstance(bundle, Bundle) else read_meta(bundle)
    fit = _Fit(store.path, bundle_name, math.isqrt(meta["tokens_per_frame"]), meta["codebook_size"])
    clips = store.clips[:limit]
    if clips:  # a store made by another tokenizer fails here, before any weights load
        fit.check(clips[0]["clip_id"], store.clip(clips[0]["clip_id"], keys=("tokens",))["tokens"])
    if not isinstance(bundle, Bundle):
        bundle = load_bundle(bundle, device=device, video_decoder=False)
    sim = Simulator(bundle, decoder="tokenizer")
    rows = []
    bar = tqdm(total=len(clips), desc="mine", unit="clip", disable=not progress)
    for k in range(0, len(clips), batch_size):  # a clip of over T = 2 frames has one window or more
        chunk = [store.clip(c["clip_id"], keys=STORE_KEYS) for c in clips[k:k + batch_size]]
        for clip in chunk:
            fit.check(clip["clip_id"], clip["tokens"])
        scores = sim.score([c["tokens"] for c in chunk], [c["speed_mps"] for c in chunk],
                           [c["yaw_rate_rps"] for c in chunk], stride=stride, batch_size=batch_size)
        rows += [_row(clip, s) for clip, s in zip(chunk, scores)]
        bar.update(len(chunk))
    bar.close()
    out = Path(out)
    sheet = contact_sheet_path(out)
    ranked = _ranked(rows, by)
    top_rows = [r for r in ranked[:top] if r["peak_frame"] >= 0]
    provenance = {"store": str(store.path), "bundle": bundle_name, "by": by, "stride": stride,
                  "window": sim.context_frames, "contact_sheet": str(sheet) if top_rows else None}
    table = _table(ranked, provenance)
    _write_parquet(table, out)
    if top_rows:
        _write_top_sheet(sheet, top_rows, store, bundle, by)
    return table


def contact_sheet_path(out) -> Path:
    """Where `mine` puts the contact sheet of the top clips: FILE_top.png beside FILE.parquet."""
    out = Path(out)
    return out.with_name(f"{out.stem}_top.png")


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add `mine` to the `openvica scenarios` subcommands; it runs `command`."""
    p = subparsers.add_parser(
        "mine", help="rank the real clips of a token store by surprise (find rare moments in your data)",
        description="Score every clip of a token store by the world model's teacher-forced surprise (per frame, the "
        "mean negative log-likelihood of its codes given the frames before it, the number the env reports for "
        "generated frames) in sliding windows of 16 frames; write one row per clip, ranked, to a parquet file and "
        "a contact sheet of the top clips around their most surprising frame (FILE_top.png beside it); print a "
        "JSON summary.",
        epilog="example: openvica scenarios mine --clips bdd-val.zarr --bundle BUNDLE --out surprise.parquet")
    p.add_argument("--clips", required=True, metavar="STORE", help="token store to mine (openvica data ingest --out)")
    p.add_argument("--bundle", required=True, metavar="DIR",
                   help="simulator bundle whose tokenizer made the store (same 16x16 grid and codebook)")
    p.add_argument("--out", required=True, metavar="FILE.parquet", help="the ranked table; FILE_top.png goes beside it")
    p.add_argument("--by", choices=RANK_BY, default="max",
                   help="rank clips by their most surprising frame (max, default) or by their mean")
    p.add_argument("--top", type=int, default=8, help="clips on the contact sheet (default 8; 0 for none)")
    p.add_argument("--stride", type=int, default=8,
                   help=f"frames between the starts of the {TRAINED_CONTEXT_FRAMES}-frame windows, 1 .. "
                        f"{TRAINED_CONTEXT_FRAMES - MIN_SEED_FRAMES} (default 8, the engine's slide; smaller is slower)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per world-model forward (default 8)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N clips of the store")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (the WM runs in bf16 on CUDA)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(run=command)
    return p


def command(args) -> int:
    """`openvica scenarios mine`: run `mine` and print a JSON summary on stdout."""
    started = time.perf_counter()
    table = mine(args.clips, args.bundle, args.out, batch_size=args.batch_size, stride=args.stride, by=args.by,
                 top=args.top, limit=args.limit, device=args.device, progress=not args.quiet)
    provenance = json.loads(table.schema.metadata[b"openvica"])
    surprise = [v for row in table.column("surprise").to_pylist() for v in row]
    top = table.slice(0, args.top).select(["rank", "clip_id", "surprise_max", "surprise_mean", "peak_frame"])
    print(json.dumps({"out": str(args.out), "contact_sheet": provenance["contact_sheet"], "clips": table.num_rows,
                      "frames": len(surprise), "frames_scored": int(np.sum(~np.isnan(surprise))), "by": args.by,
                      "top": [{k: _finite(v) for k, v in row.items()} for row in top.to_pylist()],
                      "seconds": round(time.perf_counter() - started, 1)}))
    return 0


# ---- helpers ---------------------------------------------------------------------------------------------------

class _Fit:
    """Checks that a clip's tokens fit the bundle's tokenizer, naming the clip, the store and the bundle."""

    def __init__(self, store: Path, bundle: str, grid: int, codebook_size: int):
        self.store, self.bundle, self.grid, self.codebook_size = store, bundle, grid, codebook_size

    def check(self, clip_id: str, tokens: np.ndarray) -> None:
        fix = f"re-ingest the store with this bundle (openvica data ingest --bundle {self.bundle})"
        if tokens.shape[1:] != (self.grid, self.grid):
            raise ValueError(f"clip {clip_id!r} of {self.store} has a {'x'.join(map(str, tokens.shape[1:]))} token grid "
                             f"but bundle {self.bundle} has {self.grid}x{self.grid} tokens per frame; {fix}")
        if tokens.size and int(tokens.max()) >= self.codebook_size:
            raise ValueError(f"clip {clip_id!r} of {self.store} holds code {int(tokens.max())} but bundle "
                             f"{self.bundle} has a codebook of {self.codebook_size} codes; {fix}")


def _check_options(by: str, top: int, limit: int | None, batch_size: int, stride: int) -> None:
    if by not in RANK_BY:
        raise ValueError(f"by={by!r}: rank by one of {list(RANK_BY)}")
    if top < 0 or (limit is not None and limit < 0):
        raise ValueError(f"top={top} and limit={limit} must not be negative")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be at least 1")
    sliding_windows(0, TRAINED_CONTEXT_FRAMES, stride, MIN_SEED_FRAMES)  # raises on a bad stride, before any work


def _open_store(path) -> TokenStore:
    if not Path(path).is_dir():
        raise FileNotFoundError(f"no token store at {path}: the folder does not exist; make one with "
                                f"`openvica data ingest --bdd-root BDD100K --out {path} --bundle BUNDLE`")
    return TokenStore(path)


def _row(clip: dict, surprise: np.ndarray) -> dict:
    attributes = clip.get("attributes") or {}
    scored = ~np.isnan(surprise)
    return {"clip_id": clip["clip_id"], **{k: str(attributes.get(k) or "") for k in SLICE_KEYS},
            "attributes": json.dumps(attributes, sort_keys=True), "num_frames": len(surprise),
            "surprise": surprise.tolist(),
            "surprise_mean": float(surprise[scored].mean()) if scored.any() else math.nan,
            "surprise_max": float(surprise[scored].max()) if scored.any() else math.nan,
            "peak_frame": int(np.nanargmax(surprise)) if scored.any() else -1}


def _ranked(rows: list[dict], by: str) -> list[dict]:
    """Rows most surprising first (ties by clip id), unscored last, with their rank."""
    key = f"surprise_{by}"
    ordered = sorted(rows, key=lambda r: (math.isnan(r[key]), -r[key] if not math.isnan(r[key]) else 0, r["clip_id"]))
    return [{**r, "rank": i} for i, r in enumerate(ordered)]


def _table(rows: list[dict], provenance: dict):
    import pyarrow as pa

    schema = pa.schema([("clip_id", pa.string()), ("weather", pa.string()), ("timeofday", pa.string()),
                        ("scene", pa.string()), ("attributes", pa.string()), ("num_frames", pa.int64()),
                        ("surprise", pa.list_(pa.float32())), ("surprise_mean", pa.float64()),
                        ("surprise_max", pa.float64()), ("peak_frame", pa.int64()), ("rank", pa.int64())],
                       metadata={"openvica": json.dumps(provenance)})
    assert list(schema.names) == list(COLUMNS)
    return pa.Table.from_pylist(rows, schema=schema)


def _write_parquet(table, out: Path) -> None:
    """Atomically: a crash never leaves a half-written table under the final name."""
    import pyarrow.parquet as pq

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _write_top_sheet(path: Path, rows: list[dict], store: TokenStore, bundle: Bundle, by: str) -> Path:
    """One line per top clip: SHEET_FRAMES frames around its peak, labelled with rank, clip id and surprise."""
    import torch

    from openvica_sim.frames import postprocess
    from openvica_sim.video_io import write_contact_sheet

    clips, labels = [], []
    for r in rows:
        start = min(max(r["peak_frame"] - SHEET_FRAMES // 2, 0), max(r["num_frames"] - SHEET_FRAMES, 0))
        stop = min(start + SHEET_FRAMES, r["num_frames"])
        clip = store.clip(r["clip_id"], keys=("frames", "tokens"))
        if "frames" in clip:
            frames = clip["frames"][start:stop]
        else:  # a store without frames: DEC's view of the tokens
            tokenizer = bundle.tokenizer
            codes = torch.from_numpy(clip["tokens"][start:stop].astype(np.int64))
            frames = postprocess(tokenizer.decode(codes.to(next(tokenizer.parameters()).device)))
        clips.append(frames)
        labels.append(f"#{r['rank']} {r['clip_id']}: surprise max {r['surprise_max']:.3f} at frame {r['peak_frame']}, "
                      f"mean {r['surprise_mean']:.3f} nats/code (by {by}); frames {start}-{stop - 1}")
    return write_contact_sheet(path, clips, labels=labels)


def _finite(value):
    return None if isinstance(value, float) and math.isnan(value) else value
