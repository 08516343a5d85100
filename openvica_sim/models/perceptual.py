"""ImageNet backbones of the loss and the metrics: VGG16 (the perceptual loss network phi of eq. (3), paper ref.
[38], and an LPIPS backbone) and AlexNet (LPIPS's default backbone, paper ref. [44]).

torchvision cannot be installed here (docs/design.md "Video and vision models"), so the networks are written here with
torchvision's module layout: `features` is the same `nn.Sequential` (VGG16: convs at 0, 2, 5, ..., ReLUs after each,
max pools at 4, 9, 16, 23, 30; AlexNet: convs at 0, 3, 6, 8, 10), and a torchvision state dict (`features.N.weight`,
`features.N.bias`; the classifier is ignored) loads into it unchanged. Users download `vgg16-397923af.pth` or
`alexnet-owt-7be5be79.pth` once and pass its path.

Both return the five activations that LPIPS reads: VGG16's relu1_2, relu2_2, relu3_3, relu4_3 and relu5_3,
AlexNet's relu after each of its five convs.

Dimensions: B batch, H x W pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

VGG16_WIDTHS = (64, 128, 256, 512, 512)  # output channels of the five blocks
CONVS_PER_BLOCK = (2, 2, 3, 3, 3)
ALEXNET_WIDTHS = (64, 192, 384, 256, 256)  # output channels of the five convs
# (kernel, stride, padding) of AlexNet's convs and whether a 3x3/2 max pool follows (torchvision's `alexnet`)
ALEXNET_CONVS = ((11, 4, 2, True), (5, 1, 2, True), (3, 1, 1, False), (3, 1, 1, False), (3, 1, 1, False))
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
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
        return self.activations(((frames + 1) / 2 - self.mean) / self.std)

    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The five activations of input x (B, 3, H, W) already normalised as the caller's network expects
        (ImageNet statistics for the loss; LPIPS has its own scaling layer)."""
        return _taps(self.features, self.taps, x)


class AlexNetFeatures(nn.Module):
    """AlexNet's `features` (widths configurable for tests), returning the ReLU after each of its five convs."""

    def __init__(self, widths: tuple[int, ...] = ALEXNET_WIDTHS):
        super().__init__()
        if len(widths) != len(ALEXNET_CONVS):
            raise ValueError(f"widths={widths} must give the channels of AlexNet's {len(ALEXNET_CONVS)} convs")
        layers, taps, channels = [], [], 3
        for width, (kernel, stride, padding, pool) in zip(widths, ALEXNET_CONVS):
            layers += [nn.Conv2d(channels, width, kernel, stride, padding), nn.ReLU(inplace=False)]
            taps.append(len(layers) - 1)
            if pool:
                layers.append(nn.MaxPool2d(3, 2))
            channels = width
        self.features = nn.Sequential(*layers)  # torchvision's final max pool feeds nothing LPIPS reads
        self.taps = tuple(taps)
        self.widths = tuple(widths)

    def activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, 3, H, W), normalised as the caller's network expects -> the five ReLU activations."""
        return _taps(self.features, self.taps, x)


def load_vgg16(path: str | os.PathLike, device: str | torch.device = "cpu") -> VGG16Features:
    """VGG16 features from a local torchvision-format state dict (.pth via `torch.load(weights_only=True)`, or
    .safetensors), frozen and in eval mode. The widths are read from the weights, so smaller test networks of the
    same layout load too.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file holds no VGG16 `features.*` weights, or they do not fit VGG16's layout.
    """
    path = Path(path)
    fetch = f"download torchvision's ImageNet VGG16 once ({VGG16_URL}) and pass its path"
    state = read_features_state(path, "VGG16", fetch)
    out_channels = _conv_widths(state)
    starts = [sum(CONVS_PER_BLOCK[:b]) for b in range(len(CONVS_PER_BLOCK))]
    if len(out_channels) != sum(CONVS_PER_BLOCK):
        raise ValueError(f"{path} has {len(out_channels)} conv layers in `features`; VGG16 has "
                         f"{sum(CONVS_PER_BLOCK)} (is it VGG11/13/19?)")
    return _load_into(VGG16Features(tuple(out_channels[s] for s in starts)), state, path, "VGG16", device)


def load_alexnet(path: str | os.PathLike, device: str | torch.device = "cpu") -> AlexNetFeatures:
    """AlexNet features from a local torchvision-format state dict (as `load_vgg16`), frozen and in eval mode.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file holds no AlexNet `features.*` weights, or they do not fit AlexNet's layout.
    """
    path = Path(path)
    fetch = f"download torchvision's ImageNet AlexNet once ({ALEXNET_URL}) and pass its path"
    state = read_features_state(path, "AlexNet", fetch)
    out_channels = _conv_widths(state)
    if len(out_channels) != len(ALEXNET_CONVS):
        raise ValueError(f"{path} has {len(out_channels)} conv layers in `features`; AlexNet has "
                         f"{len(ALEXNET_CONVS)} (is it a VGG?)")
    return _load_into(AlexNetFeatures(tuple(out_channels)), state, path, "AlexNet", device)


def read_features_state(path: Path, network: str, fetch: str) -> dict[str, torch.Tensor]:
    """The `features.*` tensors of a torchvision state dict file (.pth or .safetensors), keys without the prefix.

    Raises:
        FileNotFoundError: no file at `path` (the message ends with `fetch`, how to get it).
        ValueError: not a state dict, or no `features.N.weight` in it.
    """
    if not path.is_file():
        raise FileNotFoundError(f"no {network} weights at {path}; {fetch}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict; {fetch}")
    state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    if not any(k.endswith(".weight") for k in state):
        raise ValueError(f"{path} has no `features.N.weight` tensors, so it is not a torchvision {network} state "
                         f"dict; {fetch}")
    return state


def _conv_widths(state: dict) -> list[int]:
    """Output channels of the convs of a `features` state dict, in layer order."""
    convs = sorted(int(k.split(".")[0]) for k in state if k.endswith(".weight"))
    return [state[f"{i}.weight"].shape[0] for i in convs]


def _load_into(model: nn.Module, state: dict, path: Path, network: str, device) -> nn.Module:
    missing, unexpected = model.features.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not fit {network}'s `features`: missing {missing[:4]}, unexpected "
                         f"{unexpected[:4]}")
    model.requires_grad_(False)
    return model.to(device).eval()


def _taps(features: nn.Sequential, taps: tuple[int, ...], x: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for i, layer in enumerate(features):
        x = layer(x)
        if i in taps:
            out.append(x)
            if len(out) == len(taps):
                break
    return out
