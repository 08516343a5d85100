"""Ego-motion probe: the ego speed and yaw rate between consecutive frames, estimated from the frames alone.

It measures whether generated video follows its ego commands (`metrics.ego`, `openvica eval video --ego-probe`):
trained by `training/probe.py` on real frames of a token store with their per-frame ego motion as labels, it reads
what a generated clip's motion is, whatever the world model was told. The label of frame t is the store's ego motion
over (t-1, t] (docs/design.md "Ego conditioning"), estimated from frames t-1 and t.

    frames t-1, t --area downscale to S--> [x_{t-1}, x_t, x_t - x_{t-1}] (9 channels) --strided CNN--> mean --> 2

Outputs are standardised (the training labels' mean and std, stored in the config) and mapped back to m/s and
rad/s by `estimate`. Dimensions: B clips, T frames, S = `image_size`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .pretrained import SavedModel



@dataclass(frozen=True)
class EgoProbeConfig:
    image_size: int = 128  # S: 256x256 model frames are area-downscaled 2x; lane lines and poles stay visible
    widths: tuple[int, ...] = (32, 48, 64, 96, 128)  # one stride-2 stage each: 128 -> 4 pixels
    fps: float = 4.0  # the frame step its labels are over (the training store's fps)
    speed_mean_mps: float = 0.0  # label standardisation, from the training store
    speed_std_mps: float = 1.0
    yaw_mean_rps: float = 0.0
    yaw_std_rps: float = 1.0

    def __post_init__(self):
        if self.image_size < 2 ** len(self.widths):
            raise ValueError(f"image_size={self.image_size} is too small for {len(self.widths)} stride-2 stages")
        if self.speed_std_mps <= 0 or self.yaw_std_rps <= 0:
            raise ValueError(f"label std must be positive, got speed {self.speed_std_mps}, yaw {self.yaw_std_rps}")

    @property
    def label_mean(self) -> tuple[float, float]:
        return self.speed_mean_mps, self.yaw_mean_rps

    @property
    def label_std(self) -> tuple[float, float]:
        return self.speed_std_mps, self.yaw_std_rps


class EgoProbe(SavedModel, nn.Module):
    """A small CNN on a pair of frames: (B, 2, 3, H, W) in [-1, 1] -> standardised (speed, yaw rate) (B, 2).
    Saved as a folder (`models/pretrained.py`): config.json, model.safetensors, accuracy.json."""

    KIND, NAME, CONFIG = "openvica-ego-probe", "ego-motion probe", EgoProbeConfig
    HOW_TO_GET = ("train one with `python training/probe.py data.store=STORE run.dir=DIR` (it writes DIR/ego_probe/), "
                  "or use the embedded default's (openvica_sim/embedded/ego_probe/), and pass it with --ego-probe")

    def __init__(self, config: EgoProbeConfig):
        super().__init__()
        self.config = config
        layers, channels = [], 9
        for width in config.widths:
            layers += [nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.GroupNorm(min(8, width), width),
                       nn.SiLU(), nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(min(8, width), width),
                       nn.SiLU()]
            channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(channels, 2)
        self.register_buffer("mean", torch.tensor(config.label_mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.tensor(config.label_std, dtype=torch.float32), persistent=False)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        """pairs (B, 2, 3, H, W) float in [-1, 1], frame t-1 then t -> standardised (speed, yaw rate) (B, 2)."""
        if pairs.ndim != 5 or pairs.shape[1:3] != (2, 3):
            raise ValueError(f"expected frame pairs (B, 2, 3, H, W), got {tuple(pairs.shape)}")
        B = pairs.shape[0]
        x = pairs.flatten(0, 1)
        if x.shape[-1] != self.config.image_size:
            x = F.interpolate(x, size=(self.config.image_size,) * 2, mode="area")
        previous, current = x.unflatten(0, (B, 2)).unbind(1)
        x = torch.cat([previous, current, current - previous], dim=1)  # the difference makes motion explicit
        return self.head(self.features(x).mean(dim=(-2, -1)))

    def to_physical(self, standardised: torch.Tensor) -> torch.Tensor:
        """(..., 2) standardised outputs -> (..., 2) speed in m/s and yaw rate in rad/s."""
        return standardised * self.std + self.mean

    def standardise(self, speed_mps: torch.Tensor, yaw_rate_rps: torch.Tensor) -> torch.Tensor:
        """Labels in m/s and rad/s -> (..., 2) standardised targets."""
        return (torch.stack([speed_mps, yaw_rate_rps], dim=-1) - self.mean) / self.std

    @torch.inference_mode()
    def estimate(self, frames: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Ego motion of clips of frames uint8 (B, T, H, W, 3) (any size: preprocessed as the tokenizer's input):
        (speed_mps (B, T - 1), yaw_rate_rps (B, T - 1)), entry t - 1 the motion over frames (t - 1, t]."""
        from openvica_sim.frames import preprocess

        frames = np.asarray(frames)
        if frames.ndim != 5 or frames.shape[1] < 2:
            raise ValueError(f"expected clips of at least 2 frames (B, T, H, W, 3), got {frames.shape}")
        B, T = frames.shape[:2]
        device = self.mean.device
        pairs = [(b, t) for b in range(B) for t in range(1, T)]
        out = torch.empty(len(pairs), 2)
        for i in range(0, len(pairs), batch_size):
            chunk = pairs[i:i + batch_size]
            x = torch.stack([preprocess(frames[b, t - 1:t + 1]) for b, t in chunk]).to(device)
            out[i:i + len(chunk)] = self.to_physical(self(x)).float().cpu()
        out = out.view(B, T - 1, 2).numpy().astype(np.float64)
        return out[..., 0], out[..., 1]

