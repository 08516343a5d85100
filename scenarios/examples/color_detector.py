"""A classical car detector for the synthetic driving world (openvica_sim/data/synthetic.py), in numpy only.

    openvica scenarios test DATASET --detector openvica_sim.scenarios.examples.color_detector:detect

It is an example of the detector interface of `openvica scenarios test` (docs/design.md "Scenarios"):

    detect(frames: uint8 (B, H, W, 3)) -> per frame, a list of
        {"category": "car", "box2d": {"x1", "y1", "x2", "y2"}, "score": float}

How it works. The synthetic world paints the sky, the grass and the road of each image row in nearly one colour
each (the haze changes them slowly with depth), and a car as bands of other colours: body, dark window, tail
lights, dark tyre band. So a pixel is foreground when it differs from its row's grass colours (the frame's side
strips) and from its row's road colour (followed up from the bottom row) and is no lane marking. Foreground runs
are joined into 8-connected components (numpy only, no scipy). The ground does the rest: the camera is 1.4 m up,
so a component whose bottom is d rows below the horizon is a car only if it is about 1.8 / 1.4 * d wide, and then
its box is 1.5 / 1.4 * d tall. The score is the share of that box the foreground covers.

Measured on 60 clips of `random_drive` (4 frames each, IoU >= 0.5): by day it finds 90% of the cars at least
8 px tall, 99% of its boxes are right; at dusk (often with fog) about a quarter; at night none, because the
bodies are as dark as the road. Other blind spots: cars further than ~60 m (a few pixels), cars that overlap
each other (one component, too wide), cars cut by the frame's top or bottom. A report of
`openvica scenarios test` shows these in its slices by time of day and weather.

To write your own detector, copy this file, change `detect`, and pass `path/to/your_file.py:detect`.
"""

from __future__ import annotations

import numpy as np

CONTRAST = 30  # a pixel differs from each background colour of its row by more than this (uint8 levels)
EDGE_PX = 4  # the frame's side strips give a row's grass (or sky) colours
HORIZON = 0.45  # fraction of the height where the ground starts (synthetic._Camera)
# A car is 1.8 m wide and 1.5 m tall and stands on the ground, and the camera is 1.4 m up, so a car whose bottom
# is d rows below the horizon is 1.8 / 1.4 * d wide and 1.5 / 1.4 * d tall, whatever the focal length.
WIDTH_PER_ROW, HEIGHT_PER_ROW = 1.8 / 1.4, 1.5 / 1.4
WIDTH_RATIO = (0.7, 1.4)  # of the width measured to the width the ground predicts (cars at the frame edge: less)
MIN_FILL = 0.3  # share of the predicted box the component covers (a grey car: its window and tyre bands)
MIN_AREA_PX = 6  # smaller components are rain, snow flakes or cars too far to matter


def detect(frames: np.ndarray) -> list[list[dict]]:
    """Boxes of the cars in `frames`, uint8 (B, H, W, 3), one list per frame (see the module docstring)."""
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (B, H, W, 3), got {frames.dtype} {frames.shape}")
    return [_detect_frame(frame) for frame in frames]


def _detect_frame(frame: np.ndarray) -> list[dict]:
    H, W = frame.shape[:2]
    mask = _foreground(frame)
    horizon = HORIZON * H
    mask[:int(horizon - 0.04 * H)] = False  # a car's top is at most ~0.04 H above the horizon (it stands >= 2 m away)
    candidates = []  # (y2, fill, box)
    for y1, x1, y2, x2, area in _components(mask):
        rows_below = y2 - horizon
        if area < MIN_AREA_PX or rows_below < 1:
            continue
        width, height = WIDTH_PER_ROW * rows_below, HEIGHT_PER_ROW * rows_below
        at_edge = x1 == 0 or x2 == W
        if not (WIDTH_RATIO[0] * width <= x2 - x1 or at_edge) or x2 - x1 > WIDTH_RATIO[1] * width:
            continue
        top = max(y2 - height, 0.0)
        fill = np.count_nonzero(mask[int(top):y2, x1:x2]) / ((x2 - x1) * (y2 - top))
        if fill < MIN_FILL:
            continue
        candidates.append((y2, fill, (x1, top, x2, y2)))
    # A car whose body has the road's colour falls apart into bands (window, tail lights, tyres); each band predicts
    # a box from its own bottom row. The lowest band stands on the ground, so keep it and drop the boxes it overlaps.
    kept: list[tuple[float, tuple]] = []
    for _, fill, b in sorted(candidates, key=lambda c: -c[0]):
        if all(_overlap(b, k) < 0.5 for _, k in kept):
            kept.append((fill, b))
    return [{"category": "car", "box2d": {"x1": float(b[0]), "y1": float(b[1]), "x2": float(b[2]), "y2": float(b[3])},
             "score": round(min(float(fill), 1.0), 3)} for fill, b in kept]


def _overlap(a: tuple, b: tuple) -> float:
    """Intersection of boxes (x1, y1, x2, y2) over the smaller one's area."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return w * h / min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))


def _foreground(frame: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels that are neither grass, sky, road nor lane marking."""
    pixels = frame.astype(np.int16)  # (H, W, 3)
    sides = (np.median(pixels[:, :EDGE_PX], axis=1), np.median(pixels[:, -EDGE_PX:], axis=1))  # each (H, 3)
    off_sides = np.all([_differs(pixels, c) for c in sides], axis=0)  # (H, W): neither grass (or sky) colour
    road = _road_colours(pixels)  # (H, 3)
    # Lane markings are brighter than the road and grey; they would join the cars they touch into one blob.
    marking = (pixels.min(axis=-1) > road.max(axis=-1)[:, None] + CONTRAST) & (np.ptp(pixels, axis=-1) < CONTRAST)
    return off_sides & _differs(pixels, road) & ~marking  # (H, W)


def _road_colours(pixels: np.ndarray) -> np.ndarray:
    """(H, 3): the road's colour in each row, followed upwards from the bottom row (the road under the ego car).

    The haze changes it slowly with depth, so each row's road is the median of the pixels close to the road of the
    row below. Near the horizon the road is a thin strip between grass, where neither the row's median nor the
    median of the non-grass pixels would be road.
    """
    road = np.empty((len(pixels), 3))
    colour = np.median(pixels[-1], axis=0)
    for y in range(len(pixels) - 1, -1, -1):
        near = (np.abs(pixels[y] - colour) < 0.5 * CONTRAST).all(axis=-1)  # (W,); the haze moves it less than this per row
        if near.any():
            colour = np.median(pixels[y][near], axis=0)
        road[y] = colour
    return road


def _differs(pixels: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """(H, W): a channel of `pixels` (H, W, 3) is further than CONTRAST from its row's `colour` (H, 3)."""
    return (np.abs(pixels - colour[:, None]) > CONTRAST).any(axis=-1)


def _components(mask: np.ndarray) -> list[tuple[int, int, int, int, int]]:
    """8-connected components of a boolean (H, W) mask as (y1, x1, y2, x2, pixels), boxes end-exclusive.

    Works on horizontal runs: each run is joined (union-find) with the runs of the row above that touch it,
    so the Python loop is over runs, not pixels.
    """
    padded = np.pad(mask, ((0, 0), (1, 1))).astype(np.int8)
    rows, starts = np.nonzero(np.diff(padded, axis=1) == 1)  # run starts, row by row (np.nonzero is row-major)
    _, ends = np.nonzero(np.diff(padded, axis=1) == -1)  # the matching ends (exclusive)
    parent = list(range(len(rows)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_start = above_start = 0  # first run of the current row, and of the row before it
    for i in range(len(rows)):
        if i > 0 and rows[i] != rows[i - 1]:
            above_start, row_start = row_start, i
        touching_row = row_start > 0 and rows[row_start - 1] == rows[i] - 1
        for j in range(above_start, row_start) if touching_row else ():
            if starts[j] <= ends[i] and ends[j] >= starts[i]:  # touching, diagonals included
                parent[root(j)] = root(i)
    found: dict[int, list[int]] = {}
    for i in range(len(rows)):
        r = root(i)
        y, a, b = int(rows[i]), int(starts[i]), int(ends[i])
        if r not in found:
            found[r] = [y, a, y + 1, b, 0]
        c = found[r]
        c[0], c[1], c[2], c[3], c[4] = min(c[0], y), min(c[1], a), max(c[2], y + 1), max(c[3], b), c[4] + b - a
    return [tuple(c) for c in found.values()]
