"""Detection accuracy in COCO's terms: pycocotools' COCOeval AP / AP50 / AP75 / AR100, overall and per class.

Used by the scenario harness (`scenarios/scoring.py`, on a dataset's labels/coco.json) and by the example detector's
training (`training/detector.py`, on held-out labelled frames of a clip source, `detector_accuracy`). Ground truth
that should neither count as missed nor punish a detection on it (BDD100K's ignored categories, synthetic cars beyond
the scored distance) is an `iscrowd` region: COCOeval matches detections to it by overlap and then ignores them.
"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Callable

import numpy as np

COCO_STATS = {"AP": 0, "AP50": 1, "AP75": 2, "AR100": 8}  # indices into COCOeval.stats (bbox)


def coco_eval(truth, results: list[dict], images: set) -> dict | None:
    """{"images", "AP", "AP50", "AP75", "AR100", "per_class": {category: {"AP", "AP50", "boxes"}}} of COCO
    `results` ([{image_id, category_id, bbox, score}]) against the pycocotools COCO `truth` on `images` (ids);
    None where there is no ground truth to score."""
    if not images or not truth.getAnnIds(imgIds=list(images), iscrowd=False):
        return None
    from pycocotools.cocoeval import COCOeval

    mine = [r for r in results if r["image_id"] in images]
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints as it works
        predicted = truth.loadRes(mine) if mine else None
        if predicted is None:  # no detection at all on these frames: AP and AR are 0 where ground truth exists
            return {"images": len(images), **{k: 0.0 for k in COCO_STATS},
                    "per_class": {truth.cats[cat]["name"]: {"AP": 0.0, "AP50": 0.0, "boxes": n}
                                  for cat, n in class_boxes(truth, images).items()}}
        evaluation = COCOeval(truth, predicted, "bbox")
        evaluation.params.imgIds = sorted(images)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    out = {"images": len(images), **{k: _value(evaluation.stats[i]) for k, i in COCO_STATS.items()}}
    # per class: precision (T IoUs, R recall points, K classes, A areas, M max dets); area "all", 100 detections
    precision = evaluation.eval["precision"][:, :, :, 0, -1]
    out["per_class"] = {}
    boxes_of = class_boxes(truth, images)
    for k, cat in enumerate(evaluation.params.catIds):
        if cat in boxes_of:
            boxes, p = boxes_of[cat], precision[:, :, k]
            out["per_class"][truth.cats[cat]["name"]] = {
                "AP": _value(np.mean(p[p > -1])) if (p > -1).any() else None,
                "AP50": _value(np.mean(p[0][p[0] > -1])) if (p[0] > -1).any() else None, "boxes": boxes}
    return out


def class_boxes(truth, images: set) -> dict[int, int]:
    """{category id: ground-truth boxes (not ignore regions) on `images`} for the classes that have any."""
    counts = {cat: len(truth.getAnnIds(imgIds=sorted(images), catIds=[cat], iscrowd=False)) for cat in truth.getCatIds()}
    return {cat: n for cat, n in counts.items() if n}


def load_coco(dataset: dict | str | os.PathLike):
    """A pycocotools COCO over a dataset dict (or a coco.json path), quietly."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(dataset, dict):
            truth = COCO()
            truth.dataset = dataset
            truth.createIndex()
            return truth
        return COCO(str(dataset))


def detector_accuracy(detect: Callable, clips, classes: tuple[str, ...] = ("car",), max_distance_m: float | None = 60.0,
                      batch_size: int = 32, by: str | None = "timeofday") -> dict:
    """COCOeval of `detect(frames uint8 (B, H, W, 3)) -> [[{category, box2d, score}]]` on every labelled frame of
    `clips` (a clip source or its path, `data.clips.open_clips`: a token store with frames, a folder of clips with
    labels.json, the synthetic world), in the model view. Boxes of `classes` farther than `max_distance_m` (their
    `distance_m`, the synthetic world's depth; boxes without one always count) and ignored boxes are ignore regions.
    Returns {"clips", "classes", "max_distance_m", "frames", "boxes", "ignored", "detections",
    "overall": coco_eval(...), "by_<by>": {value: coco_eval(...)}} (`by`: a clip attribute, or None)."""
    from openvica_sim.data.clips import open_clips
    from openvica_sim.frames import model_view

    source = open_clips(clips)
    images, annotations, results, groups = [], [], [], {}
    category_id = {name: k + 1 for k, name in enumerate(classes)}
    for clip_id in source.clip_ids:
        labelled = source.labels(clip_id)
        if not labelled:
            continue
        frames = model_view(source.frames(clip_id, max(labelled) + 1))  # what the detector and the labels see
        order = sorted(labelled)
        picked = frames[order]
        predicted = [box for k in range(0, len(picked), batch_size) for box in detect(picked[k:k + batch_size])]
        value = source.info(clip_id).attributes.get(by, "unknown") if by else None
        for frame, boxes in zip(order, predicted):
            image_id = len(images) + 1
            images.append({"id": image_id, "width": int(frames.shape[2]), "height": int(frames.shape[1]),
                           "file_name": f"{clip_id}/{frame:04d}"})
            groups.setdefault(value, set()).add(image_id)
            for b in labelled[frame]:
                if b["category"] not in category_id:
                    continue
                far = max_distance_m is not None and b.get("distance_m", 0.0) > max_distance_m
                annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                    "category_id": category_id[b["category"]], "bbox": xywh(b["box2d"]),
                                    "area": _area(b["box2d"]), "iscrowd": int(far or bool(b.get("ignored")))})
            results += [{"image_id": image_id, "category_id": category_id[b["category"]], "bbox": xywh(b["box2d"]),
                         "score": float(b["score"])} for b in boxes if b["category"] in category_id]
    if not images:
        raise ValueError(f"{source} has no labelled frames to score a detector on")
    truth = load_coco({"images": images, "annotations": annotations,
                       "categories": [{"id": i, "name": n} for n, i in category_id.items()]})
    out = {"clips": str(getattr(source, "path", source)), "classes": list(classes), "max_distance_m": max_distance_m,
           "frames": len(images), "boxes": sum(1 - a["iscrowd"] for a in annotations),
           "ignored": sum(a["iscrowd"] for a in annotations), "detections": len(results),
           "overall": coco_eval(truth, results, {im["id"] for im in images})}
    if by:
        out[f"by_{by}"] = {value: coco_eval(truth, results, ids) for value, ids in sorted(groups.items())}
    return out


def xywh(box: dict) -> list[float]:
    """A box2d {x1, y1, x2, y2} as COCO's [x, y, width, height]."""
    return [float(box["x1"]), float(box["y1"]), float(box["x2"]) - float(box["x1"]), float(box["y2"]) - float(box["y1"])]


def _area(box: dict) -> float:
    return max(0.0, float(box["x2"]) - float(box["x1"])) * max(0.0, float(box["y2"]) - float(box["y1"]))


def _value(x: float) -> float | None:
    return None if x is None or x < 0 else float(x)  # COCOeval's -1: nothing to score
