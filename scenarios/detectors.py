"""Detectors as perception teams have them: the torchvision detection convention, adapted to the harness's
`detect(frames) -> [[{"category", "box2d", "score"}]]` (docs/design.md "Scenarios").

A torchvision-style detector takes a list of (3, H, W) float tensors in [0, 1] and returns one dict per image with
"boxes" (n, 4) x1, y1, x2, y2 in pixels, "labels" (n,) int64 class ids and "scores" (n,). Its class ids are
COCO's category ids (torchvision's detection models: 1 person ... 90 toothbrush, with gaps), mapped here to
BDD100K's ten classes by `COCO_TO_BDD100K`; a class outside the map (a bench, a dog) is dropped. BDD100K's "rider"
has no COCO class.

    from openvica_sim.scenarios.detectors import torchvision_detector
    detect = torchvision_detector(my_model)           # then run_test(dataset, detect) or, in a file,
    # my_detector.py:  detect = torchvision_detector(load_my_model())   ->  --detector my_detector.py:detect

`openvica scenarios test --detector module:name` wraps a `torch.nn.Module` it finds under that name the same way.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

# COCO category id -> BDD100K class (torchvision's COCO_V1 category ids)
COCO_TO_BDD100K: dict[int, str] = {1: "pedestrian", 2: "bicycle", 3: "car", 4: "motorcycle", 6: "bus", 7: "train",
                                   8: "truck", 10: "traffic light", 13: "traffic sign"}  # 13: stop sign


def torchvision_detector(model, label_map: Mapping[int, str] = COCO_TO_BDD100K, device: str | None = None,
                         min_score: float = 0.0) -> Callable[[np.ndarray], list[list[dict]]]:
    """`detect(frames uint8 (B, H, W, 3))` over a torchvision-style detection `model` (put in eval mode; run on
    `device`, default the device of its first parameter), its class ids mapped by `label_map`, boxes scored below
    `min_score` left out.

    Raises (when called):
        ValueError: the model's output is not one {"boxes", "labels", "scores"} dict per image.
    """
    import torch

    model.eval()
    if device is None:
        first = next(iter(model.parameters()), None)
        device = first.device if first is not None else "cpu"

    @torch.inference_mode()
    def detect(frames: np.ndarray) -> list[list[dict]]:
        images = [torch.from_numpy(np.ascontiguousarray(f)).to(device).permute(2, 0, 1).float() / 255.0
                  for f in np.asarray(frames)]
        outputs = model(images)
        if not isinstance(outputs, (list, tuple)) or len(outputs) != len(images):
            raise ValueError(f"a torchvision-style detector returns one dict per image; got "
                             f"{type(outputs).__name__} of length {len(outputs) if hasattr(outputs, '__len__') else '?'} "
                             f"for {len(images)} images")
        out = []
        for k, o in enumerate(outputs):
            missing = [key for key in ("boxes", "labels", "scores") if key not in o]
            if missing:
                raise ValueError(f"image {k}: the detector's output lacks {missing}; torchvision's convention is "
                                 f"{{'boxes': (n, 4), 'labels': (n,), 'scores': (n,)}}")
            boxes, labels, scores = (o[key].detach().double().cpu().numpy() for key in ("boxes", "labels", "scores"))
            out.append([{"category": label_map[int(c)], "score": float(s),
                         "box2d": {"x1": float(b[0]), "y1": float(b[1]), "x2": float(b[2]), "y2": float(b[3])}}
                        for b, c, s in zip(boxes.reshape(-1, 4), labels.reshape(-1), scores.reshape(-1))
                        if int(c) in label_map and s >= min_score])
        return out

    detect.__name__ = type(model).__name__
    return detect
