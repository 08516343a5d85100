"""The example object detector (issue 20, point 5): a small CenterNet, its training run, and COCOeval of it."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from openvica_sim.frames import preprocess
from openvica_sim.metrics.detection import detector_accuracy
from openvica_sim.models.detector import CenterNet, CenterNetConfig

CONF = str(Path(__file__).resolve().parents[1] / "training" / "conf")
SMALL = CenterNetConfig(widths=(8, 16, 16, 16, 16), head_width=16)


@pytest.fixture(scope="module")
def labelled_store(tmp_path_factory, test_bundle):
    from openvica_sim.data.synthetic_store import write_synthetic_store

    root = tmp_path_factory.mktemp("detector-store")
    write_synthetic_store(root / "train.zarr", test_bundle, num_drives=3, seconds=2, seed=0, world="cruise",
                          progress=False)
    write_synthetic_store(root / "val.zarr", test_bundle, num_drives=3, seconds=2, seed=5, world="cruise",
                          split="val", progress=False)
    return root


def oracle(store_path, keep=lambda box: True):
    """A "detector" that returns a store's ground truth (the boxes `keep` accepts), scored 1."""
    from openvica_sim.data.store import TokenStore

    store, truth = TokenStore(store_path), {}
    for clip in store.clips:
        frames = store.clip(clip["clip_id"], keys=("frames",))["frames"]
        for entry in clip["labels"]:
            truth[frames[entry["frame"]].tobytes()] = [{**b, "score": 1.0} for b in entry["boxes"] if keep(b)]
    return lambda frames: [truth[f.tobytes()] for f in frames]


def test_coco_eval_gives_ap_1_for_the_ground_truth_and_the_hand_computed_ap_for_known_misses(labelled_store):
    val = labelled_store / "val.zarr"
    perfect = detector_accuracy(oracle(val), val, max_distance_m=None)
    assert perfect["boxes"] > 4 and perfect["overall"]["AP"] == pytest.approx(1.0)
    # miss every other car: recall r, precision 1 up to it, so AP is the share of COCO's 101 recall points <= r
    count = {"n": 0}

    def every_other(box):
        count["n"] += 1
        return count["n"] % 2 == 0

    missing = detector_accuracy(oracle(val, every_other), val, max_distance_m=None)
    recall = (perfect["boxes"] // 2) / perfect["boxes"]
    assert missing["overall"]["AR100"] == pytest.approx(recall)
    assert missing["overall"]["AP"] == pytest.approx(np.sum(np.linspace(0, 1, 101) <= recall + 1e-9) / 101)


def test_cars_beyond_the_scored_distance_are_ignore_regions(labelled_store):
    val = labelled_store / "val.zarr"
    near = oracle(val, lambda b: b["distance_m"] <= 30)
    scored_near = detector_accuracy(near, val, max_distance_m=30)
    assert scored_near["ignored"] > 0 and scored_near["overall"]["AP"] == pytest.approx(1.0)
    assert detector_accuracy(near, val, max_distance_m=None)["overall"]["AP"] < 1.0  # the far cars count as missed
    assert set(scored_near["by_timeofday"]) <= {"daytime", "dawn/dusk", "night"}


def test_the_detector_learns_the_cars_of_a_frame_and_finds_them_again():
    from openvica_sim.data.synthetic import Drive, render_drive

    clip = render_drive(Drive(speed_mps=10.0, num_cars=5), 1, rng_seed=3)
    truth = [b for b in clip.boxes[0] if b["box2d"]["y2"] - b["box2d"]["y1"] >= 8]
    assert len(truth) >= 2
    torch.manual_seed(0)
    model = CenterNet(SMALL)
    frames = preprocess(clip.frames)  # (1, 3, 256, 256)
    boxes = torch.tensor([[[b["box2d"][k] for k in ("x1", "y1", "x2", "y2")] for b in truth]])
    classes = torch.zeros(1, len(truth), dtype=torch.int64)
    optimizer = torch.optim.AdamW(model.parameters(), 3e-3)
    first = None
    for _ in range(150):
        loss = model.loss(model(frames), boxes, classes)["loss"]
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first / 4
    found = model.eval().detect(clip.frames, min_score=0.3)[0]
    for b in truth:
        ious = [_iou(b["box2d"], f["box2d"]) for f in found]
        assert max(ious, default=0) > 0.5, (b, found)


def test_a_saved_detector_loads_and_detects_the_same_and_a_missing_one_says_how_to_train_one(tmp_path):
    torch.manual_seed(0)
    model = CenterNet(SMALL).eval()
    frames = np.random.default_rng(0).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    model.save_pretrained(tmp_path / "d", {"overall": {"AP50": 0.5}})
    loaded = CenterNet.from_pretrained(tmp_path / "d")
    assert loaded.detect(frames, min_score=0.0) == model.detect(frames, min_score=0.0)
    assert CenterNet.read_accuracy(tmp_path / "d") == {"overall": {"AP50": 0.5}}
    with pytest.raises(FileNotFoundError, match="training/detector.py"):
        CenterNet.from_pretrained(tmp_path / "nothing")
    with pytest.raises(ValueError, match=r"uint8 \(B, H, W, 3\)"):
        model.detect(frames.astype(np.float32))


def detector_cfg(store_root, run_dir, steps: int):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("detector", overrides=[f"data.store={store_root / 'train.zarr'}",
                                              f"data.val_store={store_root / 'val.zarr'}", f"run.dir={run_dir}",
                                              f"trainer.max_steps={steps}", "trainer.batch_size=2",
                                              "trainer.checkpoint_every=2", "trainer.log_every=1",
                                              "model.widths=[8,16,16,16,16]", "model.head_width=16"])


def test_the_detector_trains_on_the_one_loop_exports_its_held_out_coco_eval_and_resumes_exactly(labelled_store,
                                                                                               tmp_path):
    from openvica_sim.training import detector

    detector.run(detector_cfg(labelled_store, tmp_path / "once", 4))
    detector.run(detector_cfg(labelled_store, tmp_path / "twice", 2))
    detector.run(detector_cfg(labelled_store, tmp_path / "twice", 4))  # raising max_steps continues the run
    once = [json.loads(line) for line in (tmp_path / "once" / "metrics.jsonl").read_text().splitlines()]
    twice = [json.loads(line) for line in (tmp_path / "twice" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in twice] == [1, 2, 3, 4]
    assert [m["loss"] for m in twice] == [m["loss"] for m in once]
    accuracy = CenterNet.read_accuracy(tmp_path / "once" / "detector")
    assert accuracy["frames"] == 3 * 8 and accuracy["max_distance_m"] == 60 and "AP50" in accuracy["overall"]
    assert CenterNet.from_pretrained(tmp_path / "once" / "detector").config.widths == (8, 16, 16, 16, 16)


def _iou(a: dict, b: dict) -> float:
    w = min(a["x2"], b["x2"]) - max(a["x1"], b["x1"])
    h = min(a["y2"], b["y2"]) - max(a["y1"], b["y1"])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    return inter / ((a["x2"] - a["x1"]) * (a["y2"] - a["y1"]) + (b["x2"] - b["x1"]) * (b["y2"] - b["y1"]) - inter)


def test_the_shipped_example_detector_finds_the_near_cars_of_drives_it_never_saw(test_bundle, tmp_path):
    """Its accuracy.json measures 48 held-out drives; here 6 others (seed 7), rendered as the scenario walkthrough's
    seed clips are (640x360, the centre 256 crop)."""
    from openvica_sim.data.synthetic_store import write_synthetic_store
    from openvica_sim.scenarios.examples import car_detector

    shipped = CenterNet.read_accuracy(car_detector.FOLDER)
    assert shipped["overall"]["AP50"] >= 0.6 and shipped["max_distance_m"] == 60
    assert (car_detector.FOLDER / "model.safetensors").stat().st_size < 5 * 2**20
    store = write_synthetic_store(tmp_path / "unseen.zarr", test_bundle, num_drives=6, seconds=3, seed=7,
                                  world="cruise", progress=False)
    assert store["clips"]
    measured = detector_accuracy(car_detector.detect, tmp_path / "unseen.zarr", max_distance_m=60)
    assert measured["boxes"] >= 10 and measured["overall"]["AP50"] >= 0.6, measured["overall"]
