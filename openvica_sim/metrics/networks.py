"""The feature networks of the paper's metrics, each read from a local file the user names (nothing downloads).

    metric   network                                   file                                      flag
    FID      Inception-v3, TorchScript                 inception-2015-12-05.pt                   --inception
    FVD      I3D (Kinetics-400), TorchScript           i3d_torchscript.pt                        --i3d
    CMMD     CLIP ViT-L/14-336, a transformers folder  clip-vit-large-patch14-336/               --clip-model
    LPIPS    AlexNet or VGG16, torchvision state dict  alexnet-owt-7be5be79.pth / vgg16-...pth   --lpips-net
             + LPIPS's linear layers (v0.1)            inside the torchmetrics (and lpips) wheel --lpips-linear

The two TorchScript files are the standard ones of StyleGAN2-ADA (FID) and StyleGAN-V (FVD): their forward
signatures are `inception(images uint8 (N, 3, H, W), return_features=True) -> (N, 2048)` (it resizes to 299 itself)
and `i3d(videos uint8 (B, 3, T, H, W), rescale=True, resize=True, return_features=True) -> (B, 400)` (it rescales
0..255 to [-1, 1] and resizes to 224 itself). `torch.jit.load` runs only TorchScript ops, never Python code.
Tests use tiny random networks saved in exactly these formats.

A missing or wrong file raises `FeatureNetworkError` (a `FileNotFoundError` or `ValueError`) naming the file,
where it is published and the flag that takes it.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from openvica_sim.models.perceptual import (AlexNetFeatures, VGG16Features, load_alexnet, load_vgg16,
                                            read_features_state)


@dataclass(frozen=True)
class Published:
    """Where a feature network is published and which flag of `openvica eval` takes it."""

    what: str
    url: str
    flag: str

    def fix(self) -> str:
        return f"download {self.what} once from {self.url} and pass its local path with {self.flag}"


INCEPTION = Published("the FID Inception-v3 (inception-2015-12-05.pt, StyleGAN2-ADA's TorchScript file)",
                      "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
                      "--inception")
I3D = Published("the FVD I3D (i3d_torchscript.pt, StyleGAN-V's TorchScript file)",
                "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt", "--i3d")
CLIP = Published("the CMMD CLIP ViT-L/14-336 folder (config.json, model.safetensors, preprocessor_config.json)",
                 "https://huggingface.co/openai/clip-vit-large-patch14-336", "--clip-model")
LPIPS_NET = Published("torchvision's ImageNet AlexNet (alexnet-owt-7be5be79.pth; or VGG16, vgg16-397923af.pth)",
                      "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "--lpips-net")
LPIPS_LINEAR = Published("LPIPS v0.1's linear layers (alex.pth / vgg.pth; they ship inside the torchmetrics and "
                         "lpips wheels)",
                         "https://github.com/richzhang/PerceptualSimilarity/tree/master/lpips/weights/v0.1",
                         "--lpips-linear")

# LPIPS's input scaling of [-1, 1] images (lpips v0.1's ScalingLayer), so that the backbone sees ImageNet statistics
LPIPS_SHIFT, LPIPS_SCALE = (-0.030, -0.088, -0.188), (0.458, 0.448, 0.450)
LPIPS_EPS = 1e-10  # lpips' normalize_tensor: x / (||x||_channels + eps)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's published normalisation, when the folder has no
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)  # preprocessor_config.json


class FeatureNetworkError(Exception):
    """Base of the errors below: a feature network's file is missing or is not what the metric needs."""


class FeatureNetworkMissing(FeatureNetworkError, FileNotFoundError):
    pass


class FeatureNetworkInvalid(FeatureNetworkError, ValueError):
    pass


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a folder's files (sorted relative names and contents): what metrics.json records."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        if path.is_dir():
            digest.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


# ---- FID and FVD: TorchScript ---------------------------------------------------------------------------------------

def load_torchscript(path: str | os.PathLike, published: Published, device: str | torch.device = "cpu"):
    """A TorchScript feature network in eval mode.

    Raises:
        FeatureNetworkMissing: no file at `path`.
        FeatureNetworkInvalid: the file is not a TorchScript archive.
    """
    path = Path(path)
    if not path.is_file():
        raise FeatureNetworkMissing(f"no file at {path}; {published.fix()}")
    try:
        return torch.jit.load(str(path), map_location=device).eval()
    except RuntimeError as e:
        raise FeatureNetworkInvalid(f"{path} is not a TorchScript file ({str(e).splitlines()[0]}); "
                                    f"{published.fix()}") from e


def load_inception(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """FID's Inception-v3: `net(images uint8 (N, 3, H, W), return_features=True) -> (N, 2048)` (see module)."""
    return load_torchscript(path, INCEPTION, device)


def load_i3d(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """FVD's I3D: `net(videos uint8 (B, 3, T, H, W), rescale=True, resize=True, return_features=True) -> (B, 400)`."""
    return load_torchscript(path, I3D, device)


# ---- CMMD: CLIP --------------------------------------------------------------------------------------------------

class ClipImageEmbedder(nn.Module):
    """CLIP's image embedding as CMMD takes it: frames resized bicubically to the model's input size, normalised
    with the folder's preprocessor statistics, `image_embeds` of `CLIPVisionModelWithProjection`, unit length."""

    def __init__(self, model, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.model = model
        self.size = int(model.config.image_size)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @torch.inference_mode()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images uint8 (N, 3, H, W) -> unit embeddings (N, D) float32."""
        x = images.to(self.mean.device).float() / 255.0
        if x.shape[-2:] != (self.size, self.size):
            x = nn.functional.interpolate(x, size=(self.size, self.size), mode="bicubic", align_corners=False,
                                          antialias=True).clamp(0, 1)
        x = (x - self.mean) / self.std
        dtype = next(self.model.parameters()).dtype
        embeds = self.model(pixel_values=x.to(dtype)).image_embeds.float()
        return embeds / embeds.norm(dim=-1, keepdim=True)


def load_clip(path: str | os.PathLike, device: str | torch.device = "cpu") -> ClipImageEmbedder:
    """CMMD's CLIP image embedder from a local transformers folder (a full CLIPModel or its vision part).

    Raises:
        FeatureNetworkMissing: `path` is not a folder with config.json.
        FeatureNetworkInvalid: the folder does not hold a CLIP model with a visual projection.
    """
    import json

    from transformers import CLIPVisionModelWithProjection

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FeatureNetworkMissing(f"no CLIP folder at {path} (no config.json); {CLIP.fix()}")
    config = json.loads((path / "config.json").read_text())
    model_type = config.get("model_type")
    if model_type not in ("clip", "clip_vision_model"):
        raise FeatureNetworkInvalid(f"{path}/config.json is a {model_type!r} model, not CLIP; {CLIP.fix()}")
    from transformers import CLIPConfig, CLIPVisionConfig

    if model_type == "clip":  # a whole CLIPModel: its vision tower and visual projection, sized by the top config
        vision = CLIPConfig.from_pretrained(path).vision_config
        vision.projection_dim = config.get("projection_dim", vision.projection_dim)
    else:
        vision = CLIPVisionConfig.from_pretrained(path)
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the text tower's weights are unused by design: no report of them
    try:
        model, info = CLIPVisionModelWithProjection.from_pretrained(path, config=vision, local_files_only=True,
                                                                    use_safetensors=True, output_loading_info=True)
    except (OSError, ValueError) as e:
        raise FeatureNetworkInvalid(f"{path} does not load as a CLIP vision model with projection ({e}); "
                                    f"{CLIP.fix()}") from e
    finally:
        hf_logging.set_verbosity(verbosity)
    bad = list(info.get("missing_keys", [])) + [str(m) for m in info.get("mismatched_keys", [])]
    if bad:  # transformers would initialise these at random: never measure with a half-random network
        raise FeatureNetworkInvalid(f"{path} lacks or mismatches weights of the CLIP vision model ({bad[:3]}); "
                                    f"{CLIP.fix()}")
    mean, std = CLIP_MEAN, CLIP_STD
    preprocessor = path / "preprocessor_config.json"
    if preprocessor.is_file():
        cfg = json.loads(preprocessor.read_text())
        mean, std = tuple(cfg.get("image_mean", mean)), tuple(cfg.get("image_std", std))
    return ClipImageEmbedder(model.eval(), mean, std).to(device).eval()


# ---- LPIPS -------------------------------------------------------------------------------------------------------

class LPIPS(nn.Module):
    """LPIPS (paper ref. [44], v0.1): the backbone's five activations of both images, each unit-normalised over
    channels, their squared difference weighted per channel by the learned linear layers, averaged over space and
    summed over layers. Inputs in [-1, 1], scaled first by LPIPS's own shift and scale."""

    def __init__(self, backbone: AlexNetFeatures | VGG16Features, linear: list[torch.Tensor]):
        super().__init__()
        widths = list(backbone.widths)
        if [w.shape[1] for w in linear] != widths:
            raise ValueError(f"LPIPS linear layers of widths {[w.shape[1] for w in linear]} do not fit the "
                             f"backbone's {widths}")
        self.backbone = backbone
        self.linear = nn.ParameterList([nn.Parameter(w.float().reshape(1, -1, 1, 1), requires_grad=False)
                                        for w in linear])
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)

    @torch.inference_mode()
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """a, b (N, 3, H, W) in [-1, 1] -> distances (N,)."""
        fa = self.backbone.activations((a - self.shift) / self.scale)
        fb = self.backbone.activations((b - self.shift) / self.scale)
        total = torch.zeros(a.shape[0], device=a.device)
        for x, y, w in zip(fa, fb, self.linear):
            x = x / (x.pow(2).sum(1, keepdim=True).sqrt() + LPIPS_EPS)
            y = y / (y.pow(2).sum(1, keepdim=True).sqrt() + LPIPS_EPS)
            total = total + ((x - y).pow(2) * w).sum(1).mean(dim=(-2, -1))
        return total


def load_lpips(backbone: str | os.PathLike, linear: str | os.PathLike | None = None,
               device: str | torch.device = "cpu") -> LPIPS:
    """LPIPS over a torchvision-format AlexNet or VGG16 state dict (told apart by their conv count) and LPIPS's
    linear layers: `linear` when given, else the v0.1 file for that backbone inside the installed torchmetrics
    (or lpips) package, where both wheels ship them.

    Raises:
        FeatureNetworkMissing: no backbone file, or no linear layers given or installed.
        FeatureNetworkInvalid: a backbone of neither layout, or linear layers that do not fit it.
    """
    path = Path(backbone)
    try:
        state = read_features_state(path, "LPIPS backbone", LPIPS_NET.fix())
        convs = sum(k.endswith(".weight") for k in state)
        if convs not in (5, 13):
            raise ValueError(f"{path} has {convs} conv layers in `features`; LPIPS takes AlexNet (5) or VGG16 (13); "
                             f"{LPIPS_NET.fix()}")
        net = load_alexnet(path, device) if convs == 5 else load_vgg16(path, device)
    except FileNotFoundError as e:
        raise FeatureNetworkMissing(f"{e} (LPIPS backbone, {LPIPS_NET.flag})") from e
    except ValueError as e:
        raise FeatureNetworkInvalid(f"{e} (LPIPS backbone, {LPIPS_NET.flag})") from e
    name = "alex" if convs == 5 else "vgg"
    linear_path = Path(linear) if linear is not None else installed_lpips_linear(name)
    if linear_path is None or not linear_path.is_file():
        where = linear_path or "the torchmetrics package (pip install torchmetrics)"
        raise FeatureNetworkMissing(f"no LPIPS linear layers for {name} at {where}; {LPIPS_LINEAR.fix()}")
    weights = torch.load(linear_path, map_location="cpu", weights_only=True)
    keys = [f"lin{i}.model.1.weight" for i in range(5)]
    if not isinstance(weights, dict) or any(k not in weights for k in keys):
        raise FeatureNetworkInvalid(f"{linear_path} holds no LPIPS linear layers ({keys[0]} ...); "
                                    f"{LPIPS_LINEAR.fix()}")
    try:
        return LPIPS(net, [weights[k] for k in keys]).to(device).eval()
    except ValueError as e:
        raise FeatureNetworkInvalid(f"{linear_path}: {e}; pass the {name}.pth of LPIPS v0.1 "
                                    f"({LPIPS_LINEAR.flag})") from e


def installed_lpips_linear(backbone: str) -> Path | None:
    """LPIPS v0.1's linear layers for "alex" or "vgg" as shipped inside torchmetrics (or lpips), or None."""
    from importlib.util import find_spec

    for package, folder in (("torchmetrics", ("functional", "image", "lpips_models")),
                            ("lpips", ("weights", "v0.1"))):
        spec = find_spec(package)
        if spec is not None and spec.submodule_search_locations:
            candidate = Path(list(spec.submodule_search_locations)[0]).joinpath(*folder, f"{backbone}.pth")
            if candidate.is_file():
                return candidate
    return None
