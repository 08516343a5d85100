"""Ego-command adherence: does generated video move the way it was commanded? (issue 17, point 3)

An ego-motion probe (`models.ego_probe`) estimates the speed and yaw rate of generated frames; these functions
compare its estimates with the commands. Two measures:

(a) Replay. From each held-out clip's seed frames, the world model is given the clip's own ego commands, and again
    another clip's commands (same sampler seed: common random numbers, so only the commands differ). Both
    estimates are compared with the clip's TRUE commands (what the real continuation did):
        replay_error  = mean |probe(G(seed, own commands))   - own commands|
        swapped_error = mean |probe(G(seed, other commands)) - own commands|
        ratio         = replay_error / swapped_error
    A bundle that ignores its commands makes the same frames both times: ratio exactly 1. The more the commands
    steer the frames, the further the swapped rollout drifts from the true motion and the smaller the ratio.
    `following_error` = mean |probe(G(seed, other commands)) - other commands| says how well foreign commands are
    followed. Errors are per component (m/s, rad/s) and combined in units of the probe's label std.

(b) Counterfactuals. From each seed, branches commanded to go straight, turn left, turn right, brake and accelerate
    (`counterfactual_commands`), again with one sampler seed. A branch "goes the commanded way" when its mean
    estimated yaw rate (turns) or speed (brake, accelerate) over the horizon lies on the commanded side of the
    straight branch's; a tie (equal estimates) counts one half. A bundle that ignores its commands makes every
    branch alike: exactly 0.5, chance.

Signs: yaw rate is positive turning right (clockwise seen from above), as BDD100K's course and the synthetic world.
Dimensions: C clips, N predicted frames; commands and estimates are (C, N) arrays in m/s and rad/s.
"""

from __future__ import annotations

import numpy as np

TURN_RATE_RPS = 0.3  # counterfactual turns: about 17 degrees a second, a lane-change-to-junction turn
BRAKE_MPS2, ACCEL_MPS2 = 4.0, 2.0  # a firm stop and a brisk start
MAX_SPEED_MPS = 40.0  # the action coding's range (openvica_sim.actions)
BRANCHES = ("straight", "left", "right", "brake", "accelerate")
TIE = 1e-9  # estimates closer than this are a tie (identical frames give identical estimates)


def counterfactual_commands(speed_mps: float, num_frames: int, fps: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per branch, the (speed (N,), yaw rate (N,)) commands of the N predicted frames from a seed at `speed_mps`:
    straight keeps the speed, left and right turn at TURN_RATE_RPS, brake and accelerate change speed at a constant
    rate (clipped to [0, 40] m/s); frame k's command is the motion over its frame step, at time (k + 1) / fps."""
    t = np.arange(1, num_frames + 1) / fps
    v = np.full(num_frames, float(speed_mps))
    zero = np.zeros(num_frames)
    return {"straight": (v, zero), "left": (v, zero - TURN_RATE_RPS), "right": (v, zero + TURN_RATE_RPS),
            "brake": (np.clip(v - BRAKE_MPS2 * t, 0, MAX_SPEED_MPS), zero),
            "accelerate": (np.clip(v + ACCEL_MPS2 * t, 0, MAX_SPEED_MPS), zero)}


def replay_adherence(own: tuple[np.ndarray, np.ndarray], swapped: tuple[np.ndarray, np.ndarray],
                     own_commands: tuple[np.ndarray, np.ndarray], other_commands: tuple[np.ndarray, np.ndarray],
                     label_std: tuple[float, float]) -> dict:
    """Measure (a) of the module docstring from probe estimates (speed (C, N), yaw (C, N)) of the rollouts with the
    clips' own and with other clips' commands, the commands themselves, and the probe's label std (speed, yaw).

    Returns {"replay_error_speed_mps", "replay_error_yaw_rate_rps", "swapped_error_speed_mps",
    "swapped_error_yaw_rate_rps", "following_error_speed_mps", "following_error_yaw_rate_rps", "ratio_speed",
    "ratio_yaw_rate", "ratio" (combined, in label-std units), "clips"}.
    """
    arrays = [np.asarray(a, np.float64) for pair in (own, swapped, own_commands, other_commands) for a in pair]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 2:
        raise ValueError(f"estimates and commands must all be (C, N); got {sorted({a.shape for a in arrays})}")
    own_v, own_w, swap_v, swap_w, cmd_v, cmd_w, other_v, other_w = arrays
    out = {}
    for name, (v, w, ref_v, ref_w) in {"replay": (own_v, own_w, cmd_v, cmd_w),
                                        "swapped": (swap_v, swap_w, cmd_v, cmd_w),
                                        "following": (swap_v, swap_w, other_v, other_w)}.items():
        out[f"{name}_error_speed_mps"] = float(np.mean(np.abs(v - ref_v)))
        out[f"{name}_error_yaw_rate_rps"] = float(np.mean(np.abs(w - ref_w)))
        out[f"_{name}_combined"] = (out[f"{name}_error_speed_mps"] / label_std[0]
                                    + out[f"{name}_error_yaw_rate_rps"] / label_std[1]) / 2
    out["ratio_speed"] = _ratio(out["replay_error_speed_mps"], out["swapped_error_speed_mps"])
    out["ratio_yaw_rate"] = _ratio(out["replay_error_yaw_rate_rps"], out["swapped_error_yaw_rate_rps"])
    out["ratio"] = _ratio(out.pop("_replay_combined"), out.pop("_swapped_combined"))
    out.pop("_following_combined")
    out["clips"] = int(own_v.shape[0])
    return out


def counterfactual_accuracy(estimates: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict:
    """Measure (b) of the module docstring from probe estimates {branch: (speed (C, N), yaw (C, N))} of the five
    BRANCHES. Returns {"left", "right", "brake", "accelerate": share of clips going the commanded way, "accuracy":
    their mean, "left_vs_right": share of clips whose left branch turns left of its right branch, "clips"}."""
    missing = [b for b in BRANCHES if b not in estimates]
    if missing:
        raise ValueError(f"counterfactual estimates lack branches {missing}; expected {list(BRANCHES)}")
    mean = {b: (np.mean(np.asarray(v, np.float64), axis=1), np.mean(np.asarray(w, np.float64), axis=1))
            for b, (v, w) in estimates.items()}
    base_v, base_w = mean["straight"]
    out = {"left": _share(base_w - mean["left"][1]),  # left: a lower (more negative) yaw rate than straight
           "right": _share(mean["right"][1] - base_w),
           "brake": _share(base_v - mean["brake"][0]),
           "accelerate": _share(mean["accelerate"][0] - base_v)}
    out["accuracy"] = float(np.mean([out[b] for b in ("left", "right", "brake", "accelerate")]))
    out["left_vs_right"] = _share(mean["right"][1] - mean["left"][1])
    out["clips"] = int(len(base_v))
    return out


def _share(margin: np.ndarray) -> float:
    """Share of positive margins, a tie (|margin| <= TIE) counting one half."""
    margin = np.asarray(margin, np.float64)
    return float(np.mean(np.where(np.abs(margin) <= TIE, 0.5, (margin > 0).astype(np.float64))))


def _ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else (1.0 if a == 0 else float("inf"))


def probe_accuracy(probe, windows, label_mean: tuple[float, float], batch_size: int = 64) -> dict:
    """The probe's errors on labelled frame pairs (`data.loaders.EgoFrameWindows` of held-out clips), against the
    baseline that always predicts `label_mean` (the training labels' mean): {"windows", "speed_mae_mps",
    "yaw_rate_mae_rps", "baseline_speed_mae_mps", "baseline_yaw_rate_mae_rps", "speed_rmse_mps",
    "yaw_rate_rmse_rps"}."""
    import torch

    device = probe.mean.device
    predicted, labels = [], []
    with torch.inference_mode():
        for i in range(0, len(windows), batch_size):
            samples = [windows[j] for j in range(i, min(i + batch_size, len(windows)))]
            frames = torch.stack([s["frames"] for s in samples]).to(device)
            predicted.append(probe.to_physical(probe(frames)).double().cpu().numpy())
            labels.append(np.array([[float(s["speed_mps"]), float(s["yaw_rate_rps"])] for s in samples]))
    predicted, labels = np.concatenate(predicted), np.concatenate(labels)
    error, baseline = np.abs(predicted - labels), np.abs(np.asarray(label_mean)[None] - labels)
    return {"windows": int(len(labels)),
            "speed_mae_mps": float(error[:, 0].mean()), "yaw_rate_mae_rps": float(error[:, 1].mean()),
            "baseline_speed_mae_mps": float(baseline[:, 0].mean()),
            "baseline_yaw_rate_mae_rps": float(baseline[:, 1].mean()),
            "speed_rmse_mps": float(np.sqrt((error[:, 0] ** 2).mean())),
            "yaw_rate_rmse_rps": float(np.sqrt((error[:, 1] ** 2).mean()))}
