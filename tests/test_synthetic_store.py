"""Synthetic drives straight into a token store (issue 19): the drivable world's drives at the model's view, with
their ego motion and boxes, written by one process or by several shards into one store with the same content."""

import numpy as np

from openvica_sim.data.store import TokenStore
from openvica_sim.data.synthetic_store import write_synthetic_store


def test_shards_fill_one_store_with_what_one_process_writes(tmp_path, test_bundle):
    one = write_synthetic_store(tmp_path / "one.zarr", test_bundle, num_drives=3, seconds=1, seed=4, progress=False)
    for i in (0, 1):
        write_synthetic_store(tmp_path / "two.zarr", test_bundle, num_drives=3, seconds=1, seed=4, shard=(i, 2),
                              progress=False)
    a, b = TokenStore(tmp_path / "one.zarr"), TokenStore(tmp_path / "two.zarr")
    assert sorted(a.clip_ids) == sorted(b.clip_ids) and len(one["clips"]) == 3
    assert sorted(TokenStore(tmp_path / "two.zarr").index["parts"]) == ["part-00000", "part-00001"]
    for clip_id in a.clip_ids:
        x, y = a.clip(clip_id), b.clip(clip_id)
        for key in ("tokens", "frames", "speed_mps", "yaw_rate_rps"):
            np.testing.assert_array_equal(x[key], y[key], err_msg=f"{clip_id} {key}")


def test_a_commanded_drive_moves_and_a_cruise_one_keeps_its_lane(tmp_path, test_bundle):
    commanded = write_synthetic_store(tmp_path / "c.zarr", test_bundle, num_drives=2, seconds=6, seed=0,
                                      progress=False)
    cruise = write_synthetic_store(tmp_path / "k.zarr", test_bundle, num_drives=2, seconds=6, seed=0, world="cruise",
                                   progress=False)
    assert commanded["clips"][0]["source"] == "synthetic (commanded)" and cruise["clips"][0]["source"].endswith(
        "(cruise)")
    yaw_spread = [np.ptp(TokenStore(tmp_path / name).clip(TokenStore(tmp_path / name).clip_ids[0])["yaw_rate_rps"])
                  for name in ("c.zarr", "k.zarr")]
    assert yaw_spread[0] > yaw_spread[1]  # the commanded ego swerves and changes lane; the cruiser's bend is constant


def test_a_piecewise_drive_is_the_commanded_worlds_road_under_open_loop_commands(tmp_path, test_bundle):
    from openvica_sim.data.synthetic import random_commanded_drive, random_piecewise_commands

    index = write_synthetic_store(tmp_path / "p.zarr", test_bundle, num_drives=1, seconds=3, seed=5, world="piecewise",
                                  progress=False)
    assert index["clips"][0]["source"] == "synthetic (piecewise)"
    store = TokenStore(tmp_path / "p.zarr")
    clip = store.clip(store.clip_ids[0])
    rng = np.random.default_rng([5, 0])  # drive 0 of seed 5, as the store draws it
    drive = random_commanded_drive(rng, 3)
    speed, yaw = random_piecewise_commands(rng, drive, 11)
    np.testing.assert_allclose(clip["speed_mps"][1:], speed, atol=1e-4)
    np.testing.assert_allclose(clip["yaw_rate_rps"][1:], yaw, atol=1e-4)


def test_a_shard_that_finishes_first_says_its_count_is_not_the_whole_store(tmp_path, test_bundle, capsys):
    from openvica_sim.bundle import save_bundle
    from openvica_sim.cli import main

    save_bundle(test_bundle, tmp_path / "bundle")
    args = ["synthetic", "store", "--out", str(tmp_path / "s.zarr"), "--drives", "3", "--seconds", "1", "--seed", "4",
            "--bundle", str(tmp_path / "bundle")]
    assert main([*args, "--shard", "0/2"]) == 0
    assert "2 of --drives 3 so far" in capsys.readouterr().out
    assert main([*args, "--shard", "1/2"]) == 0
    out = capsys.readouterr().out
    assert "3 synthetic drives" in out and "so far" not in out
