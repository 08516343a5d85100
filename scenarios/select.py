"""Dataset-level fields of a scenario dataset: surprise deciles and outliers, diversity, the spec's selection.

- surprise_decile: 0 (least) .. 9 (most surprising), by rank of the clips' mean surprise.
- surprise_outlier: robust z-score (x - median) / (1.4826 MAD) of the mean surprise above `gates.surprise_z`;
  a stored field like the other gates, informative: the surprise selection wants the unusual, not only the broken.
- diversity (`select.by: diverse` only; -1 and NaN otherwise): k-center greedy over per-clip embeddings (the
  codebook-usage histogram of the generated frames, or DINOv2 features of them with `select.teacher`): start at the
  clip farthest from the mean, then repeatedly take the clip farthest from every clip taken so far, k times.
  `diversity_rank` is that order, `diversity` the distance at which the clip was taken: the k clips cover the
  embedding space best (the greedy 2-approximation of k-center). Each pick costs one (n,) distance update, computed
  as |x|^2 - 2 x.c + |c|^2 (no (n, d) temporary), so k picks over n clips are O(k n d) time and O(n) extra memory.
- selected: all | the top `fraction` by mean surprise | the first `k` in diversity order; with
  `select.exclude_flagged`, clips failing the flicker or frozen gate are never selected.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from . import dataset as ds
from .spec import Spec


def dataset_fields(rows: list[dict], spec: Spec, root: str | Path) -> list[dict]:
    """Rows of clips.parquet with the dataset-level fields added (new dicts; the input is left as it is)."""
    rows = [dict(r) for r in rows]
    n = len(rows)
    if n == 0:
        return rows
    surprise = np.array([r["surprise_mean"] for r in rows], np.float64)
    order = np.argsort(surprise, kind="stable")
    for rank, i in enumerate(order):
        rows[i]["surprise_decile"] = int(10 * rank // n)
    median = float(np.median(surprise))
    mad = 1.4826 * float(np.median(np.abs(surprise - median)))
    for r, x in zip(rows, surprise):
        r["surprise_outlier"] = bool(mad > 0 and abs(x - median) / mad > spec.gates.surprise_z)
    eligible = [i for i, r in enumerate(rows)
                if not (spec.select.exclude_flagged and (r["flicker_flag"] or r["frozen_flag"]))]
    for r in rows:
        r["diversity_rank"], r["diversity"] = -1, math.nan
    picked, distances = [], []
    if spec.select.by == "diverse" and eligible:  # the embeddings are read only when the selection needs them
        embeddings = clip_embeddings(root, [rows[i]["clip_id"] for i in eligible],
                                     [rows[i]["num_seed_frames"] for i in eligible], spec.select.teacher)
        picked, distances = k_center_greedy(embeddings, spec.select.k)
    for rank, (j, d) in enumerate(zip(picked, distances)):
        rows[eligible[j]]["diversity_rank"], rows[eligible[j]]["diversity"] = rank, float(d)
    chosen = _select(rows, eligible, spec)
    for i, r in enumerate(rows):
        r["selected"] = i in chosen
        flags = [name for name, key in (("flicker", "flicker_flag"), ("frozen", "frozen_flag"),
                                        ("surprise_outlier", "surprise_outlier")) if r[key]]
        r["status"] = "ok" if not flags else "flagged:" + ",".join(flags)
    return rows


def _select(rows: list[dict], eligible: list[int], spec: Spec) -> set[int]:
    s = spec.select
    if s.by == "all":
        return set(eligible)
    if s.by == "surprise":
        keep = math.ceil(s.fraction * len(eligible))
        return set(sorted(eligible, key=lambda i: (-rows[i]["surprise_mean"], rows[i]["clip_id"]))[:keep])
    return {i for i in eligible if 0 <= rows[i]["diversity_rank"] < s.k}  # diverse


def k_center_greedy(x: np.ndarray, k: int | None = None) -> tuple[list[int], list[float]]:
    """The first k (default all) picks of the greedy k-center order of the rows of x (n, d) under Euclidean
    distance, and each pick's distance to the clips picked before it (the first: to the mean). Ties go to the lower
    index: deterministic."""
    x = np.asarray(x, np.float64)
    n = len(x)
    k = n if k is None else min(int(k), n)
    if k <= 0:
        return [], []
    squared = np.einsum("ij,ij->i", x, x)

    def distance_to(c: np.ndarray) -> np.ndarray:  # (n,) |x_i - c|, without an (n, d) temporary
        return np.sqrt(np.maximum(squared - 2.0 * (x @ c) + float(c @ c), 0.0))

    to_mean = distance_to(x.mean(axis=0))
    first = int(np.argmax(to_mean))
    order, dists = [first], [float(to_mean[first])]
    nearest = distance_to(x[first])
    nearest[first] = -1.0
    for _ in range(k - 1):
        nxt = int(np.argmax(nearest))
        order.append(nxt)
        dists.append(float(nearest[nxt]))
        np.minimum(nearest, distance_to(x[nxt]), out=nearest)
        nearest[order] = -1.0
    return order, dists


def clip_embeddings(root: str | Path, clip_ids: list[str], seed_frames: list[int], teacher: str | None = None,
                    codebook_size: int | None = None) -> np.ndarray:
    """(clips, d) embeddings of the generated frames: the codebook-usage histogram (normalised), or with a DINOv2
    folder the mean of its class-token features over the generated frames."""
    if teacher:
        return _teacher_embeddings(root, clip_ids, seed_frames, teacher)
    tokens = [np.load(ds.clip_dir(root, c) / "tokens.npy")[t:] for c, t in zip(clip_ids, seed_frames)]
    K = codebook_size or int(max(int(t.max()) for t in tokens) + 1)
    hist = np.stack([np.bincount(t.reshape(-1).astype(np.int64), minlength=K)[:K] for t in tokens]).astype(np.float64)
    return hist / hist.sum(axis=1, keepdims=True)


def _teacher_embeddings(root, clip_ids, seed_frames, teacher: str) -> np.ndarray:
    """Mean DINOv2 patch feature (`teacher_features`, the SSL teacher's preprocessing) over the generated frames."""
    import torch

    from openvica_sim.frames import preprocess
    from openvica_sim.models.teacher import load_dinov2, teacher_features
    from openvica_sim.video_io import read_image

    model = load_dinov2(teacher)
    out = []
    with torch.inference_mode():
        for clip_id, t in zip(clip_ids, seed_frames):
            paths = sorted((ds.clip_dir(root, clip_id) / "frames").glob("*.jpg"))[t:]
            features = teacher_features(model, preprocess(np.stack([read_image(p) for p in paths])))  # (N, P, C)
            out.append(features.mean(dim=(0, 1)).float().numpy())
    return np.stack(out)
