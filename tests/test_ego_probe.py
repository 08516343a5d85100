"""The ego-motion probe and the adherence measures (issue 17, point 3): the measures tell a bundle that follows its
commands from one that ignores them, the probe trains by the project's one training loop on a store of real
synthetic frames, resumes exactly, and writes its held-out accuracy beside its weights."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from openvica_sim.frames import preprocess
from openvica_sim.metrics.ego import (BRANCHES, counterfactual_accuracy, counterfactual_commands,
                                      replay_adherence)
from openvica_sim.models.ego_probe import EgoProbe, EgoProbeConfig

CONF = str(Path(__file__).resolve().parent.parent / "training" / "conf")


def test_counterfactual_commands_turn_brake_and_accelerate_from_the_seed_speed():
    commands = counterfactual_commands(10.0, 4, fps=4.0)
    assert list(commands) == list(BRANCHES)
    np.testing.assert_allclose(commands["straight"][0], 10.0)
    assert np.all(commands["left"][1] < 0) and np.all(commands["right"][1] > 0)  # yaw rate > 0 turns right
    np.testing.assert_allclose(commands["brake"][0], [9, 8, 7, 6])  # 4 m/s^2, frame k at (k + 1) / 4 s
    np.testing.assert_allclose(commands["accelerate"][0], [10.5, 11, 11.5, 12])


def test_a_bundle_that_follows_its_commands_scores_accuracy_1_and_a_small_ratio():
    rng = np.random.default_rng(0)
    own = (rng.uniform(5, 20, (6, 4)), rng.normal(0, 0.1, (6, 4)))
    other = (rng.uniform(5, 20, (6, 4)), rng.normal(0, 0.1, (6, 4)))
    noise = lambda x: x + rng.normal(0, 0.01, x.shape)  # noqa: E731 -- a probe's small error
    follows = replay_adherence((noise(own[0]), noise(own[1])), (noise(other[0]), noise(other[1])), own, other,
                               label_std=(5.0, 0.1))
    ignores = replay_adherence((noise(own[0]), noise(own[1])), (noise(own[0]), noise(own[1])), own, other,
                               label_std=(5.0, 0.1))
    assert follows["ratio"] < 0.1 and follows["following_error_speed_mps"] < 0.02
    assert ignores["ratio"] == pytest.approx(1.0, abs=0.5) and ignores["ratio"] > 10 * follows["ratio"]
    estimates = {b: (v + 0.0, w + 0.0) for b, (v, w) in counterfactual_commands(12.0, 4, 4.0).items()}
    estimates = {b: (np.tile(v, (3, 1)), np.tile(w, (3, 1))) for b, (v, w) in estimates.items()}
    result = counterfactual_accuracy(estimates)
    assert result["accuracy"] == 1.0 and result["left_vs_right"] == 1.0 and result["clips"] == 3


def test_identical_branches_are_ties_counted_one_half():
    same = (np.full((2, 3), 10.0), np.zeros((2, 3)))
    result = counterfactual_accuracy({b: same for b in BRANCHES})
    assert result["accuracy"] == 0.5 and result["left"] == result["brake"] == 0.5


def test_a_probe_folder_round_trips_and_estimates_in_physical_units(tmp_path):
    torch.manual_seed(0)
    probe = EgoProbe(EgoProbeConfig(image_size=32, widths=(4, 8), speed_mean_mps=12, speed_std_mps=3,
                                    yaw_mean_rps=0.01, yaw_std_rps=0.05))
    probe.save_pretrained(tmp_path / "p", {"speed_mae_mps": 0.5})
    loaded = EgoProbe.from_pretrained(tmp_path / "p")
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 64, 64, 3), dtype=np.uint8)
    speed, yaw = loaded.estimate(frames)
    assert speed.shape == yaw.shape == (2, 2)
    with torch.no_grad():
        expected = probe.to_physical(probe(preprocess(frames[0, 0:2])[None]))  # frames 0 and 1 of clip 0
    assert speed[0, 0] == pytest.approx(float(expected[0, 0]), rel=1e-5)
    assert yaw[0, 0] == pytest.approx(float(expected[0, 1]), rel=1e-5)
    assert EgoProbe.read_accuracy(tmp_path / "p") == {"speed_mae_mps": 0.5}


def test_a_missing_probe_names_the_flag_and_how_to_train_one(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--ego-probe.*training/probe.py|training/probe.py.*--ego-probe"):
        EgoProbe.from_pretrained(tmp_path)


@pytest.fixture(scope="module")
def synthetic_store(tmp_path_factory, test_bundle):
    from openvica_sim.data.synthetic_store import write_synthetic_store

    root = tmp_path_factory.mktemp("probe-store")
    write_synthetic_store(root / "train.zarr", test_bundle, num_drives=3, seconds=2, seed=0, progress=False)
    write_synthetic_store(root / "val.zarr", test_bundle, num_drives=2, seconds=2, seed=1, split="val",
                          progress=False)
    return root


def probe_cfg(store_root, run_dir, steps: int):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("probe", overrides=[f"data.store={store_root / 'train.zarr'}",
                                           f"data.val_store={store_root / 'val.zarr'}", f"run.dir={run_dir}",
                                           f"trainer.max_steps={steps}", "trainer.batch_size=4",
                                           "trainer.checkpoint_every=2", "trainer.log_every=1",
                                           "model.image_size=32", "model.widths=[8,8,16]"])


def test_the_probe_trains_exports_its_held_out_accuracy_and_resumes_exactly(synthetic_store, tmp_path):
    from openvica_sim.training import probe

    probe.run(probe_cfg(synthetic_store, tmp_path / "once", 4))
    probe.run(probe_cfg(synthetic_store, tmp_path / "twice", 2))
    probe.run(probe_cfg(synthetic_store, tmp_path / "twice", 4))  # raising max_steps continues the run
    once = [json.loads(line) for line in (tmp_path / "once" / "metrics.jsonl").read_text().splitlines()]
    twice = [json.loads(line) for line in (tmp_path / "twice" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in twice] == [1, 2, 3, 4]
    assert [m["loss"] for m in twice] == [m["loss"] for m in once]
    accuracy = EgoProbe.read_accuracy(tmp_path / "once" / "ego_probe")
    assert accuracy["windows"] == 2 * 7 and accuracy["store"].endswith("val.zarr")  # 2 drives of 8 frames: 7 pairs
    assert {"speed_mae_mps", "yaw_rate_mae_rps", "baseline_speed_mae_mps", "baseline_yaw_rate_mae_rps"} <= set(accuracy)
    loaded = EgoProbe.from_pretrained(tmp_path / "once" / "ego_probe")
    assert loaded.config.speed_std_mps > 0 and loaded.config.image_size == 32


def test_the_synthetic_store_has_frames_ego_motion_and_boxes_on_every_frame(synthetic_store):
    from openvica_sim.data.store import TokenStore

    store = TokenStore(synthetic_store / "train.zarr")
    clip = store.clip(store.clip_ids[0])
    assert clip["frames"].shape == (8, 256, 256, 3) and clip["tokens"].shape == (8, 16, 16)
    assert np.isfinite(clip["speed_mps"]).all() and [x["frame"] for x in clip["labels"]] == list(range(8))
