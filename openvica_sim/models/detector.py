"""A small CNN object detector for 256x256 model-view frames: the example detector of `openvica scenarios test`
(issue 20, point 5), trained by `training/detector.py` on a store's per-frame boxes (the synthetic world's are free).

It is a CenterNet ("Objects as Points", Zhou et al. 2019): each object is the peak of a per-class heatmap at its box
centre, with the box's size and the centre's sub-pixel offset read at the peak. A strided CNN encodes the frame to
1/32 of its size, an upsampling path with skips from the encoder brings it back to 1/4 (64x64 for a 256 frame, so a
car 60 m away, ~15x13 px in the crop, still covers ~4x3 cells), and three 1x1 heads read it (kept small for CPU
training: ~0.3M parameters):

    frame (3, 256, 256) --encoder--> 1/4 .. 1/32 --up + skips--> 1/4 (D channels) --> heatmap (K, 64, 64) logits
                                                                                   --> log size (2): w, h in pixels
                                                                                   --> offset (2): centre in cells

Loss (`CenterNet.loss`): the penalty-reduced focal loss on the heatmap against Gaussian targets (alpha 2, beta 4;
per-axis sigma 0.54 * size / 6, TTFNet's elliptical targets) divided by the number of objects, plus L1 on log size
and offset at each object's centre cell. `detect` decodes peaks (3x3 max pooling), top 100, and returns boxes in the
frame's pixels. Dimensions: B frames, K classes, M boxes per frame (padded), S = 64 output cells per side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .pretrained import SavedModel



@dataclass(frozen=True)
class CenterNetConfig:
    classes: tuple[str, ...] = ("car",)  # BDD100K category names, one heatmap each
    image_size: int = 256  # the model view
    widths: tuple[int, ...] = (16, 32, 48, 64, 96)  # encoder stages, each stride 2: 1/2 .. 1/32
    head_width: int = 32  # D: channels of the 1/4 feature map the heads read
    max_detections: int = 100
    min_score: float = 0.2  # boxes scored lower are not returned by `detect`

    def __post_init__(self):
        if not self.classes:
            raise ValueError("a detector needs at least one class")
        if len(self.widths) < 3:
            raise ValueError(f"widths={self.widths}: at least three stages (the heads read the 1/4 map)")
        if self.image_size % 2 ** len(self.widths):
            raise ValueError(f"image_size={self.image_size} is not divisible by 2**{len(self.widths)}")

    @property
    def stride(self) -> int:
        return 4

    @property
    def cells(self) -> int:
        return self.image_size // self.stride


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(_conv(cin, cout, stride), _conv(cout, cout))


class CenterNet(SavedModel, nn.Module):
    """frames (B, 3, H, W) float in [-1, 1] -> (heatmap logits (B, K, S, S), log size (B, 2, S, S), offset (B, 2, S, S)).
    Saved as a folder (`models/pretrained.py`): config.json, model.safetensors, accuracy.json (held-out COCOeval)."""

    KIND, NAME, CONFIG = "openvica-centernet", "CenterNet detector", CenterNetConfig
    HOW_TO_GET = ("train one with `python training/detector.py data.store=STORE run.dir=DIR` (it writes DIR/detector/), "
                  "or use the shipped example (openvica_sim/scenarios/examples/car_detector/)")

    def __init__(self, config: CenterNetConfig):
        super().__init__()
        self.config = config
        widths = config.widths
        # the 1/2 stage is one convolution: at 128x128 a second would cost as much as the rest of the encoder
        self.encoder = nn.ModuleList([_conv(3, widths[0], 2)] + [_block(cin, cout, 2)
                                                                 for cin, cout in zip(widths[:-1], widths[1:])])
        # up path: from 1/32 back to 1/4, each level adding the encoder's map of that scale (1x1 lateral)
        self.lateral = nn.ModuleList(nn.Conv2d(w, config.head_width, 1) for w in widths[1:])
        self.fuse = nn.ModuleList(_conv(config.head_width, config.head_width) for _ in widths[1:-1])
        K = len(config.classes)
        self.heads = nn.ModuleDict({name: nn.Conv2d(config.head_width, n, 1)
                                    for name, n in (("heatmap", K), ("size", 2), ("offset", 2))})
        nn.init.constant_(self.heads["heatmap"].bias, -4.6)  # prior 0.01: the focal loss starts stable
        nn.init.constant_(self.heads["size"].bias, float(np.log(16.0)))

    def forward(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[-1] != self.config.image_size:
            raise ValueError(f"expected frames (B, 3, {self.config.image_size}, {self.config.image_size}), got "
                             f"{tuple(frames.shape)}")
        maps, x = [], frames
        for stage in self.encoder:
            x = stage(x)
            maps.append(x)
        y = self.lateral[-1](maps[-1])  # 1/32
        for level in range(len(maps) - 2, 0, -1):  # 1/16 .. 1/4
            y = F.interpolate(y, scale_factor=2, mode="nearest") + self.lateral[level - 1](maps[level])
            y = self.fuse[level - 1](y)
        return self.heads["heatmap"](y), self.heads["size"](y), self.heads["offset"](y)

    # ---- training ------------------------------------------------------------------------------------------------
    def loss(self, outputs: tuple[torch.Tensor, ...], boxes: torch.Tensor, classes: torch.Tensor) -> dict[str, torch.Tensor]:
        """{"loss", "heatmap", "size", "offset"} of this model's `outputs` on frames (B, 3, H, W) (a DDP wrapper's
        forward, so that gradients sync) with boxes (B, M, 4) x1, y1, x2, y2 in pixels and classes (B, M) int64
        indices into config.classes, -1 for padding."""
        heatmap, size, offset = outputs
        B, K, S, _ = heatmap.shape
        stride = self.config.stride
        valid = (classes >= 0) & (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])  # (B, M)
        wh = (boxes[..., 2:] - boxes[..., :2]).clamp(min=1.0)  # (B, M, 2) pixels
        centre = (boxes[..., :2] + boxes[..., 2:]) / 2 / stride  # (B, M, 2) in cells
        cell = centre.floor().clamp(0, S - 1)
        # Gaussian targets, one per box, the maximum where they overlap; peak 1 at the centre cell
        grid = torch.arange(S, device=heatmap.device, dtype=heatmap.dtype) + 0.5
        sigma = (0.54 * wh / stride / 6).clamp(min=0.35)  # (B, M, 2)
        peak = cell + 0.5
        gx = torch.exp(-((grid[None, None] - peak[..., :1]) ** 2) / (2 * sigma[..., :1] ** 2))  # (B, M, S)
        gy = torch.exp(-((grid[None, None] - peak[..., 1:]) ** 2) / (2 * sigma[..., 1:] ** 2))
        gaussian = gy[..., :, None] * gx[..., None, :] * valid[..., None, None]  # (B, M, S, S)
        target = heatmap.new_zeros(B, K, S, S)
        for k in range(K):
            mine = gaussian * (classes == k)[..., None, None]
            target[:, k] = mine.amax(dim=1) if mine.shape[1] else 0.0
        # penalty-reduced focal loss (alpha 2, beta 4) over the number of objects
        p = torch.sigmoid(heatmap).clamp(1e-4, 1 - 1e-4)
        positive = target >= 1.0 - 1e-6
        focal = torch.where(positive, -(1 - p) ** 2 * torch.log(p), -((1 - target) ** 4) * p ** 2 * torch.log(1 - p))
        objects = valid.sum().clamp(min=1)
        heatmap_loss = focal.sum() / objects
        # size and offset at each object's centre cell
        flat = (cell[..., 1] * S + cell[..., 0]).long()  # (B, M)
        read = lambda m: m.flatten(2).gather(2, flat[:, None].expand(-1, m.shape[1], -1)).transpose(1, 2)  # (B, M, C)
        size_loss = (F.l1_loss(read(size), wh.log(), reduction="none").sum(-1) * valid).sum() / objects
        offset_loss = (F.l1_loss(read(offset), centre - cell, reduction="none").sum(-1) * valid).sum() / objects
        total = heatmap_loss + size_loss + offset_loss
        return {"loss": total, "heatmap": heatmap_loss.detach(), "size": size_loss.detach(),
                "offset": offset_loss.detach()}

    # ---- inference -----------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def predict(self, frames: torch.Tensor, min_score: float | None = None) -> list[dict[str, torch.Tensor]]:
        """Per frame {"boxes" (n, 4) x1, y1, x2, y2 in pixels, "labels" (n,) class indices, "scores" (n,)} of
        frames (B, 3, H, W) in [-1, 1], at most config.max_detections, scored at least `min_score`
        (default config.min_score)."""
        min_score = self.config.min_score if min_score is None else min_score
        heatmap, size, offset = self(frames)
        B, K, S, _ = heatmap.shape
        p = torch.sigmoid(heatmap)
        peaks = p * (F.max_pool2d(p, 3, stride=1, padding=1) == p)  # a cell that is its neighbourhood's maximum
        scores, index = peaks.flatten(1).topk(min(self.config.max_detections, K * S * S), dim=1)  # (B, N)
        label, cellindex = index // (S * S), index % (S * S)
        cy, cx = (cellindex // S).float(), (cellindex % S).float()
        off = offset.flatten(2).gather(2, cellindex[:, None].expand(-1, 2, -1))  # (B, 2, N)
        wh = size.flatten(2).gather(2, cellindex[:, None].expand(-1, 2, -1)).exp()
        x = (cx + off[:, 0]) * self.config.stride
        y = (cy + off[:, 1]) * self.config.stride
        edge = float(self.config.image_size)
        boxes = torch.stack([(x - wh[:, 0] / 2).clamp(0, edge), (y - wh[:, 1] / 2).clamp(0, edge),
                             (x + wh[:, 0] / 2).clamp(0, edge), (y + wh[:, 1] / 2).clamp(0, edge)], dim=-1)
        keep = scores >= min_score
        return [{"boxes": boxes[b][keep[b]], "labels": label[b][keep[b]], "scores": scores[b][keep[b]]}
                for b in range(B)]

    def detect(self, frames: np.ndarray, batch_size: int = 32, min_score: float | None = None) -> list[list[dict]]:
        """The harness's detector interface: frames uint8 (B, H, W, 3) at the model view -> per frame
        [{"category", "box2d": {x1, y1, x2, y2}, "score"}] (docs/design.md "Scenarios")."""
        from openvica_sim.frames import preprocess

        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 (B, H, W, 3), got {frames.dtype} {frames.shape}")
        device = next(self.parameters()).device
        out = []
        for i in range(0, len(frames), batch_size):
            x = preprocess(frames[i:i + batch_size]).to(device)  # (b, 3, 256, 256): resize + crop as the model view
            for o in self.predict(x, min_score):
                out.append([{"category": self.config.classes[int(c)], "score": round(float(s), 4),
                             "box2d": dict(zip(("x1", "y1", "x2", "y2"), (round(float(v), 2) for v in b)))}
                            for b, c, s in zip(o["boxes"], o["labels"], o["scores"])])
        return out

