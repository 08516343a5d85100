"""Training datasets over the token store: windows, alignment, deterministic shuffling, rank sharding, frames."""

from copy import deepcopy

import numpy as np
import pytest
import torch

from openvica_sim.data.bdd_layout import write_bdd100k
from openvica_sim.data.ingest import ingest
from openvica_sim.data.loaders import FrameWindows, ImageSamples, TokenWindows
from openvica_sim.data.store import TokenStore

FRAMES = 8  # 2 s at 4 fps
WINDOW = 4
CLIPS = 3


@pytest.fixture(scope="module")
def bdd_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("bdd")
    write_bdd100k(root, "train", num_videos=CLIPS, seconds=2.0, seed=2, without_info=1)
    return root


@pytest.fixture(scope="module")
def frame_store(bdd_root, test_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("frames") / "store.zarr"
    ingest(bdd_root, "train", out, test_bundle, store_frames=True, progress=False)
    return TokenStore(out)


@pytest.fixture(scope="module")
def token_store(bdd_root, test_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("tokens") / "store.zarr"
    ingest(bdd_root, "train", out, test_bundle, progress=False)
    return TokenStore(out)


def all_windows(dataset):
    return [(s["clip_id"], s["start"]) for s in dataset]


def test_every_window_of_consecutive_frames_inside_a_clip_is_a_sample(frame_store):
    dataset = TokenWindows(frame_store, window=WINDOW, shuffle=False)
    assert len(frame_store) == CLIPS and len(dataset) == CLIPS * (FRAMES - WINDOW + 1)
    expected = [(c, s) for c in frame_store.clip_ids for s in range(FRAMES - WINDOW + 1)]
    assert all_windows(dataset) == expected


def test_stride_skips_window_starts(frame_store):
    dataset = TokenWindows(frame_store, window=WINDOW, stride=2, shuffle=False)
    assert sorted({s for _, s in all_windows(dataset)}) == [0, 2, 4]


def test_a_window_as_long_as_the_clip_gives_one_sample_per_clip_and_longer_gives_none(frame_store):
    assert len(TokenWindows(frame_store, window=FRAMES)) == CLIPS
    with pytest.raises(ValueError, match=r"0 windows of 9 frames.*longest 8 frames"):
        TokenWindows(frame_store, window=FRAMES + 1)


def test_a_sample_is_the_stores_slice_with_aligned_ego_motion(frame_store):
    dataset = TokenWindows(frame_store, window=WINDOW, seed=3)
    for i in range(len(dataset)):
        sample = dataset[i]
        clip = frame_store.clip(sample["clip_id"])
        rows = slice(sample["start"], sample["start"] + WINDOW)
        assert sample["tokens"].dtype == torch.int64 and sample["tokens"].shape == (WINDOW, 16, 16)
        np.testing.assert_array_equal(sample["tokens"].numpy(), clip["tokens"][rows])
        # NaN (unknown ego motion, the clip without an info file) compares equal to NaN here
        np.testing.assert_array_equal(sample["speed_mps"].numpy(), clip["speed_mps"][rows])
        np.testing.assert_array_equal(sample["yaw_rate_rps"].numpy(), clip["yaw_rate_rps"][rows])
        assert sample["speed_mps"].shape == sample["yaw_rate_rps"].shape == (WINDOW,)


def test_samples_collate_into_a_batch(frame_store):
    dataset = TokenWindows(frame_store, window=WINDOW)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=4)))
    assert batch["tokens"].shape == (4, WINDOW, 16, 16) and batch["speed_mps"].shape == (4, WINDOW)
    assert len(batch["clip_id"]) == 4


def test_same_seed_and_epoch_give_the_same_order_and_epochs_differ(frame_store):
    a = TokenWindows(frame_store, window=WINDOW, seed=7)
    b = TokenWindows(frame_store, window=WINDOW, seed=7)
    assert a.epoch_order(0) == b.epoch_order(0) and a.epoch_order(5) == b.epoch_order(5)
    assert a.epoch_order(0) != a.epoch_order(1)
    assert sorted(a.epoch_order(1)) == list(range(len(a.windows)))
    assert TokenWindows(frame_store, window=WINDOW, seed=8).epoch_order(0) != a.epoch_order(0)


def test_set_epoch_changes_the_samples_in_order(frame_store):
    dataset = TokenWindows(frame_store, window=WINDOW, seed=7)
    first = all_windows(dataset)
    dataset.set_epoch(1)
    assert all_windows(dataset) != first and sorted(all_windows(dataset)) == sorted(first)
    dataset.set_epoch(0)
    assert all_windows(dataset) == first


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_are_disjoint_equal_length_and_cover_all_but_the_remainder(frame_store, world_size):
    total = CLIPS * (FRAMES - WINDOW + 1)  # 15: remainder 1 for 2 ranks, 3 for 4 ranks
    ranks = [TokenWindows(frame_store, window=WINDOW, seed=1, rank=r, world_size=world_size)
             for r in range(world_size)]
    for epoch in (0, 1):
        orders = [set(d.epoch_order(epoch)) for d in ranks]
        assert all(len(d.epoch_order(epoch)) == total // world_size for d in ranks)
        assert len(set.union(*orders)) == sum(map(len, orders)) == total - total % world_size
    assert len({len(d) for d in ranks}) == 1


def test_a_bad_rank_is_rejected_with_the_world_size(frame_store):
    with pytest.raises(ValueError, match=r"rank=2 .*world_size=2"):
        TokenWindows(frame_store, window=WINDOW, rank=2, world_size=2)


def test_a_copied_dataset_reopens_the_store_and_reads_the_same_sample(frame_store):
    dataset = TokenWindows(frame_store, window=WINDOW)
    first = dataset[0]
    copy = deepcopy(dataset)  # goes through __getstate__ as pickling to a spawned worker does
    assert copy._arrays == {}
    torch.testing.assert_close(copy[0]["tokens"], first["tokens"])


def test_image_samples_are_every_frame_in_minus_one_to_one(frame_store):
    dataset = ImageSamples(frame_store, seed=0)
    assert len(dataset) == CLIPS * FRAMES
    sample = dataset[0]
    assert sample["frames"].shape == (3, 256, 256) and sample["frames"].dtype == torch.float32
    assert sample["frames"].min() >= -1 and sample["frames"].max() <= 1
    stored = frame_store.clip(sample["clip_id"])["frames"][sample["start"]]
    np.testing.assert_allclose(sample["frames"].permute(1, 2, 0).numpy(), stored / 127.5 - 1, atol=1e-6)


def test_image_samples_without_stored_frames_say_to_ingest_with_store_frames(token_store):
    with pytest.raises(ValueError, match="--store-frames"):
        ImageSamples(token_store)


def test_frame_windows_pair_three_frames_with_their_tokens(frame_store):
    dataset = FrameWindows(frame_store)
    assert len(dataset) == CLIPS * (FRAMES - 3 + 1)
    sample = dataset[0]
    assert sample["frames"].shape == (3, 3, 256, 256) and sample["tokens"].shape == (3, 16, 16)
    assert sample["frames"].min() >= -1 and sample["frames"].max() <= 1
    clip = frame_store.clip(sample["clip_id"])
    np.testing.assert_array_equal(sample["tokens"].numpy(), clip["tokens"][sample["start"]:sample["start"] + 3])


def test_frame_windows_without_stored_frames_say_to_ingest_with_store_frames(token_store):
    with pytest.raises(ValueError, match="--store-frames"):
        FrameWindows(token_store)
