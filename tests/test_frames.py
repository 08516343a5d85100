"""Frame preprocessing: the paper's 0.5x bilinear downscale, centre 256 crop and [-1, 1] range (III-C a)."""

import numpy as np
import pytest
import torch

from openvica_sim.frames import center_crop, postprocess, preprocess

# float32 arithmetic on values v / 127.5 - 1: errors are around 1e-7, far below one grey level (1 / 127.5)
ATOL = 1e-6


def random_frames(*shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, size=(*shape, 3), dtype=np.uint8)


def test_bdd100k_frame_becomes_the_centre_crop_of_its_half_size_version():
    frame = random_frames(720, 1280)
    out = preprocess(frame)
    assert out.shape == (3, 256, 256) and out.dtype == torch.float32
    # bilinear, align_corners=False, at exactly 0.5: output pixel (i, j) is the mean of input block
    # [2i:2i+2, 2j:2j+2]; the 640x360 image's centre crop starts at row (360-256)//2 = 52, column 192
    half = frame.astype(np.float64).reshape(360, 2, 640, 2, 3).mean(axis=(1, 3))
    expected = half[52:308, 192:448] / 127.5 - 1
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), expected, atol=ATOL)


def test_centre_pixel_of_a_horizontal_ramp_is_the_mean_of_its_two_source_columns():
    ramp = (np.arange(1280) // 5).astype(np.uint8)  # column x holds x // 5, 0..255
    frame = np.broadcast_to(ramp[None, :, None], (720, 1280, 3)).copy()
    out = preprocess(frame)
    # crop column 128 is column 192 + 128 = 320 of the half-size image, the mean of input columns 640
    # and 641: (128 + 128) / 2 = 128; crop column 0 is input columns 384, 385: (76 + 77) / 2 = 76.5
    assert out[0, 100, 128].item() == pytest.approx(128 / 127.5 - 1, abs=ATOL)
    assert out[0, 100, 0].item() == pytest.approx(76.5 / 127.5 - 1, abs=ATOL)


def test_values_0_and_255_map_to_minus_one_and_one():
    frame = np.zeros((256, 256, 3), np.uint8)
    frame[:, 128:] = 255
    out = preprocess(frame)
    assert out.min().item() == -1.0 and out.max().item() == 1.0
    assert out[:, :, :128].eq(-1).all() and out[:, :, 128:].eq(1).all()


def test_postprocess_of_preprocess_returns_a_256_frame_exactly():
    frame = random_frames(256, 256)
    np.testing.assert_array_equal(postprocess(preprocess(frame)), frame)


def test_postprocess_clamps_model_outputs_beyond_the_unit_range():
    frames = torch.tensor([-1.7, -1.0, 0.0, 1.0, 1.3]).view(5, 1, 1).expand(5, 3, 1).reshape(1, 5, 3, 1, 1)
    out = postprocess(frames)
    assert out.shape == (1, 5, 1, 1, 3) and out.dtype == np.uint8
    assert out[0, :, 0, 0, 0].tolist() == [0, 0, 128, 255, 255]  # 127.5 rounds half to even: 128


def test_leading_batch_dimensions_are_kept_and_each_frame_is_processed_alone():
    clips = random_frames(2, 3, 360, 640)  # (B, T, H, W, 3)
    out = preprocess(clips)
    assert out.shape == (2, 3, 3, 256, 256)
    assert preprocess(clips[1]).shape == (3, 3, 256, 256)  # (N, H, W, 3)
    torch.testing.assert_close(out[1, 2], preprocess(clips[1, 2]), rtol=0, atol=0)


def test_a_torch_tensor_gives_the_same_result_as_a_numpy_array():
    frame = random_frames(720, 1280)
    torch.testing.assert_close(preprocess(torch.from_numpy(frame)), preprocess(frame), rtol=0, atol=0)


def test_a_1920x1080_frame_is_scaled_to_640x360_before_cropping():
    frame = random_frames(1080, 1920)
    out = preprocess(frame)
    # at 1/3, bilinear with align_corners=False samples input (3i + 1, 3j + 1) exactly, no blending
    expected = frame[3 * 52 + 1:3 * 308:3, 3 * 192 + 1:3 * 448:3] / 127.5 - 1
    np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), expected, atol=ATOL)


def test_a_portrait_frame_is_handled_like_the_transposed_landscape_frame():
    landscape = random_frames(720, 1280)
    portrait = np.ascontiguousarray(landscape.transpose(1, 0, 2))  # 720 wide, 1280 high
    out = preprocess(portrait)
    assert out.shape == (3, 256, 256)
    torch.testing.assert_close(out, preprocess(landscape).transpose(-1, -2), rtol=0, atol=ATOL)


def test_short_side_none_crops_the_centre_without_scaling():
    frame = random_frames(300, 400)
    out = preprocess(frame, short_side=None)
    np.testing.assert_array_equal(postprocess(out), frame[22:278, 72:328])


def test_center_crop_rounds_offsets_down():
    x = torch.arange(5 * 6).view(1, 5, 6)
    assert center_crop(x, 2).tolist() == [[[8, 9], [14, 15]]]  # rows 1-2, columns 2-3


def test_float_frames_are_rejected_naming_the_dtype_and_the_conversion():
    with pytest.raises(TypeError, match=r"expected uint8 RGB frames \(H, W, 3\).*got float32.*convert with"):
        preprocess(np.zeros((720, 1280, 3), np.float32))


def test_a_pil_image_is_rejected_with_the_conversion_to_use():
    class FakeImage:
        def convert(self, mode):
            return self

    with pytest.raises(TypeError, match=r"got FakeImage.*convert\('RGB'\)"):
        preprocess(FakeImage())


def test_rgba_frames_are_rejected_suggesting_to_drop_alpha():
    with pytest.raises(ValueError, match=r"RGBA.*frames\[\.\.\., :3\]"):
        preprocess(np.zeros((720, 1280, 4), np.uint8))


def test_grayscale_frames_are_rejected_suggesting_to_repeat_the_channel():
    with pytest.raises(ValueError, match="grayscale"):
        preprocess(np.zeros((720, 1280), np.uint8))
    with pytest.raises(ValueError, match="grayscale"):
        preprocess(np.zeros((720, 1280, 1), np.uint8))


def test_channels_first_frames_are_rejected_suggesting_to_move_the_channels():
    with pytest.raises(ValueError, match="channels first"):
        preprocess(np.zeros((3, 720, 1280), np.uint8))


def test_a_frame_smaller_than_the_crop_is_rejected_naming_its_size():
    with pytest.raises(ValueError, match=r"200x100 frame.*smaller than the 256x256 crop"):
        preprocess(np.zeros((100, 200, 3), np.uint8), short_side=None)


def test_a_short_side_below_the_crop_size_is_rejected():
    with pytest.raises(ValueError, match="short_side=200 is smaller than the crop size=256"):
        preprocess(np.zeros((720, 1280, 3), np.uint8), short_side=200)


def test_postprocess_rejects_channels_last_input():
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, H, W\)"):
        postprocess(torch.zeros(256, 256, 3))


def test_the_crop_view_maps_camera_pixels_to_the_model_view_and_back():
    from openvica_sim.frames import CropView, boxes_to_model_view

    view = CropView.of(720, 1280)  # the paper's 0.5 downscale to 640x360, then the centre 256 crop
    assert (view.scale_x, view.scale_y, view.left, view.top) == (0.5, 0.5, 192, 52)
    camera_box = {"x1": 500.0, "y1": 300.0, "x2": 700.0, "y2": 420.0}
    model_box = view.to_model(camera_box)
    assert model_box == {"x1": 58.0, "y1": 98.0, "x2": 158.0, "y2": 158.0}
    assert boxes_to_model_view([{"box2d": camera_box}], 720, 1280)[0]["box2d"] == model_box
    assert view.to_camera(model_box) == camera_box
    assert CropView.from_dict(view.as_dict()) == view
    assert CropView.of(256, 256).to_camera(model_box) == model_box  # a frame already at the view: the identity
