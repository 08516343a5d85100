"""`openvica data retokenize`: a store's frames re-encoded by a fine-tuned tokenizer into a new store, everything
else of each clip copied, resumable and shardable like the ingest."""

import numpy as np
import pytest
import torch

from openvica_sim.data.retokenize import retokenize_store
from openvica_sim.data.store import TokenStore
from openvica_sim.data.synthetic_store import write_synthetic_store
from openvica_sim.frames import preprocess
from openvica_sim.models.tokenizer import create_tokenizer


@pytest.fixture(scope="module")
def source(tmp_path_factory, test_bundle):
    root = tmp_path_factory.mktemp("retokenize")
    write_synthetic_store(root / "src.zarr", test_bundle, num_drives=3, seconds=1, seed=2, progress=False)
    return root / "src.zarr"


def test_tokens_are_the_new_tokenizers_and_the_rest_of_each_clip_is_copied(source, tmp_path):
    other = create_tokenizer("test", seed=7, codebook_size=32)
    index = retokenize_store(source, tmp_path / "new.zarr", other, progress=False)
    old, new = TokenStore(source), TokenStore(tmp_path / "new.zarr")
    assert new.clip_ids == old.clip_ids and len(index["clips"]) == 3
    for clip_id in old.clip_ids:
        a, b = old.clip(clip_id), new.clip(clip_id)
        with torch.no_grad():
            want = other.encode(preprocess(a["frames"])).numpy()
        np.testing.assert_array_equal(b["tokens"], want)
        assert b["tokens"].max() < 32
        for key in ("frames", "speed_mps", "yaw_rate_rps", "frame_time_s"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        for key in ("attributes", "labels", "camera_view", "fps", "split", "source"):
            assert a[key] == b[key], key


def test_shards_and_a_rerun_give_the_same_store(source, tmp_path):
    other = create_tokenizer("test", seed=7)
    for i in (0, 1):
        retokenize_store(source, tmp_path / "two.zarr", other, shard=(i, 2), progress=False)
    again = retokenize_store(source, tmp_path / "two.zarr", other, shard=(0, 2), progress=False)  # nothing to do
    assert sorted(c["clip_id"] for c in again["clips"]) == sorted(TokenStore(source).clip_ids)
    assert sorted(again["parts"]) == ["part-00000", "part-00001"]


def test_a_store_without_frames_and_writing_over_the_source_are_refused(source, tmp_path, test_bundle):
    with pytest.raises(ValueError, match="is the source store"):
        retokenize_store(source, source, test_bundle, progress=False)
    from openvica_sim.data.store import PartWriter, consolidate

    writer = PartWriter(tmp_path / "bare.zarr", 0, fps=4.0, split="train", codebook_size=64)
    writer.append_clip({"clip_id": "c"}, {"tokens": np.zeros((2, 16, 16), np.uint16),
                                          **{k: np.zeros(2, np.float32) for k in ("speed_mps", "yaw_rate_rps",
                                                                                  "frame_time_s")}})
    writer.set_complete(True)
    consolidate(tmp_path / "bare.zarr")
    with pytest.raises(ValueError, match="keeps no frames"):
        retokenize_store(tmp_path / "bare.zarr", tmp_path / "out.zarr", test_bundle, progress=False)
