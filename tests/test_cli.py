"""The `openvica` command line (issue 2, point 8)."""

import json

import pytest

from openvica_sim.bundle import save_bundle
from openvica_sim.cli import main
from openvica_sim.video_io import read_image, read_video


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory, test_bundle):
    return save_bundle(test_bundle, tmp_path_factory.mktemp("cli") / "bundle")


def test_rollout_writes_an_mp4_at_4_fps_and_a_contact_sheet(tmp_path, bundle_dir, capsys):
    assert main(["synthetic", "frames", "--out", str(tmp_path / "seeds"), "--frames", "2"]) == 0
    seeds = [str(tmp_path / "seeds" / f"00000{i}.png") for i in range(2)]
    assert main(["rollout", "--bundle", str(bundle_dir), "--frames", *seeds, "--steps", "2", "--top-k", "10",
                 "--out", str(tmp_path / "out.mp4")]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    video = read_video(tmp_path / "out.mp4")
    assert video.shape == (2 + 2, 256, 256, 3), "seed frames then predicted frames"
    sheet = read_image(tmp_path / "out.png")
    assert sheet.shape[1] > 4 * 256 and report["frames"] == 2 and len(report["surprise_per_frame"]) == 2


def test_rollout_from_a_video_uses_its_last_seed_frames(tmp_path, bundle_dir):
    import numpy as np

    from openvica_sim.video_io import write_video

    write_video(tmp_path / "in.mp4", np.random.default_rng(0).integers(0, 255, (6, 128, 160, 3), dtype=np.uint8), fps=4)
    assert main(["rollout", "--bundle", str(bundle_dir), "--video", str(tmp_path / "in.mp4"), "--steps", "1",
                 "--decoder", "dec", "--out", str(tmp_path / "out.mp4")]) == 0
    assert read_video(tmp_path / "out.mp4").shape[0] == 3


def test_rollout_drives_an_action_conditioned_bundle_by_program_or_by_the_seed_clips_own_ego(
        tmp_path, action_bundle, capsys):
    bundle = save_bundle(action_bundle, tmp_path / "action-bundle")
    main(["synthetic", "frames", "--out", str(tmp_path / "s"), "--frames", "2"])
    seeds = [str(tmp_path / "s" / f"00000{i}.png") for i in range(2)]
    args = ["rollout", "--bundle", str(bundle), "--frames", *seeds, "--steps", "2", "--top-k", "10"]
    assert main([*args, "--ego", "replay"]) == 1, "replay needs the clip's ego.json"
    assert "ego.json" in capsys.readouterr().err
    assert main([*args, "--ego", "brake", "--out", str(tmp_path / "brake.mp4")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ego"] == "brake"
    (tmp_path / "s" / "ego.json").write_text(json.dumps({"speed_mps": [10, 10, 9, 8], "yaw_rate_rps": [0, 0, .1, .1]}))
    assert main([*args, "--out", str(tmp_path / "replay.mp4")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["ego"] == "replay", "the default with ego.json"


def test_info_prints_the_bundle_layout_and_parameter_counts(bundle_dir, capsys):
    assert main(["info", "--bundle", str(bundle_dir), "--params"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["frame_length"] == 257 and meta["parameters"]["world_model"] > 0 and meta["bytes"]["total"] > 0


def test_missing_bundle_is_one_clear_line_not_a_traceback(tmp_path, capsys):
    assert main(["rollout", "--bundle", str(tmp_path / "none"), "--frames", "x.png", "y.png"]) == 1
    assert "openvica: error: no simulator bundle" in capsys.readouterr().err


def test_one_seed_frame_is_refused(tmp_path, bundle_dir, capsys):
    main(["synthetic", "frames", "--out", str(tmp_path / "s"), "--frames", "1"])
    assert main(["rollout", "--bundle", str(bundle_dir), "--frames", str(tmp_path / "s" / "000000.png")]) == 1
    assert "at least 2 seed frames" in capsys.readouterr().err


def test_synthetic_bdd100k_then_data_ingest_writes_a_store_and_a_rerun_adds_nothing(tmp_path, bundle_dir, capsys):
    from openvica_sim.data.bdd100k import list_videos
    from openvica_sim.data.store import TokenStore

    assert main(["synthetic", "bdd100k", "--out", str(tmp_path / "bdd"), "--split", "val", "--videos", "2",
                 "--seconds", "1", "--corrupt", "1"]) == 0
    corrupt = sorted(v.id for v in list_videos(tmp_path / "bdd", "val"))[-1]
    args = ["data", "ingest", "--bdd-root", str(tmp_path / "bdd"), "--split", "val", "--out",
            str(tmp_path / "s.zarr"), "--bundle", str(bundle_dir)]
    assert main(args) == 0
    store = TokenStore(tmp_path / "s.zarr")
    assert len(store) == 1 and store.clip(store.clip_ids[0])["tokens"].shape[1:] == (16, 16)
    assert f"skipped {corrupt}" in capsys.readouterr().err, "the summary names the bad video"
    assert main(args) == 0 and len(TokenStore(tmp_path / "s.zarr")) == 1
