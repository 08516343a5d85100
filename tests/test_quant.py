"""Quantisation options (issue 18, point 3): int8 weight-only layers and an FP8 (e4m3) KV cache, both off by
default; the engine's CPU path computes what the quantised modules compute, every option keeps batch invariance, and
scoring through the cache sees what the cache does to keys and values."""

import copy

import numpy as np
import pytest
import torch

from openvica_sim.bundle import load_bundle, save_bundle
from openvica_sim.models.world_model import FP8KVCache, Int8Linear, KVCache
from openvica_sim.simulator import Simulator


@pytest.fixture(scope="module")
def clip_tokens():
    return np.random.default_rng(1).integers(0, 64, (2, 4, 16, 16))


@pytest.fixture(scope="module")
def int8_bundle(test_bundle):
    bundle = copy.deepcopy(test_bundle)
    bundle.world_model.quantize("int8")
    return bundle


def test_int8_linear_keeps_one_scale_per_output_channel_and_computes_with_the_dequantized_weight():
    torch.manual_seed(0)
    linear = torch.nn.Linear(32, 8, bias=False)
    q = Int8Linear(linear)
    assert q.weight.dtype == torch.int8 and q.scales.shape == (8,)
    error = (q.dequantized() - linear.weight).abs().max(dim=1).values
    assert torch.all(error <= q.scales / 2 + 1e-7)  # rounding: at most half a step per channel
    x = torch.randn(5, 32)
    torch.testing.assert_close(q(x), x @ q.dequantized().t(), rtol=1e-5, atol=1e-6)


def test_quantize_replaces_the_decoder_block_linears_and_not_the_embedding_or_head(int8_bundle, test_bundle):
    wm = int8_bundle.world_model
    layer = wm.llama.model.layers[0]
    assert all(isinstance(getattr(layer.self_attn, n), Int8Linear) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
    assert all(isinstance(getattr(layer.mlp, n), Int8Linear) for n in ("gate_proj", "up_proj", "down_proj"))
    assert torch.equal(wm.llama.lm_head.weight, test_bundle.world_model.llama.lm_head.weight)
    with pytest.raises(ValueError, match="int8"):
        wm.quantize("int4")


def test_the_engines_cpu_path_computes_what_the_int8_modules_compute(int8_bundle, clip_tokens):
    sim = Simulator(int8_bundle, decoder="tokenizer")
    through_cache = np.stack(sim.score(list(clip_tokens), cached=True))  # the fused CPU path, dequantized weights
    uncached = np.stack(sim.score(list(clip_tokens)))  # transformers' modules: Int8Linear.forward
    np.testing.assert_allclose(through_cache[:, 2:], uncached[:, 2:], rtol=1e-4)


def test_scoring_through_a_plain_cache_equals_the_uncached_forward(test_bundle, clip_tokens):
    sim = Simulator(test_bundle, decoder="tokenizer")
    np.testing.assert_allclose(np.stack(sim.score(list(clip_tokens), cached=True))[:, 2:],
                               np.stack(sim.score(list(clip_tokens)))[:, 2:], rtol=1e-4)


def test_the_fp8_cache_stores_8_bit_values_with_per_position_head_scales(test_bundle):
    config = test_bundle.world_model.config
    cache = FP8KVCache(config, 2, 16, torch.float32, "cpu")
    k, v = torch.randn(2, config.num_kv_heads, 3, config.head_dim), torch.randn(2, config.num_kv_heads, 3,
                                                                                  config.head_dim)
    cache.write(0, k, v, start=0)
    cache.write(0, k[:, :, :1] * 100, v[:, :, :1], index=torch.tensor([5]))
    read_k, read_v = cache.read(0, 6)
    assert cache.keys.dtype == torch.float8_e4m3fn and cache.key_scales.shape[-1] == 1
    assert torch.allclose(read_k[:, :, :3], k, rtol=0.07, atol=1e-3) and torch.allclose(read_v[:, :, :3], v, rtol=0.07,
                                                                                        atol=1e-3)
    assert torch.allclose(read_k[:, :, 5:6], k[:, :, :1] * 100, rtol=0.07, atol=0.1)  # its own scale
    copied = cache.gather(torch.tensor([1, 1]))
    assert torch.equal(copied.read(0, 6)[0][0], read_k[1]) and isinstance(copied, FP8KVCache)
    assert cache.keys.element_size() * 2 == KVCache(config, 2, 16, torch.bfloat16, "cpu").keys.element_size()


def test_every_quantisation_option_keeps_batch_invariance(int8_bundle, clip_tokens):
    for kv_dtype in (None, "fp8"):
        sim = Simulator(int8_bundle, top_k=20, decoder="tokenizer", kv_dtype=kv_dtype)
        alone, _ = sim.predict(sim.start(tokens=clip_tokens[:1, :2], seeds=[5]), 1)
        batched, _ = sim.predict(sim.start(tokens=np.concatenate([clip_tokens[:, :2], clip_tokens[:1, :2]]),
                                           seeds=[1, 2, 5]), 1)
        assert torch.equal(alone[0], batched[2]), kv_dtype


def test_load_bundle_quantizes_on_request_and_not_by_default(test_bundle, tmp_path):
    path = save_bundle(test_bundle, tmp_path / "bundle")
    assert not isinstance(load_bundle(path).world_model.llama.model.layers[0].self_attn.q_proj, Int8Linear)
    assert isinstance(load_bundle(path, quant="int8").world_model.llama.model.layers[0].self_attn.q_proj, Int8Linear)
    with pytest.raises(ValueError, match="kv_dtype"):
        Simulator(test_bundle, kv_dtype="int4")
