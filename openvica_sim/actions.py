"""Ego commands as world-model tokens (docs/design.md "Ego conditioning").

Two tokens per frame, before the frame's codes: speed in 64 uniform bins over 0..40 m/s, then yaw
rate in 64 mu-law bins (mu = 16) over -0.6..0.6 rad/s, plus an "unknown" id for each (missing ego
data, and the 10 % action dropout in training). They live in the world model's spare vision ids,
right after end-of-frame and end-of-vision, so no embedding or head is resized:

    vision K + 2 + b     speed bin b          vision K + 66 + b    yaw bin b
    vision K + 130       speed unknown        vision K + 131       yaw unknown

The env's action is normalised to [-1, 1]^2: speed_mps = (a0 + 1) / 2 * 40, yaw_rate_rps = a1 * 0.6.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ActionCoding:
    codebook_size: int  # K: the first ego id is vision K + 2
    num_bins: int = 64
    max_speed_mps: float = 40.0
    max_yaw_rate_rps: float = 0.6
    yaw_mu: float = 16.0  # mu-law: ~0.004 rad/s bins near zero, ~0.05 at the ends (1 Hz GPS resolves no finer)

    @property
    def first_vision_id(self) -> int:
        return self.codebook_size + 2

    @property
    def num_ids(self) -> int:  # 64 speed + 64 yaw + 2 unknown
        return 2 * self.num_bins + 2

    @property
    def speed_unknown(self) -> int:
        return self.first_vision_id + 2 * self.num_bins

    @property
    def yaw_unknown(self) -> int:
        return self.speed_unknown + 1

    def to_dict(self) -> dict:
        return {**asdict(self), "layout": "speed, yaw before each frame's codes", "first_vision_id": self.first_vision_id,
                "action_space": "Box([-1, 1]^2): speed_mps = (a0 + 1) / 2 * max_speed_mps, yaw_rate_rps = a1 * max_yaw_rate_rps"}

    # ---- physical units <-> normalised actions --------------------------------------------------
    def from_normalized(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Env actions (..., 2) in [-1, 1] -> (speed_mps, yaw_rate_rps)."""
        a = np.asarray(actions, dtype=np.float64)
        return (a[..., 0] + 1) / 2 * self.max_speed_mps, a[..., 1] * self.max_yaw_rate_rps

    def to_normalized(self, speed_mps, yaw_rate_rps) -> np.ndarray:
        speed = np.clip(np.asarray(speed_mps, np.float64) / self.max_speed_mps * 2 - 1, -1, 1)
        yaw = np.clip(np.asarray(yaw_rate_rps, np.float64) / self.max_yaw_rate_rps, -1, 1)
        return np.stack([speed, yaw], -1).astype(np.float32)

    # ---- physical units -> vision ids ------------------------------------------------------------
    def speed_bin(self, speed_mps) -> np.ndarray:
        x = np.clip(np.asarray(speed_mps, np.float64) / self.max_speed_mps, 0.0, 1.0)
        return np.minimum((x * self.num_bins).astype(np.int64), self.num_bins - 1)

    def yaw_bin(self, yaw_rate_rps) -> np.ndarray:
        x = np.clip(np.asarray(yaw_rate_rps, np.float64) / self.max_yaw_rate_rps, -1.0, 1.0)
        y = np.sign(x) * np.log1p(self.yaw_mu * np.abs(x)) / math.log1p(self.yaw_mu)  # mu-law, in [-1, 1]
        return np.minimum(((y + 1) / 2 * self.num_bins).astype(np.int64), self.num_bins - 1)

    def vision_ids(self, speed_mps, yaw_rate_rps) -> np.ndarray:
        """Vision ids (..., 2) of ego commands; NaN speed or yaw gives the matching "unknown" id."""
        speed = np.asarray(speed_mps, np.float64)
        yaw = np.asarray(yaw_rate_rps, np.float64)
        s = np.where(np.isnan(speed), self.speed_unknown, self.first_vision_id + self.speed_bin(np.nan_to_num(speed)))
        y = np.where(np.isnan(yaw), self.yaw_unknown,
                     self.first_vision_id + self.num_bins + self.yaw_bin(np.nan_to_num(yaw)))
        return np.stack([s, y], -1).astype(np.int64)

    def unknown_ids(self, shape=()) -> np.ndarray:
        return np.broadcast_to(np.array([self.speed_unknown, self.yaw_unknown], np.int64), (*shape, 2)).copy()

    def bin_edges(self) -> dict[str, list[float]]:
        """Bin edges in physical units, recorded in openvica.json."""
        u = np.linspace(-1, 1, self.num_bins + 1)
        yaw = np.sign(u) * np.expm1(np.abs(u) * math.log1p(self.yaw_mu)) / self.yaw_mu * self.max_yaw_rate_rps
        return {"speed_mps": np.linspace(0, self.max_speed_mps, self.num_bins + 1).round(6).tolist(),
                "yaw_rate_rps": yaw.round(6).tolist()}
