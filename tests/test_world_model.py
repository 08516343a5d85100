"""WM on transformers' LlamaForCausalLM with one merged vocabulary (docs/design.md)."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from openvica_sim.models.world_model import (PRESETS, PROMPT, WorldModel, WorldModelConfig, build_text_tokenizer,
                                             create_world_model, encode_prompt)


def test_lwm_preset_has_the_real_shapes_and_merged_vocabulary():
    c = WorldModelConfig(**PRESETS["lwm-7b"])
    assert (c.num_layers, c.hidden_size, c.num_heads) == (32, 4096, 32)
    assert c.vocab_size == 32000 + 8448
    assert c.vision_id(0) == 32000 and c.end_of_frame_id == 32000 + 8192 and c.end_of_vision_id == 32000 + 8193
    assert c.to_llama_config().rope_parameters["rope_theta"] == 50_000_000


def test_small_models_keep_the_layout_codes_then_specials():
    c = WorldModelConfig(**PRESETS["tiny"])
    assert c.end_of_frame_id == c.text_vocab_size + c.codebook_size
    assert c.num_spare_vision_ids >= 130, "room for the ego-command ids"


def test_vocabulary_too_small_for_codes_and_specials_is_rejected():
    with pytest.raises(ValueError, match="vision_vocab_size=100"):
        WorldModelConfig(codebook_size=100, vision_vocab_size=100)


def test_prompt_is_encoded_by_the_stored_text_tokenizer_with_bos():
    tok = build_text_tokenizer()
    ids = encode_prompt(tok, 384)
    assert ids[0] == tok.bos_token_id == 1
    assert tok.decode(ids, skip_special_tokens=True) == PROMPT
    with pytest.raises(ValueError, match="does not belong to this model"):
        encode_prompt(tok, 10)


def test_code_logits_are_the_code_rows_of_the_full_head():
    wm = create_world_model("test")
    ids = torch.randint(0, wm.config.vocab_size, (2, 7))
    full = wm(ids)
    codes = wm.code_logits(wm.hidden_states(ids))
    start = wm.config.text_vocab_size
    torch.testing.assert_close(codes, full[..., start:start + wm.config.codebook_size])


def test_saved_world_model_loads_with_plain_transformers(tmp_path):
    wm = create_world_model("test", seed=5)
    wm.save_pretrained(tmp_path / "wm")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "wm", local_files_only=True)
    ids = torch.randint(0, wm.config.vocab_size, (1, 9))
    torch.testing.assert_close(plain(ids).logits, wm(ids))
    again = WorldModel.from_pretrained(tmp_path / "wm")
    assert again.config == wm.config


def test_lora_adapter_is_merged_at_load(tmp_path):
    from peft import LoraConfig, get_peft_model

    wm = create_world_model("test", seed=1)
    wm.save_pretrained(tmp_path / "wm")
    peft_model = get_peft_model(wm.llama, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.randint(0, wm.config.vocab_size, (1, 5))
    expected = peft_model(input_ids=ids).logits
    merged = WorldModel.from_pretrained(tmp_path / "wm", adapter=tmp_path / "adapter")
    torch.testing.assert_close(merged(ids), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("num_kv_heads", [2, 1], ids=["multi-head", "grouped-query"])
def test_cached_forward_in_chunks_equals_transformers_uncached_forward(num_kv_heads):
    from openvica_sim.models.world_model import KVCache

    wm = create_world_model("test", seed=2, num_kv_heads=num_kv_heads)
    ids = torch.randint(0, wm.config.vocab_size, (3, 40))
    reference = wm.hidden_states(ids)
    cache = KVCache(wm.config, rows=3, max_len=64, dtype=torch.float32, device="cpu")
    with torch.no_grad():  # a prefill of 30, then single ids, then a chunk of 2: every path of the engine
        parts = [wm.forward_cached(ids[:, :30], cache)]
        parts += [wm.forward_cached(ids[:, i:i + 1], cache) for i in range(30, 38)]
        parts.append(wm.forward_cached(ids[:, 38:], cache))
    torch.testing.assert_close(torch.cat(parts, 1), reference, atol=1e-5, rtol=1e-4)
    assert cache.length == 40
    with pytest.raises(ValueError, match="overflow"):
        wm.forward_cached(ids[:, :30], cache)


def test_padding_rows_widen_the_products_but_leave_the_cached_rows_unchanged():
    """The engine pads to a fixed row width for batch invariance; only the cache's rows attend and are stored."""
    from openvica_sim.models.world_model import KVCache

    wm = create_world_model("test", seed=3)
    ids = torch.randint(0, wm.config.vocab_size, (1, 24))
    padded = torch.cat([ids, torch.randint(0, wm.config.vocab_size, (3, 24))])  # 1 real row + 3 padding rows
    alone, wide = (KVCache(wm.config, rows=1, max_len=32, dtype=torch.float32, device="cpu") for _ in range(2))
    with torch.no_grad():
        a = torch.cat([wm.forward_cached(ids[:, :20], alone)] + [wm.forward_cached(ids[:, i:i + 1], alone)
                                                                 for i in range(20, 24)], 1)
        b = torch.cat([wm.forward_cached(padded[:, :20], wide)] + [wm.forward_cached(padded[:, i:i + 1], wide)
                                                                   for i in range(20, 24)], 1)
    torch.testing.assert_close(b[:1], a, atol=1e-6, rtol=1e-5)  # GEMV at 1 row vs GEMM at 4: last-bit rounding
    assert wide.keys.shape[1] == 1 and wide.length == 24
