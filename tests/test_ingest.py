"""BDD100K -> token store: frame counts, tokens, ego motion, bad videos reported, rerun, resume, shards."""

import numpy as np
import pytest

from openvica_sim.data.bdd_layout import write_bdd100k
from openvica_sim.data.ingest import ingest
from openvica_sim.data.store import PartWriter, TokenStore, consolidate

SECONDS = 2.0
FRAMES = 8  # 2 s at 4 fps: times 0, 0.25, ..., 1.75


@pytest.fixture(scope="module")
def bdd_tree(tmp_path_factory):
    """Four 2 s train drives at 1280x720: one corrupt, one without info."""
    root = tmp_path_factory.mktemp("bdd")
    manifest = write_bdd100k(root, "train", num_videos=4, seconds=SECONDS, seed=1, corrupt=1, without_info=1)
    return root, manifest


@pytest.fixture(scope="module")
def ingested(bdd_tree, test_bundle, tmp_path_factory):
    root, manifest = bdd_tree
    out = tmp_path_factory.mktemp("store") / "store.zarr"
    report = ingest(root, "train", out, test_bundle, progress=False)
    return out, report, manifest


def test_every_decodable_video_becomes_a_clip_of_8_frames_at_4_fps(ingested):
    out, report, manifest = ingested
    store = TokenStore(out)
    good = [v for v in manifest["ids"] if v not in manifest["corrupt"]]
    assert sorted(store.clip_ids) == sorted(good) and len(store) == 3
    assert report.clips_written == 3 and report.frames == 3 * FRAMES
    for clip_id in good:
        clip = store.clip(clip_id)
        assert clip["tokens"].shape == (FRAMES, 16, 16) and clip["tokens"].dtype == np.uint16
        np.testing.assert_allclose(clip["frame_time_s"], np.arange(FRAMES) / 4.0)


def test_tokens_match_the_tokenizer_and_are_never_the_fill_value(ingested, test_bundle):
    out, _, _ = ingested
    tokens = TokenStore(out).clip(TokenStore(out).clip_ids[0])["tokens"]
    assert tokens.max() < test_bundle.tokenizer.config.codebook_size


def test_clips_carry_their_attributes_split_and_fps(ingested):
    out, _, manifest = ingested
    clip = TokenStore(out).clip(manifest["ids"][0])
    assert set(clip["attributes"]) >= {"weather", "scene", "timeofday"}
    assert clip["split"] == "train" and clip["fps"] == 4.0 and clip["video_id"] == manifest["ids"][0]


def test_the_labelled_frames_boxes_are_stored_in_the_model_view_on_the_store_frame_at_its_time(ingested, bdd_tree):
    import json

    from openvica_sim.frames import boxes_to_model_view

    out, _, manifest = ingested
    root, _ = bdd_tree
    clip_id = manifest["ids"][0]
    record = next(r for r in json.loads((root / "labels/det_20/det_train.json").read_text())
                  if r["name"] == f"{clip_id}.jpg")
    assert record["timestamp"] == 1500  # a 2 s drive is labelled at 1.5 s (frame 45 of 30 fps)
    clip = TokenStore(out).clip(clip_id)
    det = [entry for entry in clip["labels"] if entry["source"] == "det_20"]
    assert [entry["frame"] for entry in det] == [6]  # 1.5 s at 4 fps
    expected = boxes_to_model_view([{k: b[k] for k in ("category", "box2d", "id")} for b in record["labels"]],
                                   720, 1280)
    assert det[0]["boxes"] == expected != []


def test_tracking_labels_give_every_store_frame_the_nearest_5_fps_boxes_within_half_a_frame(ingested, bdd_tree):
    import json

    from openvica_sim.data.bdd100k import read_track_labels
    from openvica_sim.frames import boxes_to_model_view

    out, _, manifest = ingested
    root, _ = bdd_tree
    clip_id = manifest["ids"][0]
    track = read_track_labels(root / "labels/box_track_20/train" / f"{clip_id}.json")
    assert [t for t, _ in track] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8])  # 5 fps
    labels = TokenStore(out).clip(clip_id)["labels"]
    assert [e["frame"] for e in labels] == list(range(FRAMES)), "every 4 fps frame has a tracking frame near it"
    for entry in labels:
        assert abs(entry["time_s"] - entry["frame"] / 4) <= 0.125 + 1e-9
        if entry["source"] == "box_track_20":
            boxes = dict(track)[entry["time_s"]]
            assert entry["boxes"] == boxes_to_model_view(boxes, 720, 1280)
    assert {e["source"] for e in labels} == {"box_track_20", "det_20"}
    ids = [{b["id"] for b in e["boxes"]} for e in labels if e["boxes"]]
    assert ids and set.intersection(*ids), "a car keeps its track id from frame to frame"
    assert json.loads((root / "labels/box_track_20/train" / f"{clip_id}.json").read_text())[1]["frameIndex"] == 1


def test_boxes_follow_the_papers_scale_and_centre_crop():
    from openvica_sim.frames import boxes_to_model_view

    boxes = [{"category": "car", "box2d": {"x1": 600, "y1": 300, "x2": 700, "y2": 400}},  # inside the crop
             {"category": "car", "box2d": {"x1": 0, "y1": 0, "x2": 100, "y2": 100}},  # left of the crop: dropped
             {"category": "bus", "box2d": {"x1": 350, "y1": 300, "x2": 450, "y2": 400}}]  # 7/10 of it inside
    out = boxes_to_model_view(boxes, 720, 1280)
    assert [b["category"] for b in out] == ["car", "bus"]
    assert out[0]["box2d"] == {"x1": 108.0, "y1": 98.0, "x2": 158.0, "y2": 148.0}  # x 0.5, minus (192, 52)
    assert out[1]["box2d"] == {"x1": 0.0, "y1": 98.0, "x2": 33.0, "y2": 148.0}


def test_ego_motion_is_finite_with_an_info_file_and_nan_without(ingested):
    out, report, manifest = ingested
    store = TokenStore(out)
    with_info = store.clip(manifest["ids"][0])
    assert with_info["ego_status"] == "ok" and np.isfinite(with_info["speed_mps"]).all()
    without = store.clip(manifest["without_info"][0])
    assert without["ego_status"] == "missing" and np.isnan(without["speed_mps"]).all()
    assert np.isnan(without["yaw_rate_rps"]).all()
    assert report.ego_status["missing"] == 1 and "missing" in report.summary


def test_corrupt_video_is_skipped_and_named_in_the_report(ingested):
    _, report, manifest = ingested
    corrupt = manifest["corrupt"][0]
    assert list(report.skipped) == [corrupt] and "cannot decode" in report.skipped[corrupt]
    assert corrupt in report.summary


def test_rerun_on_a_finished_store_writes_nothing(bdd_tree, ingested, test_bundle):
    root, _ = bdd_tree
    out, first, _ = ingested
    again = ingest(root, "train", out, test_bundle, progress=False)
    assert again.clips_written == 0 and again.frames == 0 and again.clips_present == 3
    store = TokenStore(out)
    assert len(store) == 3 and len(set(store.clip_ids)) == 3 and store.index["num_frames"] == 3 * FRAMES


def test_limited_run_then_full_run_adds_only_the_missing_clips(bdd_tree, test_bundle, tmp_path):
    root, manifest = bdd_tree
    out = tmp_path / "store.zarr"
    first = ingest(root, "train", out, test_bundle, limit=2, progress=False)
    assert first.clips_written == 2 and len(TokenStore(out)) == 2
    second = ingest(root, "train", out, test_bundle, progress=False)
    assert second.clips_present == 2 and second.clips_written == 1 and len(TokenStore(out)) == 3


def test_clip_written_but_not_indexed_by_a_killed_run_is_invisible_and_redone(bdd_tree, test_bundle, tmp_path):
    root, manifest = bdd_tree
    out = tmp_path / "store.zarr"
    ingest(root, "train", out, test_bundle, limit=1, progress=False)
    writer = PartWriter(out, 0, fps=4.0, split="train")
    # a killed run: the next clip's rows are written, its index entry and the completion mark are not
    writer.set_complete(False)
    for key, array in writer.arrays.items():
        array.resize((2 * FRAMES, *array.shape[1:]))
        array[FRAMES:] = 7
    assert len(consolidate(out)["clips"]) == 0  # an incomplete part is not consolidated
    report = ingest(root, "train", out, test_bundle, progress=False)
    assert report.clips_written == 2 and report.clips_present == 1
    store = TokenStore(out)
    assert len(store) == 3 and store.index["num_frames"] == 3 * FRAMES
    second = store.clip(manifest["ids"][1])
    assert second["start"] == FRAMES and (second["tokens"] != 7).any()
    assert np.isfinite(second["speed_mps"]).all()


def test_two_shards_write_two_parts_and_the_store_holds_every_clip_once(bdd_tree, test_bundle, tmp_path):
    root, manifest = bdd_tree
    out = tmp_path / "store.zarr"
    reports = [ingest(root, "train", out, test_bundle, shard=(i, 2), progress=False) for i in range(2)]
    assert [r.part for r in reports] == ["part-00000", "part-00001"]
    store = TokenStore(out)
    assert store.index["parts"] == ["part-00000", "part-00001"]
    good = sorted(v for v in manifest["ids"] if v not in manifest["corrupt"])
    assert sorted(store.clip_ids) == good and store.index["duplicates"] == []


def test_a_shard_whose_store_root_another_shard_made_meanwhile_opens_it(tmp_path, monkeypatch):
    """Shards start at once on a new store (`--ray`): zarr's mode "a" checks for no node, then writes one, so the
    writer that loses the race must open the group the winner made instead of failing."""
    import zarr

    real_open = zarr.open_group
    raced = []

    def open_group(path, mode="a", **kwargs):
        if mode == "a" and not raced:  # another shard creates the root between the check and the write
            raced.append(path)
            real_open(path, mode="a")
            raise zarr.errors.ContainsGroupError(f"A group exists in store at {path}")
        return real_open(path, mode=mode, **kwargs)

    monkeypatch.setattr(zarr, "open_group", open_group)
    PartWriter(tmp_path / "s.zarr", 1, fps=4.0, split="train", codebook_size=64)
    assert raced == [tmp_path / "s.zarr"]
    assert "part-00001" in real_open(tmp_path / "s.zarr", mode="r")["parts"]


def test_a_plain_zarr_client_walks_from_the_root_to_every_parts_arrays(bdd_tree, test_bundle, tmp_path):
    import zarr

    out = tmp_path / "store.zarr"
    for i in range(2):
        ingest(bdd_tree[0], "train", out, test_bundle, shard=(i, 2), progress=False)
    root = zarr.open_group(out, mode="r")
    parts = dict(root["parts"].groups())
    assert sorted(parts) == ["part-00000", "part-00001"] == root.attrs["parts"]
    store = TokenStore(out)
    frames = 0
    for name, part in parts.items():
        assert {"tokens", "speed_mps", "yaw_rate_rps", "frame_time_s"} <= set(dict(part.arrays()))
        frames += part.attrs["num_frames"]
        for clip in part.attrs["clips"]:
            np.testing.assert_array_equal(part["tokens"][clip["start"]:clip["stop"]],
                                          store.clip(clip["clip_id"], ("tokens",))["tokens"])
    assert root.attrs["num_frames"] == frames == store.index["num_frames"]
    assert root.attrs["num_clips"] == len(store.clips) and root.attrs["index"] == "index.json"


def test_store_frames_keeps_the_preprocessed_256_crops(bdd_tree, test_bundle, tmp_path):
    root, manifest = bdd_tree
    out = tmp_path / "store.zarr"
    ingest(root, "train", out, test_bundle, limit=1, store_frames=True, progress=False)
    clip = TokenStore(out).clip(manifest["ids"][0])
    assert clip["frames"].shape == (FRAMES, 256, 256, 3) and clip["frames"].dtype == np.uint8


def test_resuming_with_another_fps_is_refused_naming_both(bdd_tree, ingested, test_bundle):
    root, _ = bdd_tree
    out, _, _ = ingested
    with pytest.raises(ValueError, match="fps"):
        ingest(root, "train", out, test_bundle, fps=2.0, progress=False)


def test_bad_shard_is_refused(bdd_tree, test_bundle, tmp_path):
    root, _ = bdd_tree
    with pytest.raises(ValueError, match="shard="):
        ingest(root, "train", tmp_path / "s.zarr", test_bundle, shard=(2, 2), progress=False)


def test_bytes_per_clip_of_tokens_and_ego_motion(ingested):
    out, _, _ = ingested
    part = out / "parts" / "part-00000"
    size = sum(p.stat().st_size for p in part.rglob("*") if p.is_file())
    print(f"bytes per clip ({FRAMES} frames, tokens + ego + metadata): {size / 3:.0f}")
    assert size / 3 < 2 * (FRAMES * 16 * 16 * 2 + 3 * FRAMES * 4) + 8192


def test_ingest_killed_mid_run_resumes_to_the_same_store_as_an_uninterrupted_run(bdd_tree, ingested, test_bundle,
                                                                                  tmp_path):
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from openvica_sim.bundle import save_bundle

    root, manifest = bdd_tree
    reference, _, _ = ingested
    bundle_dir = save_bundle(test_bundle, tmp_path / "bundle")
    out = tmp_path / "store.zarr"
    attrs_file = out / "parts" / "part-00000" / "zarr.json"
    command = [sys.executable, "-m", "openvica_sim.cli", "data", "ingest", "--bdd-root", str(root), "--out", str(out),
               "--bundle", str(bundle_dir)]
    # same threads and batch size as the reference run: a convolution's rounding, and so a near-tie in the
    # quantiser's argmin, depends on both
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "OMP_NUM_THREADS": "2"})
    deadline = time.monotonic() + 120
    clips = []
    while time.monotonic() < deadline and process.poll() is None:
        try:
            clips = json.loads(attrs_file.read_text())["attributes"]["clips"]
        except (FileNotFoundError, json.JSONDecodeError, KeyError):
            clips = []
        if clips:
            process.send_signal(signal.SIGKILL)  # no chance to clean up, as in a lost node
            break
        time.sleep(0.005)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the ingest finished or failed before it could be killed"
    part = json.loads(attrs_file.read_text())["attributes"]
    assert not part["complete"] and 1 <= len(part["clips"]) < 3
    report = ingest(root, "train", out, test_bundle, progress=False)
    assert report.clips_present == len(part["clips"]) and report.clips_written == 3 - len(part["clips"])
    resumed, clean = TokenStore(out), TokenStore(reference)
    assert sorted(resumed.clip_ids) == sorted(clean.clip_ids) and resumed.index["duplicates"] == []
    for clip_id in clean.clip_ids:
        a, b = resumed.clip(clip_id), clean.clip(clip_id)
        np.testing.assert_array_equal(a["tokens"], b["tokens"])
        np.testing.assert_array_equal(a["speed_mps"], b["speed_mps"])
