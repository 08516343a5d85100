"""The simulator bundle: tokenizer, world model and video decoder as one folder (docs/design.md "The simulator bundle").

    bundle/
      openvica.json          format, frame size, fps, vocabulary layout, prompt, parts present
      tokenizer/             diffusers VQModel folder: TOK and DEC
      world_model/           transformers Llama folder + its text tokenizer
      world_model_adapter/   optional peft LoRA adapter, merged at load time
      video_decoder/         config.json + model.safetensors

This is the one module that knows all three models, and it checks that their sizes agree.
Weights are safetensors only.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from . import __version__
from .actions import ActionCoding
from .models.sequence import SequenceLayout
from .models.tokenizer import Tokenizer, create_tokenizer
from .models.video_decoder import VideoDecoder
from .models.world_model import PROMPT, WorldModel, build_text_tokenizer, create_world_model, encode_prompt

FORMAT = "openvica-bundle"
FORMAT_VERSION = 1
META_NAME = "openvica.json"
FPS = 4.0  # the paper's frame rate: one frame every 0.25 s
TOP_K = 1000  # the paper's recommended top-k for K = 8192 codes (Table V)
PARTS = ("tokenizer", "world_model", "video_decoder")

# Which model presets make up a bundle preset.
PRESETS: dict[str, dict[str, str]] = {
    "lwm-7b": {"tokenizer": "amused-256", "world_model": "lwm-7b"},  # the paper's shapes
    "tiny": {"tokenizer": "tiny", "world_model": "tiny"},  # the first embedded default's shapes
    "embedded": {"tokenizer": "embedded", "world_model": "embedded"},  # the second generation's (issue 19)
    "test": {"tokenizer": "test", "world_model": "test"},  # unit tests
}


@dataclass
class Bundle:
    """One simulator: the three models, the text tokenizer and the layout that joins them."""

    tokenizer: Tokenizer
    world_model: WorldModel
    video_decoder: VideoDecoder | None
    text_tokenizer: object  # a transformers tokenizer, stored inside world_model/
    action_conditioned: bool = False
    prompt: str = PROMPT
    fps: float = FPS
    top_k: int = TOP_K  # the sampling default of this bundle's WM (engine, env and CLI use it unless told)
    context_frames: int = 16  # frames its WM saw in training (T + N): the engine's context unless told
    wavefront: int | None = None  # its decoding schedule by default (None: raster)
    temperature: float = 1.0  # its sampling temperature by default (a small WM keeps the scene better below 1)

    def __post_init__(self):
        self.check()

    @property
    def frame_size(self) -> int:
        return self.tokenizer.config.image_size

    @property
    def tokens_per_frame(self) -> int:  # n = 256
        return self.tokenizer.config.tokens_per_frame

    @property
    def layout(self) -> SequenceLayout:
        """The WM's sequence layout: per frame [2 ego ids] + n codes + end-of-frame (`models.sequence`)."""
        return SequenceLayout.of(self.world_model.config, self.tokenizer.config.tokens_per_side,
                                 self.action_conditioned)

    @property
    def frame_length(self) -> int:
        """n': ids per frame in the WM sequence."""
        return self.layout.frame_length

    @property
    def action_coding(self) -> ActionCoding:
        return ActionCoding(codebook_size=self.world_model.config.codebook_size)

    @property
    def prompt_ids(self) -> list[int]:
        return encode_prompt(self.text_tokenizer, self.world_model.config.text_vocab_size, self.prompt)

    def check(self) -> None:
        """Raise ValueError if the parts do not fit together, naming both sizes."""
        K_tok, K_wm = self.tokenizer.config.codebook_size, self.world_model.config.codebook_size
        if K_tok != K_wm:
            raise ValueError(f"tokenizer has codebook_size={K_tok} but world model expects codebook_size={K_wm}")
        if self.video_decoder is not None:
            K_vdec = self.video_decoder.codebook.shape[0]
            if K_vdec != K_tok:
                raise ValueError(f"video decoder has codebook_size={K_vdec} but tokenizer has {K_tok}")
            if self.video_decoder.config.image_size != self.frame_size:
                raise ValueError(f"video decoder frame size {self.video_decoder.config.image_size} "
                                 f"!= tokenizer frame size {self.frame_size}")
        spare = self.world_model.config.num_spare_vision_ids
        if self.action_conditioned and spare < self.action_coding.num_ids:
            raise ValueError(f"an action-conditioned bundle needs {self.action_coding.num_ids} spare vision ids for "
                             f"ego commands but the world model has {spare}")
        self.prompt_ids  # noqa: B018 -- raises if the text tokenizer does not fit the WM

    def meta(self) -> dict:
        """The content of openvica.json."""
        wm = self.world_model.config
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created_by": f"openvica-sim {__version__}",
            "frame_size": self.frame_size,
            "fps": self.fps,
            "tokens_per_frame": self.tokens_per_frame,
            "frame_length": self.frame_length,
            "codebook_size": wm.codebook_size,
            "text_vocab_size": wm.text_vocab_size,
            "vision_vocab_size": wm.vision_vocab_size,
            "special_ids": {"end_of_frame": wm.end_of_frame_id, "end_of_vision": wm.end_of_vision_id},
            "prompt": self.prompt,
            "sampling": {"top_k": self.top_k, "context_frames": self.context_frames, "wavefront": self.wavefront,
                         "temperature": self.temperature},
            "action_conditioned": self.action_conditioned,
            "parts": {p: getattr(self, p) is not None for p in PARTS},
        }
        if self.action_conditioned:
            meta["actions"] = {**self.action_coding.to_dict(), "bin_edges": self.action_coding.bin_edges()}
        return meta


def save_bundle(bundle: Bundle, path: str | Path, adapter: str | Path | None = None) -> Path:
    """Write a bundle folder atomically (a temporary sibling renamed into place).

    `adapter` is a peft LoRA adapter folder to store beside the world model, unmerged.
    Raises:
        FileExistsError: `path` exists and is not a bundle.
    """
    def write_world_model(folder: Path) -> None:
        bundle.world_model.save_pretrained(folder)
        bundle.text_tokenizer.save_pretrained(folder)

    return _write_bundle(bundle, path, write_world_model, adapter)


def create_bundle(tokenizer: str | Path, world_model: str | Path, out: str | Path,
                  video_decoder: str | Path | None = None, action_conditioned: bool = False,
                  prompt: str = PROMPT, adapter: str | Path | None = None, top_k: int = None,
                  context_frames: int = 16, wavefront: int | None = None, temperature: float = 1.0) -> Path:
    """Assemble a bundle from converted parts (`openvica bundle create`).

    `tokenizer` is a VQModel folder (`openvica convert vqgan`, or aMUSEd's `vqvae/`), `world_model` a folder from
    `openvica convert lwm` (with its text tokenizer), `video_decoder` a VDEC folder; without one, VDEC is inflated
    from the tokenizer's DEC (equal to DEC frame by frame until fine-tuned). The world model's weights are never
    loaded: its folder is hard-linked (or copied) into the bundle, so a 7B model assembles in seconds. `adapter`
    is a LoRA run's `world_model_adapter/` (training/wm.py), stored beside it and merged at load time. `top_k` is the
    bundle's sampling default (None: the paper's k = 1000, or the codebook size if smaller); `context_frames` the
    window its WM was trained on (T + N: the engine's context), `wavefront` its default decoding schedule and
    `temperature` its default sampling temperature.

    Raises:
        FileNotFoundError: a part folder is missing or incomplete.
        ValueError: the parts do not fit together (codebook sizes, frame sizes, text vocabulary).
    """
    from transformers import AutoTokenizer

    world_model = Path(world_model)
    config = WorldModel.read_config(world_model)
    tok = Tokenizer.from_pretrained(tokenizer)
    with torch.device("meta"):  # the shape of the world model, for the checks; no memory, no weights read
        wm = WorldModel(config)
    vdec = (VideoDecoder.from_pretrained(video_decoder) if video_decoder is not None
            else VideoDecoder.from_tokenizer(tok).eval())
    bundle = Bundle(tokenizer=tok, world_model=wm, video_decoder=vdec, prompt=prompt,
                    text_tokenizer=AutoTokenizer.from_pretrained(world_model, local_files_only=True),
                    action_conditioned=action_conditioned,
                    top_k=top_k or min(TOP_K, config.codebook_size), context_frames=context_frames,
                    wavefront=wavefront, temperature=temperature)

    def link_world_model(folder: Path) -> None:
        shutil.copytree(world_model, folder, copy_function=_link_or_copy)

    if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter} is not a LoRA adapter folder (no adapter_config.json); training/wm.py "
                                f"writes one as run.dir/world_model_adapter/")
    return _write_bundle(bundle, out, link_world_model, adapter)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def _write_bundle(bundle: Bundle, path: str | Path, write_world_model, adapter: str | Path | None = None) -> Path:
    """Write `bundle` into a temporary sibling of `path`, then rename it into place."""
    path = Path(path)
    if path.exists() and not (path / META_NAME).is_file():
        raise FileExistsError(f"{path} exists and is not a bundle; choose a new folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; a bundle is meant to be shared
    try:
        bundle.tokenizer.save_pretrained(tmp / "tokenizer")
        write_world_model(tmp / "world_model")
        if bundle.video_decoder is not None:
            bundle.video_decoder.save_pretrained(tmp / "video_decoder")
        if adapter is not None:
            shutil.copytree(adapter, tmp / "world_model_adapter")
        meta = bundle.meta()
        meta["parts"]["world_model_adapter"] = adapter is not None
        (tmp / META_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_meta(path: str | Path) -> dict:
    """Read and validate openvica.json.

    Raises:
        FileNotFoundError: no bundle at `path`.
        ValueError: not a bundle, or a format version this code does not read.
    """
    path = Path(path)
    if not (path / META_NAME).is_file():
        hint = " (the folder does not exist)" if not path.exists() else ""
        raise FileNotFoundError(f"no simulator bundle at {path}{hint}: {META_NAME} is missing; make one with "
                                f"`openvica bundle create` or `openvica bundle random`")
    meta = json.loads((path / META_NAME).read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path / META_NAME} is not an openvica bundle (format={meta.get('format')!r})")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"bundle {path} has format_version={version} but this openvica-sim {__version__} reads "
                         f"version {FORMAT_VERSION}; {'upgrade openvica-sim' if (version or 0) > FORMAT_VERSION else 're-create the bundle'}")
    return meta


def load_bundle(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                decoder_dtype: torch.dtype = torch.float32, video_decoder: bool = True,
                quant: str | None = None) -> Bundle:
    """Load a bundle folder. `dtype` is the world model's (default: bf16 on CUDA, fp32 elsewhere); `quant="int8"`
    keeps its decoder-block weights in int8 with per-channel scales (`WorldModel.quantize`; off by default).

    Raises:
        FileNotFoundError: the bundle or one of the parts its openvica.json lists is missing.
        ValueError: version mismatch, or parts that do not fit together.
    """
    path = Path(path)
    meta = read_meta(path)
    device = torch.device(device)
    if dtype is None:
        dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    parts = meta.get("parts", {})
    for part in ("tokenizer", "world_model"):
        if not (path / part).is_dir():
            raise FileNotFoundError(f"bundle {path} has no {part}/ folder; every bundle needs a tokenizer and a world "
                                    f"model (assemble one with `openvica bundle create`)")
    if parts.get("video_decoder") and not (path / "video_decoder").is_dir():
        raise FileNotFoundError(f"bundle {path}: {META_NAME} lists a video decoder but video_decoder/ is missing")
    from transformers import AutoTokenizer

    adapter = path / "world_model_adapter" if (path / "world_model_adapter").is_dir() else None
    bundle = Bundle(
        tokenizer=Tokenizer.from_pretrained(path / "tokenizer", device=device, dtype=decoder_dtype),
        world_model=WorldModel.from_pretrained(path / "world_model", device=device, dtype=dtype, adapter=adapter),
        video_decoder=(VideoDecoder.from_pretrained(path / "video_decoder", device=device, dtype=decoder_dtype)
                       if video_decoder and parts.get("video_decoder") else None),
        text_tokenizer=AutoTokenizer.from_pretrained(path / "world_model", local_files_only=True),
        action_conditioned=bool(meta.get("action_conditioned", False)),
        prompt=meta.get("prompt", PROMPT),
        fps=float(meta.get("fps", FPS)),
        top_k=int(meta.get("sampling", {}).get("top_k", TOP_K)),
        context_frames=int(meta.get("sampling", {}).get("context_frames") or 16),
        wavefront=meta.get("sampling", {}).get("wavefront"),
        temperature=float(meta.get("sampling", {}).get("temperature", 1.0)),
    )
    if quant is not None:
        bundle.world_model.quantize(quant)
    actual = {"frame_size": bundle.frame_size, "tokens_per_frame": bundle.tokens_per_frame,
              "codebook_size": bundle.world_model.config.codebook_size, "frame_length": bundle.frame_length}
    for key, value in actual.items():
        if key in meta and meta[key] != value:
            raise ValueError(f"bundle {path}: {META_NAME} says {key}={meta[key]} but its models give {value}")
    return bundle


def create_random_bundle(preset: str = "tiny", seed: int = 0, action_conditioned: bool = False,
                         video_decoder: bool = True, device: str | torch.device = "cpu",
                         dtype: torch.dtype = torch.float32) -> Bundle:
    """A bundle of randomly initialised models of a preset's shapes (tests and benchmarks).

    A 7B model with random weights decodes exactly as fast as a trained one, so `lwm-7b` measures speed.
    """
    if preset not in PRESETS:
        import difflib

        close = difflib.get_close_matches(preset, PRESETS, n=1)
        raise ValueError(f"unknown bundle preset {preset!r}{f'; did you mean {close[0]!r}' if close else ''}? "
                         f"choose one of {sorted(PRESETS)}")
    parts = PRESETS[preset]
    tokenizer = create_tokenizer(parts["tokenizer"], seed=seed).to(device)
    world_model = create_world_model(parts["world_model"], seed=seed + 1, dtype=dtype, device=device)
    vdec = VideoDecoder.from_tokenizer(tokenizer).to(device).eval() if video_decoder else None
    return Bundle(tokenizer=tokenizer, world_model=world_model, video_decoder=vdec,
                  text_tokenizer=build_text_tokenizer(), action_conditioned=action_conditioned)
