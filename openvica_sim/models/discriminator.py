"""The patch discriminators: D of TOK+DEC fine-tuning (eq. 6, 7) and D-3D of VDEC fine-tuning (eq. 8).

"Our D" (paper III-C b, Table III) is Esser et al.'s PatchGAN discriminator with fewer, larger patches: 64 logits per
256 x 256 frame, an 8 x 8 grid, each with a receptive field far wider than the original's 70 pixels. It takes
`num_downsamplings` = log2(H / 8) = 5 stride-2 convs (4x4 kernels, widths doubling from `channels` up to 8x) and a
final 3x3 conv to one logit per patch. GroupNorm replaces Esser's BatchNorm: real and fake batches go through D
separately, and batch statistics would tell them apart (and couple DDP ranks).

D-3D is the same network inflated to 3D (paper ref. [33]): every conv gets a temporal kernel of 3 (replicate
padding in time, no temporal stride), so it judges the three frames of a VDEC window jointly and gives one logit per
patch and frame. It is trained from scratch, so no weights are inflated, only the architecture.

Dimensions: B batch, T frames, H x W pixels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from openvica_sim.models.layers import temporal_conv


@dataclass(frozen=True)
class DiscriminatorConfig:
    image_size: int = 256
    patches: int = 64  # "our D": 8 x 8 logits per frame
    channels: int = 64  # width of the first conv, as Esser et al.
    max_multiplier: int = 8
    temporal_kernel_size: int = 1  # 1: the 2D D; 3: D-3D for VDEC windows

    def __post_init__(self):
        side = math.isqrt(self.patches)
        if side * side != self.patches or self.image_size % side or not _power_of_two(self.image_size // side):
            raise ValueError(f"patches={self.patches} must be a square s*s with image_size={self.image_size} = s "
                             f"times a power of two (64 patches for 256 x 256 frames)")
        if self.temporal_kernel_size < 1 or self.temporal_kernel_size % 2 == 0:
            raise ValueError(f"temporal_kernel_size={self.temporal_kernel_size} must be odd and >= 1")

    @property
    def num_downsamplings(self) -> int:
        return int(math.log2(self.image_size // math.isqrt(self.patches)))

    def to_dict(self) -> dict:
        return asdict(self)


class PatchDiscriminator(nn.Module):
    """frames (B, 3, H, W) -> logits (B, 1, s, s), or with temporal_kernel_size > 1 clips (B, 3, T, H, W) ->
    logits (B, 1, T, s, s); s * s = config.patches. Positive means "real" (hinge loss, eq. 7)."""

    def __init__(self, config: DiscriminatorConfig | None = None):
        super().__init__()
        self.config = config = config or DiscriminatorConfig()
        kt, c = config.temporal_kernel_size, config.channels
        widths = [c * min(2 ** i, config.max_multiplier) for i in range(config.num_downsamplings)]
        layers, channels = [], 3
        for i, width in enumerate(widths):
            layers.append(_conv(channels, width, 4, stride=2, kt=kt))
            if i > 0:  # no norm after the first conv, as Esser et al.
                layers.append(_GroupNorm(min(32, width // 4), width, per_frame=kt > 1))
            layers.append(nn.LeakyReLU(0.2))
            channels = width
        layers.append(_conv(channels, 1, 3, stride=1, kt=kt))
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ndim, size = (5 if self.config.temporal_kernel_size > 1 else 4), self.config.image_size
        if x.ndim != ndim or x.shape[1] != 3 or x.shape[-2:] != (size, size):
            layout = "(B, 3, T, H, W)" if ndim == 5 else "(B, 3, H, W)"
            raise ValueError(f"discriminator expects {layout} with H = W = {size}, got {tuple(x.shape)}")
        return self.main(x)


class _Conv3d(nn.Conv3d):
    """(kt, k, k) conv: zero padding in space, edge frames replicated in time, stride in space only."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return temporal_conv(x, self.weight, self.bias, self.stride[1:], self.padding[1:])


def _conv(cin: int, cout: int, k: int, stride: int, kt: int) -> nn.Module:
    pad = (k - stride + 1) // 2  # k4 s2 p1 halves the size; k3 s1 p1 keeps it
    if kt == 1:
        return nn.Conv2d(cin, cout, k, stride, pad)
    return _Conv3d(cin, cout, (kt, k, k), (1, stride, stride), (0, pad, pad))


class _GroupNorm(nn.GroupNorm):
    """GroupNorm; for clips, statistics per frame (as VDEC's own norms)."""

    def __init__(self, groups: int, channels: int, per_frame: bool):
        super().__init__(max(1, groups), channels)
        self.per_frame = per_frame

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.per_frame:
            return super().forward(x)
        B, C, T, H, W = x.shape
        y = super().forward(x.transpose(1, 2).reshape(B * T, C, H, W))
        return y.unflatten(0, (B, T)).transpose(1, 2)


def _power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0
