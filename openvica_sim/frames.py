"""Camera frames to model input and back: downscale, centre crop, [-1, 1] (paper III-C a).

The paper takes a BDD100K frame of 1280x720 pixels, downscales it by 0.5 in height and width with
bilinear interpolation (to 640x360) and feeds the tokenizer the 256x256 crop from the image centre,
normalised. Other frame sizes follow the same rule, stated once in `preprocess`: scale so that the
short side becomes `short_side` (360, so 1280x720 gets exactly the paper's 0.5), then crop the centre.

Dimensions: C = 3 colour channels (RGB), H x W pixels, S = the crop size (256). Camera frames are
uint8, channels last (..., H, W, C); model frames are float in [-1, 1], channels first (..., C, S, S).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

FRAME_SIZE = 256  # S: the tokenizer's input, 16 x 16 tokens of 16 x 16 pixels (paper III-C a)
SHORT_SIDE = 360  # 720 * 0.5: the paper's 0.5 downscale of BDD100K's 1280x720 frames

FrameArray = np.ndarray | torch.Tensor


def preprocess(frames: FrameArray, size: int = FRAME_SIZE, short_side: int | None = SHORT_SIDE) -> torch.Tensor:
    """Camera frames, uint8 (..., H, W, 3), to model frames, float32 (..., 3, size, size) in [-1, 1].

    The rule, in order:
    1. A frame already `size` x `size` is taken as already cropped and is only normalised.
    2. Otherwise it is scaled so that its short side becomes `short_side`, the long side
       `round(long * short_side / short)`: 1280x720 -> 640x360 (the paper's factor 0.5), 1920x1080 ->
       640x360, a portrait 720x1280 -> 360x640. `short_side=None` skips the scaling.
    3. The centre `size` x `size` crop is taken (offsets rounded down).
    4. Values v in 0..255 become v / 127.5 - 1, so 0 -> -1 and 255 -> 1.

    Scaling is plain bilinear as in the paper: `F.interpolate(mode="bilinear", align_corners=False,
    antialias=False)` (torch 2.13). At exactly 0.5 every output pixel is then the mean of a 2x2 input
    block; Pillow's and torch's antialiased bilinear would blur over 4x4 pixels instead.

    Args:
        frames: numpy array or torch tensor, uint8 RGB, shape (H, W, 3), (N, H, W, 3) or (B, T, H, W, 3).
            A tensor stays on its device.
        size: side S of the square crop.
        short_side: the short side after scaling, or None for no scaling.

    Returns:
        float32 tensor (..., 3, size, size) with the same leading dimensions as `frames`.

    Raises:
        TypeError: `frames` is not a uint8 numpy array or torch tensor.
        ValueError: a shape other than (..., H, W, 3), `short_side < size`, or a frame smaller
            than the crop after scaling.
    """
    frames = check_rgb_uint8(frames, ndims=(3, 4, 5))
    if short_side is not None and short_side < size:
        raise ValueError(
            f"short_side={short_side} is smaller than the crop size={size}; every frame would be too small "
            f"to crop. Use short_side >= {size} (the paper: {SHORT_SIDE}) or short_side=None to crop unscaled")
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    *lead, height, width, _ = x.shape
    x = x.reshape(-1, height, width, 3).permute(0, 3, 1, 2).float()  # (N, 3, H, W)
    if (height, width) != (size, size) and short_side is not None:
        x = resize_short_side(x, short_side)
    if min(x.shape[-2:]) < size:
        raise ValueError(
            f"a {width}x{height} frame (W x H) is {x.shape[-1]}x{x.shape[-2]} after scaling (short_side="
            f"{short_side}), smaller than the {size}x{size} crop; pass a larger short_side, or short_side="
            f"{size} to crop after scaling the short side to the crop")
    x = center_crop(x, size)  # (N, 3, S, S)
    return (x / 127.5 - 1.0).reshape(*lead, 3, size, size)


def postprocess(frames: FrameArray) -> np.ndarray:
    """Model frames, float (..., 3, H, W) in [-1, 1], to displayable uint8 (..., H, W, 3).

    The inverse of `preprocess`'s normalisation: round((x + 1) * 127.5), clamped to 0..255 (model
    outputs overshoot [-1, 1]). `postprocess(preprocess(f))` is `f` exactly for a 256x256 frame.

    Raises:
        TypeError: `frames` is not a floating numpy array or torch tensor.
        ValueError: `frames` does not have 3 channels in dimension -3.
    """
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if not isinstance(frames, torch.Tensor) or not frames.is_floating_point():
        kind = frames.dtype if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise TypeError(f"expected float model frames (..., 3, H, W) in [-1, 1], got {kind}")
    if frames.ndim < 3 or frames.shape[-3] != 3:
        raise ValueError(
            f"expected model frames (..., 3, H, W), channels first, got shape {tuple(frames.shape)}; "
            f"channels-last frames are already in display layout")
    x = ((frames.detach().float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


def model_view(frames: FrameArray) -> np.ndarray:
    """Camera frames uint8 (..., H, W, 3) -> the uint8 (..., S, S, 3) centre crops the tokenizer reads.

    What a person should see of the seed frames (videos, contact sheets, the env's first observation):
    exactly what the model saw. For frames already S x S this is the identity.
    """
    return postprocess(preprocess(frames))


def resize_short_side(frames: torch.Tensor, short_side: int) -> torch.Tensor:
    """Bilinearly scale float frames (N, C, H, W) so that min(H, W) == short_side; see `preprocess`."""
    height, width = frames.shape[-2:]
    scale = short_side / min(height, width)
    out_size = (round(height * scale), round(width * scale))
    if out_size == (height, width):
        return frames
    # size=, not scale_factor=: torch then maps pixels with in/out, exactly 2 for 720 -> 360
    return F.interpolate(frames, size=out_size, mode="bilinear", align_corners=False, antialias=False)


@dataclass(frozen=True)
class CropView:
    """Where the size x size model view lies in an H x W camera frame (`preprocess`'s scale, then centre crop):
    model-view pixel (x, y) is camera pixel ((x + left) / scale_x, (y + top) / scale_y). Stored with each ingested
    clip (`camera_view`), so that boxes can be given in the camera frame's pixels as well as the crop's."""

    camera_height: int
    camera_width: int
    size: int
    scale_x: float
    scale_y: float
    left: int
    top: int

    @classmethod
    def of(cls, height: int, width: int, size: int = FRAME_SIZE, short_side: int | None = SHORT_SIDE) -> "CropView":
        """The view `preprocess(frames, size, short_side)` takes of H x W frames."""
        if (height, width) == (size, size) or short_side is None:
            scaled_h, scaled_w = height, width
        else:
            scale = short_side / min(height, width)
            scaled_h, scaled_w = round(height * scale), round(width * scale)  # as resize_short_side
        return cls(int(height), int(width), int(size), scaled_w / width, scaled_h / height,
                   (scaled_w - size) // 2, (scaled_h - size) // 2)  # offsets as center_crop

    @classmethod
    def from_dict(cls, d: dict) -> "CropView":
        return cls(**{k: d[k] for k in ("camera_height", "camera_width", "size", "scale_x", "scale_y", "left", "top")})

    def as_dict(self) -> dict:
        return asdict(self)

    def to_camera(self, box: dict) -> dict:
        """A box2d {x1, y1, x2, y2} in the model view's pixels -> the same box in the camera frame's pixels."""
        return {"x1": (float(box["x1"]) + self.left) / self.scale_x, "y1": (float(box["y1"]) + self.top) / self.scale_y,
                "x2": (float(box["x2"]) + self.left) / self.scale_x, "y2": (float(box["y2"]) + self.top) / self.scale_y}

    def to_model(self, box: dict) -> dict:
        """A box2d in the camera frame's pixels -> in the model view's pixels (not clipped to the crop)."""
        return {"x1": float(box["x1"]) * self.scale_x - self.left, "y1": float(box["y1"]) * self.scale_y - self.top,
                "x2": float(box["x2"]) * self.scale_x - self.left, "y2": float(box["y2"]) * self.scale_y - self.top}


def boxes_to_model_view(boxes: list[dict], height: int, width: int, size: int = FRAME_SIZE,
                        short_side: int | None = SHORT_SIDE, min_visible: float = 0.25) -> list[dict]:
    """Boxes {"box2d": {x1, y1, x2, y2}, ...} in the pixels of an H x W camera frame -> the same boxes in the
    size x size crop that `preprocess` makes of it (`CropView`: scaled, shifted, clipped to the crop). A box keeping
    less than `min_visible` of its area inside the crop is dropped. Other keys of each box are kept."""
    view = CropView.of(height, width, size, short_side)
    out = []
    for b in boxes:
        m = view.to_model(b["box2d"])
        x1, y1, x2, y2 = m["x1"], m["y1"], m["x2"], m["y2"]
        area = max(0.0, x2 - x1) * max(0.0, y2 - y1)
        cx1, cy1, cx2, cy2 = max(x1, 0.0), max(y1, 0.0), min(x2, float(size)), min(y2, float(size))
        visible = max(0.0, cx2 - cx1) * max(0.0, cy2 - cy1)
        if area > 0 and visible >= min_visible * area:
            out.append({**b, "box2d": {"x1": cx1, "y1": cy1, "x2": cx2, "y2": cy2}})
    return out


def center_crop(frames: FrameArray, size: int) -> FrameArray:
    """The centre size x size window of the last two dimensions; offsets round down."""
    height, width = frames.shape[-2:]
    if height < size or width < size:
        raise ValueError(f"cannot crop {size}x{size} from frames of {width}x{height} (W x H)")
    top, left = (height - size) // 2, (width - size) // 2
    return frames[..., top:top + size, left:left + size]


def check_rgb_uint8(frames: FrameArray, ndims: tuple[int, ...] = (3, 4, 5)) -> FrameArray:
    """Check that `frames` are uint8 RGB, channels last, with one of `ndims` dimensions; return them.

    Raises:
        TypeError: not a numpy array or torch tensor, or not uint8.
        ValueError: a wrong number of dimensions or of channels.
    """
    shapes = {3: "(H, W, 3)", 4: "(N, H, W, 3)", 5: "(B, T, H, W, 3)"}
    expected = " or ".join(shapes[n] for n in ndims)
    if not isinstance(frames, (np.ndarray, torch.Tensor)):
        hint = "np.asarray(image.convert('RGB'))" if hasattr(frames, "convert") else "np.asarray(frames)"
        raise TypeError(f"expected uint8 RGB frames {expected} as a numpy array or torch tensor, "
                        f"got {type(frames).__name__}; convert with {hint}")
    dtype = str(frames.dtype).removeprefix("torch.")
    if dtype != "uint8":
        raise TypeError(
            f"expected uint8 RGB frames {expected}, got {dtype}; convert with "
            f"(frames * 255).round().clip(0, 255).astype(np.uint8) for values in [0, 1], or with "
            f"openvica_sim.frames.postprocess for model frames in [-1, 1]")
    shape = tuple(frames.shape)
    last = shape[-1] if shape else None
    if frames.ndim in ndims and last == 3:
        return frames
    if last == 3:
        hint = f"{frames.ndim} dimensions"
        if frames.ndim + 1 in ndims:
            hint += "; for a single frame add a leading dimension with frames[None]"
    elif frames.ndim >= 3 and shape[-3] == 3 and last not in (1, 4):
        hint = "channels first: move the channels last with np.moveaxis(frames, -3, -1) or tensor.movedim(-3, -1)"
    elif last == 4:
        hint = "RGBA: drop the alpha channel with frames[..., :3]"
    elif last == 1:
        hint = "grayscale: repeat the channel with np.repeat(frames, 3, axis=-1)"
    elif frames.ndim + 1 in ndims:
        hint = "grayscale without a channel dimension? repeat it with np.repeat(frames[..., None], 3, axis=-1)"
    else:
        hint = f"{frames.ndim} dimensions"
    raise ValueError(f"expected RGB frames {expected}, channels last, got shape {shape} ({hint})")
