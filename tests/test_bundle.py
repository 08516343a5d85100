"""The bundle: one folder = one simulator (docs/design.md "The simulator bundle")."""

import json

import pytest
import torch

from openvica_sim.bundle import META_NAME, Bundle, create_random_bundle, load_bundle, read_meta, save_bundle
from openvica_sim.models.tokenizer import create_tokenizer


def test_bundle_round_trips_with_identical_weights(tmp_path, test_bundle):
    save_bundle(test_bundle, tmp_path / "b")
    loaded = load_bundle(tmp_path / "b")
    for part in ("tokenizer", "world_model", "video_decoder"):
        a, b = getattr(test_bundle, part).state_dict(), getattr(loaded, part).state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), part
    assert loaded.prompt_ids == test_bundle.prompt_ids
    assert not list((tmp_path / "b").rglob("*.bin")) and not list((tmp_path / "b").rglob("*.pt")), "safetensors only"


def test_meta_records_layout_and_parts(tmp_path, test_bundle):
    save_bundle(test_bundle, tmp_path / "b")
    meta = json.loads((tmp_path / "b" / META_NAME).read_text())
    K, V = meta["codebook_size"], meta["text_vocab_size"]
    assert meta["special_ids"] == {"end_of_frame": V + K, "end_of_vision": V + K + 1}
    assert meta["frame_length"] == 257 and meta["fps"] == 4
    assert meta["parts"] == {"tokenizer": True, "world_model": True, "video_decoder": True, "world_model_adapter": False}


def test_action_conditioned_bundle_records_its_bins(tmp_path, action_bundle):
    save_bundle(action_bundle, tmp_path / "b")
    meta = read_meta(tmp_path / "b")
    assert meta["action_conditioned"] and meta["frame_length"] == 259
    assert len(meta["actions"]["bin_edges"]["speed_mps"]) == 65
    assert load_bundle(tmp_path / "b").action_conditioned


def test_missing_bundle_part_and_version_mismatch_are_clear_errors(tmp_path, test_bundle):
    with pytest.raises(FileNotFoundError, match="no simulator bundle"):
        load_bundle(tmp_path / "nowhere")
    save_bundle(test_bundle, tmp_path / "b")
    meta = json.loads((tmp_path / "b" / META_NAME).read_text())
    (tmp_path / "b" / META_NAME).write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ValueError, match="format_version=99.*upgrade"):
        load_bundle(tmp_path / "b")
    (tmp_path / "b" / META_NAME).write_text(json.dumps(meta))
    import shutil

    shutil.rmtree(tmp_path / "b" / "world_model")
    with pytest.raises(FileNotFoundError, match="no world_model/"):
        load_bundle(tmp_path / "b")


def test_bundle_rejects_codebook_size_mismatch_and_names_both_sizes(test_bundle):
    other = create_tokenizer("test", codebook_size=32)
    with pytest.raises(ValueError, match="codebook_size=32.*codebook_size=64"):
        Bundle(tokenizer=other, world_model=test_bundle.world_model, video_decoder=None,
               text_tokenizer=test_bundle.text_tokenizer)


def test_unknown_preset_suggests_the_closest(tmp_path):
    with pytest.raises(ValueError, match="did you mean 'tiny'"):
        create_random_bundle("tinny")


def test_saving_over_a_non_bundle_folder_is_refused(tmp_path, test_bundle):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.txt").write_text("precious")
    with pytest.raises(FileExistsError):
        save_bundle(test_bundle, tmp_path / "data")
    assert (tmp_path / "data" / "x.txt").read_text() == "precious"


def test_a_bundle_carries_its_decoding_defaults_and_the_simulator_takes_them(tmp_path, test_bundle):
    from openvica_sim.bundle import create_bundle
    from openvica_sim.simulator import Simulator

    parts = save_bundle(test_bundle, tmp_path / "parts")
    made = create_bundle(parts / "tokenizer", parts / "world_model", tmp_path / "b", context_frames=8, wavefront=2,
                         temperature=0.5)
    assert read_meta(made)["sampling"] == {"top_k": 64, "context_frames": 8, "wavefront": 2, "temperature": 0.5}
    sim = Simulator(load_bundle(made), decoder="tokenizer")
    assert sim.context_frames == 8 and sim.wavefront == 2 and sim.schedule.num_steps == 46 and sim.temperature == 0.5
    raster = Simulator(load_bundle(made), decoder="tokenizer", wavefront=16, context_frames=12, temperature=0)
    assert raster.schedule is None and raster.context_frames == 12  # 16 is raster order: the raster loop runs it
    assert raster.temperature == 0  # told beats the bundle's
    older = Simulator(load_bundle(parts), decoder="tokenizer")
    assert older.context_frames == 16 and older.temperature == 1.0  # older bundles: the paper's
