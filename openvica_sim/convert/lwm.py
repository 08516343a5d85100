"""LWM-Chat-1M's Flax checkpoint -> a `transformers` LlamaForCausalLM folder with one merged vocabulary.

The checkpoint (LWM's checkpoint library tux, `StreamingCheckpointer`) is a stream of msgpack records, one per
parameter: (key path, value), where the key path is the parameter's path in the Flax tree and the value is flax's
`to_bytes` of the array: a msgpack ExtType(1, msgpack (shape, dtype name, C-order bytes)), or, for arrays over
2**30 bytes, a dict {"__msgpack_chunked_array__": True, "shape": {"0": ...}, "chunks": {"0": array, ...}}.
Arrays are float32 or bfloat16. `params::` files hold the tree from "transformer"/"lm_head"/"vision_head" down;
train-state files prefix it with ("params", "params") and also hold optimiser state, which is skipped.

The Flax tree (lwm/llama.py, lwm/vision_llama.py), D hidden, H heads, d = D / H head dim, F MLP size, L layers:

    transformer/wte/embedding (V_text, D)     transformer/vte/embedding (V_vision, D)     transformer/ln_f/kernel (D,)
    transformer/h/<i>/attention/w{q,k,v}/kernel (D, H d)     .../attention/wo/kernel (H d, D)
    transformer/h/<i>/feed_forward/w1, w3/kernel (D, F)      .../feed_forward/w2/kernel (F, D)
    transformer/h/<i>/attention_norm/kernel (D,)             .../ffn_norm/kernel (D,)
    lm_head/kernel (D, V_text)                               vision_head/kernel (D, V_vision)

with <i> = "0".."L-1", or, with scan_layers, one "scan_decoder" whose arrays are stacked on axis 0 (`param_scan_axis`).

What differs from transformers' Llama, and what the conversion does about it:
- Dense kernels are (in, out); torch Linear weights are (out, in): transpose.
- Rotary embedding: LWM rotates interleaved pairs (2i, 2i+1) of each head (complex multiply), transformers rotates
  the halves (i, i + d/2) with the same frequency theta^(-2i/d). Permuting each head's q and k output features to
  [0, 2, 4, ..., 1, 3, 5, ...] turns one into the other, and q.k is unchanged because both get the same permutation.
- Two vocabularies: wte/lm_head (text) and vte/vision_head (vision) become one embedding and one head whose rows are
  [text; vision] (docs/design.md): vision id v -> V_text + v.
- MLP: w2(silu(w1 x) * w3 x), so w1 -> gate_proj, w3 -> up_proj, w2 -> down_proj. RMSNorm matches (eps from config).
- RoPE base and context length are not in the checkpoint: LWM-Chat-1M runs with theta = 50,000,000 (its scripts'
  `update_llama_config`); the preset `lwm-7b` holds that, flags override it. H is not in it either (wq is (D, D)).

Memory: tensors are written to safetensors shards as they arrive; only the text embedding and head wait for their
vision halves. A 7B bf16 conversion holds about one shard plus one stacked scan array at a time.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, fields
from pathlib import Path

import msgpack
import torch
from safetensors.torch import save_file

from . import check_writable, writing_folder
from ..models.world_model import CONFIG_NAME, PRESETS, WorldModelConfig, encode_prompt

EXT_NDARRAY, EXT_NPSCALAR = 1, 3  # flax.serialization._MsgpackExtType
CHUNKED = "__msgpack_chunked_array__"
ROOTS = ("transformer", "lm_head", "vision_head")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
          "float64": torch.float64, "int32": torch.int32, "int64": torch.int64, "int8": torch.int8,
          "uint8": torch.uint8, "bool": torch.bool}

# (path below the layer) -> (transformers name below model.layers.<i>, how to map it)
LAYER_PARAMS = {
    ("attention", "wq", "kernel"): ("self_attn.q_proj.weight", "rope"),
    ("attention", "wk", "kernel"): ("self_attn.k_proj.weight", "rope"),
    ("attention", "wv", "kernel"): ("self_attn.v_proj.weight", "dense"),
    ("attention", "wo", "kernel"): ("self_attn.o_proj.weight", "dense"),
    ("feed_forward", "w1", "kernel"): ("mlp.gate_proj.weight", "dense"),
    ("feed_forward", "w3", "kernel"): ("mlp.up_proj.weight", "dense"),
    ("feed_forward", "w2", "kernel"): ("mlp.down_proj.weight", "dense"),
    ("attention_norm", "kernel"): ("input_layernorm.weight", "norm"),
    ("ffn_norm", "kernel"): ("post_attention_layernorm.weight", "norm"),
}
# LWM's separate text and vision tables -> (merged transformers tensor, which half); text rows come first
VOCAB_HALVES = {
    ("transformer", "wte", "embedding"): ("model.embed_tokens.weight", "text"),
    ("transformer", "vte", "embedding"): ("model.embed_tokens.weight", "vision"),
    ("lm_head", "kernel"): ("lm_head.weight", "text"),
    ("vision_head", "kernel"): ("lm_head.weight", "vision"),
}
# config fields the checkpoint's shapes determine; the others come from the preset and flags
SHAPE_FIELDS = ("text_vocab_size", "vision_vocab_size", "hidden_size", "intermediate_size", "num_layers",
                "num_kv_heads")


# ---- reading the streaming msgpack format ------------------------------------------------------------------------

def read_checkpoint(path: str | os.PathLike, progress: bool = False) -> Iterator[tuple[tuple[str, ...], torch.Tensor]]:
    """Yield (key path, tensor) for every record of a tux streaming checkpoint, without jax or flax.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: not a streaming checkpoint, an unknown dtype or extension type, or a truncated file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no LWM checkpoint at {path} (expected the `params` file of LWM-Chat-1M, the one "
                                f"LWM's scripts load with --load_checkpoint='params::<path>')")
    size = path.stat().st_size
    bar = _progress(size, progress)
    with open(path, "rb") as f:
        unpacker = msgpack.Unpacker(f, read_size=64 << 20, max_buffer_size=0, raw=False)
        done = 0
        for record in unpacker:
            if not (isinstance(record, (list, tuple)) and len(record) == 2 and isinstance(record[0], (list, tuple))):
                raise ValueError(f"{path} is not a streaming msgpack checkpoint: record at byte {done} is "
                                 f"{type(record).__name__}, expected a (key path, value) pair")
            key, value = tuple(str(k) for k in record[0]), record[1]
            if not isinstance(value, bytes):
                raise ValueError(f"{path}: value of {'/'.join(key)} is {type(value).__name__}, expected flax bytes")
            yield key, _restore(value, key)
            if bar is not None:
                bar.update(unpacker.tell() - done)
            done = unpacker.tell()
        if done != size:
            raise ValueError(f"{path} is truncated or corrupt: the last complete record ends at byte {done} of {size}; "
                             f"download it again")
    if bar is not None:
        bar.close()


def _restore(value: bytes, key: tuple[str, ...]) -> torch.Tensor:
    """flax.serialization.from_bytes(None, value) for an array leaf, as a torch tensor."""
    obj = msgpack.unpackb(value, ext_hook=_ext_hook, raw=False)
    if isinstance(obj, dict) and obj.get(CHUNKED):
        shape = [obj["shape"][str(i)] for i in range(len(obj["shape"]))]
        chunks = [obj["chunks"][str(i)] for i in range(len(obj["chunks"]))]
        return torch.cat([c.reshape(-1) for c in chunks]).reshape(shape)
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"parameter {'/'.join(key)} holds {type(obj).__name__}, not an array")
    return obj


def _ext_hook(code: int, data: bytes):
    if code not in (EXT_NDARRAY, EXT_NPSCALAR):
        raise ValueError(f"unknown msgpack extension type {code} (flax writes 1 for arrays, 3 for numpy scalars)")
    shape, dtype, buffer = msgpack.unpackb(data, raw=True)
    name = dtype.decode() if isinstance(dtype, bytes) else dtype
    if name not in DTYPES:
        raise ValueError(f"array of dtype {name!r} in the checkpoint; expected one of {sorted(DTYPES)}")
    if not buffer:
        return torch.empty(shape, dtype=DTYPES[name])
    tensor = torch.frombuffer(bytearray(buffer), dtype=DTYPES[name]).reshape(shape)
    return tensor if code == EXT_NDARRAY else tensor.reshape(())


def _strip_prefix(key: tuple[str, ...]) -> tuple[str, ...] | None:
    """The key below the model's root, or None for train-state entries that are not model parameters."""
    for prefix in (("params", "params"), ("params",), ()):
        n = len(prefix)
        if key[:n] == prefix and len(key) > n and key[n] in ROOTS:
            return key[n:]
    return None


# ---- the conversion ----------------------------------------------------------------------------------------------

def convert_lwm(params: str | os.PathLike, out: str | os.PathLike, tokenizer: str | os.PathLike | None = None,
                preset: str = "lwm-7b", dtype: torch.dtype | None = None, param_scan_axis: int = 0,
                shard_bytes: int = 4 << 30, overwrite: bool = False, progress: bool = True,
                **overrides) -> Path:
    """Convert LWM's `params` file into a world-model folder `out` that `AutoModelForCausalLM` and
    `WorldModel.from_pretrained` load.

    Args:
        tokenizer: LLaMA-2's `tokenizer.model` or a transformers tokenizer folder, stored in `out` for the prompt.
            Required when the text vocabulary is LLaMA-2's; small test models may omit it (a byte-level BPE is built).
        preset: a world-model preset for what the checkpoint does not hold (heads, RoPE base, norm epsilon,
            context length, codebook size); `overrides` replace single fields (e.g. num_heads=8, rope_theta=1e4).
        dtype: of the written weights; None keeps the checkpoint's (bf16 stays bf16).
        param_scan_axis: the axis layers are stacked on in the scan layout (LWM's `param_scan_axis`, 0 by default).

    Raises:
        ValueError: missing, duplicated or unexpected parameters; shapes that contradict each other or an override.
        FileExistsError: `out` exists and is not empty (pass overwrite=True).
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown world-model preset {preset!r}; choose one of {sorted(PRESETS)}")
    names = {f.name for f in fields(WorldModelConfig)}
    unknown = set(overrides) - names
    if unknown:
        raise ValueError(f"unknown world-model settings {sorted(unknown)}; settable: {sorted(names)}")
    out = Path(out)
    check_writable(out, overwrite)  # before the conversion, which takes minutes at 7B
    base = {f.name: getattr(WorldModelConfig(), f.name) for f in fields(WorldModelConfig)}
    settings = {**base, **PRESETS[preset], **overrides}
    with writing_folder(out, overwrite) as tmp:
        shapes = _write_weights(params, tmp, settings["num_heads"], dtype, param_scan_axis, shard_bytes, progress)
        weights_dtype = shapes.pop("dtype")
        for field in SHAPE_FIELDS:
            if field in overrides and overrides[field] != shapes[field]:
                raise ValueError(f"{field}={overrides[field]} was given but the checkpoint's shapes say {shapes[field]}")
        config = WorldModelConfig(**{**settings, **shapes})
        llama_config = config.to_llama_config()
        llama_config.dtype = weights_dtype
        llama_config.save_pretrained(tmp)
        (tmp / CONFIG_NAME).write_text(json.dumps(asdict(config), indent=2) + "\n")
        text_tokenizer = _text_tokenizer(tokenizer, config)
        encode_prompt(text_tokenizer, config.text_vocab_size)  # raises if the tokenizer does not fit the model
        text_tokenizer.save_pretrained(tmp)
    return out


def _write_weights(params, folder: Path, num_heads: int, dtype, scan_axis: int, shard_bytes: int,
                   progress: bool) -> dict:
    """Stream the checkpoint into safetensors shards under `folder`; return the shapes-derived config fields."""
    writer = _ShardWriter(folder, shard_bytes)
    halves: dict[str, dict[str, torch.Tensor]] = {"model.embed_tokens.weight": {}, "lm_head.weight": {}}
    layers: dict[int, set] = {}
    seen_dtypes, stacked_layers, vocab = set(), None, {}
    for key, tensor in read_checkpoint(params, progress=progress):
        key = _strip_prefix(key)
        if key is None:
            continue  # optimiser state, step, ...
        seen_dtypes.add(tensor.dtype)
        if dtype is not None:
            tensor = tensor.to(dtype)
        path = "/".join(key)
        if key in VOCAB_HALVES:
            merged, half = VOCAB_HALVES[key]
            parts = halves[merged]
            if merged in vocab or half in parts:
                raise ValueError(f"the checkpoint holds {path} twice")
            parts[half] = tensor if key[0] == "transformer" else tensor.t()  # heads: Dense (in, out) -> (out, in)
            if len(parts) == 2:  # [text; vision] rows: vision id v -> V_text + v
                if parts["text"].shape[1] != parts["vision"].shape[1]:
                    raise ValueError(f"{merged}: text part {tuple(parts['text'].shape)} and vision part "
                                     f"{tuple(parts['vision'].shape)} differ in hidden size")
                writer.add(merged, torch.cat([parts["text"], parts["vision"]]))
                vocab[merged] = (parts["text"].shape[0], parts["vision"].shape[0])
                parts.clear()  # free the halves
        elif key == ("transformer", "ln_f", "kernel"):
            writer.add("model.norm.weight", tensor)
        elif key[:2] == ("transformer", "h") and len(key) > 3 and key[3:] in LAYER_PARAMS:
            name, kind = LAYER_PARAMS[key[3:]]
            if key[2] == "scan_decoder":
                per_layer = tensor.unbind(scan_axis)
                if stacked_layers not in (None, len(per_layer)):
                    raise ValueError(f"{path} stacks {len(per_layer)} layers on axis {scan_axis}, others "
                                     f"{stacked_layers}; is param_scan_axis={scan_axis} right?")
                stacked_layers = len(per_layer)
                items = enumerate(per_layer)
            elif key[2].isdigit():
                items = [(int(key[2]), tensor)]
            else:
                raise ValueError(f"unexpected layer key {path}: expected transformer/h/<i>/... or .../scan_decoder/...")
            for i, w in items:
                if name in layers.setdefault(i, set()):
                    raise ValueError(f"layer {i} has {'/'.join(key[3:])} twice")
                layers[i].add(name)
                writer.add(f"model.layers.{i}.{name}", _to_torch_layout(w, kind, num_heads, path))
        else:
            raise ValueError(f"unexpected parameter {path} in the checkpoint; is this an LWM (vision) LLaMA?")
    missing = [f"{merged} ({', '.join(h for h in ('text', 'vision') if h not in parts)} part)"
               for merged, parts in halves.items() if merged not in vocab]
    expected = {name for name, _ in LAYER_PARAMS.values()}
    num_layers = len(layers)
    if not layers:
        missing.append("every layer (transformer/h/<i>/... or transformer/h/scan_decoder/...)")
    elif sorted(layers) != list(range(num_layers)):
        missing.append(f"layers {sorted(set(range(max(layers, default=-1) + 1)) - set(layers))}")
    missing += [f"model.layers.{i}.{n}" for i in sorted(layers) for n in sorted(expected - layers[i])]
    if "model.norm.weight" not in writer.shapes:
        missing.append("transformer/ln_f/kernel")
    if missing:
        raise ValueError(f"the checkpoint {params} lacks {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}")
    if vocab["model.embed_tokens.weight"] != vocab["lm_head.weight"]:
        raise ValueError(f"embeddings (text, vision) = {vocab['model.embed_tokens.weight']} rows but heads "
                         f"{vocab['lm_head.weight']}; the checkpoint is inconsistent")
    shapes = writer.finish()
    text_vocab, vision_vocab = vocab["model.embed_tokens.weight"]
    hidden = shapes["model.embed_tokens.weight"][1]
    head_dim = hidden // num_heads
    return {"text_vocab_size": text_vocab, "vision_vocab_size": vision_vocab, "hidden_size": hidden,
            "intermediate_size": shapes["model.layers.0.mlp.gate_proj.weight"][0], "num_layers": num_layers,
            "num_kv_heads": shapes["model.layers.0.self_attn.k_proj.weight"][0] // head_dim,
            "dtype": dtype or (seen_dtypes.pop() if len(seen_dtypes) == 1 else torch.float32)}


def _to_torch_layout(kernel: torch.Tensor, kind: str, num_heads: int, path: str) -> torch.Tensor:
    if kind == "norm":
        return kernel
    weight = kernel.t()  # Flax Dense (in, out) -> torch Linear (out, in)
    if kind == "rope":
        out_features, hidden = weight.shape
        head_dim = hidden // num_heads  # LWM has no grouped-query attention: wk is (D, D) too
        if out_features % head_dim or head_dim % 2:
            raise ValueError(f"{path} {tuple(kernel.shape)} does not split into heads of {head_dim} "
                             f"(hidden {hidden} / num_heads {num_heads}); pass the right num_heads")
        # interleaved pairs (2i, 2i+1) -> halves (i, i + d/2), within each head
        weight = weight.reshape(out_features // head_dim, head_dim // 2, 2, hidden).transpose(1, 2)
        weight = weight.reshape(out_features, hidden)
    return weight.contiguous()


class _ShardWriter:
    """Safetensors shards of at most ~`max_bytes`, named as transformers expects, with the index file."""

    def __init__(self, folder: Path, max_bytes: int):
        self.folder, self.max_bytes = folder, max_bytes
        self.pending: dict[str, torch.Tensor] = {}
        self.files: list[list[str]] = []
        self.shapes: dict[str, tuple] = {}
        self.size = self.total = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        if name in self.shapes:
            raise ValueError(f"the checkpoint holds {name} twice")
        self.pending[name] = tensor.contiguous()
        self.shapes[name] = tuple(tensor.shape)
        nbytes = tensor.numel() * tensor.element_size()
        self.size += nbytes
        self.total += nbytes
        if self.size >= self.max_bytes:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            save_file(self.pending, self.folder / f"shard-{len(self.files)}.tmp", metadata={"format": "pt"})
            self.files.append(list(self.pending))
            self.pending, self.size = {}, 0

    def finish(self) -> dict[str, tuple]:
        self.flush()
        n = len(self.files)
        weight_map = {}
        for i, names in enumerate(self.files):
            name = "model.safetensors" if n == 1 else f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            os.replace(self.folder / f"shard-{i}.tmp", self.folder / name)
            weight_map.update({k: name for k in names})
        if n > 1:
            index = {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(weight_map.items()))}
            (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        return self.shapes


def _text_tokenizer(tokenizer, config: WorldModelConfig):
    """LLaMA-2's tokenizer from a `tokenizer.model` file or a tokenizer folder; a built BPE for small test models."""
    from transformers import AutoTokenizer

    if tokenizer is None:
        from ..models.world_model import build_text_tokenizer

        if config.text_vocab_size < 384:
            raise ValueError(f"text_vocab_size={config.text_vocab_size}: pass the model's text tokenizer "
                             f"(LLaMA-2's tokenizer.model for LWM-Chat-1M)")
        if config.text_vocab_size == 32000:
            raise ValueError("LWM-Chat-1M's prompt needs LLaMA-2's tokenizer: pass --tokenizer path/to/tokenizer.model "
                             "(or a folder with it), e.g. from the LWM-Chat-1M or LWM-Text-1M download")
        return build_text_tokenizer()
    path = Path(tokenizer)
    if path.is_file():  # a bare sentencepiece model, as LWM ships it
        with tempfile.TemporaryDirectory() as folder:
            shutil.copy(path, Path(folder) / "tokenizer.model")
            (Path(folder) / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "LlamaTokenizer"}))
            return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    if not path.is_dir():
        raise FileNotFoundError(f"no tokenizer at {path}: pass LLaMA-2's tokenizer.model or a folder holding it")
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc="convert lwm")
