"""`openvica convert vqgan`: LWM's VQGAN params pickle -> a diffusers VQModel folder our Tokenizer loads.

The pickles here are written by `lwm_params`, which builds LWM's Flax params tree (lwm/vqgan.py: module names,
creation order, (kh, kw, in, out) kernels) with random weights, and `pickle.dump`. The converted model is checked
against `lwm_encode` / `lwm_quantize` / `lwm_decode`, a float64 NHWC forward written from LWM's code on the Flax
arrays as they are: convs are sums over kernel taps of shifted slices times kernel[i, j] (in, out), so none of the
converter's transposes or key names are reused.
"""

import builtins
import json
import os
import pickle
import re
import subprocess
import sys
import types
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
import pytest
import torch
from diffusers import VQModel

from openvica_sim.convert.vqgan import (UnsafePickleError, convert_vqgan, import_amused_vqvae, infer_vqgan_config,
                                        load_vqgan_pickle)
from openvica_sim.models.tokenizer import CONFIG_NAME, PRESETS, Tokenizer, TokenizerConfig

# LWM's default shape (channel_mult (1, 2, 2, 4, 6), 2 res blocks, z = d, no attention) at a quarter of the width
DEFAULT_LIKE = dict(hidden=32, channel_mult=(1, 2, 2, 4, 6), num_res_blocks=2, z=16, d=16, K=128,
                    attn_levels=(), mid_attention=False)
# other depth, one res block, mid-block attention: still a network TokenizerConfig describes
MID_ATTENTION = dict(hidden=32, channel_mult=(1, 2, 2), num_res_blocks=1, z=16, d=16, K=64,
                     attn_levels=(), mid_attention=True)
# attention in the lowest level and d != z: diffusers can hold it, TokenizerConfig cannot
LEVEL_ATTENTION = dict(hidden=32, channel_mult=(1, 2), num_res_blocks=1, z=16, d=8, K=64,
                       attn_levels=(1,), mid_attention=True)
RESOLUTION = 64


# ---- conversion matches LWM's forward ------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=[DEFAULT_LIKE, MID_ATTENTION], ids=["default-like", "mid-attention"])
def converted(request, tmp_path_factory):
    """(shape, params, folder): a pickle written by pickle.dump, converted."""
    tmp = tmp_path_factory.mktemp("vqgan")
    params = lwm_params(np.random.default_rng(0), **request.param)
    with open(tmp / "vqgan", "wb") as f:
        pickle.dump(params, f)
    return request.param, params, convert_vqgan(tmp / "vqgan", tmp / "tok", resolution=RESOLUTION)


@pytest.fixture(scope="module")
def converted_with_level_attention(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vqgan-attn")
    params = lwm_params(np.random.default_rng(1), **LEVEL_ATTENTION)
    with open(tmp / "vqgan", "wb") as f:
        pickle.dump(params, f)
    return params, convert_vqgan(tmp / "vqgan", tmp / "vq", resolution=RESOLUTION)


def _frames(seed: int = 0) -> torch.Tensor:
    return torch.rand(2, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _nhwc(frames: torch.Tensor) -> np.ndarray:
    return frames.permute(0, 2, 3, 1).double().numpy()


def test_converted_tokenizer_gives_lwms_codes_and_latents(converted):
    shape, params, folder = converted
    tok = Tokenizer.from_pretrained(folder)
    frames = _frames()
    latents = lwm_encode(params, _nhwc(frames), shape)  # (B, h, w, d)
    with torch.no_grad():
        ours = tok.encode_latents(frames).permute(0, 2, 3, 1)
    # float32 through ~20 layers against float64 is ~1e-6 relative; 1e-4 leaves room and is far below latents' ~0.5
    torch.testing.assert_close(ours, torch.from_numpy(latents).float(), atol=1e-4, rtol=1e-4)
    assert torch.equal(tok.encode(frames), torch.from_numpy(lwm_quantize(params, latents)))


def test_converted_tokenizer_decodes_lwms_codes_to_lwms_frames(converted):
    shape, params, folder = converted
    tok = Tokenizer.from_pretrained(folder)
    codes = lwm_quantize(params, lwm_encode(params, _nhwc(_frames()), shape))  # (B, h, w)
    expected = lwm_decode(params, codes, shape)  # (B, H, W, 3)
    assert (np.abs(expected) < 1).mean() > 0.5, "clipping must not hide the comparison"
    decoded = tok.decode(torch.from_numpy(codes)).permute(0, 2, 3, 1).double().numpy()
    assert np.abs(decoded - expected).max() <= 1e-4  # float32 vs float64 rounding only


def test_converted_folder_holds_our_tokenizer_config(converted):
    shape, _, folder = converted
    config = TokenizerConfig(**json.loads((folder / CONFIG_NAME).read_text()))
    assert config.block_out_channels == tuple(shape["hidden"] * m for m in shape["channel_mult"])
    assert (config.layers_per_block, config.latent_channels, config.codebook_size, config.image_size) == (
        shape["num_res_blocks"], shape["d"], shape["K"], RESOLUTION)
    assert config.mid_block_add_attention == shape["mid_attention"]
    assert list(folder.glob("*.safetensors")) and not list(folder.glob("*.bin"))


def test_vqgan_with_level_attention_converts_to_a_vqmodel_with_lwms_outputs(converted_with_level_attention):
    params, folder = converted_with_level_attention
    vqmodel = VQModel.from_pretrained(folder).eval()
    assert vqmodel.config.down_block_types == ["DownEncoderBlock2D", "AttnDownEncoderBlock2D"]
    assert vqmodel.config.up_block_types == ["AttnUpDecoderBlock2D", "UpDecoderBlock2D"]
    frames = _frames(1)
    latents = lwm_encode(params, _nhwc(frames), LEVEL_ATTENTION)
    codes = lwm_quantize(params, latents)
    B, h, w, d = latents.shape
    with torch.no_grad():
        ours = vqmodel.encode(frames).latents
        _, _, (_, _, our_codes) = vqmodel.quantize(ours)
        decoded = vqmodel.decode(torch.from_numpy(codes).flatten(), force_not_quantize=True,
                                 shape=(B, h, w, d)).sample.clamp(-1, 1)
    torch.testing.assert_close(ours.permute(0, 2, 3, 1), torch.from_numpy(latents).float(), atol=1e-4, rtol=1e-4)
    assert torch.equal(our_codes.view(B, h, w), torch.from_numpy(codes))
    expected = lwm_decode(params, codes, LEVEL_ATTENTION)
    assert np.abs(decoded.permute(0, 2, 3, 1).double().numpy() - expected).max() <= 1e-4


def test_vqgan_our_config_cannot_describe_gets_no_openvica_config(converted_with_level_attention):
    _, folder = converted_with_level_attention
    assert not (folder / CONFIG_NAME).exists()
    with pytest.raises(ValueError, match="vq_embed_dim equal to latent_channels"):
        Tokenizer.from_pretrained(folder)


def test_params_wrapped_in_a_params_key_convert_like_the_bare_tree(tmp_path):
    params = lwm_params(np.random.default_rng(2), **MID_ATTENTION)
    bare = convert_vqgan(params, tmp_path / "bare", resolution=RESOLUTION)
    wrapped = convert_vqgan({"params": params}, tmp_path / "wrapped", resolution=RESOLUTION)
    a, b = Tokenizer.from_pretrained(bare).state_dict(), Tokenizer.from_pretrained(wrapped).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- shapes --------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [DEFAULT_LIKE, MID_ATTENTION, LEVEL_ATTENTION], ids=["default", "mid", "level"])
def test_infer_vqgan_config_recovers_the_shapes_the_params_were_written_with(shape):
    config = infer_vqgan_config(lwm_params(np.random.default_rng(0), **shape))
    assert config == dict(hidden_channels=shape["hidden"], channel_mult=shape["channel_mult"],
                          num_res_blocks=shape["num_res_blocks"], z_channels=shape["z"], num_embeddings=shape["K"],
                          quantized_embed_dim=shape["d"], no_attn_mid_block=not shape["mid_attention"],
                          attn_levels=shape["attn_levels"])


def test_missing_codebook_is_named_by_its_path():
    params = lwm_params(np.random.default_rng(0), **MID_ATTENTION)
    del params["quantize"]
    with pytest.raises(ValueError, match="no 'quantize/embeddings'"):
        infer_vqgan_config(params)


def test_missing_layer_is_named_by_its_path(tmp_path):
    params = lwm_params(np.random.default_rng(0), **MID_ATTENTION)
    del params["decoder"]["GroupNorm_0"]
    with pytest.raises(ValueError, match="no 'decoder/GroupNorm_0/scale'"):
        convert_vqgan(params, tmp_path / "tok", resolution=RESOLUTION)
    assert not (tmp_path / "tok").exists()


def test_unused_parameter_is_named(tmp_path):
    params = lwm_params(np.random.default_rng(0), **MID_ATTENTION)
    params["encoder"]["Conv_2"] = {"kernel": np.zeros((3, 3, 32, 32), np.float32), "bias": np.zeros(32, np.float32)}
    with pytest.raises(ValueError, match=r"unused Flax arrays \['encoder/Conv_2/bias', 'encoder/Conv_2/kernel'\]"):
        convert_vqgan(params, tmp_path / "tok", resolution=RESOLUTION)


def test_misshapen_parameter_is_named_with_both_shapes(tmp_path):
    params = lwm_params(np.random.default_rng(0), **MID_ATTENTION)
    params["decoder"]["Conv_0"]["kernel"] = np.zeros((3, 3, 8, 64), np.float32)  # z is 16
    with pytest.raises(ValueError, match=r"'decoder/Conv_0/kernel' is \(3, 3, 8, 64\).*needs \(64, 16, 3, 3\)"):
        convert_vqgan(params, tmp_path / "tok", resolution=RESOLUTION)


def test_decoder_attention_must_match_the_encoders():
    params = lwm_params(np.random.default_rng(0), **LEVEL_ATTENTION)
    for j in range(2):
        del params["decoder"]["UpsamplingBlock_0"][f"AttnBlock_{j}"]
    with pytest.raises(ValueError, match="UpsamplingBlock_0 lacks attention but encoder level 1 has it"):
        infer_vqgan_config(params)


# ---- reading pickles safely ----------------------------------------------------------------------------------------

class _Calls:
    """Pickles as a call of `fn(*args)`: what a tampered parameter file would hold."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


@pytest.mark.parametrize("make_call, global_name", [
    (lambda marker: _Calls(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),  # posix.system
    (lambda marker: _Calls(builtins.eval, f"open({str(marker)!r}, 'w').close()"), "builtins.eval"),
    (lambda marker: _Calls(subprocess.Popen, ["touch", str(marker)]), "subprocess.Popen"),
], ids=["os.system", "eval", "Popen"])
def test_pickle_that_calls_a_function_is_refused_without_running_it(tmp_path, make_call, global_name):
    marker = tmp_path / "pwned"
    params = lwm_params(np.random.default_rng(0), **MID_ATTENTION)
    params["encoder"]["Conv_0"]["kernel"] = make_call(marker)
    with open(tmp_path / "vqgan", "wb") as f:
        pickle.dump(params, f)
    message = re.escape(f"{tmp_path / 'vqgan'} asks for the global {global_name}")
    with pytest.raises(pickle.UnpicklingError, match=message):
        load_vqgan_pickle(tmp_path / "vqgan")
    with pytest.raises(UnsafePickleError):
        convert_vqgan(tmp_path / "vqgan", tmp_path / "tok")
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickles_of_any_protocol_load_as_plain_dicts_of_float32_arrays(tmp_path, protocol):
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 32))
    tree = OrderedDict(encoder=OrderedDict(Conv_0={"kernel": kernel.astype(np.float16), "bias": np.ones(32)}))
    with open(tmp_path / "vqgan", "wb") as f:
        pickle.dump(tree, f, protocol=protocol)
    loaded = load_vqgan_pickle(tmp_path / "vqgan")
    assert type(loaded) is dict and type(loaded["encoder"]) is dict
    conv = loaded["encoder"]["Conv_0"]
    assert conv["kernel"].dtype == conv["bias"].dtype == np.float32
    np.testing.assert_array_equal(conv["kernel"], kernel.astype(np.float16).astype(np.float32))


class _OverDict(Mapping):
    """A read-only mapping over `self._dict`; no slots of its own, so subclasses choose how they pickle."""

    __slots__ = ()

    def __getitem__(self, key):
        return self._dict[key]

    def __iter__(self):
        return iter(self._dict)

    def __len__(self):
        return len(self._dict)


class _FlaxFrozenDict(_OverDict):
    """flax >= 0.3's FrozenDict as it pickles: `__reduce__` returns (FrozenDict, (plain nested dict,))."""

    __module__, __qualname__ = "flax.core.frozen_dict", "FrozenDict"

    def __init__(self, xs):
        self._dict = dict(xs)

    def __reduce__(self):
        return type(self), (self._dict,)


class _Flax02FrozenDict(_OverDict):
    """flax 0.2's FrozenDict: `__slots__` and no `__reduce__`, so pickle stores its slots."""

    __module__, __qualname__ = "flax.core.frozen_dict", "FrozenDict"
    __slots__ = ("_dict", "_leaves", "_treedef", "_hash")

    def __init__(self, xs):
        self._dict, self._leaves, self._treedef, self._hash = dict(xs), None, None, None


def _install_fake_module(monkeypatch, obj) -> None:
    """Put `obj` where its __module__ and __qualname__ say, so that pickle can name it, as if jax or flax were
    installed (they are not, and loading must not need them)."""
    parts = obj.__module__.split(".")
    for n in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:n]), types.ModuleType(".".join(parts[:n])))
    setattr(sys.modules[obj.__module__], obj.__qualname__, obj)


@pytest.mark.parametrize("frozen_dict", [_FlaxFrozenDict, _Flax02FrozenDict], ids=["flax>=0.3", "flax-0.2"])
def test_flax_frozen_dicts_load_as_plain_dicts_without_flax(tmp_path, monkeypatch, frozen_dict):
    _install_fake_module(monkeypatch, frozen_dict)
    kernel = np.ones((1, 1, 16, 16), np.float32)
    with open(tmp_path / "vqgan", "wb") as f:
        pickle.dump(frozen_dict({"params": {"quant_conv": {"kernel": kernel}}}), f)
    monkeypatch.undo()  # loading sees no flax
    loaded = load_vqgan_pickle(tmp_path / "vqgan")
    assert type(loaded) is dict and type(loaded["quant_conv"]) is dict
    np.testing.assert_array_equal(loaded["quant_conv"]["kernel"], kernel)


def test_jax_arrays_load_as_the_numpy_arrays_they_hold_without_jax(tmp_path, monkeypatch):
    def _reconstruct_array(fun, args, arr_state, aval_state):  # jax._src.array's, as jax >= 0.4 pickles an Array
        raise AssertionError("loading must not call jax")

    class JaxArray:
        def __init__(self, value):
            self.value = value

        def __reduce__(self):  # jax.Array.__reduce__
            fun, args, arr_state = self.value.__reduce__()
            return _reconstruct_array, (fun, args, arr_state, {"weak_type": False})

    _reconstruct_array.__module__, _reconstruct_array.__qualname__ = "jax._src.array", "_reconstruct_array"
    _install_fake_module(monkeypatch, _reconstruct_array)
    embeddings = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    with open(tmp_path / "vqgan", "wb") as f:
        pickle.dump({"quantize": {"embeddings": JaxArray(embeddings)}}, f)
    monkeypatch.undo()
    np.testing.assert_array_equal(load_vqgan_pickle(tmp_path / "vqgan")["quantize"]["embeddings"], embeddings)


def test_pickle_of_something_other_than_a_dict_is_refused(tmp_path):
    with open(tmp_path / "vqgan", "wb") as f:
        pickle.dump([np.zeros(3, np.float32)], f)
    with pytest.raises(ValueError, match="holds a list, not the dict of a Flax params tree"):
        load_vqgan_pickle(tmp_path / "vqgan")


# ---- folders -------------------------------------------------------------------------------------------------------

def test_convert_refuses_a_non_empty_folder_unless_told_to_overwrite(tmp_path):
    params = lwm_params(np.random.default_rng(0), **MID_ATTENTION)
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        convert_vqgan(params, tmp_path / "tok", resolution=RESOLUTION)
    assert (tmp_path / "tok" / "notes.txt").read_text() == "keep me"
    convert_vqgan(params, tmp_path / "tok", resolution=RESOLUTION, overwrite=True)
    assert not (tmp_path / "tok" / "notes.txt").exists() and (tmp_path / "tok" / CONFIG_NAME).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"], "no temporary folder may be left behind"


def test_amused_vqvae_folder_is_taken_as_is_with_our_config_added(tmp_path):
    config = TokenizerConfig(**PRESETS["test"])
    torch.manual_seed(0)
    vqmodel = VQModel(**config.to_vqmodel_kwargs())
    vqmodel.save_pretrained(tmp_path / "vqvae")  # as published: a diffusers folder, no openvica config
    out = import_amused_vqvae(tmp_path / "vqvae", tmp_path / "tok")
    tok = Tokenizer.from_pretrained(out)
    assert (out / CONFIG_NAME).is_file() and tok.config == config
    expected = vqmodel.state_dict()
    assert all(torch.equal(v, expected[k]) for k, v in tok.vqmodel.state_dict().items())


def test_amused_import_refuses_a_vqmodel_our_config_cannot_describe(tmp_path):
    kwargs = TokenizerConfig(**PRESETS["test"]).to_vqmodel_kwargs()
    kwargs["down_block_types"] = ["AttnDownEncoderBlock2D"] + kwargs["down_block_types"][1:]
    VQModel(**kwargs).save_pretrained(tmp_path / "vqvae")
    with pytest.raises(ValueError, match="unsupported VQModel config.*down_block_types"):
        import_amused_vqvae(tmp_path / "vqvae", tmp_path / "tok")
    assert not (tmp_path / "tok").exists()


def test_amused_folder_without_safetensors_is_a_file_not_found_error(tmp_path):
    (tmp_path / "vqvae").mkdir()
    (tmp_path / "vqvae" / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no .safetensors weights"):
        import_amused_vqvae(tmp_path / "vqvae", tmp_path / "tok")


# ---- LWM's params tree and forward pass, from lwm/vqgan.py ----------------------------------------------------------

def lwm_params(rng, hidden, channel_mult, num_res_blocks, z, d, K, attn_levels, mid_attention) -> dict:
    """A random Flax params tree laid out as LWM's VQGANModel creates it (names by class and creation order)."""
    def conv(c_in, c_out, k=3):  # nn.Conv: kernel (kh, kw, in, out); 1/sqrt(fan in) keeps activations near 1
        return {"kernel": rng.normal(0, (k * k * c_in) ** -0.5, (k, k, c_in, c_out)).astype(np.float32),
                "bias": rng.normal(0, 0.1, c_out).astype(np.float32)}

    def norm(c):  # nn.GroupNorm: scale, bias
        return {"scale": (1 + rng.normal(0, 0.1, c)).astype(np.float32),
                "bias": rng.normal(0, 0.1, c).astype(np.float32)}

    def resnet(c_in, c_out):
        block = {"GroupNorm_0": norm(c_in), "Conv_0": conv(c_in, c_out), "GroupNorm_1": norm(c_out),
                 "Conv_1": conv(c_out, c_out)}
        return {**block, "Conv_2": conv(c_in, c_out, 1)} if c_in != c_out else block

    def attention(c):
        return {"GroupNorm_0": norm(c), **{f"Conv_{n}": conv(c, c, 1) for n in range(4)}}

    def mid(c):
        block = {"ResnetBlock_0": resnet(c, c), "ResnetBlock_1": resnet(c, c)}
        return {**block, "AttnBlock_0": attention(c)} if mid_attention else block

    levels, outs = len(channel_mult), [hidden * m for m in channel_mult]
    encoder, c = {"Conv_0": conv(3, hidden)}, hidden
    for i in range(levels):
        block = {}
        for j in range(num_res_blocks):
            block[f"ResnetBlock_{j}"], c = resnet(c, outs[i]), outs[i]
            if i in attn_levels:
                block[f"AttnBlock_{j}"] = attention(c)
        if i != levels - 1:
            block["Downsample_0"] = {"Conv_0": conv(c, c)}
        encoder[f"DownsamplingBlock_{i}"] = block
    encoder.update(MidBlock_0=mid(c), GroupNorm_0=norm(c), Conv_1=conv(c, z))
    decoder, c = {"Conv_0": conv(z, outs[-1]), "MidBlock_0": mid(outs[-1])}, outs[-1]
    for k, i in enumerate(reversed(range(levels))):
        block = {}
        for j in range(num_res_blocks + 1):
            block[f"ResnetBlock_{j}"], c = resnet(c, outs[i]), outs[i]
            if i in attn_levels:
                block[f"AttnBlock_{j}"] = attention(c)
        if i != 0:
            block["Upsample_0"] = {"Conv_0": conv(c, c)}
        decoder[f"UpsamplingBlock_{k}"] = block
    decoder.update(GroupNorm_0=norm(c), Conv_1=conv(c, 3))
    return {"encoder": encoder, "decoder": decoder, "quant_conv": conv(z, d, 1), "post_quant_conv": conv(d, z, 1),
            "quantize": {"embeddings": rng.normal(0, 0.5, (K, d)).astype(np.float32)}}


def _conv(x, p, stride=1, pad=None):
    """nn.Conv on NHWC: padding SAME (stride 1) or `pad` ((top, bottom), (left, right)) then VALID."""
    kernel = p["kernel"].astype(np.float64)  # (kh, kw, in, out)
    kh, kw = kernel.shape[:2]
    pad = pad or ((kh // 2, kh // 2), (kw // 2, kw // 2))
    x = np.pad(x, ((0, 0), *pad, (0, 0)))
    h, w = (x.shape[1] - kh) // stride + 1, (x.shape[2] - kw) // stride + 1
    out = sum(x[:, i:i + stride * (h - 1) + 1:stride, j:j + stride * (w - 1) + 1:stride] @ kernel[i, j]
              for i in range(kh) for j in range(kw))
    return out + p["bias"]


def _group_norm(x, p, groups=32, eps=1e-6):  # flax.linen.GroupNorm defaults
    B, H, W, C = x.shape
    g = x.reshape(B, H, W, groups, C // groups)
    g = (g - g.mean((1, 2, 4), keepdims=True)) / np.sqrt(g.var((1, 2, 4), keepdims=True) + eps)
    return g.reshape(x.shape) * p["scale"] + p["bias"]


def _silu(x):
    return x / (1 + np.exp(-x))


def _resnet(x, p):
    h = _conv(_silu(_group_norm(x, p["GroupNorm_0"])), p["Conv_0"])
    h = _conv(_silu(_group_norm(h, p["GroupNorm_1"])), p["Conv_1"])
    return h + (_conv(x, p["Conv_2"]) if "Conv_2" in p else x)


def _attention(x, p):
    B, H, W, C = x.shape
    h = _group_norm(x, p["GroupNorm_0"])
    q, k, v = (_conv(h, p[f"Conv_{n}"]).reshape(B, H * W, C) for n in range(3))
    logits = np.einsum("bqc,bkc->bqk", q, k) * C ** -0.5
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return _conv(np.einsum("bqk,bkc->bqc", weights, v).reshape(B, H, W, C), p["Conv_3"]) + x


def _mid(x, p, shape):
    x = _resnet(x, p["ResnetBlock_0"])
    x = _attention(x, p["AttnBlock_0"]) if shape["mid_attention"] else x
    return _resnet(x, p["ResnetBlock_1"])


def lwm_encode(params, frames, shape):
    """Encoder + quant_conv: frames (B, H, W, 3) -> latents (B, h, w, d), float64."""
    p, levels = params["encoder"], len(shape["channel_mult"])
    x = _conv(frames, p["Conv_0"])
    for i in range(levels):
        block = p[f"DownsamplingBlock_{i}"]
        for j in range(shape["num_res_blocks"]):
            x = _resnet(x, block[f"ResnetBlock_{j}"])
            x = _attention(x, block[f"AttnBlock_{j}"]) if i in shape["attn_levels"] else x
        if i != levels - 1:  # Downsample: pad bottom and right by one, stride-2 VALID conv
            x = _conv(x, block["Downsample_0"]["Conv_0"], stride=2, pad=((0, 1), (0, 1)))
    x = _mid(x, p["MidBlock_0"], shape)
    x = _conv(_silu(_group_norm(x, p["GroupNorm_0"])), p["Conv_1"])
    return _conv(x, params["quant_conv"])


def lwm_quantize(params, latents):
    """VectorQuantizer: argmin over codes of |z|^2 + |e|^2 - 2 z.e; latents (B, h, w, d) -> codes (B, h, w) int64."""
    e = params["quantize"]["embeddings"].astype(np.float64)  # (K, d)
    z = latents.reshape(-1, e.shape[1])
    distance = (z ** 2).sum(1, keepdims=True) + (e ** 2).sum(1)[None] - 2 * z @ e.T
    return distance.argmin(1).reshape(latents.shape[:3]).astype(np.int64)


def lwm_decode(params, codes, shape):
    """Codebook lookup, post_quant_conv, decoder, clip: codes (B, h, w) -> frames (B, H, W, 3) in [-1, 1]."""
    p, levels = params["decoder"], len(shape["channel_mult"])
    x = _conv(params["quantize"]["embeddings"].astype(np.float64)[codes], params["post_quant_conv"])
    x = _mid(_conv(x, p["Conv_0"]), p["MidBlock_0"], shape)
    for k, i in enumerate(reversed(range(levels))):
        block = p[f"UpsamplingBlock_{k}"]
        for j in range(shape["num_res_blocks"] + 1):
            x = _resnet(x, block[f"ResnetBlock_{j}"])
            x = _attention(x, block[f"AttnBlock_{j}"]) if i in shape["attn_levels"] else x
        if i != 0:  # Upsample: nearest x2 (jax.image.resize "nearest"), then a conv
            x = _conv(x.repeat(2, axis=1).repeat(2, axis=2), block["Upsample_0"]["Conv_0"])
    x = _conv(_silu(_group_norm(x, p["GroupNorm_0"])), p["Conv_1"])
    return np.clip(x, -1, 1)


def test_openvica_convert_vqgan_refuses_a_malicious_pickle_in_one_line_and_converts_a_good_one(tmp_path, capsys):
    from openvica_sim.cli import main

    marker = tmp_path / "pwned"
    params = lwm_params(np.random.default_rng(0), **MID_ATTENTION)
    good = tmp_path / "good"
    with open(good, "wb") as f:
        pickle.dump(params, f)
    params["encoder"]["Conv_0"]["kernel"] = _Calls(os.system, f"touch {marker}")
    with open(tmp_path / "evil", "wb") as f:
        pickle.dump(params, f)
    assert main(["convert", "vqgan", "--checkpoint", str(tmp_path / "evil"), "--out", str(tmp_path / "tok")]) == 1
    assert "openvica: error:" in capsys.readouterr().err and not marker.exists() and not (tmp_path / "tok").exists()
    assert main(["convert", "vqgan", "--checkpoint", str(good), "--out", str(tmp_path / "tok"), "--resolution",
                 "64"]) == 0
    assert (tmp_path / "tok" / "config.json").is_file()
