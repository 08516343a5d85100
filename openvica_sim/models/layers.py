"""Layers shared by the 3D networks (VDEC, D-3D): a temporal conv computed with 2D kernels."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def temporal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding) -> torch.Tensor:
    """conv3d of x (B, C, T, H, W) with weight (O, C, kt, k, k), edge frames replicated in time, temporal stride 1,
    by conv2d: the kt frames around each output frame are stacked as kt * C input channels. -> (B, O, T, H', W')."""
    B, C, T, H, W = x.shape
    kt = weight.shape[2]
    if pad := kt // 2:
        x = F.pad(x, (0, 0, 0, 0, pad, pad), mode="replicate")
    frames = torch.cat([x[:, :, dt:dt + T] for dt in range(kt)], dim=1) if kt > 1 else x  # (B, kt*C, T, H, W)
    frames = frames.transpose(1, 2).reshape(B * T, kt * C, H, W)
    kernel = weight.transpose(1, 2).reshape(weight.shape[0], kt * C, *weight.shape[3:])  # channel index dt*C + c
    y = F.conv2d(frames, kernel, bias, stride, padding)
    return y.unflatten(0, (B, T)).transpose(1, 2)
