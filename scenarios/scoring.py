"""Scores a perception team uses (issue 20, point 3): COCOeval AP / AP50 / AR per class and per slice on the
labelled seed frames, and the detector's real-vs-generated gap per slice.

AP is pycocotools' COCOeval over labels/coco.json (ground truth alone) and the detector's predictions.coco.json
(`dataset.write_predictions`), restricted to the images that carry ground truth (`labelled`): generated frames are
unlabelled, never negatives. A slice (weather, time of day, scene, surprise decile) restricts the images further
to its clips'.

The gap compares the same detector on the real seed frames and on the generated frames of a slice: detections per
frame, mean score, and two distances between the two distributions (1-D Wasserstein, in detections per frame and in
score units): generated frames of a slice are trustworthy for that detector where these are small.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from openvica_sim.metrics.detection import coco_eval, load_coco

from .dataset import LABELS_DIR, image_ids


def coco_scores(root: str | Path, rows: list[dict], all_rows: list[dict], results: list[dict],
                slices: tuple[str, ...]) -> dict:
    """{"overall": scores, "slices": {key: {value: scores}}}; scores = {"images", "AP", "AP50", "AP75", "AR100",
    "per_class": {category: {"AP", "AP50", "boxes"}}} over the labelled frames of `rows` (the tested clips), None
    where there is nothing to score. `results`: the COCO results of their predictions."""
    truth = load_coco(Path(root) / LABELS_DIR / "coco.json")
    ids = image_ids(all_rows)
    in_truth = set(truth.getImgIds())
    labelled = {i for i in in_truth if truth.imgs[i].get("labelled")}
    results = [r for r in results if r["image_id"] in in_truth]  # --all: unselected clips are not in the exports
    by_clip = {row["clip_id"]: {ids[(row["clip_id"], i)] for i in range(row["num_frames"])} & labelled for row in rows}
    out = {"overall": coco_eval(truth, results, set().union(*by_clip.values()) if by_clip else set()), "slices": {}}
    for key in slices:
        groups: dict[str, set] = {}
        for row in rows:
            value = "unknown" if row.get(key) is None else str(row[key])
            groups.setdefault(value, set()).update(by_clip[row["clip_id"]])
        out["slices"][key] = {value: coco_eval(truth, results, images) for value, images in groups.items()}
    return out


def real_vs_generated(clips, slices: tuple[str, ...]) -> dict:
    """{"overall": gap, "slices": {key: {value: gap}}}; gap = {"real_frames", "generated_frames",
    "detections_per_frame_real", "detections_per_frame_generated", "mean_score_real", "mean_score_generated",
    "count_distance", "score_distance"} of `clips` (`harness.ClipDetections`): per frame counts and scores on the
    seed frames against the generated frames (distances: 1-D Wasserstein)."""
    def gap(group) -> dict:
        real_n, gen_n, real_s, gen_s = [], [], [], []
        for c in group:
            T = c.row["num_seed_frames"]
            for i, frame in enumerate(c.labels):
                (real_n if i < T else gen_n).append(len(frame))
                (real_s if i < T else gen_s).extend(b["score"] for b in frame)
        return {"real_frames": len(real_n), "generated_frames": len(gen_n),
                "detections_per_frame_real": _mean(real_n), "detections_per_frame_generated": _mean(gen_n),
                "mean_score_real": _mean(real_s), "mean_score_generated": _mean(gen_s),
                "count_distance": wasserstein_1d(real_n, gen_n), "score_distance": wasserstein_1d(real_s, gen_s)}

    out = {"overall": gap(clips), "slices": {}}
    for key in slices:
        groups: dict[str, list] = {}
        for c in clips:
            groups.setdefault("unknown" if c.row.get(key) is None else str(c.row[key]), []).append(c)
        out["slices"][key] = {value: gap(group) for value, group in groups.items()}
    return out


def wasserstein_1d(a, b) -> float | None:
    """The 1-D Wasserstein (earth mover's) distance between the empirical distributions of a and b: the mean gap
    between their quantile functions. None when either is empty."""
    a, b = np.sort(np.asarray(a, np.float64)), np.sort(np.asarray(b, np.float64))
    if len(a) == 0 or len(b) == 0:
        return None
    q = np.linspace(0, 1, 2 * max(len(a), len(b)) + 1)[1:-1:2]  # midpoints of a fine, common grid of quantiles
    return float(np.mean(np.abs(np.quantile(a, q, method="inverted_cdf") - np.quantile(b, q, method="inverted_cdf"))))


def _mean(values) -> float | None:
    return float(np.mean(values)) if len(values) else None
