"""Random feature networks saved in exactly the real formats, for tests and benchmarks (never for measuring).

- inception.pt: TorchScript, `forward(img, return_features: bool = False)` on uint8 (N, 3, H, W), resizing itself,
  as StyleGAN2-ADA's inception-2015-12-05.pt (features of 16 dimensions instead of 2048).
- i3d.pt: TorchScript, `forward(x, rescale: bool = False, resize: bool = False, return_features: bool = False)` on
  (B, 3, T, H, W) in 0..255, as StyleGAN-V's i3d_torchscript.pt; a temporal convolution, so frame order matters.
- clip/: a transformers CLIPModel folder (text and vision towers, projections) with preprocessor_config.json, as
  openai/clip-vit-large-patch14-336, at image size 32.
- alexnet.pth / vgg16.pth: torchvision-format state dicts (AlexNet at its real widths, VGG16 narrow), and
  vgg16_lpips.pth: LPIPS-format linear layers for the narrow VGG16 (AlexNet uses the real ones torchmetrics ships).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FEATURES = 16


class TinyInception(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 5, stride=2, padding=2)
        self.conv2 = nn.Conv2d(8, FEATURES, 3, stride=2, padding=1)
        self.head = nn.Linear(FEATURES, 10)

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        x = F.interpolate(img.float(), size=(96, 96), mode="bilinear", align_corners=False) / 127.5 - 1
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        features = x.mean(dim=(2, 3)) + x.amax(dim=(2, 3))
        return features if return_features else self.head(features)


class TinyI3D(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv3d(3, 8, (3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2))
        self.conv2 = nn.Conv3d(8, FEATURES, (3, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.head = nn.Linear(FEATURES, 4)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        x = x.float()
        if rescale:
            x = x / 127.5 - 1
        if resize:
            x = F.interpolate(x, size=(x.shape[2], 32, 32), mode="trilinear", align_corners=False)
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        features = x.mean(dim=(2, 3, 4))
        return features if return_features else self.head(features)


def write_feature_networks(root: Path, full_clip: bool = False) -> dict[str, Path]:
    """Write the networks above into `root`; with `full_clip` the CLIP folder has ViT-L/14-336's real shapes (304M
    parameters, random): what CMMD costs at full size. Returns {name: path}."""
    from transformers import CLIPConfig, CLIPModel

    from openvica_sim.models.perceptual import AlexNetFeatures, VGG16Features

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.jit.script(TinyInception().eval()).save(str(root / "inception.pt"))
    torch.jit.script(TinyI3D().eval()).save(str(root / "i3d.pt"))

    text = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                max_position_embeddings=16)
    vision = dict(image_size=32, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                  num_attention_heads=2)
    if full_clip:  # openai/clip-vit-large-patch14-336's vision tower
        vision = dict(image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                      num_attention_heads=16)
    clip = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=768 if full_clip else 12))
    clip.save_pretrained(root / "clip")
    (root / "clip" / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "CLIPImageProcessor", "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3,
        "crop_size": {"height": vision["image_size"], "width": vision["image_size"]},
        "size": {"shortest_edge": vision["image_size"]}}))

    alexnet = AlexNetFeatures()
    torch.save({f"features.{k}": v for k, v in alexnet.features.state_dict().items()}
               | {"classifier.1.weight": torch.zeros(2, 2)}, root / "alexnet.pth")
    widths = (4, 8, 8, 16, 16)
    vgg = VGG16Features(widths)
    torch.save({f"features.{k}": v for k, v in vgg.features.state_dict().items()}, root / "vgg16.pth")
    torch.save({f"lin{i}.model.1.weight": torch.rand(1, w, 1, 1) for i, w in enumerate(widths)},
               root / "vgg16_lpips.pth")
    return {"inception": root / "inception.pt", "i3d": root / "i3d.pt", "clip": root / "clip",
            "alexnet": root / "alexnet.pth", "vgg16": root / "vgg16.pth", "vgg16_lpips": root / "vgg16_lpips.pth"}
