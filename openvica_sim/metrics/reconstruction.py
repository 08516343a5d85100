"""Reconstruction metrics: how near each generated frame is to its reference (paper IV-A "Metrics", Tables II-III).

Every function takes two uint8 arrays of frames, channels last, of one shape (N, H, W, 3) (or (..., H, W, 3), which
is flattened to N frames), and returns one value per frame, float64 (N,): the paper averages per image, so the
caller averages these. They run on torch tensors in chunks of `batch_size` frames on `device`.

- MSE: the mean squared error in uint8 units squared (0..65025) over the frame's pixels.
- PSNR (ref. [41]) in dB over the frame's pixels, peak 255. Identical frames give the cap 10 log10(255^2 / 1e-10)
  = 148.1 dB (the mean squared error is floored at 1e-10), not infinity, so averages stay finite.
- SSIM (ref. [42]) and MS-SSIM (ref. [43]) by torchmetrics with its defaults (Gaussian window 11, sigma 1.5; MS-SSIM
  with 5 scales and the standard betas, so frames must be larger than 160 pixels a side), in float32 on 0..255 with
  data range 255: the same values as on [0, 1] with range 1 (SSIM is scale-free), but the variances E[x^2] - E[x]^2
  of flat regions (sky, road) cancel less: identical synthetic frames score 1 - 2e-5 instead of 1 - 1e-4. float64
  would be exact and 60x slower on a CPU.
- LPIPS (ref. [44]) with a network from `networks.load_lpips`.
"""

from __future__ import annotations

import math

import numpy as np
import torch

PSNR_MSE_FLOOR = 1e-10
PSNR_MAX_DB = 10 * math.log10(255.0 ** 2 / PSNR_MSE_FLOOR)


def mse(generated: np.ndarray, reference: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Mean squared error of each frame (N,), in uint8 units squared."""
    return _per_frame(lambda a, b: (a.double() - b.double()).pow(2).mean(dim=(1, 2, 3)), generated, reference,
                      batch_size, "cpu", scale=None)


def psnr(generated: np.ndarray, reference: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """PSNR in dB of each frame (N,), capped at `PSNR_MAX_DB` for identical frames."""
    def one(a, b):
        mse = (a.double() - b.double()).pow(2).mean(dim=(1, 2, 3)).clamp_min(PSNR_MSE_FLOOR)
        return 10 * torch.log10(255.0 ** 2 / mse)

    return _per_frame(one, generated, reference, batch_size, "cpu", scale=None)


def ssim(generated: np.ndarray, reference: np.ndarray, batch_size: int = 32,
         device: str | torch.device = "cpu") -> np.ndarray:
    """SSIM of each frame (N,), in [-1, 1]; 1 (to 2e-5, module docstring) for identical frames."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    def one(a, b):
        return structural_similarity_index_measure(a, b, data_range=255.0, reduction="none")

    return _per_frame(one, generated, reference, batch_size, device, scale=None)


def ms_ssim(generated: np.ndarray, reference: np.ndarray, batch_size: int = 32,
            device: str | torch.device = "cpu") -> np.ndarray:
    """MS-SSIM of each frame (N,); 1 (to 2e-5) for identical frames. Frames must exceed 160 pixels a side."""
    from torchmetrics.functional.image import multiscale_structural_similarity_index_measure

    size = min(np.shape(generated)[-3:-1])
    if size <= 160:
        raise ValueError(f"MS-SSIM with 5 scales and an 11-pixel window needs frames larger than 160 pixels a "
                         f"side; got {size}")

    def one(a, b):
        return multiscale_structural_similarity_index_measure(a, b, data_range=255.0, reduction="none")

    return _per_frame(one, generated, reference, batch_size, device, scale=None)


def lpips(generated: np.ndarray, reference: np.ndarray, network, batch_size: int = 32) -> np.ndarray:
    """LPIPS distance of each frame (N,) under `network` (`networks.load_lpips`); 0 for identical frames."""
    device = network.shift.device

    def one(a, b):
        return network(a * 2 - 1, b * 2 - 1)

    return _per_frame(one, generated, reference, batch_size, device)


def _per_frame(fn, generated: np.ndarray, reference: np.ndarray, batch_size: int, device,
               scale: float | None = 255.0) -> np.ndarray:
    """fn over chunks of frames as float tensors (n, 3, H, W) (in [0, 1] with `scale`, else 0..255): (N,) float64."""
    from openvica_sim.frames import check_rgb_uint8

    generated, reference = check_rgb_uint8(generated, ndims=(3, 4, 5)), check_rgb_uint8(reference, ndims=(3, 4, 5))
    if generated.shape != reference.shape:
        raise ValueError(f"generated frames {tuple(generated.shape)} and reference frames {tuple(reference.shape)} "
                         f"differ in shape; pass one reference frame per generated frame")
    a = np.asarray(generated).reshape(-1, *generated.shape[-3:])
    b = np.asarray(reference).reshape(-1, *reference.shape[-3:])
    out = []
    with torch.inference_mode():
        for i in range(0, len(a), batch_size):
            x, y = (torch.from_numpy(np.ascontiguousarray(v[i:i + batch_size])).to(device).permute(0, 3, 1, 2).float()
                    for v in (a, b))
            if scale is not None:
                x, y = x / scale, y / scale
            out.append(fn(x, y).double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)
