"""Feature networks and per-row scoring of an evaluation: clips in, the paper's metrics out.

`FeatureNetworks` loads the networks a user named (a metric whose network is not given is skipped, and listed with
the flag that would enable it). `ClipScores` takes one clip at a time (generated frames and the real ones they stand
for) and keeps only what the metrics need: per-frame PSNR/SSIM/MS-SSIM/LPIPS, Inception and CLIP features of every
frame, I3D features of every clip. `FeatureSet` keeps the features of the real frames, computed once per evaluation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from openvica_sim.metrics import distribution, networks, reconstruction, scene

METRICS = ("fid", "fvd", "cmmd", "mse", "psnr", "ssim", "ms_ssim", "lpips")


@dataclass
class FeatureNetworks:
    """The local files of the feature networks (None: that metric is skipped)."""

    inception: str | os.PathLike | None = None
    i3d: str | os.PathLike | None = None
    clip_model: str | os.PathLike | None = None
    lpips_net: str | os.PathLike | None = None
    lpips_linear: str | os.PathLike | None = None
    device: str = "cpu"
    loaded: dict = field(default_factory=dict, repr=False)
    skipped: dict[str, str] = field(default_factory=dict)
    files: dict[str, dict] = field(default_factory=dict)

    def load(self) -> "FeatureNetworks":
        """Load every given network (errors name the file, where it is published and its flag); record the others
        as skipped and every file's sha256.

        Raises:
            networks.FeatureNetworkError: a given file is missing or is not the network its flag takes.
        """
        given = {"fid": (self.inception, networks.load_inception, networks.INCEPTION),
                 "fvd": (self.i3d, networks.load_i3d, networks.I3D),
                 "cmmd": (self.clip_model, networks.load_clip, networks.CLIP),
                 "lpips": (self.lpips_net, None, networks.LPIPS_NET)}
        for metric, (path, load, published) in given.items():
            if path is None:
                self.skipped[metric] = f"not computed: pass {published.flag} PATH ({published.url})"
                continue
            if metric == "lpips":
                self.loaded[metric] = networks.load_lpips(path, self.lpips_linear, self.device)
                linear = self.lpips_linear or networks.installed_lpips_linear(
                    "alex" if isinstance(self.loaded[metric].backbone, networks.AlexNetFeatures) else "vgg")
                self.files["lpips_linear"] = {"path": str(linear), "sha256": networks.file_sha256(linear)}
            else:
                self.loaded[metric] = load(path, self.device)
            self.files[metric] = {"path": str(path), "sha256": networks.file_sha256(path)}
        return self

    def has(self, metric: str) -> bool:
        return metric in self.loaded


class FeatureSet:
    """Distribution features of a set of clips: Inception and CLIP of every frame, I3D of every clip."""

    def __init__(self, nets: FeatureNetworks):
        self.nets = nets
        self.inception, self.clip, self.i3d = [], [], []

    def add(self, frames: np.ndarray) -> None:
        """One clip's frames uint8 (N, H, W, 3)."""
        if self.nets.has("fid"):
            self.inception.append(distribution.inception_features(frames, self.nets.loaded["fid"]))
        if self.nets.has("cmmd"):
            self.clip.append(distribution.clip_embeddings(frames, self.nets.loaded["cmmd"]))
        if self.nets.has("fvd"):
            self.i3d.append(distribution.i3d_features(frames[None], self.nets.loaded["fvd"]))

    def distances(self, real: "FeatureSet") -> dict[str, float | None]:
        """FID, FVD and CMMD of these clips against `real`'s (None where the network is missing)."""
        out = {"fid": None, "fvd": None, "cmmd": None}
        if self.inception:
            out["fid"] = distribution.fid(np.concatenate(self.inception), np.concatenate(real.inception))
        if self.i3d:
            out["fvd"] = distribution.fvd(np.concatenate(self.i3d), np.concatenate(real.i3d))
        if self.clip:
            out["cmmd"] = distribution.cmmd(np.concatenate(self.clip), np.concatenate(real.clip))
        return out


class ClipScores(FeatureSet):
    """Per-frame reconstruction metrics against the real frames, and the distribution features, clip by clip."""

    def __init__(self, nets: FeatureNetworks):
        super().__init__(nets)
        self.per_frame: dict[str, list[np.ndarray]] = {"mse": [], "psnr": [], "ssim": [], "ms_ssim": [], "lpips": [],
                                                       "marking_recall": [], "car_recall": []}
        self.surprise: list[np.ndarray] = []

    def add_pair(self, generated: np.ndarray, real: np.ndarray, surprise: np.ndarray | None = None,
                 boxes: list[list[dict]] | None = None) -> None:
        """One clip: generated and real frames uint8 (N, H, W, 3), the generated frames' surprise (N,), and the real
        frames' ground-truth boxes (N lists) when the clip has them (the synthetic world's scene checks)."""
        self.add(generated)
        self.per_frame["marking_recall"].append(scene.marking_recall(generated, real))
        if boxes is not None:
            self.per_frame["car_recall"].append(scene.car_recall(generated, real, boxes))
        self.per_frame["mse"].append(reconstruction.mse(generated, real))
        self.per_frame["psnr"].append(reconstruction.psnr(generated, real))
        self.per_frame["ssim"].append(reconstruction.ssim(generated, real))
        if min(generated.shape[1:3]) > 160:
            self.per_frame["ms_ssim"].append(reconstruction.ms_ssim(generated, real))
        if self.nets.has("lpips"):
            self.per_frame["lpips"].append(reconstruction.lpips(generated, real, self.nets.loaded["lpips"]))
        if surprise is not None:
            self.surprise.append(np.asarray(surprise, np.float64))

    def row(self, real: FeatureSet) -> dict:
        """The metrics of these clips: means over clips and frames, and per predicted frame index."""
        out = self.distances(real)
        per_frame = {}
        for name, values in self.per_frame.items():
            stacked = np.stack(values) if values else np.zeros((0, 0))  # (C, N); NaN where a frame has nothing to find
            if np.isfinite(stacked).any():
                out[name] = float(np.nanmean(stacked))
                per_frame[name] = [float(v) if np.isfinite(v) else None for v in _nanmean0(stacked)]
            else:
                out[name] = None
        out["surprise"] = float(np.mean(self.surprise)) if self.surprise else None
        if self.surprise:
            per_frame["surprise"] = np.stack(self.surprise).mean(0).tolist()
        out["clips"] = len(self.per_frame["psnr"])
        out["per_frame"] = per_frame
        out["per_clip"] = {"mse": np.stack(self.per_frame["mse"]).mean(1).tolist()} if self.per_frame["mse"] else {}
        return out


def _nanmean0(values: np.ndarray) -> np.ndarray:
    """Column means ignoring NaN, NaN for all-NaN columns, without numpy's warning about them."""
    finite = np.isfinite(values)
    return np.where(finite.any(0), np.where(finite, values, 0).sum(0) / np.maximum(finite.sum(0), 1), np.nan)
