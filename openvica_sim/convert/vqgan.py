"""LWM's VQGAN parameter pickle -> a `diffusers.VQModel` folder that our `Tokenizer` loads, without jax or flax.

LWM (lwm/vqgan.py, `VQGAN.__init__`) keeps its tokenizer as a `pickle` of the Flax params tree: nested dicts of
float32 arrays with no leading "params" key. Flax names compact submodules by class and creation order, so with
L levels (i = 0 the full resolution) the tree is

    encoder/Conv_0 (conv_in)      encoder/DownsamplingBlock_<i>/{ResnetBlock_<j>, AttnBlock_<j>, Downsample_0/Conv_0}
    encoder/MidBlock_0/{ResnetBlock_0, AttnBlock_0, ResnetBlock_1}    encoder/GroupNorm_0    encoder/Conv_1 (conv_out)
    decoder/Conv_0    decoder/MidBlock_0    decoder/UpsamplingBlock_<k>/{ResnetBlock_<j>, AttnBlock_<j>, Upsample_0/...}
    decoder/GroupNorm_0    decoder/Conv_1    quant_conv    post_quant_conv    quantize/embeddings (K, d)

    ResnetBlock: GroupNorm_0, Conv_0, GroupNorm_1, Conv_1, and Conv_2 (1x1 shortcut) only where channels change
    AttnBlock:   GroupNorm_0, Conv_0 q, Conv_1 k, Conv_2 v, Conv_3 out (1x1 convs; one head, scale C^-1/2)

The decoder loops over reversed(range(L)), so UpsamplingBlock_k is level i = L-1-k: k = 0 is the LOWEST resolution,
which is also the order of diffusers' `decoder.up_blocks`. There is no Downsample in the last encoder level and no
Upsample in level 0.

What differs from diffusers 0.42's VQModel, and what the conversion does:
- Flax conv kernels are (kh, kw, in, out), torch's (out, in, kh, kw): transpose. Attention's 1x1 convs become
  diffusers' `Attention` nn.Linear layers (out, in).
- GroupNorm {scale, bias} -> {weight, bias}; LWM uses flax.linen.GroupNorm's defaults, 32 groups and eps 1e-6, which
  are diffusers' Encoder/Decoder settings with norm_num_groups=32.
- LWM's Downsample pads (0, 1) at the bottom and right, then runs a stride-2 VALID conv: diffusers' Encoder does the
  same (Downsample2D with padding=0). Upsample is nearest x2 then a conv in both.
- LWM decides attention by resolution (`attn_resolutions`); the tree only shows which levels have it, which diffusers
  spells as the block type (AttnDownEncoderBlock2D, AttnUpDecoderBlock2D).
- diffusers' conv_in outputs the first level's channels, so LWM's channel_mult[0] must be 1 (it is).

LWM-Chat's VQGAN has the config defaults (hidden 128, channel_mult (1, 2, 2, 4, 6), 2 res blocks, z = d = 64,
K = 8192, no attention): exactly `TokenizerConfig()`, aMUSEd-256's shape.

Dimensions: K codebook size, d code dimension (quantized_embed_dim), z encoder output channels (z_channels).
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from . import check_writable, writing_folder

FLAX_GROUPNORM_GROUPS = 32  # flax.linen.GroupNorm's default num_groups, which every LWM GroupNorm uses

# Sublayers of one diffusers block: (flax name, diffusers name, kind); kinds are in _LEAVES.
_RESNET = (("GroupNorm_0", "norm1", "norm"), ("Conv_0", "conv1", "conv"),
           ("GroupNorm_1", "norm2", "norm"), ("Conv_1", "conv2", "conv"))
_ATTENTION = (("GroupNorm_0", "group_norm", "norm"), ("Conv_0", "to_q", "linear"), ("Conv_1", "to_k", "linear"),
              ("Conv_2", "to_v", "linear"), ("Conv_3", "to_out.0", "linear"))
# kind -> its parameters: (flax leaf, diffusers leaf, layout); layouts are handled by _to_torch_layout
_LEAVES = {
    "conv": (("kernel", "weight", "conv"), ("bias", "bias", "vector")),
    "linear": (("kernel", "weight", "linear"), ("bias", "bias", "vector")),
    "norm": (("scale", "weight", "vector"), ("bias", "bias", "vector")),
    "embedding": (("embeddings", "weight", "matrix"),),
}
_NDIM = {"conv": 4, "linear": 4, "vector": 1, "matrix": 2}
# VQModel settings that fix the network; import_amused_vqvae checks that our TokenizerConfig reproduces them
_ARCHITECTURE_KEYS = ("in_channels", "out_channels", "down_block_types", "up_block_types", "block_out_channels",
                      "layers_per_block", "latent_channels", "num_vq_embeddings", "norm_num_groups", "norm_type",
                      "mid_block_add_attention", "act_fn")


# ---- reading the pickle --------------------------------------------------------------------------------------------

class UnsafePickleError(pickle.UnpicklingError, ValueError):
    """The pickle asked for something a pickled tree of numpy arrays never needs; nothing it asked for was run."""


class _FrozenDict(dict):
    """Stands in for flax.core.frozen_dict.FrozenDict, so loading needs no flax.

    flax >= 0.3 pickles a FrozenDict as FrozenDict(plain nested dict) (its `__reduce__`), which this constructor
    takes as is. flax 0.2 had no `__reduce__` and `__slots__` instead, so pickle stored an empty object plus the
    state (None, {"_dict": ..., ...}), which `__setstate__` below reads.
    """

    def __setstate__(self, state):
        slots = state[1] if isinstance(state, tuple) and len(state) == 2 else None
        if not isinstance(slots, dict) or not isinstance(slots.get("_dict"), dict):
            raise UnsafePickleError(f"unexpected flax FrozenDict state {type(state).__name__}; re-save the params "
                                    f"with a current flax as `pickle.dump(flax.core.unfreeze(params), f)`")
        self.update(slots["_dict"])


def _latin1_bytes(text: str, encoding: str) -> bytes:
    # pickle protocol 2 stores bytes (here, the array data) as _codecs.encode(str, "latin1")
    if encoding != "latin1":
        raise UnsafePickleError(f"_codecs.encode with encoding {encoding!r}: only protocol 2's 'latin1' is admitted")
    return text.encode("latin1")


# numpy pickles an array as _reconstruct + __setstate__ (protocol <= 4) or _frombuffer (protocol 5), under
# numpy.core (numpy 1.x) or numpy._core (numpy 2). Take the functions from numpy's own reduce so that both module
# names resolve to this numpy's functions without importing the deprecated numpy.core.
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_FROMBUFFER = np.empty(0).__reduce_ex__(5)[0]
_SCALAR = np.float32(0).__reduce__()[0]


def _jax_array_as_numpy(fun, args, arr_state, aval_state):
    """jax._src.array._reconstruct_array (jax >= 0.4) without its device_put: the numpy array a jax.Array wraps."""
    if fun is not _RECONSTRUCT:
        raise UnsafePickleError("a pickled jax.Array that does not wrap a numpy array")
    array = fun(*args)
    array.__setstate__(arr_state)
    return array


_ALLOWED_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    **{(f"{core}.multiarray", "_reconstruct"): _RECONSTRUCT for core in ("numpy.core", "numpy._core")},
    **{(f"{core}.multiarray", "scalar"): _SCALAR for core in ("numpy.core", "numpy._core")},
    **{(f"{core}.numeric", "_frombuffer"): _FROMBUFFER for core in ("numpy.core", "numpy._core")},
    ("_codecs", "encode"): _latin1_bytes,
    ("collections", "OrderedDict"): dict,
    ("flax.core.frozen_dict", "FrozenDict"): _FrozenDict,
    ("jax._src.array", "_reconstruct_array"): _jax_array_as_numpy,
}


class _ParamsUnpickler(pickle.Unpickler):
    """Resolves only the globals in _ALLOWED_GLOBALS, so a pickle can build nothing but dicts and arrays."""

    def __init__(self, file, source: Path):
        super().__init__(file)
        self._source = source

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            allowed = ", ".join(sorted(f"{m}.{n}" for m, n in _ALLOWED_GLOBALS))
            raise UnsafePickleError(
                f"{self._source} asks for the global {module}.{name}, which a pickle of numpy parameters never needs; "
                f"refused, and nothing was run. Only these are admitted: {allowed}")
        return _ALLOWED_GLOBALS[module, name]


def load_vqgan_pickle(path: str | os.PathLike) -> dict:
    """Read LWM's VQGAN params pickle into nested plain dicts of float32 numpy arrays, without jax or flax.

    The unpickler admits numpy arrays, dicts (OrderedDict, flax FrozenDict) and jax Arrays (read as the numpy
    arrays they wrap), and nothing else, so a tampered file cannot run code. A top-level {"params": tree} is unwrapped.

    Raises:
        FileNotFoundError: no file at `path`.
        UnsafePickleError (a pickle.UnpicklingError and a ValueError): the pickle names any other global.
        ValueError: the pickle does not hold a params tree of float arrays.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no VQGAN params file at {path}; pass LWM's `vqgan` file (LWM-Chat-1M-Jax)")
    with open(path, "rb") as f:
        tree = _ParamsUnpickler(f, path).load()
    return _params_tree(tree, str(path))


def _params_tree(tree, source: str) -> dict:
    """Nested plain dicts of float32 numpy arrays from a params tree; unwraps {"params": tree}."""
    if isinstance(tree, dict) and set(tree) == {"params"}:
        tree = tree["params"]
    if not isinstance(tree, dict):
        raise ValueError(f"{source} holds a {type(tree).__name__}, not the dict of a Flax params tree")
    return _float32_tree(tree, source, "")


def _float32_tree(node, source: str, path: str):
    if isinstance(node, dict):
        for key in node:
            if not isinstance(key, str):
                raise ValueError(f"{source}: key {key!r} under '{path or '/'}' is not a string, so not a Flax name")
        return {key: _float32_tree(value, source, f"{path}/{key}".lstrip("/")) for key, value in node.items()}
    if not hasattr(node, "__array__"):
        raise ValueError(f"{source}: '{path}' is a {type(node).__name__}, expected an array")
    array = np.asarray(node)  # jax arrays too, without importing jax
    if array.dtype.kind != "f" and array.dtype.name != "bfloat16":
        raise ValueError(f"{source}: '{path}' has dtype {array.dtype}, expected floating-point parameters")
    return array.astype(np.float32, copy=False)


# ---- shapes --------------------------------------------------------------------------------------------------------

def infer_vqgan_config(params: dict) -> dict:
    """LWM's `VQGANConfig` fields that a params tree's shapes determine, whatever resolution it ran at.

    Returns a dict with LWM's names: hidden_channels, channel_mult, num_res_blocks, z_channels, num_embeddings (K),
    quantized_embed_dim (d) and no_attn_mid_block, plus attn_levels: the levels i (0 = full resolution) whose
    blocks have attention, which is what LWM's resolution-based `attn_resolutions` comes to.

    Raises:
        ValueError: the tree lacks a module (the error names its path) or its parts contradict each other.
    """
    params = _params_tree(params, "params")
    hidden = _shape(params, "encoder/Conv_0/kernel")[3]
    levels = _count(params, "encoder", "DownsamplingBlock")
    num_res_blocks = _count(params, "encoder/DownsamplingBlock_0", "ResnetBlock")
    channel_mult, attn_levels = [], []
    for i in range(levels):
        block = f"encoder/DownsamplingBlock_{i}"
        resnets = _count(params, block, "ResnetBlock")
        _expect(resnets == num_res_blocks, f"{block} has {resnets} ResnetBlocks, level 0 has {num_res_blocks}")
        out = _shape(params, f"{block}/ResnetBlock_0/Conv_0/kernel")[3]
        _expect(out % hidden == 0, f"{block} has {out} channels, not a multiple of hidden_channels={hidden}")
        channel_mult.append(out // hidden)
        if _level_attention(params, block, num_res_blocks):
            attn_levels.append(i)
    _expect(channel_mult[0] == 1, f"channel_mult={tuple(channel_mult)}: diffusers' Encoder feeds conv_in straight "
                                  f"into level 0, so level 0 must keep hidden_channels (channel_mult[0] == 1)")
    _check_decoder(params, levels, num_res_blocks, attn_levels)
    mid_attention = _has(params, "encoder/MidBlock_0/AttnBlock_0")
    _expect(_has(params, "decoder/MidBlock_0/AttnBlock_0") == mid_attention,
            "encoder/MidBlock_0 and decoder/MidBlock_0 disagree on attention (LWM's no_attn_mid_block sets both)")
    z = _shape(params, "encoder/Conv_1/kernel")[3]
    K, d = _shape(params, "quantize/embeddings")
    _expect(_shape(params, "quant_conv/kernel") == (1, 1, z, d),
            f"quant_conv/kernel is {_shape(params, 'quant_conv/kernel')}, expected (1, 1, z_channels={z}, d={d}) "
            f"from encoder/Conv_1 and quantize/embeddings")
    return dict(hidden_channels=hidden, channel_mult=tuple(channel_mult), num_res_blocks=num_res_blocks,
                z_channels=z, num_embeddings=K, quantized_embed_dim=d, no_attn_mid_block=not mid_attention,
                attn_levels=tuple(attn_levels))


def _check_decoder(params: dict, levels: int, num_res_blocks: int, attn_levels: list[int]) -> None:
    blocks = _count(params, "decoder", "UpsamplingBlock")
    _expect(blocks == levels, f"the decoder has {blocks} UpsamplingBlocks, the encoder {levels} DownsamplingBlocks")
    for k in range(levels):
        block = f"decoder/UpsamplingBlock_{k}"  # level L-1-k: the decoder's loop is reversed
        resnets = _count(params, block, "ResnetBlock")
        _expect(resnets == num_res_blocks + 1,
                f"{block} has {resnets} ResnetBlocks, expected num_res_blocks + 1 = {num_res_blocks + 1}")
        attention = _level_attention(params, block, num_res_blocks + 1)
        _expect(attention == (levels - 1 - k in attn_levels),
                f"{block} {'has' if attention else 'lacks'} attention but encoder level {levels - 1 - k} "
                f"{'lacks' if attention else 'has'} it (LWM's attn_resolutions sets both)")


def _level_attention(params: dict, block: str, resnets: int) -> bool:
    # LWM checks attn_resolutions after every ResnetBlock, and a level's blocks share one resolution: all or none
    count = _count(params, block, "AttnBlock")
    _expect(count in (0, resnets), f"{block} has {count} AttnBlocks, expected 0 or one per ResnetBlock ({resnets})")
    return count > 0


def _get(params: dict, path: str):
    node, done = params, ""
    for part in path.split("/"):
        if not isinstance(node, dict) or part not in node:
            raise ValueError(f"the VQGAN params have no '{path}' ('{part}' is missing under '{done or '/'}'); "
                             f"is this LWM's VQGAN params file, and complete?")
        node, done = node[part], f"{done}/{part}".lstrip("/")
    return node


def _has(params: dict, path: str) -> bool:
    parent, _, name = path.rpartition("/")
    node = _get(params, parent)
    return isinstance(node, dict) and name in node


def _shape(params: dict, path: str) -> tuple[int, ...]:
    array = _get(params, path)
    if not isinstance(array, np.ndarray):
        raise ValueError(f"'{path}' of the VQGAN params is a module, expected an array")
    return array.shape


def _count(params: dict, path: str, prefix: str) -> int:
    """How many <prefix>_<n> submodules `path` has, checking they are numbered 0..n-1."""
    found = {int(m.group(1)) for key in _get(params, path) if (m := re.fullmatch(rf"{prefix}_(\d+)", key))}
    gaps = sorted(set(range(max(found, default=-1) + 1)) - found)
    _expect(not gaps, f"the VQGAN params have no '{path}/{prefix}_{gaps[0] if gaps else ''}' but have "
                      f"{prefix}_{max(found, default=0)}")
    return len(found)


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(f"inconsistent VQGAN params: {message}")


# ---- the conversion ------------------------------------------------------------------------------------------------

def convert_vqgan(params_or_path: dict | str | os.PathLike, out_dir: str | os.PathLike, *, resolution: int = 256,
                  overwrite: bool = False) -> Path:
    """Convert LWM's VQGAN (its params pickle, or the loaded params tree) into a diffusers VQModel folder `out_dir`.

    `resolution` is the frame size the tokenizer will see (our TokenizerConfig.image_size; the network itself
    works at any multiple of its downsampling). The folder holds config.json and safetensors weights, and, when the
    network is one our `TokenizerConfig` describes (quantized_embed_dim == z_channels and no attention in the levels,
    as in LWM-Chat's VQGAN), also openvica_tokenizer.json, so `Tokenizer.from_pretrained(out_dir)` loads it.
    Otherwise only the diffusers folder is written, for `diffusers.VQModel.from_pretrained`: TokenizerConfig has one
    code dimension (vq_embed_dim = latent_channels) and plain Down/UpDecoderBlock2D levels, so it cannot describe
    the network, and a tokenizer rebuilt from it (bundles, training) would be a different one.

    Raises:
        FileExistsError: `out_dir` exists and is not empty (pass overwrite=True).
        UnsafePickleError: the pickle asks for anything beyond numpy arrays and dicts (see `load_vqgan_pickle`).
        ValueError: a missing, unused or mis-shaped parameter (named), or a tree diffusers cannot express.
    """
    from diffusers import VQModel

    from ..models.tokenizer import Tokenizer

    out_dir = Path(out_dir)
    check_writable(out_dir, overwrite)  # before the conversion, which takes a while at full size
    if isinstance(params_or_path, (str, os.PathLike)):
        params = load_vqgan_pickle(params_or_path)
    else:
        params = _params_tree(params_or_path, "params")
    lwm = infer_vqgan_config(params)
    config, kwargs, ours = _vqmodel_kwargs(lwm, resolution)
    vqmodel = VQModel(**kwargs).eval()
    vqmodel.load_state_dict(_state_dict(params, lwm, vqmodel.state_dict()), strict=True)
    with writing_folder(out_dir, overwrite) as tmp:
        if ours:
            Tokenizer(config, vqmodel).save_pretrained(tmp)
        else:
            vqmodel.save_pretrained(tmp, safe_serialization=True)
    return out_dir


def _vqmodel_kwargs(lwm: dict, resolution: int):
    """(TokenizerConfig, VQModel kwargs, whether the config describes the network) for LWM's shapes."""
    from ..models.tokenizer import TokenizerConfig

    levels = len(lwm["channel_mult"])
    # latent_channels is the encoder's output z here; TokenizerConfig reads it as the code dimension d too,
    # which holds only when d == z (then vq_embed_dim=None means d = z)
    config = TokenizerConfig(
        block_out_channels=tuple(lwm["hidden_channels"] * m for m in lwm["channel_mult"]),
        layers_per_block=lwm["num_res_blocks"], latent_channels=lwm["z_channels"],
        codebook_size=lwm["num_embeddings"], norm_num_groups=FLAX_GROUPNORM_GROUPS, image_size=resolution,
        mid_block_add_attention=not lwm["no_attn_mid_block"])
    kwargs = config.to_vqmodel_kwargs()  # scaling_factor, lookup_from_codebook, force_upcast as our tokenizer's
    ours = lwm["quantized_embed_dim"] == lwm["z_channels"] and not lwm["attn_levels"]
    if not ours:
        attention = set(lwm["attn_levels"])
        kwargs.update(
            down_block_types=["AttnDownEncoderBlock2D" if i in attention else "DownEncoderBlock2D"
                              for i in range(levels)],
            up_block_types=["AttnUpDecoderBlock2D" if i in attention else "UpDecoderBlock2D"
                            for i in reversed(range(levels))],  # up_blocks[k] is level L-1-k
            vq_embed_dim=lwm["quantized_embed_dim"])
    return config, kwargs, ours


def _module_map(lwm: dict, target: dict) -> list[tuple[str, str, str]]:
    """(flax module path, diffusers module name, kind) for every module: the one key map of this format.

    `target` is the VQModel's state dict; it says where diffusers has a shortcut conv, which LWM adds under the
    same rule (channels change).
    """
    levels, n = len(lwm["channel_mult"]), lwm["num_res_blocks"]
    attention, mid_attentions = set(lwm["attn_levels"]), 0 if lwm["no_attn_mid_block"] else 1
    mapping = [("quant_conv", "quant_conv", "conv"), ("post_quant_conv", "post_quant_conv", "conv"),
               ("quantize", "quantize.embedding", "embedding")]
    for side in ("encoder", "decoder"):
        mapping += [(f"{side}/Conv_0", f"{side}.conv_in", "conv"),
                    (f"{side}/GroupNorm_0", f"{side}.conv_norm_out", "norm"),
                    (f"{side}/Conv_1", f"{side}.conv_out", "conv")]
        mapping += _block_map(f"{side}/MidBlock_0", f"{side}.mid_block", 2, mid_attentions, target)
    for i in range(levels):
        src, dst = f"encoder/DownsamplingBlock_{i}", f"encoder.down_blocks.{i}"
        mapping += _block_map(src, dst, n, n if i in attention else 0, target)
        if i != levels - 1:
            mapping.append((f"{src}/Downsample_0/Conv_0", f"{dst}.downsamplers.0.conv", "conv"))
    for k in range(levels):
        i = levels - 1 - k
        src, dst = f"decoder/UpsamplingBlock_{k}", f"decoder.up_blocks.{k}"
        mapping += _block_map(src, dst, n + 1, n + 1 if i in attention else 0, target)
        if i != 0:
            mapping.append((f"{src}/Upsample_0/Conv_0", f"{dst}.upsamplers.0.conv", "conv"))
    return mapping


def _block_map(src: str, dst: str, resnets: int, attentions: int, target: dict) -> list[tuple[str, str, str]]:
    # AttnBlock_j follows ResnetBlock_j in LWM, attentions[j] follows resnets[j] in diffusers
    mapping = []
    for j in range(resnets):
        mapping += [(f"{src}/ResnetBlock_{j}/{a}", f"{dst}.resnets.{j}.{b}", kind) for a, b, kind in _RESNET]
        if f"{dst}.resnets.{j}.conv_shortcut.weight" in target:
            mapping.append((f"{src}/ResnetBlock_{j}/Conv_2", f"{dst}.resnets.{j}.conv_shortcut", "conv"))
    for j in range(attentions):
        mapping += [(f"{src}/AttnBlock_{j}/{a}", f"{dst}.attentions.{j}.{b}", kind) for a, b, kind in _ATTENTION]
    return mapping


def _state_dict(params: dict, lwm: dict, target: dict):
    """The VQModel state dict filled from the Flax tree; every key set once, every Flax array used once."""
    import torch

    state, used = {}, set()
    for src_module, dst_module, kind in _module_map(lwm, target):
        for src_leaf, dst_leaf, layout in _LEAVES[kind]:
            src, dst = f"{src_module}/{src_leaf}", f"{dst_module}.{dst_leaf}"
            assert dst in target and dst not in state and src not in used, (src, dst)  # the map is a bijection
            value = _to_torch_layout(_get(params, src), layout, src)
            if value.shape != tuple(target[dst].shape):
                raise ValueError(f"'{src}' is {_get(params, src).shape}, which gives {value.shape} for {dst}, but the "
                                 f"network the other shapes imply needs {tuple(target[dst].shape)}")
            state[dst] = torch.from_numpy(np.ascontiguousarray(value))
            used.add(src)
    unassigned = sorted(set(target) - set(state))
    unused = sorted(set(_leaf_paths(params)) - used)
    if unassigned or unused:
        raise ValueError(f"the VQGAN params do not match LWM's module tree: unused Flax arrays {unused}, "
                         f"diffusers parameters left unset {unassigned}")
    return state


def _to_torch_layout(array: np.ndarray, layout: str, path: str) -> np.ndarray:
    if array.ndim != _NDIM[layout]:
        raise ValueError(f"'{path}' has shape {array.shape}, expected {_NDIM[layout]} dimensions")
    if layout == "conv":  # flax (kh, kw, in, out) -> torch (out, in, kh, kw)
        return array.transpose(3, 2, 0, 1)
    if layout == "linear":  # a 1x1 conv (1, 1, in, out) -> nn.Linear (out, in)
        if array.shape[:2] != (1, 1):
            raise ValueError(f"'{path}' has shape {array.shape}, expected a 1x1 attention conv")
        return array[0, 0].T
    return array


def _leaf_paths(tree: dict, prefix: str = "") -> Iterator[str]:
    for key, value in tree.items():
        path = f"{prefix}/{key}".lstrip("/")
        yield from _leaf_paths(value, path) if isinstance(value, dict) else (path,)


# ---- aMUSEd ----------------------------------------------------------------------------------------------------------

def import_amused_vqvae(folder: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Take an aMUSEd `vqvae/` folder (diffusers VQModel format) as a tokenizer folder with our config added.

    The folder is loaded with `Tokenizer.from_pretrained` and written back with `Tokenizer.save_pretrained`, so the
    result is the one format we read: float32 safetensors, diffusers' config.json and our config.

    Raises:
        FileNotFoundError: `folder` is not a VQModel folder with safetensors weights.
        ValueError: a VQModel our TokenizerConfig cannot describe (the differing settings are named).
        FileExistsError: `out_dir` exists and is not empty (pass overwrite=True).
    """
    from ..models.tokenizer import Tokenizer

    folder, out_dir = Path(folder), Path(out_dir)
    check_writable(out_dir, overwrite)
    if folder.is_dir() and not any(folder.glob("*.safetensors")):
        raise FileNotFoundError(f"{folder} has no .safetensors weights; download the safetensors files of "
                                f"amused/amused-256's vqvae/ (only safetensors are read)")
    tokenizer = Tokenizer.from_pretrained(folder)  # FileNotFoundError without config.json
    expected, loaded = tokenizer.config.to_vqmodel_kwargs(), tokenizer.vqmodel.config
    as_list = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
    differing = {k: (as_list(loaded[k]), as_list(expected[k])) for k in _ARCHITECTURE_KEYS
                 if as_list(loaded[k]) != as_list(expected[k])}
    if differing:
        raise ValueError(f"{folder}: TokenizerConfig cannot describe this VQModel; (its setting, what ours "
                         f"would build): {differing}")
    with writing_folder(out_dir, overwrite) as tmp:
        tokenizer.save_pretrained(tmp)
    return out_dir
