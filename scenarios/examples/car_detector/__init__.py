"""The example detector of `openvica scenarios test`: a small CNN (CenterNet, `openvica_sim/models/detector.py`)
trained on the synthetic world's per-frame car boxes by `training/detector.py` (the recipe and its held-out COCOeval
are in this folder: RECIPE.json, accuracy.json).

    openvica scenarios test DATASET --detector openvica_sim.scenarios.examples.car_detector:detect

It is an example of the detector interface (docs/design.md "Scenarios"):

    detect(frames: uint8 (B, H, W, 3)) -> per frame, a list of
        {"category": "car", "box2d": {"x1", "y1", "x2", "y2"}, "score": float}

It knows one class ("car") and one world: real BDD100K frames are outside what it saw, so expect little there; on the
scenario datasets of the synthetic world it is the detector the README walkthrough scores. To bring your own, write a
function with this signature in a file and pass `path/to/your_file.py:detect`, or wrap a torchvision-style model
with `openvica_sim.scenarios.detectors.torchvision_detector`.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

FOLDER = Path(__file__).parent  # config.json, model.safetensors, accuracy.json, RECIPE.json


@functools.cache
def _detector():
    from openvica_sim.models.detector import CenterNet

    return CenterNet.from_pretrained(FOLDER)


def detect(frames: np.ndarray) -> list[list[dict]]:
    """Boxes of the cars in `frames`, uint8 (B, H, W, 3) at any size (preprocessed to the 256x256 model view, so
    boxes are in the view's pixels), one list per frame."""
    return _detector().detect(frames)
