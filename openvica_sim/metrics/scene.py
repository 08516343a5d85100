"""Is the scene kept? Lane markings and cars of the synthetic world, found in a generated frame where the real one
has them (issue 19: a rollout must keep what it sees, not dissolve it).

The synthetic world paints lane markings as bright, grey-white strokes on a darker road, and knows its cars' boxes.
So, per frame:

- `marking_mask`: the marking pixels of a frame: below the horizon, at least `contrast` brighter than the median of
  their row (the road's and verge's brightness there, so it holds at night too) and nearly grey (markings are
  unsaturated; grass and sky are not);
- `marking_recall`: the share of the real frame's marking pixels that have a marking pixel of the generated frame
  within `tolerance_px` (markings that moved by a few pixels still count; a frame that lost them scores near 0);
- `car_recall`: the share of the real frame's car boxes (large enough to see) whose pixels in the generated frame
  differ from the road around them as much as the real car's do, at least half as much.

Frames are uint8 (N, H, W, 3) at the model's view; boxes are the world's ground truth in that view's pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

HORIZON_SHARE = 0.43  # the first ground row of the model's 256 view (0.45 of 360, less the crop's 52 rows)
MIN_CAR_PIXELS = 64


def marking_mask(frames: np.ndarray, contrast: float = 40.0, max_saturation: float = 40.0) -> np.ndarray:
    """(N, H, W) bool: the lane-marking pixels of frames (N, H, W, 3) (module docstring)."""
    x = np.asarray(frames, np.float32)
    N, H, W, _ = x.shape
    brightness, spread = x.mean(-1), x.max(-1) - x.min(-1)
    row_median = np.median(brightness, axis=2, keepdims=True)  # (N, H, 1)
    mask = (brightness - row_median >= contrast) & (spread <= max_saturation)
    mask[:, :int(HORIZON_SHARE * H) + 2] = False  # the sky and the horizon's haze
    return mask


def marking_recall(generated: np.ndarray, real: np.ndarray, tolerance_px: int = 2) -> np.ndarray:
    """(N,) share of each real frame's marking pixels with a generated marking pixel within tolerance_px (NaN where
    the real frame shows none)."""
    truth, found = marking_mask(real), marking_mask(generated)
    near = F.max_pool2d(torch.from_numpy(found).float()[:, None], 2 * tolerance_px + 1, stride=1,
                        padding=tolerance_px)[:, 0].numpy() > 0
    hits, total = (truth & near).sum(axis=(1, 2)), truth.sum(axis=(1, 2))
    return np.where(total > 0, hits / np.maximum(total, 1), np.nan)


def car_recall(generated: np.ndarray, real: np.ndarray, boxes: list[list[dict]]) -> np.ndarray:
    """(N,) share of each real frame's visible car boxes (at least MIN_CAR_PIXELS) that the generated frame shows as
    something other than road: the mean absolute difference between the box and a strip of road below it, at least
    half the real frame's (NaN where the real frame has no such box)."""
    out = np.full(len(real), np.nan)
    for i, frame_boxes in enumerate(boxes):
        seen = []
        for box in frame_boxes:
            b = box["box2d"]
            x1, y1, x2, y2 = (int(round(b[k])) for k in ("x1", "y1", "x2", "y2"))
            if (x2 - x1) * (y2 - y1) < MIN_CAR_PIXELS or y2 + 4 > real.shape[1]:
                continue
            strip = slice(y2 + 1, min(y2 + 1 + max(2, (y2 - y1) // 3), real.shape[1]))

            def contrast(frame):
                car = frame[y1:y2, x1:x2].reshape(-1, 3).astype(np.float32).mean(0)
                road = frame[strip, x1:x2].reshape(-1, 3).astype(np.float32).mean(0)
                return float(np.abs(car - road).mean())

            want = contrast(real[i])
            if want > 8:  # a car that stands out from its road in the real frame at all
                seen.append(contrast(generated[i]) >= 0.5 * want)
        if seen:
            out[i] = float(np.mean(seen))
    return out
