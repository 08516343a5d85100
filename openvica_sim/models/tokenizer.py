"""Image tokenizer (TOK) and image decoder (DEC): a VQGAN on `diffusers.VQModel` (paper III-A a, III-B a).

TOK = encoder (ENC) + vector quantiser (VQ): a 256x256 frame becomes h x w = 16 x 16 indices into a
codebook CB of K = 8192 vectors of dimension d = 64. DEC maps quantised vectors back to pixels.

Dimensions: B batch, C = 3 colour channels, H x W pixels, h x w token grid, d code dimension.

diffusers 0.42 quirks owned here (STYLE.md 2): `VQModel.encode` does not quantise, and the legacy
quantiser's `commit_loss` puts beta on the codebook term, the opposite of eq. (4). So only
`Tokenizer.encode` quantises, and the training losses are written in `losses.py`, not taken from it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from diffusers import VQModel
from torch import nn

CONFIG_NAME = "openvica_tokenizer.json"


@dataclass(frozen=True)
class TokenizerConfig:
    block_out_channels: tuple[int, ...] = (128, 256, 256, 512, 768)  # aMUSEd-256 VQGAN
    layers_per_block: int = 2
    latent_channels: int = 64  # d, the code dimension
    codebook_size: int = 8192  # K
    norm_num_groups: int = 32
    image_size: int = 256  # H = W
    mid_block_add_attention: bool = False  # aMUSEd's VQGAN has none

    def __post_init__(self):
        object.__setattr__(self, "block_out_channels", tuple(self.block_out_channels))
        if any(c % self.norm_num_groups for c in self.block_out_channels):
            raise ValueError(
                f"block_out_channels={self.block_out_channels} must all be divisible by "
                f"norm_num_groups={self.norm_num_groups}")
        if self.image_size % self.downsample:
            raise ValueError(f"image_size={self.image_size} is not a multiple of the downsampling {self.downsample}")
        if self.codebook_size > 65535:
            raise ValueError(f"codebook_size={self.codebook_size} does not fit the uint16 token stores (max 65535)")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def tokens_per_side(self) -> int:
        return self.image_size // self.downsample

    @property
    def tokens_per_frame(self) -> int:  # n = 256 for the paper's 16 x 16
        return self.tokens_per_side ** 2

    def to_vqmodel_kwargs(self) -> dict:
        """The one place a `diffusers.VQModel` config is built from ours."""
        levels = len(self.block_out_channels)
        return dict(
            in_channels=3, out_channels=3, act_fn="silu",
            down_block_types=["DownEncoderBlock2D"] * levels,
            up_block_types=["UpDecoderBlock2D"] * levels,
            block_out_channels=list(self.block_out_channels),
            layers_per_block=self.layers_per_block,
            latent_channels=self.latent_channels,
            num_vq_embeddings=self.codebook_size,
            vq_embed_dim=None,
            norm_num_groups=self.norm_num_groups,
            norm_type="group",
            mid_block_add_attention=self.mid_block_add_attention,
            lookup_from_codebook=True,
            force_upcast=False,
            sample_size=self.image_size,
            scaling_factor=0.18215,
        )

    @classmethod
    def from_vqmodel_config(cls, cfg: dict) -> "TokenizerConfig":
        """Read an aMUSEd-style `diffusers` VQModel config.json (as published) into our config."""
        unsupported = {k: cfg.get(k) for k in ("norm_type", "vq_embed_dim", "in_channels", "out_channels")}
        if cfg.get("norm_type", "group") != "group" or cfg.get("vq_embed_dim") not in (None, cfg["latent_channels"]):
            raise ValueError(f"unsupported VQModel config {unsupported}: openvica needs norm_type='group' "
                             f"and vq_embed_dim equal to latent_channels")
        plain = {"down_block_types": "DownEncoderBlock2D", "up_block_types": "UpDecoderBlock2D"}
        other = {k: cfg[k] for k, v in plain.items() if any(t != v for t in cfg.get(k, [v]))}
        if other:
            raise ValueError(f"unsupported VQModel config {other}: openvica's tokenizer has no attention inside the "
                             f"levels (aMUSEd and LWM's VQGAN have none)")
        return cls(
            block_out_channels=tuple(cfg["block_out_channels"]),
            layers_per_block=cfg["layers_per_block"],
            latent_channels=cfg["latent_channels"],
            codebook_size=cfg["num_vq_embeddings"],
            norm_num_groups=cfg["norm_num_groups"],
            image_size=cfg.get("sample_size", 256) if cfg.get("sample_size", 256) >= 64 else 256,
            mid_block_add_attention=cfg.get("mid_block_add_attention", True),
        )


# Same class and token grid (16 x 16 per 256 x 256 frame), small enough for CPU tests and the embedded default.
_TINY = dict(block_out_channels=(32, 32, 64, 64, 64), layers_per_block=1, latent_channels=32, codebook_size=1024,
             norm_num_groups=16)

PRESETS: dict[str, dict] = {
    # The paper's VQGAN (aMUSEd-256): TOK 59.2M, DEC 87.0M parameters.
    "amused-256": {},
    "tiny": _TINY,
    # The embedded default's second generation: tiny with K = 256 (training/conf/experiment/embedded_tok_local.yaml).
    "embedded": {**_TINY, "codebook_size": 256},
    # For unit tests only: smallest channels that keep the five levels.
    "test": dict(block_out_channels=(8, 8, 16, 16, 16), layers_per_block=1, latent_channels=8,
                 codebook_size=64, norm_num_groups=8),
}


class Tokenizer(nn.Module):
    """TOK (ENC + VQ) and DEC around one `diffusers.VQModel`."""

    def __init__(self, config: TokenizerConfig, vqmodel: VQModel | None = None):
        super().__init__()
        self.config = config
        self.vqmodel = vqmodel if vqmodel is not None else VQModel(**config.to_vqmodel_kwargs())

    # ---- TOK -------------------------------------------------------------------------------------
    def encode_latents(self, frames: torch.Tensor) -> torch.Tensor:
        """ENC: frames (B, 3, H, W) in [-1, 1] -> unquantised latents z~ (B, d, h, w)."""
        self._check_frames(frames)
        return self.vqmodel.encode(frames).latents

    def quantize(self, latents: torch.Tensor) -> torch.Tensor:
        """VQ: nearest codebook index for every latent vector, (B, d, h, w) -> (B, h, w) int64."""
        B, d, h, w = latents.shape
        flat = latents.permute(0, 2, 3, 1).reshape(-1, d)  # (B*h*w, d)
        codebook = self.codebook
        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2, minimised over e
        dist = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.t() + codebook.pow(2).sum(1)[None])
        return dist.argmin(dim=1).view(B, h, w)

    @torch.no_grad()
    def encode(self, frames: torch.Tensor) -> torch.Tensor:
        """TOK: frames (B, 3, H, W) in [-1, 1] -> tokens (B, h, w) int64."""
        return self.quantize(self.encode_latents(frames))

    # ---- DEC -------------------------------------------------------------------------------------
    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Codebook lookup: tokens (..., h, w) -> quantised vectors z (..., d, h, w)."""
        self._check_tokens(tokens)
        z = self.codebook[tokens]  # (..., h, w, d)
        return z.movedim(-1, -3)

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """DEC: quantised vectors (B, d, h, w) -> frames (B, 3, H, W), unclamped."""
        return self.vqmodel.decoder(self.vqmodel.post_quant_conv(z))

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """DEC: tokens (B, h, w) -> frames (B, 3, H, W) in [-1, 1]."""
        return self.decode_latents(self.embed(tokens)).clamp(-1, 1)

    # ---- parts and parameter counts ------------------------------------------------------------
    @property
    def codebook(self) -> torch.Tensor:  # CB, (K, d)
        return self.vqmodel.quantize.embedding.weight

    def encoder_parameters(self):
        """TOK's parameters: ENC, the quant conv and the codebook (59.2M for aMUSEd-256)."""
        m = self.vqmodel
        return [*m.encoder.parameters(), *m.quant_conv.parameters(), *m.quantize.parameters()]

    def decoder_parameters(self):
        """DEC's parameters: post-quant conv and decoder (87.0M for aMUSEd-256)."""
        return [*self.vqmodel.post_quant_conv.parameters(), *self.vqmodel.decoder.parameters()]

    def with_codebook(self, codebook: torch.Tensor) -> "Tokenizer":
        """A copy with ENC and DEC as they are and a new codebook CB (K', d): how a trained tokenizer moves to another
        codebook size (training/tok.py, `model.tokenizer.codebook_size`).

        Raises:
            ValueError: the codebook is not (K', d) with this tokenizer's d.
        """
        d = self.config.latent_channels
        if codebook.ndim != 2 or codebook.shape[1] != d:
            raise ValueError(f"codebook must be (K, {d}), got {tuple(codebook.shape)}")
        config = TokenizerConfig(**{**asdict(self.config), "codebook_size": int(codebook.shape[0])})
        vqmodel = VQModel(**config.to_vqmodel_kwargs())
        weights = {k: v for k, v in self.vqmodel.state_dict().items() if not k.startswith("quantize.")}
        vqmodel.load_state_dict(weights, strict=False)
        param = next(self.parameters())
        with torch.no_grad():
            vqmodel.quantize.embedding.weight.copy_(codebook)
        return Tokenizer(config, vqmodel).to(device=param.device, dtype=param.dtype)

    # ---- files -----------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> None:
        """Write a diffusers VQModel folder (config.json + safetensors) plus our config."""
        path = Path(path)
        self.vqmodel.save_pretrained(path, safe_serialization=True)
        (path / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32) -> "Tokenizer":
        """Load a tokenizer folder: ours, or a diffusers VQModel folder such as aMUSEd's `vqvae/`.

        Raises:
            FileNotFoundError: no config.json in `path`.
        """
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a tokenizer folder: no config.json (expected a diffusers "
                                    f"VQModel folder written by Tokenizer.save_pretrained or `openvica convert vqgan`)")
        if (path / CONFIG_NAME).is_file():
            config = TokenizerConfig(**json.loads((path / CONFIG_NAME).read_text()))
        else:
            config = TokenizerConfig.from_vqmodel_config(json.loads((path / "config.json").read_text()))
        vqmodel = VQModel.from_pretrained(path, use_safetensors=True, local_files_only=True)
        return cls(config, vqmodel).to(device=device, dtype=dtype).eval()

    # ---- checks ----------------------------------------------------------------------------------
    def _check_frames(self, frames: torch.Tensor) -> None:
        s = self.config.image_size
        if frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[2:] != (s, s):
            raise ValueError(f"tokenizer expects frames of shape (B, 3, {s}, {s}) in [-1, 1], got {tuple(frames.shape)}; "
                             f"use openvica_sim.frames.preprocess on uint8 (H, W, 3) camera frames")
        if not frames.is_floating_point():
            raise TypeError(f"tokenizer expects float frames in [-1, 1], got dtype {frames.dtype}")

    def _check_tokens(self, tokens: torch.Tensor) -> None:
        n = self.config.tokens_per_side
        if tokens.shape[-2:] != (n, n):
            raise ValueError(f"expected tokens with a trailing ({n}, {n}) grid, got shape {tuple(tokens.shape)}")
        if tokens.dtype in (torch.float16, torch.float32, torch.float64, torch.bfloat16):
            raise TypeError(f"tokens must be integer codebook indices, got dtype {tokens.dtype}")


def create_tokenizer(preset: str = "tiny", seed: int = 0, **overrides) -> Tokenizer:
    """A randomly initialised tokenizer of a preset's shape (tests, benchmarks, fresh training)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown tokenizer preset {preset!r}; choose one of {sorted(PRESETS)}")
    torch.manual_seed(seed)
    return Tokenizer(TokenizerConfig(**{**PRESETS[preset], **overrides})).eval()
