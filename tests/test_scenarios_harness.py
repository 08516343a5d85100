"""`openvica scenarios test` (scenarios/harness.py): a detector over a scenario dataset, its pseudo-labels and report.

The dataset is drawn by hand so every number is known: 64 x 64 grey frames with solid rectangles, a detector that
finds them by colour, 2 seed + 3 generated frames per clip.

    clip         weather/time/scene        decile  frames 0 1 | 2 3 4 (generated)
    p0-f0-b0     rainy/daytime/highway      5      car A in every frame
    p0-f0-b1     rainy/daytime/highway      9      car A; from frame 2 a pedestrian P; from frame 3 the car jumps to B
    p1-f0-b0     clear/night/city street    0      pedestrian P that turns into a truck at frame 3; car C from frame 2
    p2-f0-b0     (not selected)             3      car A in every frame

Seed ground truth: p0-f0-b0 has car A on frames 0 and 1 (found) and a pedestrian nobody drew (missed); p0-f0-b1 has
car A on frame 0 (found) and a "truck" where car A is on frame 1 (missed: wrong class). Recall 3 / 5.
"""

import argparse
import inspect
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from openvica_sim.scenarios import harness
from openvica_sim.scenarios.dataset import (CLIPS_TABLE, COLUMNS, GROUND_TRUTH, MANIFEST, ScenarioDataset, box,
                                            clip_dir, frame_name, safe_name, write_frame_labels,
                                            write_label_exports)
from openvica_sim.video_io import write_image

SIZE = 64
GREY = (128, 128, 128)
RED, BLUE, GREEN = (200, 30, 30), (30, 30, 200), (30, 200, 30)
CATEGORY = {RED: "car", BLUE: "pedestrian", GREEN: "truck"}
SCORE = {RED: 0.9, BLUE: 0.8, GREEN: 0.7}
A, B, C, P = (8, 30, 28, 50), (36, 36, 56, 56), (6, 4, 26, 22), (36, 6, 56, 22)  # x1, y1, x2, y2; A and B apart
JPEG_PX = 1.0  # JPEG blurs a rectangle's edge by at most a pixel at quality 95

SCENES = {  # clip id: (per frame: [(colour, box)], row fields)
    "p0-f0-b0": ([[(RED, A)]] * 5,
                 dict(weather="rainy", timeofday="daytime", scene="highway", surprise_decile=5, selected=True)),
    "p0-f0-b1": ([[(RED, A)], [(RED, A)], [(RED, A), (BLUE, P)], [(RED, B), (BLUE, P)], [(RED, B), (BLUE, P)]],
                 dict(weather="rainy", timeofday="daytime", scene="highway", surprise_decile=9, selected=True)),
    "p1-f0-b0": ([[(BLUE, P)], [(BLUE, P)], [(BLUE, P), (RED, C)], [(GREEN, P), (RED, C)], [(GREEN, P), (RED, C)]],
                 dict(weather="clear", timeofday="night", scene="city street", surprise_decile=0, selected=True)),
    "p2-f0-b0": ([[(RED, A)]] * 5,
                 dict(weather="clear", timeofday="daytime", scene="highway", surprise_decile=3, selected=False)),
}
SEED_GROUND_TRUTH = {
    "p0-f0-b0": {0: [box("car", *A, GROUND_TRUTH), box("pedestrian", 40, 40, 50, 50, GROUND_TRUTH)],
                 1: [box("car", *A, GROUND_TRUTH),
                     box("car", 40, 40, 50, 50, "pseudo:someone-else", 0.9)],  # not ground truth: not counted
                 2: [box("car", *A, GROUND_TRUTH)]},  # a generated frame: never ground truth, not counted
    # the second branch of the same fork: its seed frames are p0-f0-b0's, so their truth counts once, from
    # p0-f0-b0 (what it says here differs on purpose: it must not be counted)
    "p0-f0-b1": {0: [box("car", *A, GROUND_TRUTH)], 1: [box("truck", *A, GROUND_TRUTH)]},
}


def find_rectangles(frames: np.ndarray) -> list[list[dict]]:
    """The test's detector: one box per colour present (red car, blue pedestrian, green truck)."""
    out = []
    for frame in frames.astype(np.int32):
        found = []
        for colour, category in CATEGORY.items():
            ys, xs = np.nonzero(np.abs(frame - colour).sum(axis=-1) < 90)
            if len(ys) > 20:
                found.append({"category": category, "score": SCORE[colour],
                              "box2d": {"x1": xs.min(), "y1": ys.min(), "x2": xs.max() + 1, "y2": ys.max() + 1}})
        out.append(found)
    return out


def make_dataset(root, scenes=SCENES, ground_truth=SEED_GROUND_TRUTH):
    """A scenario dataset in the layout of scenarios/dataset.py, written by hand; `scenes` as SCENES, each frame
    given as its shapes (`draw`) or as an image."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for clip_id, (frames, fields) in scenes.items():
        parent, fork, branch = clip_id.split("-")
        row = {"clip_id": clip_id, "parent_clip_id": parent, "fork_frame": int(fork[1:]), "branch": int(branch[1:]),
               "sample_seed": len(rows), "attributes": json.dumps({k: fields[k] for k in ("weather", "timeofday",
                                                                                          "scene")}),
               "num_seed_frames": 2, "num_frames": len(frames), "ego_program": "constant", "ego_params": "{}",
               "ego_applied": False, "surprise": [1.0] * (len(frames) - 2), "surprise_mean": 1.0, "flicker": 1.0,
               "flicker_flag": False, "frozen_flag": False, "surprise_outlier": False, "diversity": 0.0,
               "diversity_rank": len(rows), "status": "ok", "seconds": 0.1, "camera_view": "", **fields}
        assert set(row) == set(COLUMNS)
        rows.append(row)
        folder = clip_dir(root, clip_id)
        for i, frame in enumerate(frames):
            image = frame if isinstance(frame, np.ndarray) else draw(frame)
            write_image(folder / "frames" / frame_name(i), image, quality=95)
        np.save(folder / "tokens.npy", np.zeros((len(frames), 4, 4), np.uint16))
        (folder / "clip.json").write_text(json.dumps({k: v for k, v in row.items() if "(*)" not in COLUMNS[k]}))
        if clip_id in ground_truth:
            write_frame_labels(folder / "labels.json", ground_truth[clip_id])
    pq.write_table(pa.Table.from_pylist(rows), root / CLIPS_TABLE)
    (root / MANIFEST).write_text(json.dumps({"frame_size": image.shape[1], "spec_hash": "hand-made"}))
    write_label_exports(root, rows, image.shape[1])  # as the generator's finalize does
    return root


def draw(shapes: list[tuple]) -> np.ndarray:
    """A grey SIZE x SIZE frame with solid rectangles [(colour, (x1, y1, x2, y2))]."""
    image = np.full((SIZE, SIZE, 3), GREY, np.uint8)
    for colour, (x1, y1, x2, y2) in shapes:
        image[y1:y2, x1:x2] = colour
    return image


@pytest.fixture(scope="module")
def tested(tmp_path_factory):
    """The hand-made dataset after `run_test` with the defaults: (dataset folder, metrics)."""
    root = make_dataset(tmp_path_factory.mktemp("scenarios"))
    return root, harness.run_test(root, find_rectangles, progress=False)


@pytest.fixture(scope="module")
def tested_with_options(tmp_path_factory):
    """The same after `run_test` on every clip (the unselected one too), counting only boxes scored >= 0.85."""
    root = make_dataset(tmp_path_factory.mktemp("scenarios"))
    return root, harness.run_test(root, find_rectangles, include_unselected=True, min_score=0.85, progress=False)


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path / "dataset")


def test_detector_boxes_are_stored_as_pseudo_labels_with_provenance_and_score(tested):
    root, m = tested
    labels = ScenarioDataset(root).pseudo_labels("p1-f0-b0", m["detector"])
    assert sorted(labels) == [0, 1, 2, 3, 4]
    found = sorted((b["category"], b["score"], b["provenance"]) for b in labels[3])
    assert found == [("car", 0.9, f"pseudo:{m['detector']}"), ("truck", 0.7, f"pseudo:{m['detector']}")]
    truck = next(b for b in labels[3] if b["category"] == "truck")
    assert [truck["box2d"][k] for k in ("x1", "y1", "x2", "y2")] == pytest.approx(P, abs=JPEG_PX)


def test_pseudo_labels_are_named_after_the_detector(tested):
    root, m = tested
    assert m["detector"] == f"{find_rectangles.__module__}:find_rectangles"
    assert (clip_dir(root, "p0-f0-b0") / "pseudo" / f"{safe_name(m['detector'])}.json").is_file()


def test_unselected_clips_are_left_out_by_default(tested):
    root, m = tested
    assert m["clips"] == 3 and m["frames"] == 15
    assert not (clip_dir(root, "p2-f0-b0") / "pseudo").exists()


def test_unselected_clips_are_tested_when_asked(tested_with_options):
    root, m = tested_with_options
    assert m["clips"] == 4
    assert ScenarioDataset(root).pseudo_labels("p2-f0-b0", m["detector"])[4][0]["category"] == "car"


def test_detections_per_frame_are_counted_on_seed_and_generated_frames(tested):
    _, m = tested
    overall = m["overall"]
    assert overall["detections_per_frame"] == pytest.approx(21 / 15)
    assert overall["detections_per_seed_frame"] == pytest.approx(6 / 6)
    assert overall["detections_per_generated_frame"] == pytest.approx(15 / 9)
    assert [(r["frame_index"], r["kind"], r["frames"]) for r in m["by_frame_index"]] == [
        (0, "seed", 3), (1, "seed", 3), (2, "generated", 3), (3, "generated", 3), (4, "generated", 3)]
    assert [r["detections_per_frame"] for r in m["by_frame_index"]] == pytest.approx([1, 1, 5 / 3, 5 / 3, 5 / 3])


def test_temporal_consistency_counts_boxes_without_a_match_in_the_previous_frame(tested):
    _, m = tested
    # 18 boxes after the first frames; new: P in p0-f0-b1 frame 2, its jumped car at frame 3, car C in p1 frame 2
    assert (m["counts"]["unmatched_detections"], m["counts"]["tracked_detections"]) == (3, 18)
    assert m["overall"]["temporal_unmatched_share"] == pytest.approx(3 / 18)


def test_class_flips_are_matched_pairs_whose_category_changed(tested):
    _, m = tested
    # matched pairs: 4 (p0-f0-b0) + 5 (p0-f0-b1) + 6 (p1-f0-b0); the pedestrian turning into a truck is the flip
    assert (m["counts"]["class_flips"], m["counts"]["matched_pairs"]) == (1, 15)
    assert m["overall"]["class_flip_share"] == pytest.approx(1 / 15)


def test_branches_of_one_fork_are_compared_on_their_first_generated_frames(tested):
    _, m = tested
    # first generated frame: {A} vs {A, P}: F1 = 2 * 1 / 3; second: {A} vs {B, P}: F1 = 0
    assert m["overall"]["branch_agreement_f1"] == pytest.approx((2 / 3 + 0) / 2)
    assert [(r["generated_frame"], r["pairs"]) for r in m["branch_agreement_by_generated_frame"]] == [
        (0, 1), (1, 1), (2, 1)]
    assert [r["f1"] for r in m["branch_agreement_by_generated_frame"]] == pytest.approx([2 / 3, 0, 0])


def test_recall_and_precision_on_seed_frames_count_only_ground_truth_of_the_same_class(tested):
    _, m = tested
    # the fork's seed frames once (p0-f0-b0's): the car twice found, the pedestrian missed
    assert (m["counts"]["ground_truth_found"], m["counts"]["ground_truth_boxes"]) == (2, 3)
    assert m["overall"]["seed_recall"] == pytest.approx(2 / 3)
    assert m["overall"]["seed_precision"] == pytest.approx(2 / 2)


def test_every_metric_is_sliced_by_weather_time_of_day_scene_and_surprise_decile(tested):
    _, m = tested
    assert set(m["slices"]) == {"weather", "timeofday", "scene", "surprise_decile"}
    rainy, clear = m["slices"]["weather"]["rainy"], m["slices"]["weather"]["clear"]
    assert (rainy["clips"], clear["clips"]) == (2, 1)
    assert rainy["temporal_unmatched_share"] == pytest.approx(2 / 11)
    assert clear["temporal_unmatched_share"] == pytest.approx(1 / 7)
    assert (rainy["class_flip_share"], clear["class_flip_share"]) == (0, pytest.approx(1 / 6))
    assert rainy["seed_recall"] == pytest.approx(2 / 3) and clear["seed_recall"] is None  # no ground truth
    assert m["slices"]["timeofday"]["night"] == clear and m["slices"]["scene"]["highway"] == rainy
    deciles = m["slices"]["surprise_decile"]
    assert list(deciles) == ["0", "5", "9"]
    assert deciles["0"]["branch_agreement_f1"] is None  # a fork of one branch has nothing to agree with
    assert deciles["5"]["branch_agreement_f1"] == deciles["9"]["branch_agreement_f1"] == pytest.approx(1 / 3)


def test_min_score_leaves_low_scored_boxes_out_of_the_metrics_but_stores_them(tested_with_options):
    root, m = tested_with_options
    assert m["overall"]["detections_per_frame"] == pytest.approx(18 / 20)  # red cars only (score 0.9), 4 clips
    assert len(ScenarioDataset(root).pseudo_labels("p1-f0-b0", m["detector"])[3]) == 2  # the truck (0.7) stays


def test_the_iou_threshold_is_an_option_of_the_api_and_of_the_command(dataset, capsys):
    from openvica_sim.cli import main

    strict = harness.run_test(dataset, find_rectangles, iou_threshold=0.999, out=dataset / "strict", progress=False)
    assert strict["settings"]["iou_threshold"] == 0.999
    detector = f"{Path(__file__).resolve()}:find_rectangles"
    assert main(["scenarios", "test", str(dataset), "--detector", detector, "--iou", "0.3", "--no-progress",
                 "--out", str(dataset / "loose")]) == 0
    assert json.loads((dataset / "loose" / "metrics.json").read_text())["settings"]["iou_threshold"] == 0.3


class TorchvisionStyleRectangles(torch.nn.Module):
    """`find_rectangles` behind torchvision's detection interface: a list of (3, H, W) floats in [0, 1] in, per
    image {"boxes", "labels", "scores"} out, labels as COCO category ids (car 3, person 1, truck 8), plus a bench
    (COCO 15) on every image, which BDD100K has no class for."""

    def forward(self, images):
        out = []
        for image in images:
            assert image.dtype == torch.float32 and image.shape[0] == 3 and 0 <= image.min() <= image.max() <= 1
            found = find_rectangles((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)[None])[0]
            coco = {"car": 3, "pedestrian": 1, "truck": 8}
            boxes = [[d["box2d"][k] for k in ("x1", "y1", "x2", "y2")] for d in found] + [[0, 0, 4, 4]]
            out.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                        "labels": torch.tensor([coco[d["category"]] for d in found] + [15]),
                        "scores": torch.tensor([d["score"] for d in found] + [0.99], dtype=torch.float64)})
        return out


def test_a_torchvision_style_model_scores_like_the_same_detector_as_a_function(dataset, tested):
    from openvica_sim.scenarios.detectors import torchvision_detector

    frames = ScenarioDataset(dataset).frames("p0-f0-b1")
    expected = [[{**d, "box2d": {k: float(v) for k, v in d["box2d"].items()}} for d in frame]
                for frame in find_rectangles(frames)]
    assert torchvision_detector(TorchvisionStyleRectangles())(frames) == expected  # the bench is dropped
    m = harness.run_test(dataset, TorchvisionStyleRectangles(), out=dataset / "tv", progress=False)
    assert m["overall"] == tested[1]["overall"] and m["counts"] == tested[1]["counts"]


def test_coco_export_holds_ground_truth_only_and_the_predictions_load_as_its_results(tested):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    root, m = tested
    coco = COCO(str(root / "labels" / "coco.json"))
    assert len(coco.getImgIds()) == 15  # the selected clips' frames
    annotations = coco.loadAnns(coco.getAnnIds())
    assert len(annotations) == 3 and all(a["provenance"] == GROUND_TRUTH for a in annotations)  # not the pseudo one
    assert not any(coco.imgs[a["image_id"]]["generated"] for a in annotations)
    assert all((root / coco.imgs[i]["file_name"]).is_file() for i in coco.getImgIds())
    results = json.loads((Path(m["report"]) / "predictions.coco.json").read_text())
    assert len(results) == 21 and sorted({r["score"] for r in results}) == [0.7, 0.8, 0.9]
    assert set(results[0]) == {"image_id", "category_id", "bbox", "score"}
    predicted = coco.loadRes(results)  # the ids agree with labels/coco.json's
    truck = predicted.getAnnIds(catIds=coco.getCatIds(catNms=["truck"]))
    assert len(truck) == 2 and all(coco.imgs[predicted.anns[a]["image_id"]]["generated"] for a in truck)
    evaluation = COCOeval(coco, predicted, "bbox")
    evaluation.params.imgIds = [i for i in coco.getImgIds() if coco.imgs[i]["labelled"]]
    evaluation.evaluate()
    evaluation.accumulate()
    assert len(evaluation.params.imgIds) == 2  # the fork's seed frames with ground truth, once
    second = [coco.imgs[i] for i in coco.getImgIds() if coco.imgs[i]["video_name"] == "p0-f0-b1"]
    assert [im.get("same_as") for im in second[:2]] == [im["id"] for im in coco.imgs.values()
                                                         if im["video_name"] == "p0-f0-b0"][:2]


def test_cocoeval_on_the_exports_gives_ap_1_for_the_ground_truth_and_less_for_known_misses(tested):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    root, _ = tested
    coco = COCO(str(root / "labels" / "coco.json"))
    truth = coco.loadAnns(coco.getAnnIds())
    car = coco.getCatIds(catNms=["car"])[0]

    def ap(results):
        evaluation = COCOeval(coco, coco.loadRes(results), "bbox")
        evaluation.params.imgIds = [i for i in coco.getImgIds() if coco.imgs[i]["labelled"]]
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
        return evaluation.stats[0]  # AP at IoU .50:.95

    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in truth]
    assert ap(perfect) == pytest.approx(1.0)
    cars = [a for a in truth if a["category_id"] == car]
    assert len(cars) == 2 and {coco.loadCats(a["category_id"])[0]["name"] for a in truth} == {"car", "pedestrian"}
    missed = [r for r in perfect if r is not perfect[truth.index(cars[0])]]
    # car: recall 1/2 at precision 1, so 51 of COCO's 101 recall points; pedestrian: AP 1
    assert ap(missed) == pytest.approx((51 / 101 + 1) / 2)


def test_the_report_gives_cocoeval_ap_per_class_and_slice_on_the_labelled_seed_frames(tested):
    _, m = tested
    overall = m["coco"]["overall"]
    # labelled frames: the fork's seed frames once, p0-f0-b0 frames 0-1 (rainy); the detector finds both cars,
    # never the pedestrian
    assert overall["images"] == 2 and overall["AP50"] == pytest.approx(1 / 2)
    assert {k: (v["AP50"], v["boxes"]) for k, v in overall["per_class"].items()} == {
        "car": (pytest.approx(1.0), 2), "pedestrian": (0.0, 1)}
    assert m["coco"]["slices"]["weather"]["rainy"] == overall and m["coco"]["slices"]["weather"]["clear"] is None


def test_scoring_ground_truth_itself_gives_ap_1_and_a_missed_car_the_hand_computed_ap(tested):
    from pycocotools.coco import COCO

    from openvica_sim.scenarios.scoring import coco_scores

    root, _ = tested
    dataset = ScenarioDataset(root)
    truth = COCO(str(root / "labels" / "coco.json")).dataset["annotations"]
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in truth]
    rows = [r for r in dataset.clips if r["selected"]]
    scores = coco_scores(root, rows, dataset.clips, perfect, ("weather",))
    assert scores["overall"]["AP"] == pytest.approx(1.0) and scores["overall"]["AR100"] == pytest.approx(1.0)
    car = next(a for a in truth if a["category_id"] == 3)
    missed = coco_scores(root, rows, dataset.clips, [r for r, a in zip(perfect, truth) if a is not car], ("weather",))
    assert missed["overall"]["per_class"]["car"]["AP"] == pytest.approx(51 / 101)  # recall 1/2 at precision 1
    assert missed["overall"]["AP"] == pytest.approx((51 / 101 + 1) / 2)
    assert coco_scores(root, rows, dataset.clips, [], ())["overall"]["AP"] == 0.0  # no detections at all


def test_the_real_vs_generated_gap_compares_the_detector_on_seed_and_generated_frames(tested):
    from openvica_sim.scenarios.scoring import wasserstein_1d

    _, m = tested
    gap, c = m["real_vs_generated"]["overall"], m["counts"]
    assert gap["real_frames"] == c["seed_frames"] and gap["generated_frames"] == c["generated_frames"]
    assert gap["detections_per_frame_real"] == pytest.approx(c["seed_detections"] / c["seed_frames"])
    assert gap["detections_per_frame_generated"] == pytest.approx(c["generated_detections"] / c["generated_frames"])
    assert gap["count_distance"] >= 0 and set(m["real_vs_generated"]["slices"]) == set(m["slices"])
    assert wasserstein_1d([0, 1], [1, 2]) == pytest.approx(1.0) and wasserstein_1d([0], [0, 0]) == 0.0
    assert wasserstein_1d([0, 0, 0, 4], [0]) == pytest.approx(1.0) and wasserstein_1d([], [1]) is None
    assert "## COCO AP on the labelled seed frames" in (Path(m["report"]) / "report.md").read_text()


def test_det_json_has_the_bdd100k_scalabel_layout_and_the_predictions_their_own_file(tested):
    root, m = tested
    frames = json.loads((root / "labels" / "det.json").read_text())
    assert len(frames) == 15
    frame = next(f for f in frames if f["videoName"] == "p0-f0-b1" and f["frameIndex"] == 3)
    assert frame["name"] == "clips/p0-f0-b1/frames/000003.jpg"
    assert frame["attributes"] == {"weather": "rainy", "timeofday": "daytime", "scene": "highway", "generated": True}
    assert frame["labels"] == []  # a generated frame: unlabelled, not a negative
    seed = next(f for f in frames if f["videoName"] == "p0-f0-b0" and f["frameIndex"] == 1)
    assert [(b["category"], set(b)) for b in seed["labels"]] == [("car", {"id", "category", "box2d", "provenance"})]
    again = next(f for f in frames if f["videoName"] == "p0-f0-b1" and f["frameIndex"] == 1)
    assert again["labels"] == [] and again["attributes"]["same_as"] == "clips/p0-f0-b0/frames/000001.jpg"
    predictions = json.loads((Path(m["report"]) / "predictions.json").read_text())
    frame = next(f for f in predictions if f["videoName"] == "p0-f0-b1" and f["frameIndex"] == 3)
    assert sorted(b["category"] for b in frame["labels"]) == ["car", "pedestrian"]
    for label in frame["labels"]:
        assert set(label) == {"id", "category", "box2d", "score"} and set(label["box2d"]) == {"x1", "y1", "x2", "y2"}


def test_boxes_also_come_in_the_camera_frames_pixels_where_the_crop_is_known(tmp_path):
    from openvica_sim.frames import CropView

    view = CropView.of(720, 1280)  # the seed clips were 1280x720 camera frames: x2, then + (192, 52) undone
    scenes = {k: (frames, {**fields, "camera_view": json.dumps(view.as_dict())}) for k, (frames, fields) in
              SCENES.items()}
    root = make_dataset(tmp_path / "camera", scenes)
    m = harness.run_test(root, find_rectangles, progress=False)
    for name in ("labels/det.json", str(Path(m["report"]).relative_to(root) / "predictions.json")):
        boxes = [b for f in json.loads((root / name).read_text()) for b in f["labels"]]
        assert boxes
        for b in boxes:
            assert b["box2d_camera"] == pytest.approx(view.to_camera(b["box2d"]), abs=0.01)
            assert b["box2d_camera"]["x1"] == pytest.approx((b["box2d"]["x1"] + 192) * 2, abs=0.01)
    coco = json.loads((root / "labels" / "coco.json").read_text())
    assert all(image["camera"]["camera_width"] == 1280 for image in coco["images"])
    assert all(len(a["bbox_camera"]) == 4 for a in coco["annotations"])


def test_report_folder_holds_metrics_report_and_plots(tested):
    root, m = tested
    report = root / f"report-{safe_name(m['detector'])}"
    assert m["report"] == str(report)
    assert json.loads((report / "metrics.json").read_text()) == json.loads(json.dumps(m))
    text = (report / "report.md").read_text()
    for name in harness.PLOTS:
        png = report / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"]({name}.png)" in text
    for metric in harness.METRICS.values():
        assert f"| {metric.label} |" in text and metric.meaning in text
    assert "| 0.167 | 3 / 18 |" in text  # temporal unmatched share: value and counts


def test_batches_run_across_clip_boundaries_and_do_not_change_the_boxes(dataset):
    sizes = []

    def recording(frames):
        sizes.append(len(frames))
        return find_rectangles(frames)

    ds = ScenarioDataset(dataset)
    rows = [r for r in ds.clips if r["selected"]]
    batched = harness.detect_clips(ds, rows, recording, "t", batch_size=4, progress=False)
    assert sizes == [4, 4, 4, 3]  # 15 frames of 3 clips
    assert harness.detect_clips(ds, rows, find_rectangles, "t", batch_size=1, progress=False) == batched


@pytest.mark.parametrize("output, message", [
    (lambda frames: [[]] * (len(frames) - 1), r"returned \d+ results for a batch of \d+ frames"),
    (lambda frames: {"boxes": []}, "returned a dict; it must return a list"),
    (lambda frames: [[{"category": "car", "box2d": {"x1": 0, "y1": 0, "x2": 1, "y2": 1}}]] * len(frames),
     r"frame 0, detection 0: missing \['score'\]"),
    (lambda frames: [[{"category": "Car", "box2d": {"x1": 0, "y1": 0, "x2": 1, "y2": 1}, "score": 1}]] * len(frames),
     "category 'Car' is not a BDD100K detection class; did you mean 'car'"),
    (lambda frames: [[{"category": "car", "box2d": {"x1": 5, "y1": 0, "x2": 3, "y2": 1}, "score": 1}]] * len(frames),
     "x2=3.0 < x1=5.0"),
    (lambda frames: [[{"category": "car", "box2d": {"x1": 0, "y1": 0, "x2": 1}, "score": 1}]] * len(frames),
     r"box2d=.* must be a dict with keys \['x1', 'y1', 'x2', 'y2'\]"),
    (lambda frames: [[{"category": "car", "box2d": {"x1": 0, "y1": 0, "x2": 1, "y2": 1}, "score": math.nan}]]
     * len(frames), "score=nan must be a finite number"),
])
def test_bad_detector_output_is_rejected_and_the_message_says_where_and_what(dataset, output, message):
    with pytest.raises(harness.DetectorOutputError, match=message) as error:
        harness.run_test(dataset, output, progress=False)
    assert isinstance(error.value, ValueError)
    assert not (clip_dir(dataset, "p0-f0-b0") / "pseudo").exists()  # nothing half written


@pytest.mark.parametrize("name, error, message", [
    ("detect", ValueError, "must be 'module:function' or 'path/to/file.py:function'"),
    ("openvica_sim.scenarios.no_such_module:detect", ValueError, "no module named 'openvica_sim.scenarios.no_such"),
    (f"{harness.EXAMPLE_DETECTOR[:-7]}:detekt", ValueError, r"has no 'detekt'; did you mean \['detect'\]"),
    (f"{harness.EXAMPLE_DETECTOR[:-7]}:FOLDER", TypeError, "'FOLDER' is of type '.*Path', not a function"),
    ("no/such/file.py:detect", FileNotFoundError, "no file no/such/file.py"),
])
def test_bad_detector_names_fail_with_the_expected_form(name, error, message):
    with pytest.raises(error, match=message):
        harness.load_detector(name)


def test_a_detector_module_missing_one_of_its_own_imports_reports_that_import(tmp_path, monkeypatch):
    (tmp_path / "needs_more.py").write_text("import not_installed_anywhere\n\n\ndef detect(frames):\n    return []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="not_installed_anywhere"):
        harness.load_detector("needs_more:detect")


def test_matching_takes_the_highest_iou_first_and_uses_each_box_once():
    a = np.array([[0, 0, 10, 10], [2, 0, 12, 10]], float)
    b = np.array([[2, 0, 12, 10], [30, 30, 40, 40]], float)
    assert harness.match_boxes(a, b, 0.5) == [(1, 0)]  # a[0] also overlaps b[0] (IoU 2/3), but a[1] is exact
    assert harness.match_boxes(a, b, 0.5, ["car", "truck"], ["car", "car"]) == [(0, 0)]  # same category only


def test_detector_can_be_a_function_in_a_python_file(tmp_path):
    script = tmp_path / "my_detector.py"
    script.write_text("def detect(frames):\n    return [[] for _ in frames]\n")
    detect = harness.load_detector(f"{script}:detect")
    assert detect(np.zeros((3, 8, 8, 3), np.uint8)) == [[], [], []]


def test_bad_settings_are_reported_together():
    with pytest.raises(ValueError, match="batch_size=0 .*agreement_frames=0"):
        harness.HarnessSettings(batch_size=0, agreement_frames=0)


def test_a_dataset_without_selected_clips_asks_for_all(tmp_path):
    only_unselected = {"p2-f0-b0": SCENES["p2-f0-b0"]}
    root = make_dataset(tmp_path / "d", only_unselected, {})
    with pytest.raises(ValueError, match="none of the 1 clips .* is selected; pass --all"):
        harness.run_test(root, find_rectangles, progress=False)


def test_cli_test_command_passes_its_options_and_prints_the_report_path(dataset, tmp_path, capsys):
    script = tmp_path / "rectangles.py"
    script.write_text(f"import numpy as np\n\nCATEGORY = {CATEGORY!r}\nSCORE = {SCORE!r}\n\n\n"
                      + inspect.getsource(find_rectangles).replace("def find_rectangles", "def detect"))
    parser = argparse.ArgumentParser(prog="openvica scenarios")
    test = harness.add_parser(parser.add_subparsers())
    assert "module:function" in test.format_help() and "--batch-size" in test.format_help()
    args = parser.parse_args(["test", str(dataset), "--detector", f"{script}:detect", "--out", str(tmp_path / "r"),
                              "--batch-size", "5", "--agreement-frames", "1", "--no-progress"])
    assert args.run(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["report"] == str(tmp_path / "r" / "report.md") and printed["clips"] == 3
    m = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert m["settings"]["batch_size"] == 5
    assert m["overall"]["branch_agreement_f1"] == pytest.approx(2 / 3)  # the first generated frame only
