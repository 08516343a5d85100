"""Video decoder (VDEC): a 3D CNN that decodes frame t from the tokens of frames t-1, t, t+1 (paper III-A c, III-C d).

VDEC is DEC inflated to 3D (MAGVIT central inflation, paper ref. [33]): every 3x3 conv of DEC becomes a 3x3x3 conv
holding the 2D kernel in its centre temporal slice and zeros elsewhere, and 1x1 convs become 1x1x1. GroupNorm and the
mid-block attention act on each frame separately, and upsampling is spatial only. So a VDEC fresh from
`VideoDecoder.from_tokenizer` equals DEC frame by frame; fine-tuning with eq. (8) then teaches the off-centre slices
to use the neighbouring frames. The window has one frame of lookahead: frame t needs the tokens of t+1.

`temporal_up_blocks` (default None: every conv, the paper's inflation) keeps the temporal kernels in conv_in, the
mid block and the first (coarsest) `temporal_up_blocks` up blocks only; the finer blocks and conv_out stay 2D
(kt = 1), so at inference they run on the centre frame alone. The fine, full-resolution convs are most of DEC's
work, so VDEC then costs about one DEC plus the coarse stages three times, instead of nine DECs (3 frames x 3
temporal taps); the frames still mix, at 16..64 px resolution. The embedded default uses it (CPU speed, issue 7).

Dimensions: B batch, T frames (T = window = 3 inside the network), d code dimension, h x w token grid,
H x W pixels, K codebook size. Activations are (B, C, T, H, W), as `nn.Conv3d` wants them.

The module tree mirrors `vqmodel.post_quant_conv` and `vqmodel.decoder` of diffusers 0.42 (`Decoder` with
norm_type "group": conv_in, mid_block, up_blocks[i].resnets / .upsamplers, conv_norm_out, conv_act, conv_out), and
the state-dict keys match DEC's, so inflation is a per-tensor map (`_inflate_state_dict`). The modules themselves are
written here, not taken from diffusers, because each 2D op needs its per-frame 3D form.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from openvica_sim.models.layers import temporal_conv

if TYPE_CHECKING:  # for the annotation only: model files do not import each other (STYLE.md 1)
    from openvica_sim.models.tokenizer import Tokenizer

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass(frozen=True)
class VideoDecoderConfig:
    # DEC's shape, same names and defaults as TokenizerConfig (aMUSEd-256), so VDEC needs no tokenizer to load
    block_out_channels: tuple[int, ...] = (128, 256, 256, 512, 768)
    layers_per_block: int = 2
    latent_channels: int = 64  # d
    codebook_size: int = 8192  # K
    norm_num_groups: int = 32
    image_size: int = 256  # H = W
    mid_block_add_attention: bool = False
    # VDEC's own
    window: int = 3  # frames t-1, t, t+1 in, frame t out (paper III-A c)
    temporal_kernel_size: int = 3  # of the inflated 3x3 convs; 1x1 convs stay 1x1x1
    temporal_up_blocks: int | None = None  # up blocks with temporal kernels (coarsest first); None: all (paper)

    def __post_init__(self):
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        blocks = len(self.block_out_channels)
        if self.temporal_up_blocks is not None and not 0 <= self.temporal_up_blocks <= blocks:
            raise ValueError(f"temporal_up_blocks={self.temporal_up_blocks} must lie in [0, {blocks}] (the decoder "
                             f"has {blocks} up blocks), or be None for temporal kernels everywhere (the paper's VDEC)")
        for name in ("window", "temporal_kernel_size"):
            value = getattr(self, name)
            if value < 1 or value % 2 == 0:
                raise ValueError(f"{name}={value} must be odd and >= 1, so that frame t sits in the centre")
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(f"block_out_channels={self.block_out_channels} must all be divisible by "
                             f"norm_num_groups={self.norm_num_groups}")
        if self.image_size % self.downsample:
            raise ValueError(f"image_size={self.image_size} is not a multiple of the downsampling {self.downsample}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def tokens_per_side(self) -> int:  # h = w
        return self.image_size // self.downsample

    @property
    def num_temporal_up_blocks(self) -> int:
        return len(self.block_out_channels) if self.temporal_up_blocks is None else self.temporal_up_blocks

    def temporal_kernel(self, key: str) -> int:
        """kt of the conv with state-dict key `key` (or module path): 1 in the per-frame fine stages."""
        if key.startswith("decoder.conv_out") and self.temporal_up_blocks is not None:
            return 1
        if key.startswith("decoder.up_blocks."):
            if int(key.split(".")[2]) >= self.num_temporal_up_blocks:
                return 1
        return self.temporal_kernel_size

    @classmethod
    def from_tokenizer_config(cls, tokenizer_config, **overrides) -> "VideoDecoderConfig":
        """DEC's shape read from a `TokenizerConfig` (by field name), plus VDEC's own fields from `overrides`."""
        shared = {f.name: getattr(tokenizer_config, f.name) for f in fields(cls)
                  if f.name not in ("window", "temporal_kernel_size", "temporal_up_blocks")}
        return cls(**shared, **overrides)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VideoDecoderConfig":
        """Inverse of `to_dict` (JSON turns tuples into lists; `__post_init__` turns them back).

        Raises:
            ValueError: `d` has keys that are not fields of the config.
        """
        names = {f.name for f in fields(cls)}
        if unknown := sorted(set(d) - names):
            raise ValueError(f"unknown video decoder config keys {unknown}; valid keys are {sorted(names)}")
        return cls(**d)


def window_indices(num_frames: int, window: int = 3) -> torch.Tensor:
    """Frame indices of the window around every frame, edge frames replicated: (T, window) int64.

    For T = 4, window = 3: [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]].

    Raises:
        ValueError: num_frames < 1 or an even window.
    """
    if num_frames < 1:
        raise ValueError(f"num_frames={num_frames} must be at least 1")
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window={window} must be odd and >= 1")
    half = window // 2
    offsets = torch.arange(-half, half + 1)  # (window,)
    return (torch.arange(num_frames)[:, None] + offsets[None]).clamp(0, num_frames - 1)  # (T, window)


class VideoDecoder(nn.Module):
    """VDEC: quantised vectors of a window of frames -> the centre frame; owns a copy of the codebook CB."""

    def __init__(self, config: VideoDecoderConfig):
        super().__init__()
        self.config = config
        # frozen with TOK during VDEC training (paper III-C d), so a buffer: saved, moved, never optimised
        self.register_buffer("codebook", torch.zeros(config.codebook_size, config.latent_channels))  # (K, d)
        self.post_quant_conv = _InflatedConv(config.latent_channels, config.latent_channels, 1, 1)
        self.decoder = _Decoder(config)

    @classmethod
    def from_tokenizer(cls, tokenizer: "Tokenizer", **config_overrides) -> "VideoDecoder":
        """VDEC initialised from DEC by central inflation (paper III-A c); equals DEC frame by frame.

        `config_overrides` sets VDEC's own fields (`window`, `temporal_kernel_size`, `temporal_up_blocks`). The
        weights are copies on
        the tokenizer's device and dtype, so training VDEC leaves DEC untouched.
        """
        config = VideoDecoderConfig.from_tokenizer_config(tokenizer.config, **config_overrides)
        vqmodel = tokenizer.vqmodel
        dec_state = {"codebook": tokenizer.codebook,
                     **{f"post_quant_conv.{k}": v for k, v in vqmodel.post_quant_conv.state_dict().items()},
                     **{f"decoder.{k}": v for k, v in vqmodel.decoder.state_dict().items()}}
        with torch.device("meta"):  # skip the random init of weights that are overwritten next
            video_decoder = cls(config)
        video_decoder.load_state_dict(_inflate_state_dict(dec_state, config),
                                      strict=True, assign=True)
        return video_decoder.train(tokenizer.training)

    # ---- VDEC ------------------------------------------------------------------------------------
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codebook lookup: tokens (B, T, h, w) -> quantised vectors z (B, d, T, h, w)."""
        self._check_tokens(tokens, frames=None)
        return self.codebook[tokens.long()].permute(0, 4, 1, 2, 3)  # (B, T, h, w, d) -> (B, d, T, h, w)

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Quantised vectors z (B, d, T, h, w) -> all T frames (B, 3, T, H, W), unclamped.

        Eq. (8) trains on all three frames of the window; inference keeps only the centre one (`forward`).
        """
        self._check_latents(z)
        return self.decoder(self.post_quant_conv(z))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """VDEC: quantised vectors z (B, d, 3, h, w) of frames t-1, t, t+1 -> frame t (B, 3, H, W), unclamped."""
        self._check_latents(z)
        return self.decoder(self.post_quant_conv(z), centre_only=True)[:, :, 0]

    @torch.no_grad()
    def decode_window(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens (B, 3, h, w) of frames t-1, t, t+1 -> frame t (B, 3, H, W) in [-1, 1]."""
        self._check_tokens(tokens, frames=self.config.window)
        return self(self.embed(tokens)).clamp(-1, 1)

    @torch.no_grad()
    def decode_video(self, tokens: torch.Tensor, max_windows: int | None = None) -> torch.Tensor:
        """Tokens (B, T, h, w) -> frames (B, T, 3, H, W) in [-1, 1], frame t from window (t-1, t, t+1).

        The first and last frames see themselves in place of the missing neighbour (`window_indices`). All B*T
        windows go through the network as one batch, or `max_windows` at a time to bound memory.
        """
        self._check_tokens(tokens, frames=None)
        if max_windows is not None and max_windows < 1:
            raise ValueError(f"max_windows={max_windows} must be at least 1, or None to decode all windows at once")
        B, T = tokens.shape[:2]
        idx = window_indices(T, self.config.window).to(tokens.device)  # (T, window)
        windows = tokens[:, idx].flatten(0, 1)  # (B*T, window, h, w)
        step = max_windows or windows.shape[0]
        frames = torch.cat([self.decode_window(w) for w in windows.split(step)])  # (B*T, 3, H, W)
        return frames.unflatten(0, (B, T))

    # ---- files -----------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> None:
        """Write `config.json` and `model.safetensors` (codebook included) into the folder `path`."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(path / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "VideoDecoder":
        """Load a folder written by `save_pretrained` (safetensors only).

        Raises:
            FileNotFoundError: `path` lacks config.json or model.safetensors.
        """
        path = Path(path)
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path} is not a video decoder folder: no {name} "
                                        f"(expected a folder written by VideoDecoder.save_pretrained)")
        config = VideoDecoderConfig.from_dict(json.loads((path / CONFIG_NAME).read_text()))
        with torch.device("meta"):
            video_decoder = cls(config)
        state = load_file(str(path / WEIGHTS_NAME), device=str(device))
        video_decoder.load_state_dict(state, strict=True, assign=True)
        return video_decoder.to(dtype=dtype).eval()

    # ---- checks ----------------------------------------------------------------------------------
    def _check_latents(self, z: torch.Tensor) -> None:
        c, n = self.config, self.config.tokens_per_side
        if z.ndim != 5 or z.shape[1] != c.latent_channels or z.shape[2] != c.window or z.shape[3:] != (n, n):
            raise ValueError(f"video decoder expects quantised vectors z of shape (B, {c.latent_channels}, "
                             f"{c.window}, {n}, {n}) = (B, d, window, h, w), got {tuple(z.shape)}")

    def _check_tokens(self, tokens: torch.Tensor, frames: int | None) -> None:
        n = self.config.tokens_per_side
        expected = f"(B, {frames}, {n}, {n})" if frames else f"(B, T, {n}, {n})"
        if tokens.ndim != 4 or tokens.shape[2:] != (n, n) or (frames and tokens.shape[1] != frames):
            raise ValueError(f"video decoder expects tokens of shape {expected}, got {tuple(tokens.shape)}")
        if tokens.is_floating_point() or tokens.is_complex() or tokens.dtype == torch.bool:
            raise TypeError(f"tokens must be integer codebook indices, got dtype {tokens.dtype}")


# ---- layers: 2D ops of DEC in their per-frame 3D form ----------------------------------------------------

def _per_frame(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D op to every frame: (B, C, T, H, W) -> (B*T, C, H, W) -> fn -> (B, C', T, H', W')."""
    B, C, T, H, W = x.shape
    y = fn(x.transpose(1, 2).reshape(B * T, C, H, W))
    return y.unflatten(0, (B, T)).transpose(1, 2)


class _InflatedConv(nn.Conv3d):
    """Conv3d (kt, k, k) in place of DEC's Conv2d (k, k): zero padding in space as in DEC, edge frames replicated in
    time (so the missing neighbours of the first and last frame look like them, not like black).

    Computed as one Conv2d per output frame over its kt neighbours stacked on the channel axis, which is the same
    sum: on CPU, torch sends many conv3d shapes to its slow unfused kernel (4-8x slower in training here), while
    conv2d always takes oneDNN. The weight stays a Conv3d weight (out, in, kt, k, k), so checkpoints are unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, temporal_kernel_size: int):
        kt = temporal_kernel_size if kernel_size > 1 else 1  # must agree with _inflate_state_dict
        super().__init__(in_channels, out_channels, (kt, kernel_size, kernel_size),
                         padding=(0, kernel_size // 2, kernel_size // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return temporal_conv(x, self.weight, self.bias, self.stride[1:], self.padding[1:])


class _FrameGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics per frame: one over the whole clip would mix frames and break VDEC == DEC."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _per_frame(super().forward, x)


class _ResnetBlock(nn.Module):
    """Per frame the same as diffusers' ResnetBlock2D without time embedding: x + conv(act(norm(...)))."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, kt: int):
        super().__init__()
        self.norm1 = _FrameGroupNorm(groups, in_channels, eps=1e-6)  # eps of diffusers' Decoder
        self.conv1 = _InflatedConv(in_channels, out_channels, 3, kt)
        self.norm2 = _FrameGroupNorm(groups, out_channels, eps=1e-6)
        self.conv2 = _InflatedConv(out_channels, out_channels, 3, kt)
        self.nonlinearity = nn.SiLU()
        self.conv_shortcut = (_InflatedConv(in_channels, out_channels, 1, kt)
                              if in_channels != out_channels else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.nonlinearity(self.norm1(x)))
        h = self.conv2(self.nonlinearity(self.norm2(h)))
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return x + h


class _FrameAttention(nn.Module):
    """Single-head self-attention over the h x w positions of each frame, as DEC's mid block has (diffusers
    `Attention` with heads = 1, residual, rescale 1); the time axis is left to the convs."""

    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.group_norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.to_q = nn.Linear(channels, channels)
        self.to_k = nn.Linear(channels, channels)
        self.to_v = nn.Linear(channels, channels)
        self.to_out = nn.Linear(channels, channels)  # diffusers: to_out[0], renamed in _inflate_state_dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _per_frame(self._attend, x)

    def _attend(self, x: torch.Tensor) -> torch.Tensor:  # (N, C, H, W), N = B*T
        N, C, H, W = x.shape
        h = self.group_norm(x).flatten(2).transpose(1, 2)  # (N, H*W, C)
        h = F.scaled_dot_product_attention(self.to_q(h), self.to_k(h), self.to_v(h))  # scale 1/sqrt(C)
        return x + self.to_out(h).transpose(1, 2).reshape(N, C, H, W)


class _MidBlock(nn.Module):
    def __init__(self, channels: int, groups: int, add_attention: bool, kt: int):
        super().__init__()
        self.attentions = nn.ModuleList([_FrameAttention(channels, groups)] if add_attention else [])
        self.resnets = nn.ModuleList([_ResnetBlock(channels, channels, groups, kt) for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.resnets[0](x)
        for i, resnet in enumerate(self.resnets[1:]):
            if self.attentions:
                x = self.attentions[i](x)
            x = resnet(x)
        return x


class _Upsample(nn.Module):
    """Nearest 2x in H and W only (frames stay frames), then a conv: diffusers' Upsample2D with use_conv."""

    def __init__(self, channels: int, kt: int):
        super().__init__()
        self.conv = _InflatedConv(channels, channels, 3, kt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=(1, 2, 2), mode="nearest"))


class _UpBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, num_layers: int, groups: int, upsample: bool, kt: int):
        super().__init__()
        self.resnets = nn.ModuleList([_ResnetBlock(in_channels if i == 0 else out_channels, out_channels, groups, kt)
                                      for i in range(num_layers)])
        self.upsamplers = nn.ModuleList([_Upsample(out_channels, kt)] if upsample else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in (*self.resnets, *self.upsamplers):
            x = layer(x)
        return x


class _Decoder(nn.Module):
    """diffusers 0.42 `Decoder` (norm_type "group") inflated: same layers, same channel plan, same key names."""

    def __init__(self, config: VideoDecoderConfig):
        super().__init__()
        channels = list(reversed(config.block_out_channels))  # deepest first
        groups, kt = config.norm_num_groups, config.temporal_kernel_size
        self.conv_in = _InflatedConv(config.latent_channels, channels[0], 3, kt)
        self.mid_block = _MidBlock(channels[0], groups, config.mid_block_add_attention, kt)
        self.up_blocks = nn.ModuleList([
            _UpBlock(channels[max(i - 1, 0)], c, config.layers_per_block + 1, groups,
                     upsample=i < len(channels) - 1, kt=config.temporal_kernel(f"decoder.up_blocks.{i}."))
            for i, c in enumerate(channels)])
        self.conv_norm_out = _FrameGroupNorm(groups, channels[-1], eps=1e-6)
        self.conv_act = nn.SiLU()
        self.conv_out = _InflatedConv(channels[-1], 3, 3, config.temporal_kernel("decoder.conv_out"))
        self.temporal_up_blocks, self.window = config.num_temporal_up_blocks, config.window

    def forward(self, x: torch.Tensor, centre_only: bool = False) -> torch.Tensor:
        """(B, d, T, h, w) -> (B, 3, T, H, W); with `centre_only`, (B, 3, 1, H, W): the centre frame, whose per-frame
        fine stages (past `temporal_up_blocks`) then run on it alone."""
        x = self.mid_block(self.conv_in(x))
        for i, up_block in enumerate(self.up_blocks):
            if centre_only and i == self.temporal_up_blocks:
                x = x[:, :, self.window // 2:self.window // 2 + 1]
            x = up_block(x)
        if centre_only and x.shape[2] > 1:  # every stage temporal (the paper's VDEC)
            return self.conv_out(self.conv_act(self.conv_norm_out(x)))[:, :, self.window // 2:self.window // 2 + 1]
        return self.conv_out(self.conv_act(self.conv_norm_out(x)))


def _inflate_state_dict(dec_state: dict[str, torch.Tensor], config: VideoDecoderConfig) -> dict[str, torch.Tensor]:
    """DEC's tensors as VDEC's: kxk conv weights -> (kt, k, k) with the 2D kernel at the centre, zeros elsewhere
    (central inflation, MAGVIT); everything else copied. Keys are DEC's except the attention's `to_out.0.`."""
    state = {}
    for key, value in dec_state.items():
        value = value.detach().clone()
        if value.ndim == 4:  # conv weight (out, in, k, k)
            k = value.shape[-1]
            kt = config.temporal_kernel(key) if k > 1 else 1  # same rule as _InflatedConv
            inflated = value.new_zeros(*value.shape[:2], kt, k, k)
            inflated[:, :, kt // 2] = value
            value = inflated
        state[key.replace(".to_out.0.", ".to_out.")] = value
    return state
