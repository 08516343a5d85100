"""`openvica scenarios test`: run a user's detector over a scenario dataset and report how it behaves.

    openvica scenarios test DATASET --detector openvica_sim.scenarios.examples.car_detector:detect
    openvica scenarios test DATASET --detector path/to/my_detector.py:detect --out report/ --batch-size 32

A detector is any callable `detect(frames: uint8 (B, H, W, 3)) -> list (per frame) of lists of {"category": str,
"box2d": {"x1", "y1", "x2", "y2"}, "score": float}` (docs/design.md "Scenarios"), named as "module:function" or
"path/to/file.py:function". It runs batched over every frame of the dataset's selected clips; its boxes become
pseudo-labels in each clip folder (pseudo/<name>.json, provenance "pseudo:<name>", with scores), and the report
folder gets them as predictions.coco.json (COCO results over labels/coco.json's image ids: `COCO.loadRes`) and
predictions.json (Scalabel), with metrics.json, report.md and PNG plots. labels/ keeps the ground truth alone.

Every metric is a ratio of counts summed over clips (`ClipCounts`, `METRICS`), so the same definition gives the
overall number and each slice (weather, time of day, scene, surprise decile). Boxes are matched greedily by IoU,
highest first, one to one (`match_boxes`).

Dimensions: B frames per detector call, H x W pixels; boxes (n, 4) as x1, y1, x2, y2 in pixels.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import importlib
import importlib.util
import json
import math
import numbers
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .dataset import (CATEGORIES, GROUND_TRUTH, PSEUDO_DIR, SLICE_KEYS, ScenarioDataset, atomic_write_text, box,
                      clip_dir, coco_results, safe_name, seed_owners, write_frame_labels, write_predictions)
from .scoring import coco_scores, real_vs_generated

EXAMPLE_DETECTOR = "openvica_sim.scenarios.examples.car_detector:detect"
SLICES = (*SLICE_KEYS, "surprise_decile")  # clips.parquet columns the metrics are sliced by
SLICE_TITLES = {"weather": "weather", "timeofday": "time of day", "scene": "scene",
                "surprise_decile": "surprise decile"}
BOX_KEYS = ("x1", "y1", "x2", "y2")
METRICS_FILE, REPORT_FILE = "metrics.json", "report.md"
PLOTS = {  # <name>.png in the report folder: what it shows (report.md's captions)
    "detections_per_frame": "mean detections per frame index; seed frames blue, generated frames orange",
    "temporal_consistency": "temporal consistency per slice: unmatched share and class flip share (lower is better)",
    "surprise_deciles": "the detector's numbers from the least (0) to the most (9) surprising clips",
    "branch_agreement": "mean F1 between branches of one fork on each generated frame (they drift apart over time)",
    "scores": "distribution of detection scores on seed and on generated frames",
    "detections": "the first clips with the detector's boxes (white) and the seed frames' ground truth (green)",
}
SHEET_CLIPS = 4  # rows of detections.png


@dataclass(frozen=True)
class HarnessSettings:
    """How `run_test` runs a detector and scores it; `__post_init__` reports every bad value at once."""

    batch_size: int = 16  # frames per detector call
    include_unselected: bool = False  # also test clips the spec's select rule dropped
    agreement_frames: int = 2  # first generated frames on which branches of one fork should still agree
    min_score: float = 0.0  # boxes scored below this are stored as pseudo-labels but left out of the metrics
    iou_threshold: float = 0.5  # a match, as in PASCAL VOC and COCO's AP50

    def __post_init__(self):
        errors = []
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            errors.append(f"batch_size={self.batch_size!r} must be a positive integer (default 16)")
        if isinstance(self.agreement_frames, bool) or not isinstance(self.agreement_frames, int) \
                or self.agreement_frames < 1:
            errors.append(f"agreement_frames={self.agreement_frames!r} must be a positive integer (default 2)")
        if not 0 < self.iou_threshold <= 1:
            errors.append(f"iou_threshold={self.iou_threshold!r} must be in (0, 1] (default 0.5)")
        if not math.isfinite(self.min_score):
            errors.append(f"min_score={self.min_score!r} must be a finite number (default 0: keep every box)")
        if errors:
            raise ValueError("; ".join(errors))


@dataclass(frozen=True)
class Metric:
    """A ratio of two `ClipCounts` fields, and what it means (report.md's table)."""

    numerator: str
    denominator: str
    label: str
    meaning: str


METRICS = {
    "detections_per_frame": Metric(
        "detections", "frames", "detections per frame", "mean number of boxes per frame, all frames"),
    "detections_per_seed_frame": Metric(
        "seed_detections", "seed_frames", "detections per seed frame", "the same on the real seed frames"),
    "detections_per_generated_frame": Metric(
        "generated_detections", "generated_frames", "detections per generated frame",
        "the same on the world model's frames; far from the seed frames' value, the detector sees them differently"),
    "temporal_unmatched_share": Metric(
        "unmatched_detections", "tracked_detections", "temporal unmatched share",
        "share of boxes (first frame of each clip excluded) with no IoU >= 0.5 partner in the previous frame: "
        "boxes that pop up or jump; lower is steadier"),
    "class_flip_share": Metric(
        "class_flips", "matched_pairs", "class flip share",
        "share of box pairs matched between consecutive frames (IoU >= 0.5) whose category changed; lower is better"),
    "branch_agreement_f1": Metric(
        "agreement_f1_sum", "agreement_comparisons", "branch agreement F1",
        "mean F1 (IoU >= 0.5, same category) between the boxes of two branches of one fork on the same early "
        "generated frame; the branches barely differ there yet, so 1 is the ideal"),
    "seed_recall": Metric(
        "ground_truth_found", "ground_truth_boxes", "seed recall",
        "share of the seed frames' ground-truth boxes found (IoU >= 0.5, same category)"),
    "seed_precision": Metric(
        "ground_truth_found", "ground_truth_frame_detections", "seed precision",
        "share of the boxes on seed frames with ground truth that match a ground-truth box"),
}


@dataclass
class ClipCounts:
    """What one clip (or, summed, a set of clips) contributes to every metric of `METRICS`."""

    clips: int = 0
    frames: int = 0
    detections: int = 0
    seed_frames: int = 0
    seed_detections: int = 0
    generated_frames: int = 0
    generated_detections: int = 0
    tracked_detections: int = 0  # boxes on frames that have a previous frame
    unmatched_detections: int = 0
    matched_pairs: int = 0
    class_flips: int = 0
    agreement_f1_sum: float = 0.0
    agreement_comparisons: int = 0  # (sibling branch, generated frame) pairs
    ground_truth_boxes: int = 0
    ground_truth_found: int = 0
    ground_truth_frame_detections: int = 0

    def __add__(self, other: ClipCounts) -> ClipCounts:
        return ClipCounts(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in dataclasses.fields(self)})

    def metrics(self) -> dict[str, float | None]:
        """Every metric of `METRICS`; None where its denominator is 0 (nothing to measure)."""
        out = {}
        for name, m in METRICS.items():
            den = getattr(self, m.denominator)
            out[name] = getattr(self, m.numerator) / den if den else None
        return out


@dataclass
class ClipDetections:
    """A tested clip: its row of clips.parquet and the detector's boxes per frame (those scored >= min_score)."""

    row: dict
    labels: list[list[dict]]  # per frame: boxes as `dataset.box` writes them
    boxes: list[np.ndarray] = field(init=False)  # per frame (n, 4)
    categories: list[list[str]] = field(init=False)

    def __post_init__(self):
        self.boxes = [_as_array(frame) for frame in self.labels]
        self.categories = [[b["category"] for b in frame] for frame in self.labels]


# ---- public API -------------------------------------------------------------------------------------------------

def run_test(dataset_dir: str | os.PathLike, detector: str | Callable, out: str | os.PathLike | None = None,
             batch_size: int = 16, include_unselected: bool = False, agreement_frames: int = 2,
             progress: bool = True, min_score: float = 0.0, iou_threshold: float = 0.5) -> dict:
    """Run `detector` over every frame of the dataset's clips, store its pseudo-labels, write the report; return
    the metrics (also in OUT/metrics.json).

    Args:
        dataset_dir: a scenario dataset (`openvica scenarios generate`).
        detector: "module:function", "path/to/file.py:function", or the callable itself.
        out: report folder (default DATASET/report-<detector name>/).
        batch_size: frames per detector call.
        include_unselected: test every clip, not only those the spec's select rule kept.
        agreement_frames: how many first generated frames the branches of one fork are compared on.
        progress: show a tqdm progress bar.
        min_score: boxes scored below this are stored but left out of the metrics.
        iou_threshold: the IoU at which two boxes match (0.5: PASCAL VOC's and COCO's AP50).

    Raises:
        FileNotFoundError: `dataset_dir` is not a scenario dataset, or a detector file does not exist.
        ValueError: a bad detector name or setting, no clips to test, or a detector output that breaks the
            interface (`DetectorOutputError`, which says which frame and what is wrong).
    """
    settings = HarnessSettings(batch_size=batch_size, include_unselected=include_unselected,
                               agreement_frames=agreement_frames, min_score=min_score, iou_threshold=iou_threshold)
    name, detect = (detector, load_detector(detector)) if isinstance(detector, str) else (
        _callable_name(detector), detector)
    if not callable(detect):
        raise TypeError(f"detector {detector!r} is not callable; pass 'module:function' or a function")
    import torch

    if isinstance(detect, torch.nn.Module):  # a torchvision-style detection model (scenarios/detectors.py)
        from .detectors import torchvision_detector

        detect = torchvision_detector(detect)
    dataset = ScenarioDataset(dataset_dir)
    rows = _rows_to_test(dataset, settings.include_unselected)
    out = Path(out) if out is not None else dataset.path / f"report-{safe_name(name)}"

    labels = detect_clips(dataset, rows, detect, name, settings.batch_size, progress)
    for row in rows:
        write_frame_labels(clip_dir(dataset.path, row["clip_id"]) / PSEUDO_DIR / f"{safe_name(name)}.json",
                           dict(enumerate(labels[row["clip_id"]])))
    kept = {clip_id: [[b for b in frame if b["score"] >= settings.min_score] for frame in frames]
            for clip_id, frames in labels.items()}
    write_predictions(out, rows, dataset.clips, labels)  # apart from labels/, which holds ground truth only
    clips = [ClipDetections(row, kept[row["clip_id"]]) for row in rows]
    metrics = compute_metrics(dataset, clips, settings)
    metrics["coco"] = coco_scores(dataset.path, rows, dataset.clips, coco_results(rows, dataset.clips, kept), SLICES)
    metrics["real_vs_generated"] = real_vs_generated(clips, SLICES)
    metrics = {"detector": name, "dataset": str(dataset.path), "report": str(out),
               "settings": dataclasses.asdict(settings), **metrics}
    write_report(out, metrics, clips, dataset)
    return metrics


def load_detector(name: str) -> Callable:
    """The callable named by "module:function" or "path/to/file.py:function".

    Raises:
        ValueError: `name` is not of that form, or the module or function does not exist.
        FileNotFoundError: the file of the path form does not exist.
        TypeError: the name refers to something that is not callable.
    """
    target, sep, attr = name.rpartition(":")
    if not sep or not target or not attr:
        raise ValueError(f"detector {name!r} must be 'module:function' or 'path/to/file.py:function', "
                         f"e.g. {EXAMPLE_DETECTOR}")
    if target.endswith(".py") or os.sep in target or "/" in target:
        module = _module_from_file(Path(target), name)
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as e:
            if e.name is None or not (target == e.name or target.startswith(e.name + ".")):
                raise  # the module exists but one of its own imports is missing: that error says more
            raise ValueError(f"detector {name!r}: no module named {e.name!r}; check the spelling and that it is "
                             f"importable here (installed, or its folder on PYTHONPATH), or pass a file as "
                             f"'path/to/file.py:{attr}'") from e
    if not hasattr(module, attr):
        public = [a for a in dir(module) if not a.startswith("_") and callable(getattr(module, a))]
        close = difflib.get_close_matches(attr, public, n=3)
        raise ValueError(f"detector {name!r}: module {module.__name__!r} has no {attr!r}; "
                         + (f"did you mean {close}?" if close else f"its callables are {public}"))
    detect = getattr(module, attr)
    if not callable(detect):
        raise TypeError(f"detector {name!r}: {attr!r} is of type {type(detect).__name__!r}, not a function")
    return detect


class DetectorOutputError(ValueError):
    """A detector's output breaks the interface of docs/design.md "Scenarios"; the message says where and how."""


def check_detections(output, where: Sequence[str], name: str) -> list[list[dict]]:
    """Validate one batch of detector output and return it as pseudo-labels (`dataset.box`, provenance
    "pseudo:<name>"); `where` names the batch's frames for messages ("clip <id> frame <i>").

    Raises:
        DetectorOutputError: not one list per frame, a detection that is not a dict, a missing key, a category
            outside CATEGORIES, a coordinate or score that is not a finite number, or x2 < x1 or y2 < y1.
    """
    who = f"detector {name!r}"
    if isinstance(output, (str, bytes, Mapping)) or not isinstance(output, Sequence):
        raise DetectorOutputError(f"{who} returned a {type(output).__name__}; it must return a list with one "
                                  f"list of detections per frame ({len(where)} frames in this batch)")
    if len(output) != len(where):
        raise DetectorOutputError(f"{who} returned {len(output)} results for a batch of {len(where)} frames; it "
                                  f"must return one list of detections per frame, [] for a frame without any")
    provenance = f"pseudo:{name}"
    labels = []
    for frame, detections in zip(where, output):
        if isinstance(detections, (str, bytes, Mapping)) or not isinstance(detections, Sequence):
            raise DetectorOutputError(f"{who}, {frame}: got a {type(detections).__name__} for the frame; each "
                                      f"frame's result must be a list of detection dicts")
        frame_labels = []
        for k, d in enumerate(detections):
            at = f"{who}, {frame}, detection {k}"
            if not isinstance(d, Mapping):
                raise DetectorOutputError(f"{at}: a {type(d).__name__}, not a dict "
                                          f"{{'category', 'box2d': {{'x1', 'y1', 'x2', 'y2'}}, 'score'}}")
            missing = [key for key in ("category", "box2d", "score") if key not in d]
            if missing:
                raise DetectorOutputError(f"{at}: missing {missing}; a detection is "
                                          f"{{'category', 'box2d': {{'x1', 'y1', 'x2', 'y2'}}, 'score'}}")
            category = d["category"]
            if category not in CATEGORIES:
                close = difflib.get_close_matches(str(category), CATEGORIES, n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise DetectorOutputError(f"{at}: category {category!r} is not a BDD100K detection class; {hint}"
                                          f"use one of {list(CATEGORIES)}")
            box2d = d["box2d"]
            if not isinstance(box2d, Mapping) or any(key not in box2d for key in BOX_KEYS):
                raise DetectorOutputError(f"{at}: box2d={box2d!r} must be a dict with keys {list(BOX_KEYS)} (pixels)")
            for key, value in [*((k2, box2d[k2]) for k2 in BOX_KEYS), ("score", d["score"])]:
                if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                    raise DetectorOutputError(f"{at}: {key}={value!r} must be a finite number")
            x1, y1, x2, y2 = (float(box2d[key]) for key in BOX_KEYS)
            for low, high, a, b in (("x1", "x2", x1, x2), ("y1", "y2", y1, y2)):
                if b < a:
                    raise DetectorOutputError(f"{at}: {high}={b} < {low}={a}; boxes are (x1, y1) top left and "
                                              f"(x2, y2) bottom right, in pixels")
            frame_labels.append(box(category, x1, y1, x2, y2, provenance, float(d["score"])))
        labels.append(frame_labels)
    return labels


def detect_clips(dataset: ScenarioDataset, rows: list[dict], detect: Callable, name: str, batch_size: int,
                 progress: bool = True) -> dict[str, list[list[dict]]]:
    """The detector's checked boxes on every frame of `rows`' clips, {clip id: per frame [box]}.

    Frames go to the detector in batches of `batch_size` that run across clip boundaries, so short clips do not
    make small batches; a batch is cut early only where the frame size changes.
    """
    from tqdm.auto import tqdm

    labels = {row["clip_id"]: [] for row in rows}
    batch, keys = [], []

    def flush(bar):
        if batch:
            output = detect(np.stack(batch))  # (B, H, W, 3)
            checked = check_detections(output, [f"clip {c} frame {i}" for c, i in keys], name)
            for (clip_id, _), frame_labels in zip(keys, checked):
                labels[clip_id].append(frame_labels)
            bar.update(len(batch))
            batch.clear()
            keys.clear()

    with tqdm(total=sum(r["num_frames"] for r in rows), desc="detect", unit="frame",
              disable=not progress) as bar:
        for row in rows:
            for i, frame in enumerate(dataset.frames(row["clip_id"])):
                if batch and frame.shape != batch[0].shape:
                    flush(bar)
                batch.append(frame)
                keys.append((row["clip_id"], i))
                if len(batch) == batch_size:
                    flush(bar)
        flush(bar)
    return labels


def compute_metrics(dataset: ScenarioDataset, clips: list[ClipDetections], settings: HarnessSettings) -> dict:
    """Every metric of `METRICS` over all clips and per slice, detections per frame index, and the branches'
    agreement per generated frame (for the plot)."""
    owners = set(seed_owners([c.row for c in clips]).values())  # a fork's real seed frames count once
    counts = {c.row["clip_id"]: _clip_counts(dataset, c, settings.iou_threshold, c.row["clip_id"] in owners)
              for c in clips}
    agreement_curve = _add_branch_agreement(clips, counts, settings)
    total = sum(counts.values(), ClipCounts())
    slices = {}
    for key in SLICES:
        groups: dict[str, ClipCounts] = {}
        for c in clips:
            value = "unknown" if c.row.get(key) is None else str(c.row[key])
            groups[value] = groups.get(value, ClipCounts()) + counts[c.row["clip_id"]]
        slices[key] = {value: _summary(groups[value]) for value in sorted(groups, key=_slice_order)}
    return {"clips": total.clips, "frames": total.frames, "overall": _summary(total),
            "counts": dataclasses.asdict(total), "by_frame_index": _by_frame_index(clips),
            "branch_agreement_by_generated_frame": agreement_curve, "slices": slices}


# ---- boxes ------------------------------------------------------------------------------------------------------

def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a (n, 4) and b (m, 4), x1 y1 x2 y2: (n, m); 0 where the union is empty."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])  # (n, m, 2)
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)  # (n, m)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=-1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter, dtype=np.float64), where=union > 0)


def match_boxes(a: np.ndarray, b: np.ndarray, iou_threshold: float, a_categories: Sequence[str] | None = None,
                b_categories: Sequence[str] | None = None) -> list[tuple[int, int]]:
    """Greedy one-to-one matching of boxes a (n, 4) to b (m, 4): the pair of highest IoU first, then the highest
    among the boxes left, while the IoU is at least `iou_threshold`. With categories, only same-category pairs."""
    if len(a) == 0 or len(b) == 0:
        return []
    iou = box_iou(a, b)
    if a_categories is not None:
        same = np.asarray(a_categories, dtype=object)[:, None] == np.asarray(b_categories, dtype=object)[None, :]
        iou = np.where(same, iou, -1.0)
    pairs, used_a, used_b = [], set(), set()
    order = np.argsort(-iou, axis=None, kind="stable")  # ties: lower index first, so results do not depend on luck
    for flat in order:
        i, j = divmod(int(flat), iou.shape[1])
        if iou[i, j] < iou_threshold:
            break
        if i not in used_a and j not in used_b:
            pairs.append((i, j))
            used_a.add(i)
            used_b.add(j)
    return pairs


def _as_array(labels: list[dict]) -> np.ndarray:
    return np.array([[b["box2d"][k] for k in BOX_KEYS] for b in labels], np.float64).reshape(-1, 4)


# ---- metrics ----------------------------------------------------------------------------------------------------

def _rows_to_test(dataset: ScenarioDataset, include_unselected: bool) -> list[dict]:
    if not dataset.clips:
        raise ValueError(f"{dataset.path} holds no clips; generate some with "
                         f"`openvica scenarios generate --spec NAME --out {dataset.path}`")
    rows = dataset.clips if include_unselected else [r for r in dataset.clips if r["selected"]]
    if not rows:
        raise ValueError(f"none of the {len(dataset.clips)} clips of {dataset.path} is selected; pass --all "
                         f"(include_unselected=True) to test them anyway, or change the spec's select rule")
    return rows


def _clip_counts(dataset: ScenarioDataset, clip: ClipDetections, iou_threshold: float,
                 owns_seed_frames: bool = True) -> ClipCounts:
    """Everything but the branch agreement, which needs the clip's siblings (`_add_branch_agreement`)."""
    T = clip.row["num_seed_frames"]
    n = [len(b) for b in clip.boxes]
    c = ClipCounts(clips=1, frames=len(n), detections=sum(n), seed_frames=len(n[:T]), seed_detections=sum(n[:T]),
                   generated_frames=len(n[T:]), generated_detections=sum(n[T:]))
    for i in range(1, len(clip.boxes)):
        pairs = match_boxes(clip.boxes[i - 1], clip.boxes[i], iou_threshold)
        c.tracked_detections += n[i]
        c.unmatched_detections += n[i] - len(pairs)
        c.matched_pairs += len(pairs)
        c.class_flips += sum(clip.categories[i - 1][p] != clip.categories[i][q] for p, q in pairs)
    for i, truth in dataset.seed_labels(clip.row["clip_id"]).items() if owns_seed_frames else ():
        if i >= min(T, len(n)):
            continue  # ground truth exists for seed frames only (docs/design.md "Scenarios")
        truth = [b for b in truth if b.get("provenance") == GROUND_TRUTH and not b.get("ignored")]  # no regions
        pairs = match_boxes(_as_array(truth), clip.boxes[i], iou_threshold, [b["category"] for b in truth],
                            clip.categories[i])
        c.ground_truth_boxes += len(truth)
        c.ground_truth_found += len(pairs)
        c.ground_truth_frame_detections += n[i]
    return c


def _add_branch_agreement(clips: list[ClipDetections], counts: dict[str, ClipCounts],
                          settings: HarnessSettings) -> list[dict]:
    """Add each clip's F1 against its sibling branches on its first `agreement_frames` generated frames to its
    counts, and return the mean F1 per generated frame over the whole horizon: [{generated_frame, f1, pairs}].

    Each unordered pair of branches is scored once per frame and counted for both clips, so the overall mean is
    the mean over pairs, and a slice by surprise decile still sees each clip's own comparisons.
    """
    forks: dict[tuple, list[ClipDetections]] = {}
    for c in clips:
        forks.setdefault((c.row["parent_clip_id"], c.row["fork_frame"]), []).append(c)
    curve: dict[int, list[float]] = {}
    for branches in forks.values():
        for a_index, a in enumerate(branches):
            for b in branches[a_index + 1:]:
                Ta, Tb = a.row["num_seed_frames"], b.row["num_seed_frames"]
                for j in range(min(len(a.boxes) - Ta, len(b.boxes) - Tb)):
                    f1 = _f1(a, Ta + j, b, Tb + j, settings.iou_threshold)
                    curve.setdefault(j, []).append(f1)
                    if j < settings.agreement_frames:
                        for clip in (a, b):
                            counts[clip.row["clip_id"]].agreement_f1_sum += f1
                            counts[clip.row["clip_id"]].agreement_comparisons += 1
    return [{"generated_frame": j, "f1": float(np.mean(curve[j])), "pairs": len(curve[j])} for j in sorted(curve)]


def _f1(a: ClipDetections, i: int, b: ClipDetections, j: int, iou_threshold: float) -> float:
    """F1 of a's frame i against b's frame j (symmetric): 2 matches / all boxes; 1 when both frames are empty."""
    total = len(a.boxes[i]) + len(b.boxes[j])
    if total == 0:
        return 1.0  # both see nothing: they agree
    pairs = match_boxes(a.boxes[i], b.boxes[j], iou_threshold, a.categories[i], b.categories[j])
    return 2 * len(pairs) / total


def _by_frame_index(clips: list[ClipDetections]) -> list[dict]:
    """Mean detections per frame index, seed and generated frames apart (clips may differ in seed frames)."""
    sums: dict[tuple[int, str], list[int]] = {}
    for c in clips:
        for i, b in enumerate(c.boxes):
            kind = "seed" if i < c.row["num_seed_frames"] else "generated"
            sums.setdefault((i, kind), []).append(len(b))
    return [{"frame_index": i, "kind": kind, "frames": len(v), "detections_per_frame": float(np.mean(v))}
            for (i, kind), v in sorted(sums.items())]


def _summary(counts: ClipCounts) -> dict:
    return {"clips": counts.clips, "frames": counts.frames, **counts.metrics()}


def _slice_order(value: str):
    return (0, int(value), "") if value.lstrip("-").isdigit() else (1, 0, value)


def _callable_name(detect: Callable) -> str:
    module = getattr(detect, "__module__", None) or "detector"
    return f"{module}:{getattr(detect, '__qualname__', type(detect).__name__)}"


def _module_from_file(path: Path, name: str):
    if not path.is_file():
        raise FileNotFoundError(f"detector {name!r}: no file {path}; give the path of a Python file, or "
                                f"'module:function' for an importable module")
    module_name = f"openvica_detector_{safe_name(path.stem)}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up by name while it runs
    spec.loader.exec_module(module)
    return module


# ---- report -----------------------------------------------------------------------------------------------------

def write_report(out: str | os.PathLike, metrics: dict, clips: list[ClipDetections], dataset: ScenarioDataset) -> Path:
    """metrics.json, report.md and the PNG plots of `PLOTS` (of the tested `clips` of `dataset`) into `out`; returns
    report.md's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / METRICS_FILE, json.dumps(metrics, indent=2))
    _plot_all(out, metrics, clips)
    _detections_sheet(out / "detections.png", dataset, clips[:SHEET_CLIPS])
    atomic_write_text(out / REPORT_FILE, _report_markdown(metrics))
    return out / REPORT_FILE


def _detections_sheet(path: Path, dataset: ScenarioDataset, clips: list[ClipDetections]) -> None:
    """A contact sheet of `clips`, one per row, each frame with the detector's boxes (white, score above) and, on
    the labelled seed frames, their ground truth (green): what a person checks before trusting the numbers."""
    from PIL import Image, ImageDraw

    from openvica_sim.video_io import write_contact_sheet

    rows, labels = [], []
    for c in clips:
        truth = dataset.seed_labels(c.row["clip_id"])
        drawn = []
        for i, frame in enumerate(dataset.frames(c.row["clip_id"])):
            image = Image.fromarray(frame)
            draw = ImageDraw.Draw(image)
            for b in truth.get(i, []):
                draw.rectangle([b["box2d"][k] for k in BOX_KEYS], outline=(40, 220, 60), width=2)
            for b in c.labels[i]:
                box = [b["box2d"][k] for k in BOX_KEYS]
                draw.rectangle(box, outline=(255, 255, 255), width=1)
                draw.text((box[0], max(box[1] - 10, 0)), f"{b['score']:.2f}", fill=(255, 255, 255))
            drawn.append(np.asarray(image))
        rows.append(np.stack(drawn))
        labels.append(f"{c.row['clip_id']} ({c.row.get('weather')}, {c.row.get('timeofday')})")
    if rows:
        write_contact_sheet(path, rows, labels=labels, num_seed_frames=clips[0].row["num_seed_frames"])


def _fmt(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _report_markdown(m: dict) -> str:
    s, c = m["settings"], m["counts"]
    which = "all clips" if s["include_unselected"] else "the selected clips"
    lines = [
        f"# Detector report: `{m['detector']}`", "",
        f"Dataset `{m['dataset']}`: {which}, {m['clips']} clips, {m['frames']} frames ({c['seed_frames']} seed, "
        f"{c['generated_frames']} generated), {c['detections']} detections"
        + (f" scored at least {s['min_score']}" if s["min_score"] else "") + ". "
        f"Boxes match at IoU >= {s['iou_threshold']}, greedily (highest IoU first, one to one); branches are "
        f"compared on their first {s['agreement_frames']} generated frames. `n/a`: nothing to measure (no frames, "
        f"boxes, sibling branches or ground truth of that kind).", "",
        "## Summary", "",
        "| metric | value | counts | what it means |", "|---|---|---|---|",
    ]
    for name, metric in METRICS.items():
        num, den = c[metric.numerator], c[metric.denominator]
        num = f"{num:.2f}" if isinstance(num, float) else num
        lines.append(f"| {metric.label} | {_fmt(m['overall'][name])} | {num} / {den} | {metric.meaning} |")
    lines += ["", "## Detections per frame index", "",
              f"![{PLOTS['detections_per_frame']}](detections_per_frame.png)", "",
              "Real seed frames against the world model's frames: a detector that finds far fewer (or far more) "
              "boxes on generated frames sees them differently, whatever the cause.", ""]
    lines += _coco_markdown(m.get("coco"), m.get("real_vs_generated"))
    columns = ["clips", "frames", *METRICS]
    for key in m["slices"]:
        lines += [f"## By {SLICE_TITLES[key]}", "",
                  f"| {key} | " + " | ".join(METRICS[k].label if k in METRICS else k for k in columns) + " |",
                  "|---" * (len(columns) + 1) + "|"]
        for value, row in m["slices"][key].items():
            lines.append(f"| {value} | " + " | ".join(
                str(row[k]) if k in ("clips", "frames") else _fmt(row[k]) for k in columns) + " |")
        lines.append("")
    lines += ["## Plots", ""]
    for name, caption in PLOTS.items():
        if name != "detections_per_frame":  # shown above
            lines += [f"![{caption}]({name}.png)", "", f"*{caption}.*", ""]
    return "\n".join(lines)


def _coco_markdown(coco: dict | None, gap: dict | None) -> list[str]:
    """report.md's AP tables (COCOeval on the labelled seed frames) and the real-vs-generated gap, per slice."""
    if coco is None:
        return []
    lines = ["## COCO AP on the labelled seed frames", "",
             "pycocotools' COCOeval of `predictions.coco.json` against `labels/coco.json` on the seed frames that "
             "carry ground truth (generated frames are unlabelled: never scored as negatives). AP: IoU .50:.95; "
             "AR100: recall at 100 detections. `n/a`: no ground truth there.", ""]
    overall = coco["overall"]
    if overall is None:
        return lines + ["No tested frame carries ground truth: nothing to score.", ""]
    lines += ["| class | boxes | AP | AP50 |", "|---|---|---|---|"]
    lines += [f"| all | {sum(c['boxes'] for c in overall['per_class'].values())} | {_fmt(overall['AP'])} | "
              f"{_fmt(overall['AP50'])} |"]
    lines += [f"| {name} | {c['boxes']} | {_fmt(c['AP'])} | {_fmt(c['AP50'])} |"
              for name, c in sorted(overall["per_class"].items())]
    lines.append("")
    for key, groups in coco["slices"].items():
        lines += [f"| {SLICE_TITLES[key]} | labelled frames | AP | AP50 | AR100 | detections / frame, real | "
                  "generated | score, real | generated | count distance | score distance |", "|---" * 11 + "|"]
        for value in sorted(groups, key=_slice_order):
            a, g = groups[value], (gap or {}).get("slices", {}).get(key, {}).get(value, {})
            lines.append(f"| {value} | {a['images'] if a else 0} | {_fmt(a and a['AP'])} | {_fmt(a and a['AP50'])} "
                         f"| {_fmt(a and a['AR100'])} | {_fmt(g.get('detections_per_frame_real'), 2)} | "
                         f"{_fmt(g.get('detections_per_frame_generated'), 2)} | {_fmt(g.get('mean_score_real'))} | "
                         f"{_fmt(g.get('mean_score_generated'))} | {_fmt(g.get('count_distance'), 2)} | "
                         f"{_fmt(g.get('score_distance'))} |")
        lines.append("")
    lines += ["The real-vs-generated columns compare the detector on a slice's real seed frames and on its generated "
              "frames (distances: 1-D Wasserstein of detections per frame and of scores): where they are small, the "
              "slice's generated frames look to this detector like real ones, and its numbers there can be read "
              "as numbers about such scenes.", ""]
    return lines


def _plot_all(out: Path, m: dict, clips: list[ClipDetections]) -> None:
    # The object-oriented API with an Agg canvas: no pyplot, so no global backend switch in the caller's process.
    # Fixed margins, not layout="constrained": that lays every figure out by drawing it once more (2x the time).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from openvica_sim.video_io import PREDICTED_COLOR, SEED_COLOR

    def figure(width_in: float, left: float = 0.1, wspace: float = 0.2) -> Figure:
        fig = Figure(figsize=(width_in, 3.5))
        fig.subplots_adjust(left=left, right=0.97, bottom=0.17, top=0.9, wspace=wspace)
        return fig

    seed_colour, generated_colour = (tuple(v / 255 for v in c) for c in (SEED_COLOR, PREDICTED_COLOR))

    def save(fig: Figure, name: str) -> None:
        FigureCanvasAgg(fig)
        fig.savefig(out / f"{name}.png", dpi=100)

    # detections per frame index
    fig = figure(7)
    ax = fig.add_subplot()
    for kind, colour in (("seed", seed_colour), ("generated", generated_colour)):
        rows = [r for r in m["by_frame_index"] if r["kind"] == kind]
        ax.bar([r["frame_index"] for r in rows], [r["detections_per_frame"] for r in rows], color=colour, label=kind)
    ax.set(xlabel="frame index", ylabel="mean detections per frame", title=m["detector"])
    ax.legend()
    save(fig, "detections_per_frame")

    # temporal consistency per slice
    fig = figure(4 * len(SLICES), left=0.08, wspace=0.6)
    shares = [row[metric] or 0 for key in SLICES for row in m["slices"][key].values()
              for metric in ("temporal_unmatched_share", "class_flip_share")]
    top = max(0.1, 1.15 * max(shares, default=0))  # one scale for all panels, so slices compare at a glance
    for k, key in enumerate(SLICES):
        ax = fig.add_subplot(1, len(SLICES), k + 1)
        values = list(m["slices"][key])
        y = np.arange(len(values))
        for offset, (metric, colour) in enumerate((("temporal_unmatched_share", "tab:red"),
                                                   ("class_flip_share", "tab:purple"))):
            ax.barh(y + 0.4 * offset, [m["slices"][key][v][metric] or 0 for v in values], height=0.4, color=colour,
                    label=METRICS[metric].label)
        ax.set_yticks(y + 0.2, values)
        ax.set(xlim=(0, top), title=SLICE_TITLES[key])
    fig.axes[0].legend(loc="lower right", fontsize="small")
    save(fig, "temporal_consistency")

    # by surprise decile
    fig = figure(10, wspace=0.25)
    deciles = m["slices"]["surprise_decile"]
    known = [v for v in deciles if v != "unknown"]

    def line(ax, metric, **style):
        values = [deciles[v][metric] for v in known]
        ax.plot([int(v) for v in known], [np.nan if v is None else v for v in values], "o-",
                label=METRICS[metric].label, **style)

    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    line(left, "detections_per_seed_frame", color=seed_colour)
    line(left, "detections_per_generated_frame", color=generated_colour)
    left.set(ylabel="mean detections per frame")
    for metric in ("temporal_unmatched_share", "class_flip_share", "branch_agreement_f1", "seed_recall"):
        line(right, metric)
    right.set(ylim=(-0.05, 1.05))
    for ax in (left, right):
        ax.set(xlabel="surprise decile (0: least surprising)", xticks=range(10), xlim=(-0.5, 9.5))
        ax.legend(fontsize="small")
    save(fig, "surprise_deciles")

    # branch agreement over the horizon
    fig = figure(7)
    ax = fig.add_subplot()
    curve = m["branch_agreement_by_generated_frame"]
    if curve:
        ax.plot([r["generated_frame"] for r in curve], [r["f1"] for r in curve], "o-", color=generated_colour)
        ax.axvspan(-0.5, m["settings"]["agreement_frames"] - 0.5, color="0.9", label="counted in the metric")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no fork with two or more branches among the tested clips", ha="center",
                transform=ax.transAxes)
    ax.set(xlabel="generated frame (0 = first)", ylabel="mean F1 between branches", ylim=(-0.05, 1.05),
           xticks=[r["generated_frame"] for r in curve])
    save(fig, "branch_agreement")

    # scores
    fig = figure(7)
    ax = fig.add_subplot()
    for kind, colour in (("seed", seed_colour), ("generated", generated_colour)):
        scores = [b["score"] for c in clips for i, frame in enumerate(c.labels) for b in frame
                  if (i < c.row["num_seed_frames"]) == (kind == "seed")]
        if scores:
            ax.hist(scores, bins=20, color=colour, alpha=0.6, density=True, label=f"{kind} ({len(scores)} boxes)")
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    ax.set(xlabel="detection score", ylabel="density")
    save(fig, "scores")


# ---- command line -----------------------------------------------------------------------------------------------

def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add `test` to the `openvica scenarios` subcommands; it runs `command`."""
    p = subparsers.add_parser(
        "test", help="run your detector over a scenario dataset and report how it behaves",
        description="Run a detector over every frame of the dataset's selected clips, store its boxes as "
        "pseudo-labels (clips/<id>/pseudo/<name>.json, and REPORT/predictions.coco.json, COCO results over "
        "labels/coco.json's image ids, and REPORT/predictions.json, Scalabel) "
        "and write a report: metrics.json, report.md and plots of detections per frame (seed vs generated), "
        "temporal consistency, class flips, agreement between branches of one fork, and recall against the seed "
        "frames' ground truth, each sliced by weather, time of day, scene and surprise decile.",
        epilog=f"A detector is a function detect(frames) taking uint8 frames (B, H, W, 3) and returning one list per "
        f"frame of {{'category': one of {', '.join(CATEGORIES)}; 'box2d': {{'x1', 'y1', 'x2', 'y2'}} in pixels; "
        f"'score': float}}. Example: --detector {EXAMPLE_DETECTOR}")
    p.add_argument("dataset", metavar="DIR", help="scenario dataset folder (from `openvica scenarios generate`)")
    p.add_argument("--detector", required=True, metavar="MODULE:FUNCTION",
                   help="the detector, 'module:function' (importable) or 'path/to/file.py:function'")
    p.add_argument("--out", default=None, metavar="REPORT", help="report folder (default: DIR/report-<detector>/)")
    p.add_argument("--batch-size", type=int, default=16, help="frames per detector call (default 16)")
    p.add_argument("--all", dest="include_unselected", action="store_true",
                   help="test every clip, also those the spec's select rule did not select")
    p.add_argument("--agreement-frames", type=int, default=2,
                   help="first generated frames on which branches of one fork are compared (default 2)")
    p.add_argument("--min-score", type=float, default=0.0,
                   help="leave boxes scored below this out of the metrics (they are stored anyway; default 0)")
    p.add_argument("--iou", dest="iou_threshold", type=float, default=0.5,
                   help="IoU at which two boxes match, for recall, temporal matches and branch agreement (default "
                   "0.5, as COCO's AP50)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.set_defaults(run=command)
    return p


def command(args: argparse.Namespace) -> int:
    """`openvica scenarios test`: run, then print the summary (stderr) and the report's paths (stdout, JSON)."""
    m = run_test(args.dataset, args.detector, out=args.out, batch_size=args.batch_size,
                 include_unselected=args.include_unselected, agreement_frames=args.agreement_frames,
                 progress=args.progress, min_score=args.min_score, iou_threshold=args.iou_threshold)
    for name, metric in METRICS.items():
        print(f"{metric.label:>32}: {_fmt(m['overall'][name])}", file=sys.stderr)
    print(json.dumps({"report": str(Path(m["report"]) / REPORT_FILE), "metrics": str(Path(m["report"]) / METRICS_FILE),
                      "clips": m["clips"], "frames": m["frames"]}))
    return 0
