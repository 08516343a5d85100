"""The frozen DINOv2 teacher of TOK fine-tuning's SSL loss (ViT-S/14 in the paper), read from local folders only."""

import json
import warnings

import numpy as np
import pytest
import torch
from transformers import BitImageProcessorPil, Dinov2Model

from openvica_sim.models.teacher import TINY, create_random_dinov2, load_dinov2, teacher_features


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dinov2")
    create_random_dinov2(folder, seed=0)
    return folder


@pytest.fixture(scope="module")
def teacher(teacher_folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TINY is not ViT-S/14; the warning has its own test
        return load_dinov2(teacher_folder)


def test_saved_random_teacher_loads_frozen_in_eval_mode_with_its_weights(teacher):
    assert type(teacher) is Dinov2Model
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    expected = create_random_dinov2(seed=0).state_dict()
    assert teacher.state_dict().keys() == expected.keys()
    assert all(torch.equal(v, expected[k]) for k, v in teacher.state_dict().items())


def test_teacher_that_is_not_vit_s14_loads_with_a_warning(teacher_folder):
    with pytest.warns(UserWarning, match=r"'hidden_size': 48.*the paper's is ViT-S/14"):
        load_dinov2(teacher_folder)


def test_vit_s14_teacher_loads_without_the_warning(tmp_path):
    create_random_dinov2(tmp_path / "vit-s14", hidden_size=384, num_attention_heads=6, num_hidden_layers=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_dinov2(tmp_path / "vit-s14")
    assert not [w for w in caught if "ViT-S/14" in str(w.message)]


def test_features_have_one_row_per_patch_of_the_nearest_grid(teacher):
    frames = torch.rand(2, 3, 64, 96) * 2 - 1  # 64 / 14 = 4.6 -> 5 rows, 96 / 14 = 6.9 -> 7 columns
    assert teacher_features(teacher, frames).shape == (2, 5 * 7, TINY["hidden_size"])


def test_features_follow_a_given_grid(teacher):
    frames = torch.rand(2, 3, 64, 64) * 2 - 1
    assert teacher_features(teacher, frames, grid=(3, 4)).shape == (2, 3 * 4, TINY["hidden_size"])


def test_features_equal_dinov2_on_its_own_preprocessing_when_no_resize_is_needed(teacher):
    images = np.random.default_rng(0).integers(0, 256, (2, 28, 42, 3), dtype=np.uint8)  # a 2 x 3 patch grid
    # facebook/dinov2-small's preprocessor_config.json without its resize and centre crop
    processor = BitImageProcessorPil(do_resize=False, do_center_crop=False, image_mean=[0.485, 0.456, 0.406],
                                     image_std=[0.229, 0.224, 0.225])
    pixel_values = processor(images=list(images), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        expected = teacher(pixel_values=pixel_values).last_hidden_state[:, 1:]  # patch tokens, CLS dropped
    frames = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
    # 1e-5: the processor rescales uint8 by 1/255, we map [-1, 1] back to [0, 1]; float32 rounding differs
    torch.testing.assert_close(teacher_features(teacher, frames), expected, atol=1e-5, rtol=1e-4)


def test_features_are_targets_without_gradients(teacher):
    frames = (torch.rand(1, 3, 28, 28) * 2 - 1).requires_grad_()
    assert not teacher_features(teacher, frames).requires_grad


def test_frames_of_the_wrong_shape_are_a_clear_error(teacher):
    with pytest.raises(ValueError, match=r"frames \(B, 3, H, W\).*got \(3, 28, 28\)"):
        teacher_features(teacher, torch.zeros(3, 28, 28))


def test_missing_folder_is_a_file_not_found_error_with_the_download_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="no DINOv2 folder at .*hf download facebook/dinov2-small"):
        load_dinov2(tmp_path / "nowhere")


def test_folder_without_config_is_a_file_not_found_error(tmp_path):
    (tmp_path / "dinov2").mkdir()
    with pytest.raises(FileNotFoundError, match="has no config.json"):
        load_dinov2(tmp_path / "dinov2")


def test_folder_of_another_model_type_is_refused_and_named(tmp_path):
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(ValueError, match="holds a 'vit' model, but the teacher must be a 'dinov2'"):
        load_dinov2(tmp_path / "vit")


def test_folder_without_safetensors_weights_is_a_file_not_found_error(teacher_folder, tmp_path):
    (tmp_path / "dinov2").mkdir()
    (tmp_path / "dinov2" / "config.json").write_text((teacher_folder / "config.json").read_text())
    with pytest.raises(FileNotFoundError, match="has no .safetensors weights"):
        load_dinov2(tmp_path / "dinov2")
