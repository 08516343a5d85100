"""Ego programs: the ego command of every generated frame of a scenario (spec `ego: {program, params}`).

A program turns the seed clip's last ego state (speed, yaw rate; unknown: 10 m/s straight) into one command
(speed_mps, yaw_rate_rps) per generated frame, 0.25 s apart. Action-conditioned bundles receive them as the env's
normalised actions (`ActionCoding.to_normalized`); other bundles cannot follow commands, so the dataset records the
program with `applied: false`. Yaw rate is positive to the right, as everywhere in the project.

    constant       hold the seed's speed and yaw rate
    brake          decelerate at decel_mps2 from start_s until stopped
    swerve_left    yaw at -yaw_rate_rps for duration_s / 2, then back at +yaw_rate_rps for duration_s / 2
    swerve_right   the mirror image
    lane_change    yaw towards `direction` for duration_s / 2 and back: a lateral offset of about one lane
    stop_and_go    brake to a stop, stand for stop_s, accelerate at accel_mps2 back to the seed speed
"""

from __future__ import annotations

import numpy as np

DT_S = 0.25  # one frame at 4 fps
UNKNOWN_SPEED_MPS = 10.0

# program -> {param: default}; every parameter a program reads is listed here, so specs are checked against it
PROGRAMS: dict[str, dict] = {
    "constant": {},
    "brake": {"decel_mps2": 6.0, "start_s": 0.0},
    "swerve_left": {"yaw_rate_rps": 0.3, "start_s": 0.5, "duration_s": 1.0},
    "swerve_right": {"yaw_rate_rps": 0.3, "start_s": 0.5, "duration_s": 1.0},
    "lane_change": {"direction": "left", "yaw_rate_rps": 0.1, "start_s": 0.5, "duration_s": 3.0},
    "stop_and_go": {"decel_mps2": 4.0, "stop_s": 1.0, "accel_mps2": 2.0, "start_s": 0.0},
}


def check_params(program: str, params: dict) -> list[str]:
    """Errors for unknown or ill-typed parameters of `program` (named as ego.params.<name>)."""
    errors = []
    known = PROGRAMS[program]
    for name, value in params.items():
        if name not in known:
            errors.append(f"ego.params.{name}: {program} takes {sorted(known) or 'no parameters'}")
        elif name == "direction":
            if value not in ("left", "right"):
                errors.append(f"ego.params.direction={value!r}: left or right")
        elif not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            errors.append(f"ego.params.{name}={value!r} must be a number >= 0")
    return errors


def commands(program: str, params: dict, num_frames: int, speed_mps: float, yaw_rate_rps: float) -> np.ndarray:
    """(num_frames, 2) float64 [speed_mps, yaw_rate_rps], one per generated frame, from the seed's last ego state
    (NaN: unknown, taken as 10 m/s straight ahead)."""
    p = {**PROGRAMS[program], **params}
    v0 = UNKNOWN_SPEED_MPS if not np.isfinite(speed_mps) else float(speed_mps)
    w0 = 0.0 if not np.isfinite(yaw_rate_rps) else float(yaw_rate_rps)
    t = (np.arange(num_frames) + 1) * DT_S  # the time of each generated frame after the last seed frame
    speed, yaw = np.full(num_frames, v0), np.full(num_frames, w0)
    if program == "brake":
        speed = np.maximum(v0 - p["decel_mps2"] * np.clip(t - p["start_s"], 0, None), 0.0)
    elif program in ("swerve_left", "swerve_right", "lane_change"):
        left = program == "swerve_left" or (program == "lane_change" and p["direction"] == "left")
        sign = -1.0 if left else 1.0
        start, half = p["start_s"], p["duration_s"] / 2
        yaw = np.where((t > start) & (t <= start + half), w0 + sign * p["yaw_rate_rps"], w0)
        yaw = np.where((t > start + half) & (t <= start + 2 * half), w0 - sign * p["yaw_rate_rps"], yaw)
    elif program == "stop_and_go":
        braking = v0 / p["decel_mps2"] if p["decel_mps2"] > 0 else np.inf
        stopped_at, going_at = p["start_s"] + braking, p["start_s"] + braking + p["stop_s"]
        speed = np.where(t <= stopped_at, np.maximum(v0 - p["decel_mps2"] * np.clip(t - p["start_s"], 0, None), 0),
                         np.minimum(p["accel_mps2"] * np.clip(t - going_at, 0, None), v0))
    return np.stack([speed, yaw], axis=-1)
