"""`python -m openvica_sim.embedded --bundle B --heldout STORE`: the shipped seed clips carry what a user of the
embedded default reads from them (frames, ego motion for `--ego replay`, the world's car boxes for scenario
ground truth, attributes for queries), equal to the held-out store's."""

import numpy as np

from openvica_sim.bundle import save_bundle
from openvica_sim.data.clips import FolderClips, StoreClips
from openvica_sim.data.synthetic_store import write_synthetic_store
from openvica_sim.embedded import SEED_CLIP_FRAMES, ship


def test_shipped_clips_read_back_as_the_held_out_store_has_them(tmp_path, test_bundle):
    store = tmp_path / "val.zarr"
    write_synthetic_store(store, test_bundle, num_drives=2, seconds=4, seed=1, split="val", progress=False)
    ship(save_bundle(test_bundle, tmp_path / "bundle"), store, num_clips=2, root=tmp_path / "package")
    shipped, source = FolderClips(tmp_path / "package" / "clips"), StoreClips(store)
    assert (tmp_path / "package" / "bundle" / "openvica.json").is_file()
    assert sorted(shipped.clip_ids) == sorted(source.clip_ids)
    for clip_id in source.clip_ids:
        want, got = source.window(clip_id, 0, SEED_CLIP_FRAMES), shipped.window(clip_id, 0, SEED_CLIP_FRAMES)
        assert np.abs(got.frames.astype(int) - want.frames).mean() < 3  # JPEG quality 95
        np.testing.assert_allclose(got.speed_mps, want.speed_mps, atol=1e-4)
        np.testing.assert_allclose(got.yaw_rate_rps, want.yaw_rate_rps, atol=1e-4)
        assert sorted(got.labels) == sorted(want.labels) and any(got.labels.values())
        for frame, boxes in want.labels.items():
            assert [b["box2d"] for b in got.labels[frame]] == [b["box2d"] for b in boxes]
        assert shipped.info(clip_id).attributes == source.info(clip_id).attributes
