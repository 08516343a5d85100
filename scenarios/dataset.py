"""A rare-scenario dataset on disk: the folder `openvica scenarios generate` writes and every other command reads.

    DIR/manifest.json            spec hash, bundle hashes, project version, sampler settings, counts, times
    DIR/spec.yaml                the resolved spec, frozen (what `replay` regenerates from)
    DIR/clips.parquet            one row per generated clip (COLUMNS below), rebuilt from the committed clip folders
    DIR/clips/<clip_id>/         one generated clip, the unit of commit (written as clips/.tmp-<clip_id>/, renamed)
        frames/NNNNNN.jpg        the T seed frames (000000 .. T-1), then the N generated ones
        video.mp4                the same frames at the bundle's 4 fps
        tokens.npy               uint16 (T + N, h, w): seed codes, then generated codes
        actions.json             the ego program and its per-step commands, and whether the bundle applied them
        clip.json                this clip's row of clips.parquet, minus the dataset-level fields
        labels.json              ground truth of the seed frames, when the seed source has it (Scalabel frames)
        pseudo/<name>.json       a detector's boxes on every frame (`openvica scenarios test`), Scalabel frames
    DIR/labels/det.json          every selected clip's frames, BDD100K/Scalabel layout, ground truth only
    DIR/labels/coco.json         the same in COCO (pycocotools loads it); generated frames: images without boxes
    DIR/report-<detector>/       a detector's report (`openvica scenarios test`), with its predictions:
        predictions.coco.json    COCO results [{image_id, category_id, bbox, score}] (`COCO.loadRes`)
        predictions.json         Scalabel frames with scored boxes
    DIR/review/index.html        contact sheets per slice and per surprise decile, a histogram of surprise

Boxes are in the pixels of the frames as stored (256 x 256, the model's view); where the seed clip's camera view is
known (`camera_view`: stores ingested since it was kept, folders of clips), each box also carries its copy in the
original camera frame's pixels: `box2d_camera` in det.json and predictions.json, `bbox_camera` in coco.json, and
each COCO image its `camera` (the crop: camera size, scale, offsets). Ground truth ("seed-ground-truth":
the seed frames' own labels) and a detector's predictions ("pseudo:<detector>", scored) never share a file; a
generated frame never carries a box presented as ground truth (docs/design.md "Scenarios").
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from openvica_sim.data.bdd100k import DETECTION_CLASSES, detection_class
from openvica_sim.metrics.detection import xywh

MANIFEST = "manifest.json"
SPEC_FILE = "spec.yaml"
CLIPS_TABLE = "clips.parquet"
CLIPS_DIR = "clips"
LABELS_DIR = "labels"
PREDICTIONS_COCO, PREDICTIONS_SCALABEL = "predictions.coco.json", "predictions.json"  # in a detector's report
REVIEW_DIR = "review"
CLIP_FILE = "clip.json"
SEED_LABELS_FILE = "labels.json"
PSEUDO_DIR = "pseudo"
TMP_PREFIX = ".tmp-"
GROUND_TRUTH = "seed-ground-truth"
SLICE_KEYS = ("weather", "timeofday", "scene")  # BDD100K's clip attributes

CATEGORIES = DETECTION_CLASSES  # BDD100K's ten detection classes: COCO category ids are 1 + the index

# clips.parquet, one row per generated clip. Per-clip fields are written with the clip (clip.json); the
# dataset-level ones (*) are computed over all committed clips when the table is rebuilt.
COLUMNS = {
    "clip_id": "str: <parent>-f<fork>-b<branch>, also the folder name",
    "parent_clip_id": "str: the seed clip",
    "fork_frame": "int: first frame of the seed clip used as seed frame (spec fork.at)",
    "branch": "int: 0 .. fork.branches - 1",
    "sample_seed": "int64: the sampler seed, from (spec hash, parent, fork, branch)",
    "weather": "str", "timeofday": "str", "scene": "str",
    "attributes": "str: the seed clip's attributes, JSON",
    "num_seed_frames": "int: T", "num_frames": "int: T + N frames in frames/",
    "ego_program": "str", "ego_params": "str: JSON", "ego_applied": "bool: the bundle is action-conditioned",
    "surprise": "list<float>: per generated frame, nats per code", "surprise_mean": "float",
    "flicker": "float: mean frame-to-frame change of the generated frames over the seed frames' (ratio)",
    "flicker_flag": "bool: flicker above the spec's gate", "frozen_flag": "bool: generated frames do not change",
    "surprise_outlier": "bool (*): surprise_mean beyond the gate's robust z-score",
    "surprise_decile": "int (*): 0 (least) .. 9 (most surprising) over the dataset",
    "diversity": "float (*): embedding distance to the nearest clip selected before it (k-center greedy order)",
    "diversity_rank": "int (*): position in the k-center greedy order, 0 first",
    "selected": "bool (*): kept by the spec's select rule", "status": "str (*): ok | flagged:<gates>",
    "seconds": "float: time to generate and write the clip",
    "camera_view": "str: JSON `frames.CropView` of the seed's camera frames (boxes' *_camera copies), '' unknown",
}


def clip_dir(root: str | os.PathLike, clip_id: str) -> Path:
    return Path(root) / CLIPS_DIR / clip_id


def frame_name(index: int) -> str:
    return f"{index:06d}.jpg"


def committed_clip_ids(root: str | os.PathLike) -> list[str]:
    """Clip folders that were renamed into place (complete), sorted; temporary folders are ignored."""
    clips = Path(root) / CLIPS_DIR
    if not clips.is_dir():
        return []
    return sorted(p.name for p in clips.iterdir()
                  if p.is_dir() and not p.name.startswith(TMP_PREFIX) and (p / CLIP_FILE).is_file())


class ScenarioDataset:
    """Read a scenario dataset: its manifest, its clips table, frames, tokens and labels.

    Raises:
        FileNotFoundError: `path` holds no manifest.json or clips.parquet (not a finished dataset).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        for name in (MANIFEST, CLIPS_TABLE):
            if not (self.path / name).is_file():
                raise FileNotFoundError(f"{self.path} is not a scenario dataset: no {name}; make one with "
                                        f"`openvica scenarios generate --spec NAME --out {self.path}`")
        self.manifest = json.loads((self.path / MANIFEST).read_text())
        import pyarrow.parquet as pq

        self.clips: list[dict] = pq.read_table(self.path / CLIPS_TABLE).to_pylist()
        self._by_id = {c["clip_id"]: c for c in self.clips}

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def clip_ids(self) -> list[str]:
        return [c["clip_id"] for c in self.clips]

    def clip(self, clip_id: str) -> dict:
        if clip_id not in self._by_id:
            import difflib

            close = difflib.get_close_matches(clip_id, self._by_id, n=3)
            raise KeyError(f"no clip {clip_id!r} in {self.path} ({len(self)} clips); closest: {close}")
        return self._by_id[clip_id]

    def frame_paths(self, clip_id: str) -> list[Path]:
        row = self.clip(clip_id)
        folder = clip_dir(self.path, clip_id) / "frames"
        return [folder / frame_name(i) for i in range(row["num_frames"])]

    def frames(self, clip_id: str) -> np.ndarray:
        """uint8 (T + N, H, W, 3): seed frames, then generated ones."""
        from openvica_sim.video_io import read_image

        return np.stack([read_image(p) for p in self.frame_paths(clip_id)])

    def tokens(self, clip_id: str) -> np.ndarray:
        """uint16 (T + N, h, w)."""
        self.clip(clip_id)
        return np.load(clip_dir(self.path, clip_id) / "tokens.npy")

    def seed_labels(self, clip_id: str) -> dict[int, list[dict]]:
        """Ground-truth boxes of the seed frames, {frame index: [box]}, {} when the seed source had none."""
        self.clip(clip_id)
        return read_frame_labels(clip_dir(self.path, clip_id) / SEED_LABELS_FILE)

    def pseudo_labels(self, clip_id: str, detector: str) -> dict[int, list[dict]]:
        """A detector's boxes on every frame (`openvica scenarios test`), {frame index: [box]}."""
        self.clip(clip_id)
        return read_frame_labels(clip_dir(self.path, clip_id) / PSEUDO_DIR / f"{safe_name(detector)}.json")


def safe_name(name: str) -> str:
    """A detector name ("module:function") as a file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# ---- labels ---------------------------------------------------------------------------------------------------

def box(category: str, x1: float, y1: float, x2: float, y2: float, provenance: str, score: float | None = None,
        ignored: bool = False) -> dict:
    """One box in the Scalabel layout, with its provenance (and score for pseudo-labels); `ignored`: a ground-truth
    ignore region (BDD100K's "other person", "other vehicle", "trailer"), COCO's iscrowd."""
    out = {"category": category, "box2d": {"x1": float(x1), "y1": float(y1), "x2": float(x2), "y2": float(y2)},
           "provenance": provenance, **({"ignored": True} if ignored else {})}
    if score is not None:
        out["score"] = float(score)
    return out


def write_frame_labels(path: str | os.PathLike, labels: dict[int, list[dict]]) -> None:
    """{frame index: [box]} as a JSON list of {"frameIndex", "labels"}, atomically."""
    frames = [{"frameIndex": int(i), "labels": labels[i]} for i in sorted(labels)]
    atomic_write_text(Path(path), json.dumps(frames))


def read_frame_labels(path: str | os.PathLike) -> dict[int, list[dict]]:
    path = Path(path)
    if not path.is_file():
        return {}
    return {int(f["frameIndex"]): list(f["labels"]) for f in json.loads(path.read_text())}


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def image_ids(rows: list[dict]) -> dict[tuple[str, int], int]:
    """COCO image ids, from 1, of every frame of every clip of `rows` (all of clips.parquet, in clip id order): the
    same ids in labels/coco.json and in every detector's results file, whichever clips each lists."""
    ids, next_id = {}, 1
    for row in sorted(rows, key=lambda r: r["clip_id"]):
        for i in range(row["num_frames"]):
            ids[(row["clip_id"], i)] = next_id
            next_id += 1
    return ids


def seed_owners(rows: list[dict]) -> dict[tuple[str, int], str]:
    """(parent clip, fork frame) -> the clip id, among `rows`, of its lowest branch: the one whose seed frames stand
    for every branch of that fork (they are the same real frames) in the exports and in the recall counts."""
    owners: dict[tuple[str, int], dict] = {}
    for row in rows:
        key = (row["parent_clip_id"], row["fork_frame"])
        if key not in owners or (row["branch"], row["clip_id"]) < (owners[key]["branch"], owners[key]["clip_id"]):
            owners[key] = row
    return {key: row["clip_id"] for key, row in owners.items()}


def coco_categories() -> list[dict]:
    return [{"id": i + 1, "name": c, "supercategory": "bdd100k"} for i, c in enumerate(CATEGORIES)]


def frame_file(clip_id: str, index: int) -> str:
    """A frame's path relative to the dataset folder, as the exports name it."""
    return f"{CLIPS_DIR}/{clip_id}/frames/{frame_name(index)}"


def write_label_exports(root: str | os.PathLike, rows: list[dict], frame_size: int) -> dict:
    """Rebuild labels/det.json (BDD100K/Scalabel) and labels/coco.json: every frame of the selected clips of `rows`
    (all of clips.parquet) as an image, and the ground truth of the seed frames that have it, nothing else.
    Generated frames are images with `generated: true` and no annotations: not negatives, unlabelled. The branches
    of one fork share their seed frames: only its lowest selected branch (`seed_owners`) carries their ground truth,
    the others' seed frames are images `same_as` that one's, unlabelled, so no real box counts twice. A detector's
    predictions go to its own results files (`write_predictions`), never here. Categories in either BDD100K
    layout's names are mapped to the ten classes (its ignored classes become iscrowd regions); boxes of other
    names are left out and counted. Returns {"frames", "boxes", "skipped_boxes": {category: count}}.
    """
    root = Path(root)
    ids = image_ids(rows)
    scalabel, images, annotations = [], [], []
    label_id, skipped = 0, {}
    selected = [r for r in rows if r["selected"]]
    owners = seed_owners(selected)
    for clip in sorted(selected, key=lambda r: r["clip_id"]):
        owner = owners[(clip["parent_clip_id"], clip["fork_frame"])]
        per_frame = read_frame_labels(clip_dir(root, clip["clip_id"]) / SEED_LABELS_FILE) if owner == clip[
            "clip_id"] else {}  # the fork's other branches share these real frames: their truth counts once
        attributes = {k: clip[k] for k in SLICE_KEYS}
        view = camera_view(clip)
        camera = {"camera": view.as_dict()} if view else {}
        for i in range(clip["num_frames"]):
            name, image_id = frame_file(clip["clip_id"], i), ids[(clip["clip_id"], i)]
            generated = i >= clip["num_seed_frames"]
            same = {} if generated or owner == clip["clip_id"] else {"same_as": ids[(owner, i)]}
            images.append({"id": image_id, "file_name": name, "width": frame_size, "height": frame_size,
                           "video_name": clip["clip_id"], "frame_index": i, "generated": generated,
                           "labelled": not generated and i in per_frame, **same, **attributes, **camera})
            labels = []
            for b in per_frame.get(i, []) if not generated else []:
                if b.get("provenance", GROUND_TRUTH) != GROUND_TRUTH:
                    continue  # pseudo-labels of datasets written before predictions were kept apart
                # either BDD100K layout's names (stores ingested before the mapping keep the raw ones); a name
                # outside both is counted, never a crash after the whole generation
                category, ignored = detection_class(str(b["category"]))
                if category is None:
                    skipped[str(b["category"])] = skipped.get(str(b["category"]), 0) + 1
                    continue
                ignored = ignored or bool(b.get("ignored"))
                label_id += 1
                labels.append({"id": str(label_id), "category": category, "box2d": b["box2d"],
                               **_camera_box(view, b["box2d"]), "provenance": GROUND_TRUTH,
                               **({"attributes": {"ignored": True}} if ignored else {})})
                x1, y1, x2, y2 = (b["box2d"][k] for k in ("x1", "y1", "x2", "y2"))
                annotations.append({"id": label_id, "image_id": image_id,
                                    "category_id": CATEGORIES.index(category) + 1,
                                    "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                    "iscrowd": int(ignored), "provenance": GROUND_TRUTH,
                                    **_camera_bbox(view, b["box2d"])})
            scalabel.append({"name": name, "videoName": clip["clip_id"], "frameIndex": i,
                             "attributes": {**attributes, "generated": generated,
                                            **({"same_as": frame_file(owner, i)} if same else {})},
                             "labels": labels})
    coco = {"info": {"description": "openvica-sim scenario dataset: ground truth of the seed frames only",
                     "frame_size": frame_size},
            "images": images, "annotations": annotations, "categories": coco_categories()}
    atomic_write_text(root / LABELS_DIR / "det.json", json.dumps(scalabel))
    atomic_write_text(root / LABELS_DIR / "coco.json", json.dumps(coco))
    return {"frames": len(images), "boxes": len(annotations), "skipped_boxes": skipped}


def camera_view(row: dict):
    """The `frames.CropView` of a clips.parquet row's seed camera frames, or None where unknown (stores ingested
    before it was kept, datasets written before it was)."""
    from openvica_sim.frames import CropView

    raw = row.get("camera_view")
    return CropView.from_dict(json.loads(raw)) if raw else None


def _camera_box(view, box2d: dict) -> dict:
    """{"box2d_camera": the box in the camera frame's pixels} where the view is known, else {}."""
    return {"box2d_camera": {k: round(v, 2) for k, v in view.to_camera(box2d).items()}} if view else {}


def _camera_bbox(view, box2d: dict) -> dict:
    """{"bbox_camera": COCO's [x, y, w, h] of the box in the camera frame's pixels} where the view is known, else {}."""
    return {"bbox_camera": [round(v, 2) for v in xywh(view.to_camera(box2d))]} if view else {}


def coco_results(rows: list[dict], all_rows: list[dict], predictions: dict[str, list[list[dict]]]) -> list[dict]:
    """COCO results [{image_id, category_id, bbox, score}] of `predictions` ({clip id: per frame [box]}) on the
    clips `rows`, over the image ids of `all_rows` (every clip of the dataset: `image_ids`)."""
    ids = image_ids(all_rows)
    results = []
    for row in sorted(rows, key=lambda r: r["clip_id"]):
        for i, boxes in enumerate(predictions[row["clip_id"]]):
            for b in boxes:
                x1, y1, x2, y2 = (b["box2d"][k] for k in ("x1", "y1", "x2", "y2"))
                results.append({"image_id": ids[(row["clip_id"], i)], "category_id": CATEGORIES.index(b["category"]) + 1,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": b["score"]})
    return results


def write_predictions(folder: str | os.PathLike, rows: list[dict], all_rows: list[dict],
                      predictions: dict[str, list[list[dict]]]) -> dict:
    """A detector's boxes as the files tools read, in `folder` (its report): predictions.coco.json, a COCO results
    list [{image_id, category_id, bbox, score}] over labels/coco.json's image ids (`COCO.loadRes`), and
    predictions.json, Scalabel frames with scored labels. `predictions`: {clip id: per frame [box]} of the tested
    clips `rows`; `all_rows`: every clip of the dataset (the ids). Returns {"frames", "boxes"}."""
    folder = Path(folder)
    results = coco_results(rows, all_rows, predictions)
    frames = []
    for row in sorted(rows, key=lambda r: r["clip_id"]):
        view = camera_view(row)
        frames += [{"name": frame_file(row["clip_id"], i), "videoName": row["clip_id"], "frameIndex": i,
                    "labels": [{"id": str(k), "category": b["category"], "box2d": b["box2d"],
                                **_camera_box(view, b["box2d"]), "score": b["score"]} for k, b in enumerate(boxes)]}
                   for i, boxes in enumerate(predictions[row["clip_id"]])]
    atomic_write_text(folder / PREDICTIONS_COCO, json.dumps(results))
    atomic_write_text(folder / PREDICTIONS_SCALABEL, json.dumps(frames))
    return {"frames": len(frames), "boxes": len(results)}
