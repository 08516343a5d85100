"""DINOv2 teacher of TOK fine-tuning's SSL loss: a frozen ViT-S/14 whose patch features are the targets.

The paper's teacher is DINOv2 ViT-S/14 (`facebook/dinov2-small`: C = 384 features per 14 x 14 patch). It is read
from a local `transformers` Dinov2Model folder only (download it once, then train offline), frozen and in eval mode;
nothing here trains it. `teacher_features` turns frames in [-1, 1] into the per-patch targets.

Dimensions: B batch, H x W pixels, p patch size (14), h x w patch grid, C teacher features (384).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Dinov2Config, Dinov2Model
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # DINOv2's preprocessing

VIT_S14 = dict(hidden_size=384, patch_size=14)  # the paper's teacher, facebook/dinov2-small
# For tests only: the same class, small enough to build in milliseconds.
TINY = dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4, patch_size=14, image_size=224)


def load_dinov2(path: str | os.PathLike, device: str | torch.device = "cpu") -> Dinov2Model:
    """Load a local Dinov2Model folder (config.json + safetensors) as a frozen teacher in eval mode.

    Warns when the model is not ViT-S/14 (hidden_size 384, patch_size 14): it works, but the SSL targets are then
    not the paper's.

    Raises:
        FileNotFoundError: no folder at `path`, or it lacks config.json or safetensors weights.
        ValueError: the folder holds another model type than 'dinov2'.
    """
    path = Path(path)
    fetch = f"download it once with `hf download facebook/dinov2-small --local-dir {path}`"
    if not path.is_dir():
        raise FileNotFoundError(f"no DINOv2 folder at {path}; {fetch}")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json, so it is not a transformers model folder; {fetch}")
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type != "dinov2":
        raise ValueError(f"{path} holds a {model_type!r} model, but the teacher must be a 'dinov2' Dinov2Model "
                         f"(DINOv2 with registers is another class); {fetch}")
    if not any(path.glob("*.safetensors")):
        raise FileNotFoundError(f"{path} has no .safetensors weights (only safetensors are read); {fetch}")
    model = Dinov2Model.from_pretrained(path, local_files_only=True, use_safetensors=True)
    shape = dict(hidden_size=model.config.hidden_size, patch_size=model.config.patch_size)
    if shape != VIT_S14:
        warnings.warn(f"the DINOv2 teacher at {path} has {shape}; the paper's is ViT-S/14 {VIT_S14}, so the SSL "
                      f"targets will differ from the paper's", stacklevel=2)
    return _frozen(model).to(device)


def create_random_dinov2(out_dir: str | os.PathLike | None = None, seed: int = 0, **overrides) -> Dinov2Model:
    """A randomly initialised, frozen Dinov2Model of the TINY shape (`overrides` change fields), for tests.

    With `out_dir`, it is also saved there with `save_pretrained` (config.json + model.safetensors).
    """
    torch.manual_seed(seed)
    model = _frozen(Dinov2Model(Dinov2Config(**{**TINY, **overrides})))
    if out_dir is not None:
        model.save_pretrained(out_dir)
    return model


@torch.no_grad()
def teacher_features(model: Dinov2Model, frames: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """DINOv2 patch features: frames (B, 3, H, W) in [-1, 1] -> (B, h * w, C).

    The frames are resized (bicubic, antialiased) to (h p, w p) pixels and normalised with ImageNet's mean and std,
    as DINOv2 was trained; unlike its image processor, nothing is cropped, so every patch covers the same part of
    the frame as the tokens it supervises. The grid (h, w) is `grid`, or by default (H / p, W / p) rounded to the
    nearest integer. Pass the tokenizer's token grid to get one feature per token: (16, 16) resizes 256 x 256
    frames to 224 x 224.

    Row r * w + c of the result is the patch in grid row r, column c (row-major, top left first). The features are
    the last layer's tokens after DINOv2's final LayerNorm (`last_hidden_state`, DINOv2's "x_norm_patchtokens"),
    without the CLS token.

    Raises:
        ValueError: frames not (B, 3, H, W), or a grid that is not two positive integers.
    """
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"teacher_features expects frames (B, 3, H, W) in [-1, 1], got {tuple(frames.shape)}")
    p = model.config.patch_size
    ph, pw = (p, p) if isinstance(p, int) else p
    if grid is None:
        grid = (max(1, round(frames.shape[2] / ph)), max(1, round(frames.shape[3] / pw)))
    if len(grid) != 2 or min(grid) < 1:
        raise ValueError(f"grid must be (h, w) patches, both at least 1, got {grid}")
    size = (grid[0] * ph, grid[1] * pw)
    weight = model.embeddings.patch_embeddings.projection.weight
    pixels = (frames.to(device=weight.device, dtype=weight.dtype) + 1) / 2  # [-1, 1] -> [0, 1]
    if pixels.shape[2:] != size:  # bicubic overshoots: clamp back to the pixel range
        pixels = F.interpolate(pixels, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
    mean = pixels.new_tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
    std = pixels.new_tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
    tokens = model(pixel_values=(pixels - mean) / std).last_hidden_state  # (B, 1 + h * w, C): CLS first
    return tokens[:, 1:]


def _frozen(model: Dinov2Model) -> Dinov2Model:
    model.requires_grad_(False)
    return model.eval()
