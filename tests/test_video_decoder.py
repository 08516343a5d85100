"""VDEC: central inflation from DEC, edge replication, files, shape errors (paper III-A c)."""

import json

import pytest
import torch
from torch import nn

from openvica_sim.models.tokenizer import create_tokenizer
from openvica_sim.models.video_decoder import VideoDecoder, VideoDecoderConfig, window_indices

# The "test" preset at 64 x 64 pixels (4 x 4 tokens) keeps every forward pass in milliseconds on CPU.
IMAGE_SIZE = 64
GRID = 4


def _tokenizer(**overrides):
    return create_tokenizer("test", seed=0, image_size=IMAGE_SIZE, **overrides)


def _distinct_window(codebook_size: int, batch: int = 2) -> torch.Tensor:
    """Tokens (B, 3, h, w) whose three frames all differ, so equality cannot come from identical neighbours."""
    torch.manual_seed(1)
    tokens = torch.randint(0, codebook_size, (batch, 3, GRID, GRID))
    assert not torch.equal(tokens[:, 0], tokens[:, 1]) and not torch.equal(tokens[:, 1], tokens[:, 2])
    return tokens


def test_inflated_video_decoder_equals_image_decoder_frame_by_frame_at_init():
    tokenizer = _tokenizer()
    video_decoder = VideoDecoder.from_tokenizer(tokenizer)
    tokens = _distinct_window(tokenizer.config.codebook_size)
    with torch.no_grad():
        frame = video_decoder(video_decoder.embed(tokens))
        expected = tokenizer.decode_latents(tokenizer.embed(tokens[:, 1]))
    # zero temporal slices add exact zeros and GroupNorm is per frame; 1e-5 leaves room for float32 rounding
    torch.testing.assert_close(frame, expected, atol=1e-5, rtol=1e-5)


def test_decode_video_equals_image_decoder_on_every_frame_at_init():
    tokenizer = _tokenizer()
    video_decoder = VideoDecoder.from_tokenizer(tokenizer)
    torch.manual_seed(2)
    tokens = torch.randint(0, tokenizer.config.codebook_size, (2, 5, GRID, GRID))  # (B, T, h, w)
    frames = video_decoder.decode_video(tokens)  # (B, T, 3, H, W)
    expected = torch.stack([tokenizer.decode(tokens[:, t]) for t in range(5)], dim=1)
    assert frames.shape == (2, 5, 3, IMAGE_SIZE, IMAGE_SIZE)
    torch.testing.assert_close(frames, expected, atol=1e-5, rtol=1e-5)


def test_inflated_video_decoder_with_mid_block_attention_equals_image_decoder_at_init():
    tokenizer = _tokenizer(mid_block_add_attention=True)
    video_decoder = VideoDecoder.from_tokenizer(tokenizer)
    tokens = _distinct_window(tokenizer.config.codebook_size)
    with torch.no_grad():
        frame = video_decoder(video_decoder.embed(tokens))
        expected = tokenizer.decode_latents(tokenizer.embed(tokens[:, 1]))
    # attention matches diffusers' to ~2e-7; the up blocks amplify that to ~1e-5 on outputs of size ~3
    torch.testing.assert_close(frame, expected, atol=1e-4, rtol=1e-4)


def test_video_decoder_owns_a_copy_of_the_codebook():
    tokenizer = _tokenizer()
    video_decoder = VideoDecoder.from_tokenizer(tokenizer)
    torch.testing.assert_close(video_decoder.codebook, tokenizer.codebook, atol=0, rtol=0)
    assert video_decoder.codebook.data_ptr() != tokenizer.codebook.data_ptr()
    assert "codebook" in video_decoder.state_dict()
    assert all(p is not video_decoder.codebook for p in video_decoder.parameters())  # frozen, like TOK


def test_edge_frames_are_replicated():
    assert window_indices(4).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert window_indices(1).tolist() == [[0, 0, 0]]
    assert window_indices(3, window=5).tolist() == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 2], [0, 1, 2, 2, 2]]


def test_decode_video_decodes_each_frame_from_its_replicated_window():
    tokenizer = _tokenizer()
    video_decoder = VideoDecoder.from_tokenizer(tokenizer)
    _perturb_temporal_slice(video_decoder, slice_index=2)  # frame t+1 now matters, so the windows show
    torch.manual_seed(3)
    tokens = torch.randint(0, tokenizer.config.codebook_size, (1, 4, GRID, GRID))
    frames = video_decoder.decode_video(tokens, max_windows=3)  # chunking must not change the result
    last = video_decoder.decode_window(tokens[:, [2, 3, 3]])
    first = video_decoder.decode_window(tokens[:, [0, 0, 1]])
    # batch 3 and batch 1 sum the convs in different orders: differences ~2e-5 on outputs of size ~3
    torch.testing.assert_close(frames[:, -1], last, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(frames[:, 0], first, atol=1e-4, rtol=1e-4)
    unreplicated = video_decoder.decode_window(tokens[:, [0, 1, 2]])  # what frame 1 sees: far from frame 0
    assert (frames[:, 0] - unreplicated).abs().max() > 1e-2


def _perturb_temporal_slice(video_decoder: VideoDecoder, slice_index: int) -> None:
    """Stand-in for fine-tuning: give conv_in a nonzero kernel for one off-centre frame."""
    torch.manual_seed(4)
    with torch.no_grad():
        weight = video_decoder.decoder.conv_in.weight  # (out, d, 3, 3, 3)
        weight[:, :, slice_index] = 0.1 * torch.randn_like(weight[:, :, slice_index])


def test_temporal_kernels_matter_after_training():
    tokenizer = _tokenizer()
    video_decoder = VideoDecoder.from_tokenizer(tokenizer)
    tokens = _distinct_window(tokenizer.config.codebook_size)
    other_past = tokens.clone()
    other_past[:, 0] = (tokens[:, 0] + 1) % tokenizer.config.codebook_size  # change frame t-1 only
    torch.testing.assert_close(video_decoder.decode_window(tokens), video_decoder.decode_window(other_past))

    _perturb_temporal_slice(video_decoder, slice_index=0)
    change = (video_decoder.decode_window(tokens) - video_decoder.decode_window(other_past)).abs().max()
    assert change > 1e-3


def test_video_decoder_round_trips_through_save_and_load(tmp_path):
    tokenizer = _tokenizer(mid_block_add_attention=True)
    video_decoder = VideoDecoder.from_tokenizer(tokenizer)
    _perturb_temporal_slice(video_decoder, slice_index=0)
    video_decoder.save_pretrained(tmp_path / "video_decoder")
    assert sorted(p.name for p in (tmp_path / "video_decoder").iterdir()) == ["config.json", "model.safetensors"]

    loaded = VideoDecoder.from_pretrained(tmp_path / "video_decoder")
    assert loaded.config == video_decoder.config
    tokens = _distinct_window(tokenizer.config.codebook_size)
    torch.testing.assert_close(loaded.decode_window(tokens), video_decoder.decode_window(tokens), atol=0, rtol=0)


def test_config_round_trips_through_json():
    config = VideoDecoderConfig(block_out_channels=(8, 16), latent_channels=4, codebook_size=32,
                                norm_num_groups=4, image_size=32, window=5)
    assert VideoDecoderConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_from_pretrained_names_the_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        VideoDecoder.from_pretrained(tmp_path)


@pytest.mark.parametrize("bad", [dict(window=2), dict(temporal_kernel_size=0), dict(norm_num_groups=7)])
def test_config_rejects_bad_values_and_names_them(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        VideoDecoderConfig(**bad)


def test_bad_shapes_raise_with_clear_message():
    video_decoder = VideoDecoder.from_tokenizer(_tokenizer())
    d = video_decoder.config.latent_channels
    with pytest.raises(ValueError, match=r"\(B, 8, 3, 4, 4\).*got \(1, 8, 2, 4, 4\)"):
        video_decoder(torch.zeros(1, d, 2, GRID, GRID))  # two frames, not a window of three
    with pytest.raises(ValueError, match=r"\(B, 8, 3, 4, 4\).*got \(1, 3, 4, 4\)"):
        video_decoder(torch.zeros(1, 3, GRID, GRID))  # a 2D latent
    with pytest.raises(ValueError, match=r"\(B, 3, 4, 4\).*got \(1, 4, 4, 4\)"):
        video_decoder.decode_window(torch.zeros(1, 4, GRID, GRID, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, T, 4, 4\).*got \(5, 4, 4\)"):
        video_decoder.decode_video(torch.zeros(5, GRID, GRID, dtype=torch.long))  # batch axis missing
    with pytest.raises(TypeError, match="integer"):
        video_decoder.decode_window(torch.zeros(1, 3, GRID, GRID))
    with pytest.raises(ValueError, match="num_frames=0"):
        window_indices(0)


def test_video_decoder_of_amused_256_has_three_times_the_image_decoders_3x3_conv_weights():
    with torch.device("meta"):  # shapes only: no memory, no init, well under a second
        tokenizer = create_tokenizer("amused-256")
        video_decoder = VideoDecoder.from_tokenizer(tokenizer)
    dec_modules = [tokenizer.vqmodel.post_quant_conv, *tokenizer.vqmodel.decoder.modules()]
    dec_3x3 = sum(m.weight.numel() for m in dec_modules if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3))
    vdec_3x3x3 = sum(m.weight.numel() for m in video_decoder.modules()
                     if isinstance(m, nn.Conv3d) and m.kernel_size == (3, 3, 3))
    dec_total = sum(p.numel() for p in tokenizer.decoder_parameters())
    vdec_total = sum(p.numel() for p in video_decoder.parameters())

    assert vdec_3x3x3 == 3 * dec_3x3
    assert vdec_total == dec_total + 2 * dec_3x3  # norms, biases, 1x1 convs, attention: unchanged
    assert round(dec_total / 1e6, 1) == 87.0  # the paper's DEC
    assert 2.9 < vdec_total / dec_total < 3.0  # 260M: the 3x3 convs are almost all of DEC


@pytest.mark.parametrize("temporal_up_blocks", [0, 1])
def test_video_decoder_with_coarse_temporal_stages_equals_image_decoder_at_init(temporal_up_blocks):
    tokenizer = _tokenizer()
    video_decoder = VideoDecoder.from_tokenizer(tokenizer, temporal_up_blocks=temporal_up_blocks)
    tokens = _distinct_window(tokenizer.config.codebook_size)
    with torch.no_grad():
        frame = video_decoder(video_decoder.embed(tokens))
        expected = tokenizer.decode_latents(tokenizer.embed(tokens[:, 1]))
    torch.testing.assert_close(frame, expected, atol=1e-5, rtol=1e-5)
    fine = video_decoder.decoder.up_blocks[temporal_up_blocks].resnets[0].conv1
    assert fine.weight.shape[2] == 1 and video_decoder.decoder.conv_out.weight.shape[2] == 1
    assert video_decoder.decoder.conv_in.weight.shape[2] == 3


def test_coarse_temporal_video_decoder_draws_the_centre_frame_as_its_training_forward_does():
    """Inference runs the per-frame fine stages on the centre frame only; eq. (8) decodes all three frames."""
    tokenizer = _tokenizer()
    video_decoder = VideoDecoder.from_tokenizer(tokenizer, temporal_up_blocks=1)
    _perturb_temporal_slice(video_decoder, slice_index=0)
    tokens = _distinct_window(tokenizer.config.codebook_size)
    with torch.no_grad():
        z = video_decoder.embed(tokens)
        all_frames = video_decoder.decode_latents(z)  # (B, 3, T=3, H, W)
        centre = video_decoder(z)
    assert all_frames.shape[2] == 3
    torch.testing.assert_close(centre, all_frames[:, :, 1], atol=1e-5, rtol=1e-5)
    other_past = tokens.clone()
    other_past[:, 0] = (tokens[:, 0] + 1) % tokenizer.config.codebook_size
    assert (video_decoder.decode_window(tokens) - video_decoder.decode_window(other_past)).abs().max() > 1e-3


def test_config_rejects_more_temporal_up_blocks_than_the_decoder_has():
    with pytest.raises(ValueError, match="temporal_up_blocks=6"):
        VideoDecoderConfig(temporal_up_blocks=6)
