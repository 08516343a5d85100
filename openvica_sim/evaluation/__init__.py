"""Evaluation (`openvica eval`): the paper's protocol and metrics, and the simulator's own measures (issue 17).

    evaluate_video(VideoEvalSettings(bundle, clips, ...), out)    Tables IV-VI: rollouts vs real continuations
    evaluate_images(ImageEvalSettings(bundle, images, ...), out)  Tables II-III: TOK+DEC reconstruction

Both write `out/metrics.json` ({"settings", "results": [one row per system/k/decoder], ...}), `out/report.md` (the
paper's tables with its numbers beside ours) and plots. The metrics themselves are plain functions in
`openvica_sim.metrics`; this package runs the protocol around them (clips, rollouts, caching, reporting).
"""

from .images import ImageEvalSettings, evaluate_images
from .scoring import FeatureNetworks
from .video import VideoEvalSettings, evaluate_video

__all__ = ["FeatureNetworks", "ImageEvalSettings", "VideoEvalSettings", "evaluate_images", "evaluate_video"]
