"""Scenario datasets: specs, the seed query, branching, batch and resume invariance, replay, the exported files."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from openvica_sim.scenarios import dataset as ds
from openvica_sim.data.clips import ClipInfo, open_clips
from openvica_sim.scenarios.query import select
from openvica_sim.scenarios.spec import load_spec, packaged_specs, spec_from_dict

TINY = ["~clips.where", "clips.limit=2", "fork.branches=2", "horizon=3"]  # 2 seed clips x 2 branches x 3 frames


@pytest.fixture(scope="module")
def scenario_inputs(tmp_path_factory, test_bundle):
    """A saved test bundle and a token store of 3 synthetic 2 s drives (labelled at 1.5 s, store frame 6)."""
    from openvica_sim.bundle import save_bundle
    from openvica_sim.data.bdd_layout import write_bdd100k
    from openvica_sim.data.ingest import ingest

    root = tmp_path_factory.mktemp("scenario-inputs")
    bundle = save_bundle(test_bundle, root / "bundle")
    write_bdd100k(root / "bdd", "train", num_videos=3, seconds=2.0, seed=3)
    ingest(root / "bdd", "train", root / "store.zarr", test_bundle, progress=False)
    return {"bundle": bundle, "store": root / "store.zarr"}


def generate(inputs, out, *overrides, spec="night-rain"):
    from openvica_sim.scenarios.generate import generate as run

    return run(load_spec(spec, [*TINY, *overrides]), out, bundle=inputs["bundle"], clips=inputs["store"],
               progress=False)


@pytest.fixture(scope="module")
def dataset(scenario_inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("scenario") / "night-rain"
    summary = generate(scenario_inputs, out, "batch_size=4")
    return out, summary


def all_tokens(root) -> dict[str, np.ndarray]:
    return {c: np.load(ds.clip_dir(root, c) / "tokens.npy") for c in ds.committed_clip_ids(root)}


# ---- specs --------------------------------------------------------------------------------------------------------

def test_every_packaged_spec_loads_and_at_least_five_ship():
    names = packaged_specs()
    assert len(names) >= 5 and {"night-rain", "fog", "snow", "hard-brake", "most-surprising"} <= set(names)
    for name in names:
        assert load_spec(name).name == name


def test_fields_are_overridable_on_the_command_line():
    spec = load_spec("night-rain", ["fork.branches=3", "sampling.top_k=50", "ego.program=brake", "clips.limit=7"])
    assert (spec.fork.branches, spec.sampling.top_k, spec.ego.program, spec.clips.limit) == (3, 50, "brake", 7)


@pytest.mark.parametrize("override, field", [
    ("+colour=red", "colour: unknown field"),
    ("clips.where.weather=[]", "clips.where.weather=[] selects nothing"),
    ("horizon=-2", "horizon=-2 must be an integer >= 1"),
    ("ego.program=brak", "did you mean 'brake'"),
    ("clips.speed_mps=[10,5]", "clips.speed_mps=[10, 5]: min > max"),
])
def test_invalid_specs_fail_with_a_message_naming_the_field(override, field):
    with pytest.raises(ValueError, match="invalid scenario spec") as e:
        load_spec("night-rain", [override])
    assert field in str(e.value)


def test_a_spec_file_of_ones_own_needs_only_the_fields_it_changes(tmp_path):
    (tmp_path / "mine.yaml").write_text("name: mine\nhorizon: 5\nclips: {where: {weather: [snowy]}}\n")
    spec = load_spec(str(tmp_path / "mine.yaml"), ["fork.branches=2"])
    assert (spec.name, spec.horizon, spec.fork.branches, spec.clips.where) == ("mine", 5, 2, {"weather": ["snowy"]})


def test_the_hash_covers_the_samples_content_not_the_name_selection_or_batch_size():
    base = load_spec("night-rain")
    same = load_spec("night-rain", ["name=other", "select.by=surprise", "select.fraction=0.5", "batch_size=1"])
    assert same.hash == base.hash
    assert load_spec("night-rain", ["sampling.temperature=0.5"]).hash != base.hash
    assert load_spec("night-rain", ["fork.branches=2"]).hash != base.hash


# ---- the seed query -----------------------------------------------------------------------------------------------

def _info(clip_id, weather, speed, num_frames=20, labelled=()):
    return ClipInfo(clip_id, {"weather": weather, "timeofday": "night", "scene": "highway"}, num_frames,
                    np.full(num_frames, speed, np.float32), np.zeros(num_frames, np.float32), list(labelled))


def test_a_seed_query_selects_exactly_the_clips_whose_attributes_and_ego_motion_match():
    clips = [_info("d", "rainy", 12.0), _info("a", "rainy", 3.0), _info("c", "snowy", 20.0),
             _info("b", "rainy", 25.0), _info("e", "rainy", float("nan")), _info("f", "rainy", 15.0, num_frames=1)]
    spec = spec_from_dict({"clips": {"where": {"weather": ["rainy"]}, "speed_mps": [10, None]}})
    assert [m.clip_id for m in select(clips, spec)] == ["b", "d"]  # by id; unknown speed and too-short clips fail
    assert [m.clip_id for m in select(clips, spec_from_dict({"clips": {"limit": 2}}))] == ["a", "b"]


def test_deceleration_is_measured_at_the_clips_own_frame_rate():
    from dataclasses import replace

    from openvica_sim.scenarios.query import ego_stats

    braking = _info("x", "rainy", 0.0)
    braking.speed_mps[:] = 20.0 - np.arange(20)  # 1 m/s less each frame
    assert ego_stats(braking, 0, 10)["decel_mps2"] == pytest.approx(4.0)  # at 4 fps: 4 m/s^2
    assert ego_stats(replace(braking, fps=10.0), 0, 10)["decel_mps2"] == pytest.approx(10.0)


def test_fork_at_the_labelled_frame_makes_it_the_last_seed_frame():
    clips = [_info("x", "rainy", 10.0, labelled=[8]), _info("y", "rainy", 10.0)]
    matches = select(clips, spec_from_dict({"fork": {"at": "labelled", "seed_frames": 3}}))
    assert [(m.clip_id, m.fork_frame) for m in matches] == [("x", 6)]


def test_fork_at_labelled_prefers_seed_frames_that_all_carry_ground_truth_and_auto_falls_back_to_frame_0():
    tracked = _info("t", "rainy", 10.0, labelled=[0, 3, 4, 5, 9])  # a tracking-labelled clip (gaps: none there)
    spec = spec_from_dict({"fork": {"at": "labelled", "seed_frames": 2}})
    assert [m.fork_frame for m in select([tracked], spec)] == [3]  # frames 3 and 4: both labelled
    plain = _info("p", "rainy", 10.0)
    auto = spec_from_dict({"fork": {"at": "auto", "seed_frames": 2}})
    assert [(m.clip_id, m.fork_frame) for m in select([tracked, plain], auto)] == [("p", 0), ("t", 3)]
    assert load_spec("night-rain").fork.at == "auto", "the packaged specs fork where labels are"


def test_the_query_over_a_token_store_reads_the_stores_attributes(scenario_inputs):
    from openvica_sim.data.store import TokenStore

    store = TokenStore(scenario_inputs["store"])
    night = sorted(c["clip_id"] for c in store.clips if c["attributes"]["timeofday"] == "night")
    spec = spec_from_dict({"clips": {"where": {"timeofday": ["night"]}}})
    assert [m.clip_id for m in select(open_clips(scenario_inputs["store"]).infos(), spec)] == night


# ---- generation ---------------------------------------------------------------------------------------------------

def test_branches_of_one_seed_differ_and_share_its_seed_frames(dataset):
    out, summary = dataset
    assert summary["samples"] == 4 and summary["selected"] == 4
    tokens = all_tokens(out)
    parents = sorted({c.rsplit("-b", 1)[0] for c in tokens})
    assert len(parents) == 2
    for parent in parents:
        a, b = tokens[f"{parent}-b00"], tokens[f"{parent}-b01"]
        np.testing.assert_array_equal(a[:2], b[:2])  # the same seed frames
        assert not np.array_equal(a[2:], b[2:])  # different futures
        assert a.shape == (5, 16, 16) and a.dtype == np.uint16


def test_replay_regenerates_a_clip_with_identical_tokens(dataset, scenario_inputs):
    from openvica_sim.scenarios.generate import replay

    out, _ = dataset
    clip_id = ds.committed_clip_ids(out)[-1]
    assert replay(out, clip_id) == {"clip_id": clip_id, "identical": True, "frames_differing": []}


def test_the_batch_size_does_not_change_the_dataset(dataset, scenario_inputs, tmp_path):
    out, _ = dataset
    generate(scenario_inputs, tmp_path / "one-by-one", "batch_size=1")
    expected, got = all_tokens(out), all_tokens(tmp_path / "one-by-one")
    assert sorted(got) == sorted(expected)
    for clip_id in expected:
        np.testing.assert_array_equal(got[clip_id], expected[clip_id])
        a = ds.ScenarioDataset(out).frames(clip_id)
        b = ds.ScenarioDataset(tmp_path / "one-by-one").frames(clip_id)
        np.testing.assert_array_equal(a, b)


def test_a_run_killed_mid_way_and_rerun_gives_the_uninterrupted_dataset(dataset, scenario_inputs, tmp_path):
    out, _ = dataset
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "openvica_sim.scenarios.generate", "--spec", "night-rain", "--out", str(killed),
               "--bundle", str(scenario_inputs["bundle"]), "--clips", str(scenario_inputs["store"]), *TINY,
               "batch_size=1"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while not ds.committed_clip_ids(killed) and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait()
    committed = ds.committed_clip_ids(killed)
    assert 1 <= len(committed) < 4, committed  # killed after the first clip, before the last
    assert not (killed / ds.CLIPS_TABLE).exists()

    generate(scenario_inputs, killed, "batch_size=1")
    assert not list((killed / ds.CLIPS_DIR).glob(f"{ds.TMP_PREFIX}*"))
    expected, got = all_tokens(out), all_tokens(killed)
    assert sorted(got) == sorted(expected)
    for clip_id in expected:
        np.testing.assert_array_equal(got[clip_id], expected[clip_id])
    assert len(ds.ScenarioDataset(killed)) == 4  # every clip once


def test_the_dataset_reads_with_pyarrow_pycocotools_and_the_bdd100k_layout(dataset):
    import pyarrow.parquet as pq
    from pycocotools.coco import COCO

    out, _ = dataset
    table = pq.read_table(out / ds.CLIPS_TABLE)
    assert table.num_rows == 4 and set(ds.COLUMNS) <= set(table.column_names)
    row = table.to_pylist()[0]
    assert len(row["surprise"]) == 3 and row["num_frames"] == 5 and row["status"].startswith(("ok", "flagged"))
    coco = COCO(str(out / ds.LABELS_DIR / "coco.json"))
    assert len(coco.getImgIds()) == 4 * 5 and len(coco.loadCats(coco.getCatIds())) == len(ds.CATEGORIES)
    det = json.loads((out / ds.LABELS_DIR / "det.json").read_text())
    assert {"name", "videoName", "frameIndex", "attributes", "labels"} <= set(det[0])
    assert set(det[0]["attributes"]) == {*ds.SLICE_KEYS, "generated"}
    manifest = json.loads((out / ds.MANIFEST).read_text())
    assert manifest["status"] == "complete" and manifest["spec_hash"] == load_spec("night-rain", TINY).hash
    assert set(manifest["bundle"]["hashes"]) == {"tokenizer", "world_model", "video_decoder"}
    assert (out / ds.REVIEW_DIR / "index.html").is_file() and (out / ds.REVIEW_DIR / "surprise.png").is_file()
    clip = ds.clip_dir(out, row["clip_id"])
    assert len(list((clip / "frames").glob("*.jpg"))) == 5 and (clip / "video.mp4").stat().st_size > 0


def test_seed_frames_carry_their_ground_truth_and_generated_frames_none(scenario_inputs, tmp_path):
    from pycocotools.coco import COCO

    from openvica_sim.data.store import TokenStore

    out = tmp_path / "labelled"
    generate(scenario_inputs, out, "fork.at=labelled", "fork.branches=1", "horizon=2", "clips.limit=3")
    coco = COCO(str(out / ds.LABELS_DIR / "coco.json"))
    images = {i["id"]: i for i in coco.loadImgs(coco.getImgIds())}
    annotations = coco.loadAnns(coco.getAnnIds())
    # the tracking labels label every store frame: the first window is labelled on both seed frames
    in_store = sum(len(entry["boxes"]) for c in TokenStore(scenario_inputs["store"]).clips for entry in c["labels"]
                   if entry["frame"] < 2)
    assert len(annotations) == in_store > 0  # every box of every labelled seed frame, once
    for a in annotations:
        assert a["provenance"] == ds.GROUND_TRUTH
        assert images[a["image_id"]]["frame_index"] in (0, 1) and not images[a["image_id"]]["generated"]


def test_real_bdd100k_categories_reach_coco_as_the_ten_classes_and_ignore_regions(tmp_path, test_bundle):
    from pycocotools.coco import COCO

    from openvica_sim.bundle import save_bundle
    from openvica_sim.data.bdd_layout import write_bdd100k
    from openvica_sim.data.ingest import ingest

    write_bdd100k(tmp_path / "bdd", "train", num_videos=3, seconds=2.0, seed=3)  # the third's car is in view
    shutil.rmtree(tmp_path / "bdd" / "labels" / "box_track_20")  # det_20 alone: its frame is the last seed frame
    labels_file = tmp_path / "bdd" / "labels" / "det_20" / "det_train.json"
    records, names = json.loads(labels_file.read_text()), ["other person", "person", "motor", "trailer", "car"]
    for record in records:  # each synthetic car's box again under the names real det_20 and legacy files hold
        record["labels"] = [{**label, "id": f"{label['id']}-{n}", "category": n}
                            for label in record["labels"] for n in names]
    labels_file.write_text(json.dumps(records))
    ingest(tmp_path / "bdd", "train", tmp_path / "store.zarr", test_bundle, progress=False)
    inputs = {"bundle": save_bundle(test_bundle, tmp_path / "bundle"), "store": tmp_path / "store.zarr"}
    out = tmp_path / "real-names"
    generate(inputs, out, "fork.at=labelled", "fork.branches=1", "horizon=2", "clips.limit=3")
    assert json.loads((out / ds.MANIFEST).read_text())["status"] == "complete"
    coco = COCO(str(out / ds.LABELS_DIR / "coco.json"))
    annotations = coco.loadAnns(coco.getAnnIds())
    assert annotations, "the renamed boxes are all kept"
    by_name = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert len(annotations) % len(names) == 0
    assert {(by_name[a["category_id"]], a["iscrowd"]) for a in annotations} == {
        ("pedestrian", 1), ("pedestrian", 0), ("motorcycle", 0), ("truck", 1), ("car", 0)}  # ignored: iscrowd
    # every box also in the 1280x720 camera frame's pixels: x2 and +192 (the 0.5 downscale, the centre crop)
    image = coco.loadImgs(annotations[0]["image_id"])[0]
    assert (image["camera"]["camera_width"], image["camera"]["camera_height"]) == (1280, 720)
    for a in annotations:
        x, y, w, h = a["bbox"]
        assert a["bbox_camera"] == pytest.approx([(x + 192) * 2, (y + 52) * 2, w * 2, h * 2], abs=0.02)
    det = json.loads((out / ds.LABELS_DIR / "det.json").read_text())
    back = {tuple(round(b["box2d_camera"][k]) for k in ("x1", "y1", "x2", "y2")) for f in det for b in f["labels"]}
    raw = {tuple(round(b["box2d"][k]) for k in ("x1", "y1", "x2", "y2")) for r in records for b in r["labels"]}
    assert back & raw  # a box wholly inside the crop comes back as det_20 has it


@pytest.mark.parametrize("layout", ["det_20", "legacy"])
def test_a_bdd100k_tree_with_every_category_goes_through_ingest_generate_and_a_detector_test(
        tmp_path, test_bundle, layout):
    from openvica_sim.bundle import save_bundle
    from openvica_sim.data.bdd100k import CATEGORY_ALIASES, DETECTION_CLASSES, IGNORED_CATEGORIES
    from openvica_sim.data.bdd_layout import write_bdd100k
    from openvica_sim.data.ingest import ingest
    from openvica_sim.scenarios.harness import EXAMPLE_DETECTOR, run_test

    names = [*DETECTION_CLASSES, *IGNORED_CATEGORIES] if layout == "det_20" else [
        *(n for n in DETECTION_CLASSES if n not in CATEGORY_ALIASES.values()), *CATEGORY_ALIASES]
    bdd = tmp_path / "bdd"
    write_bdd100k(bdd, "train", num_videos=3, seconds=2.0, seed=3)
    det = bdd / "labels" / "det_20" / "det_train.json"
    records = json.loads(det.read_text())
    for record in records:  # each car's box under every name of the layout, and the legacy file's box-less ones
        record["labels"] = [{**label, "id": f"{label['id']}-{n}", "category": n}
                            for label in record["labels"] for n in names]
        record["labels"] += [{"category": "drivable area", "poly2d": []}, {"category": "lane", "poly2d": []}]
    if layout == "legacy":
        det.unlink()
        shutil.rmtree(bdd / "labels" / "box_track_20")
        det = bdd / "labels" / "bdd100k_labels_images_train.json"
    else:
        for track in (bdd / "labels" / "box_track_20" / "train").glob("*.json"):
            frames = json.loads(track.read_text())
            for frame in frames:
                frame["labels"] = [{**label, "category": n} for label in frame["labels"] for n in names]
            track.write_text(json.dumps(frames))
    det.write_text(json.dumps(records))
    ingest(bdd, "train", tmp_path / "store.zarr", test_bundle, progress=False)
    inputs = {"bundle": save_bundle(test_bundle, tmp_path / "bundle"), "store": tmp_path / "store.zarr"}
    out = tmp_path / "dataset"
    generate(inputs, out, "fork.at=labelled", "fork.branches=2", "horizon=2", "clips.limit=3")
    assert json.loads((out / ds.MANIFEST).read_text())["status"] == "complete"
    m = run_test(out, EXAMPLE_DETECTOR, progress=False)
    assert m["coco"]["overall"]["images"] > 0 and set(m["coco"]["overall"]["per_class"]) <= set(DETECTION_CLASSES)
    assert m["real_vs_generated"]["overall"]["real_frames"] > 0


def test_a_failing_label_export_is_recorded_and_a_rerun_only_finalizes(scenario_inputs, tmp_path, monkeypatch):
    from openvica_sim.scenarios import generate as generate_module

    out = tmp_path / "export-fails"

    def broken(*args, **kwargs):
        raise ValueError("disk full")

    monkeypatch.setattr(generate_module.ds, "write_label_exports", broken)
    with pytest.raises(ValueError, match="disk full"):
        generate(scenario_inputs, out)
    manifest = json.loads((out / ds.MANIFEST).read_text())
    assert manifest["status"] == "finalize_failed" and "disk full" in manifest["error"]
    committed = ds.committed_clip_ids(out)
    assert len(committed) == 4, "every sample was generated and kept"
    monkeypatch.undo()
    summary = generate(scenario_inputs, out)
    assert summary["samples_resumed"] == 4 and json.loads((out / ds.MANIFEST).read_text())["status"] == "complete"


def test_raising_the_seed_limit_grows_the_dataset_and_keeps_every_sample(scenario_inputs, tmp_path):
    out = tmp_path / "growing"
    generate(scenario_inputs, out, "clips.limit=1")
    before = all_tokens(out)
    summary = generate(scenario_inputs, out, "clips.limit=2")
    assert summary["samples"] == 4 and summary["samples_resumed"] == 2
    after = all_tokens(out)
    assert set(before) < set(after) and all(np.array_equal(before[c], after[c]) for c in before)


def test_resuming_from_another_clip_source_is_refused(scenario_inputs, tmp_path):
    import shutil

    out = tmp_path / "one-source"
    generate(scenario_inputs, out, "clips.limit=1", "fork.branches=1")
    other = shutil.copytree(scenario_inputs["store"], tmp_path / "other.zarr")
    with pytest.raises(ValueError, match="generated from the clips of .*resume with --clips"):
        generate({**scenario_inputs, "store": other}, out, "clips.limit=1", "fork.branches=1")


def test_another_spec_into_the_same_folder_is_refused(dataset, scenario_inputs):
    out, _ = dataset
    with pytest.raises(ValueError, match="another spec"):
        generate(scenario_inputs, out, "sampling.temperature=0.5")


def test_a_dry_run_counts_clips_per_slice_and_writes_nothing(scenario_inputs, tmp_path):
    from openvica_sim.scenarios.generate import generate as run

    summary = run(load_spec("night-rain", ["~clips.where", "fork.branches=4"]), tmp_path / "dry",
                  bundle=scenario_inputs["bundle"], clips=scenario_inputs["store"], dry_run=True)
    assert summary["seed_clips"] == 3 and summary["samples"] == 12 and summary["frames_to_generate"] == 12 * 14
    assert sum(s["clips"] for s in summary["slices"]) == 3
    assert not (tmp_path / "dry").exists()


def test_ego_programs_are_applied_by_action_conditioned_bundles_and_recorded_otherwise(
        dataset, scenario_inputs, action_bundle, tmp_path):
    from openvica_sim.bundle import save_bundle

    out, _ = dataset
    actions = json.loads((ds.clip_dir(out, ds.committed_clip_ids(out)[0]) / "actions.json").read_text())
    assert actions["program"] == "constant" and actions["applied"] is False and len(actions["speed_mps"]) == 3

    inputs = {**scenario_inputs, "bundle": save_bundle(action_bundle, tmp_path / "action-bundle")}
    generate(inputs, tmp_path / "brake", "ego.program=brake", "+ego.params.decel_mps2=8", "fork.branches=1",
             "clips.limit=1", "horizon=2")
    clip = ds.clip_dir(tmp_path / "brake", ds.committed_clip_ids(tmp_path / "brake")[0])
    actions = json.loads((clip / "actions.json").read_text())
    assert actions["applied"] is True and actions["speed_mps"][1] == pytest.approx(actions["speed_mps"][0] - 2.0)


def test_the_brake_program_decelerates_to_a_stop():
    from openvica_sim.scenarios.ego import commands

    speed = commands("brake", {"decel_mps2": 4.0}, 8, speed_mps=6.0, yaw_rate_rps=0.0)[:, 0]
    np.testing.assert_allclose(speed, [5, 4, 3, 2, 1, 0, 0, 0])


def test_diversity_orders_clips_by_k_center_greedy_on_codebook_usage_or_dinov2_features(dataset, loss_networks):
    from openvica_sim.scenarios.select import clip_embeddings, k_center_greedy

    points = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [0.0, 4.0]])
    order, distances = k_center_greedy(points)
    assert order == [2, 0, 3, 1]  # farthest from the mean first, then farthest from those taken
    assert distances[1:] == pytest.approx([np.hypot(5, 5), 4.0, 0.1])

    out, _ = dataset
    clips = ds.committed_clip_ids(out)
    usage = clip_embeddings(out, clips, [2] * len(clips))
    np.testing.assert_allclose(usage.sum(axis=1), 1.0)  # a histogram of the generated frames' codes
    features = clip_embeddings(out, clips, [2] * len(clips), teacher=str(loss_networks["teacher"]))
    assert features.shape[0] == len(clips) and np.isfinite(features).all()
    rows = ds.ScenarioDataset(out).clips
    assert all(r["diversity_rank"] == -1 for r in rows), "select.by: all reads no embeddings"
    from openvica_sim.scenarios.select import dataset_fields

    diverse = dataset_fields(rows, load_spec("night-rain", ["select.by=diverse", "select.k=2",
                                                            "select.exclude_flagged=false"]), out)
    assert sorted(r["diversity_rank"] for r in diverse if r["diversity_rank"] >= 0) == [0, 1]
    assert sum(r["selected"] for r in diverse) == 2


def test_a_spec_written_before_the_clips_rename_still_loads_and_says_what_to_rename(tmp_path):
    (tmp_path / "old.yaml").write_text("name: old\nseeds: {where: {weather: [snowy]}, limit: 3}\n")
    with pytest.warns(DeprecationWarning, match="`seeds:` is now `clips:`"):
        spec = load_spec(str(tmp_path / "old.yaml"))
    assert (spec.clips.where, spec.clips.limit) == ({"weather": ["snowy"]}, 3)
    with pytest.warns(DeprecationWarning, match="'clips.limit=5'"):
        assert load_spec("fog", ["seeds.limit=5"]).clips.limit == 5
    assert "seeds" in spec.content and "clips" not in spec.content  # the hashed key kept its name: old datasets resume
