"""The perceptual loss network phi of eq. (3): VGG16's convolutional features, ImageNet-pretrained (paper ref. [38]).

torchvision cannot be installed here (DESIGN.md "Video and vision models"), so the network is written here with
torchvision's module layout: `features` is the same `nn.Sequential` (convs at 0, 2, 5, ..., ReLUs after each, max
pools at 4, 9, 16, 23, 30), and a torchvision `vgg16` state dict (`features.N.weight`, `features.N.bias`; the
classifier is ignored) loads into it unchanged. Users download `vgg16-397923af.pth` once and pass its path.

The loss reads the five activations that LPIPS uses, relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3.

Dimensions: B batch, H x W pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

VGG16_WIDTHS = (64, 128, 256, 512, 512)  # output channels of the five blocks
CONVS_PER_BLOCK = (2, 2, 3, 3, 3)
# torchvision's ImageNet normalisation of [0, 1] pixels
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class VGG16Features(nn.Module):
    """VGG16's `features` (widths configurable for tests), returning the last ReLU of each of the five blocks."""

    def __init__(self, widths: tuple[int, ...] = VGG16_WIDTHS):
        super().__init__()
        if len(widths) != len(CONVS_PER_BLOCK):
            raise ValueError(f"widths={widths} must give the channels of VGG16's {len(CONVS_PER_BLOCK)} blocks")
        layers, taps, channels = [], [], 3
        for width, convs in zip(widths, CONVS_PER_BLOCK):
            for _ in range(convs):
                layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=False)]
                channels = width
            taps.append(len(layers) - 1)  # relu{block}_{last}
            layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers[:-1])  # the last max pool feeds nothing the loss reads
        self.taps = tuple(taps)
        self.widths = tuple(widths)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: torch.Tensor) -> list[torch.Tensor]:
        """frames (B, 3, H, W) in [-1, 1] -> [relu1_2, relu2_2, relu3_3, relu4_3, relu5_3] activations."""
        x = ((frames + 1) / 2 - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out


def load_vgg16(path: str | os.PathLike, device: str | torch.device = "cpu") -> VGG16Features:
    """VGG16 features from a local torchvision-format state dict (.pth via `torch.load(weights_only=True)`, or
    .safetensors), frozen and in eval mode. The widths are read from the weights, so smaller test networks of the
    same layout load too.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file holds no VGG16 `features.*` weights, or they do not fit VGG16's layout.
    """
    path = Path(path)
    fetch = ("download torchvision's ImageNet VGG16 once (https://download.pytorch.org/models/vgg16-397923af.pth) "
             "and pass its path")
    if not path.is_file():
        raise FileNotFoundError(f"no VGG16 weights at {path}; {fetch}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict; {fetch}")
    state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    convs = sorted((int(k.split(".")[0]) for k in state if k.endswith(".weight")))
    if not convs:
        raise ValueError(f"{path} has no `features.N.weight` tensors, so it is not a torchvision VGG16 state dict; "
                         f"{fetch}")
    out_channels = [state[f"{i}.weight"].shape[0] for i in convs]
    starts = [sum(CONVS_PER_BLOCK[:b]) for b in range(len(CONVS_PER_BLOCK))]
    if len(out_channels) != sum(CONVS_PER_BLOCK):
        raise ValueError(f"{path} has {len(out_channels)} conv layers in `features`; VGG16 has "
                         f"{sum(CONVS_PER_BLOCK)} (is it VGG11/13/19?)")
    model = VGG16Features(tuple(out_channels[s] for s in starts))
    missing, unexpected = model.features.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not fit VGG16's `features`: missing {missing[:4]}, unexpected "
                         f"{unexpected[:4]}")
    model.requires_grad_(False)
    return model.to(device).eval()
