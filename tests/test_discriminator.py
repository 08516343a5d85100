"""The patch discriminators of eq. (6)-(8): "our D" gives 64 logits per frame, D-3D one set per frame of a window."""

import pytest
import torch
import torch.nn.functional as F

from openvica_sim.models.discriminator import DiscriminatorConfig, PatchDiscriminator
from openvica_sim.models.layers import temporal_conv


def test_our_d_classifies_64_patches_of_a_256_frame():
    d = PatchDiscriminator(DiscriminatorConfig(channels=4))
    assert d(torch.randn(2, 3, 256, 256)).shape == (2, 1, 8, 8)
    assert DiscriminatorConfig().num_downsamplings == 5


def test_d_3d_judges_every_frame_of_a_window_jointly():
    d = PatchDiscriminator(DiscriminatorConfig(channels=4, temporal_kernel_size=3))
    clip = torch.randn(1, 3, 3, 256, 256)
    logits = d(clip)
    assert logits.shape == (1, 1, 3, 8, 8)
    changed = clip.clone()
    changed[:, :, 2] = 0  # the last frame changes the first frame's logits: the frames are judged together
    assert not torch.allclose(d(changed)[:, :, 0], logits[:, :, 0])


def test_wrong_shapes_and_patch_counts_are_refused():
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\) with H = W = 256"):
        PatchDiscriminator(DiscriminatorConfig(channels=4))(torch.randn(1, 3, 128, 128))
    with pytest.raises(ValueError, match="patches=60 must be a square"):
        DiscriminatorConfig(patches=60)


def test_temporal_conv_is_conv3d_with_replicated_edge_frames():
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 5, 4, 12, 12), torch.randn(6, 5, 3, 4, 4), torch.randn(6)
    expected = F.conv3d(F.pad(x, (0, 0, 0, 0, 1, 1), mode="replicate"), w, b, (1, 2, 2), (0, 1, 1))
    torch.testing.assert_close(temporal_conv(x, w, b, (2, 2), (1, 1)), expected, rtol=1e-4, atol=1e-4)
