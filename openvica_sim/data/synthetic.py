"""A synthetic driving world: procedural front-camera video with known ego motion.

A pinhole camera 1.4 m above a flat road looks down the lane. The road's centre line bends with the
ego yaw rate, dashed lane markings move towards the camera at the ego speed, and the sky, road and
lighting change with the time of day. It is the training data of the embedded default and the seed
source of tests and demos, so everything runs without BDD100K.

Dimensions: T frames, H x W pixels; frames are uint8 RGB (T, H, W, 3).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CAMERA_HEIGHT_M = 1.4
LANE_WIDTH_M = 3.6
DASH_M, GAP_M = 3.0, 9.0  # a common dashed-line rhythm
PALETTES = {  # sky top, sky horizon, road, grass, marking
    "day": ((90, 140, 220), (190, 215, 240), (95, 95, 100), (70, 130, 60), (235, 235, 235)),
    "dusk": ((60, 50, 110), (240, 150, 90), (70, 65, 70), (50, 80, 45), (210, 200, 180)),
    "night": ((5, 8, 20), (20, 25, 45), (25, 25, 30), (10, 18, 12), (160, 160, 140)),
}


@dataclass(frozen=True)
class Drive:
    """Ego motion of one clip: constant speed and yaw rate (the world's simplest driver)."""

    speed_mps: float = 12.0
    yaw_rate_rps: float = 0.0
    timeofday: str = "day"
    start_m: float = 0.0  # distance already driven: phase of the dashes


def render_clip(drive: Drive, num_frames: int, fps: float = 4.0, height: int = 256, width: int = 256,
                focal_px: float | None = None) -> np.ndarray:
    """Frames (T, H, W, 3) uint8 of `drive`, one every 1/fps seconds."""
    if drive.timeofday not in PALETTES:
        raise ValueError(f"timeofday={drive.timeofday!r}: choose one of {sorted(PALETTES)}")
    focal = focal_px or 0.8 * width
    horizon = int(0.45 * height)
    return np.stack([_render_frame(drive, drive.start_m + drive.speed_mps * t / fps, height, width, focal, horizon)
                     for t in range(num_frames)])


def random_drive(rng: np.random.Generator) -> Drive:
    """A drive with speed, curvature and time of day drawn from `rng`."""
    return Drive(speed_mps=float(rng.uniform(3, 30)), yaw_rate_rps=float(rng.normal(0, 0.08)),
                 timeofday=str(rng.choice(list(PALETTES), p=[0.6, 0.2, 0.2])), start_m=float(rng.uniform(0, 12)))


def _render_frame(drive: Drive, travelled_m: float, H: int, W: int, focal: float, horizon: int) -> np.ndarray:
    sky_top, sky_low, road, grass, marking = (np.array(c, np.float32) for c in PALETTES[drive.timeofday])
    img = np.empty((H, W, 3), np.float32)
    rows = np.arange(H, dtype=np.float32)[:, None]
    # sky: vertical gradient down to the horizon
    a = np.clip(rows[:horizon] / max(horizon, 1), 0, 1)[..., None]
    img[:horizon] = sky_top * (1 - a) + sky_low * a
    # ground: each row below the horizon sees the road at distance z = f * h / (row - horizon)
    ground_rows = rows[horizon:, 0] - horizon + 0.5
    z = focal * CAMERA_HEIGHT_M / ground_rows  # (Hg,) metres ahead
    # the lane bends with the yaw rate: lateral offset of the path at distance z (circle, small angle)
    curvature = drive.yaw_rate_rps / max(drive.speed_mps, 1.0)
    path_x = 0.5 * curvature * z ** 2  # metres, positive to the right
    cols = np.arange(W, dtype=np.float32)[None, :] - W / 2 + 0.5
    x = cols * z[:, None] / focal - path_x[:, None]  # lateral metres of each pixel relative to the lane centre
    fog = np.clip(z / 120.0, 0, 1)[:, None, None]  # distant ground fades into the horizon colour
    ground = np.where(np.abs(x)[..., None] < 1.5 * LANE_WIDTH_M, road, grass)
    # markings: solid edges and a dashed centre line whose phase moves with the distance travelled
    width_m = 0.15
    edge = np.abs(np.abs(x) - 1.5 * LANE_WIDTH_M) < width_m
    dashes = ((z[:, None] + travelled_m) % (DASH_M + GAP_M)) < DASH_M
    centre = (np.abs(np.abs(x) - 0.5 * LANE_WIDTH_M) < width_m) & dashes
    ground = np.where((edge | centre)[..., None], marking, ground)
    if drive.timeofday == "night":  # headlights: the near road is lit
        light = np.clip(1.6 - z / 25.0, 0.3, 1.6)[:, None, None] * np.exp(-(x / 6.0) ** 2)[..., None]
        ground = ground * np.maximum(light, 0.35)
    img[horizon:] = ground * (1 - fog) + sky_low * fog
    return np.clip(img, 0, 255).astype(np.uint8)
