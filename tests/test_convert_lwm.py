"""`openvica convert lwm`: LWM's streaming msgpack checkpoint -> a plain transformers Llama with one vocabulary.

The checkpoints here are written by this file's own writer in LWM's exact format (tux's StreamingCheckpointer:
msgpack records (key path, flax to_bytes(array)), arrays over the chunk limit split as flax does), in both
layouts and in fp32 and bf16. The converted model is checked against `lwm_reference_logits`, a forward pass
written from LWM's equations on the Flax-layout arrays: separate text/vision embeddings and heads, interleaved
(complex) rotary embedding, RMSNorm, SwiGLU.
"""

import json
import math

import msgpack
import pytest
import torch

from openvica_sim.convert.lwm import convert_lwm, read_checkpoint
from openvica_sim.models.world_model import WorldModel

D, HEADS, F, LAYERS, V_TEXT, V_VISION = 64, 4, 96, 2, 384, 200
THETA, EPS = 10_000.0, 1e-6
SHAPE = dict(num_heads=HEADS, rope_theta=THETA, rms_norm_eps=EPS, codebook_size=64, max_position_embeddings=4096)


# ---- LWM's format, written independently ------------------------------------------------------------------------

def flax_to_bytes(tensor: torch.Tensor, max_chunk_bytes: int = 2**30) -> bytes:
    """flax.serialization.to_bytes of one array: ExtType(1, (shape, dtype name, bytes)), chunked when large."""
    def ext(t):
        name = str(t.dtype).removeprefix("torch.")
        raw = t.contiguous().view(torch.int16 if t.dtype == torch.bfloat16 else t.dtype).numpy().tobytes()
        return msgpack.ExtType(1, msgpack.packb((list(t.shape), name, raw), use_bin_type=True))

    if tensor.numel() * tensor.element_size() > max_chunk_bytes:
        per = max(1, max_chunk_bytes // tensor.element_size())
        flat = tensor.reshape(-1)
        chunks = [flat[i:i + per] for i in range(0, flat.numel(), per)]
        obj = {"__msgpack_chunked_array__": True, "shape": {str(i): s for i, s in enumerate(tensor.shape)},
               "chunks": {str(i): ext(c) for i, c in enumerate(chunks)}}
        return msgpack.packb(obj, use_bin_type=True)
    return msgpack.packb(ext(tensor), use_bin_type=True)


def write_lwm_checkpoint(path, params: dict, dtype=torch.float32, prefix=(), extra=(), max_chunk_bytes=2**30):
    packer = msgpack.Packer()
    with open(path, "wb") as f:
        for key, value in [*extra, *params.items()]:
            f.write(packer.pack((list(prefix + key), flax_to_bytes(value.to(dtype), max_chunk_bytes))))


def lwm_params(scan: bool, seed: int = 0) -> dict:
    """Random parameters in the Flax tree and layouts of lwm/vision_llama.py."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.08):
        return torch.randn(*shape, generator=g) * scale

    def norm(*shape):
        return 1.0 + 0.1 * torch.randn(*shape, generator=g)

    layer = lambda: {("attention", "wq", "kernel"): rand(D, D), ("attention", "wk", "kernel"): rand(D, D),
                     ("attention", "wv", "kernel"): rand(D, D), ("attention", "wo", "kernel"): rand(D, D),
                     ("feed_forward", "w1", "kernel"): rand(D, F), ("feed_forward", "w3", "kernel"): rand(D, F),
                     ("feed_forward", "w2", "kernel"): rand(F, D),
                     ("attention_norm", "kernel"): norm(D), ("ffn_norm", "kernel"): norm(D)}
    params = {("transformer", "wte", "embedding"): rand(V_TEXT, D, scale=1.0),
              ("transformer", "vte", "embedding"): rand(V_VISION, D, scale=1.0)}
    layers = [layer() for _ in range(LAYERS)]
    if scan:
        for sub in layers[0]:
            params[("transformer", "h", "scan_decoder", *sub)] = torch.stack([lyr[sub] for lyr in layers])
    else:
        for i, lyr in enumerate(layers):
            params.update({("transformer", "h", str(i), *sub): w for sub, w in lyr.items()})
    params[("transformer", "ln_f", "kernel")] = norm(D)
    params[("lm_head", "kernel")] = rand(D, V_TEXT)
    params[("vision_head", "kernel")] = rand(D, V_VISION)
    return params


def lwm_reference_logits(params: dict, ids: torch.Tensor, vision: torch.Tensor):
    """LWM's forward (lwm/llama.py, lwm/vision_llama.py) in float64: (text logits, vision logits)."""
    p = {k: v.double() for k, v in params.items()}
    layer = lambda i, *sub: (p[("transformer", "h", "scan_decoder", *sub)][i]
                             if ("transformer", "h", "scan_decoder", *sub) in p else p[("transformer", "h", str(i), *sub)])
    rms = lambda x, w: x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * w
    B, L = ids.shape
    d = D // HEADS
    x = torch.where(vision[..., None], p[("transformer", "vte", "embedding")][torch.where(vision, ids, 0)],
                    p[("transformer", "wte", "embedding")][torch.where(vision, 0, ids)])
    freqs = 1.0 / THETA ** (torch.arange(0, d, 2, dtype=torch.float64) / d)  # (d/2,)
    rot = torch.polar(torch.ones(L, d // 2, dtype=torch.float64), torch.arange(L)[:, None] * freqs)  # (L, d/2)

    def rope(t):  # (B, L, H, d): rotate interleaved pairs as complex numbers
        c = torch.view_as_complex(t.reshape(B, L, HEADS, d // 2, 2).contiguous())
        return torch.view_as_real(c * rot[None, :, None]).reshape(B, L, HEADS, d)

    causal = torch.ones(L, L, dtype=torch.bool).tril()
    for i in range(LAYERS):
        h = rms(x, layer(i, "attention_norm", "kernel"))
        q, k, v = (h @ layer(i, "attention", w, "kernel") for w in ("wq", "wk", "wv"))
        q, k, v = rope(q.view(B, L, HEADS, d)), rope(k.view(B, L, HEADS, d)), v.view(B, L, HEADS, d)
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(d)
        attn = scores.masked_fill(~causal, float("-inf")).softmax(-1)
        x = x + torch.einsum("bhqk,bkhd->bqhd", attn, v).reshape(B, L, D) @ layer(i, "attention", "wo", "kernel")
        h = rms(x, layer(i, "ffn_norm", "kernel"))
        ff = torch.nn.functional.silu(h @ layer(i, "feed_forward", "w1", "kernel")) * (h @ layer(i, "feed_forward", "w3", "kernel"))
        x = x + ff @ layer(i, "feed_forward", "w2", "kernel")
    x = rms(x, p[("transformer", "ln_f", "kernel")])
    return x @ p[("lm_head", "kernel")], x @ p[("vision_head", "kernel")]


def mixed_sequence(seed=0, length=24):
    """A prompt of text ids followed by vision ids, as (LWM ids, vision mask, merged ids)."""
    g = torch.Generator().manual_seed(seed)
    vision = torch.arange(length)[None] >= 8
    ids = torch.where(vision, torch.randint(0, V_VISION, (1, length), generator=g),
                      torch.randint(0, V_TEXT, (1, length), generator=g))
    return ids, vision, torch.where(vision, V_TEXT + ids, ids)


def assert_logits_match(model_dir, params):
    from transformers import AutoModelForCausalLM

    ids, vision, merged = mixed_sequence()
    text_ref, vision_ref = lwm_reference_logits(params, ids, vision)
    llama = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True)
    with torch.no_grad():
        logits = llama(input_ids=merged).logits.double()  # (1, L, V_text + V_vision)
    torch.testing.assert_close(logits[..., :V_TEXT], text_ref, rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(logits[..., V_TEXT:], vision_ref, rtol=1e-5, atol=2e-5)


# ---- the specification ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("scan", [True, False], ids=["scan_layers", "numbered_layers"])
def test_fp32_checkpoint_converts_to_a_llama_with_lwms_logits(tmp_path, scan):
    params = lwm_params(scan)
    write_lwm_checkpoint(tmp_path / "params", params)
    out = convert_lwm(tmp_path / "params", tmp_path / "wm", preset="test", progress=False, **SHAPE)
    assert_logits_match(out, params)
    config = json.loads((out / "config.json").read_text())
    assert config["vocab_size"] == V_TEXT + V_VISION and config["num_hidden_layers"] == LAYERS
    assert config["rope_parameters"]["rope_theta"] == THETA if "rope_parameters" in config else config["rope_theta"] == THETA


def test_bf16_train_state_with_optimizer_entries_and_chunked_arrays(tmp_path):
    params = lwm_params(scan=True, seed=1)
    bf16 = {k: v.to(torch.bfloat16) for k, v in params.items()}
    extra = [(("opt_state", "1", "0", "mu", "transformer", "ln_f", "kernel"), torch.zeros(D)),
             (("step",), torch.tensor(7, dtype=torch.int32))]
    # a train-state file: keys under ("params", "params"); chunks small enough that the stacked kernels split
    write_lwm_checkpoint(tmp_path / "trainstate", bf16, dtype=torch.bfloat16, prefix=("params", "params"),
                         max_chunk_bytes=4096)
    with open(tmp_path / "trainstate", "ab") as f:  # optimiser state after the params, as in a real train state
        for key, value in extra:
            f.write(msgpack.Packer().pack((list(key), flax_to_bytes(value))))
    out = convert_lwm(tmp_path / "trainstate", tmp_path / "wm", preset="test", dtype=torch.float32,
                      progress=False, **SHAPE)
    assert_logits_match(out, {k: v.float() for k, v in bf16.items()})  # exact bf16 values, upcast


def test_bf16_stays_bf16_and_large_models_are_sharded_with_an_index(tmp_path):
    params = lwm_params(scan=False, seed=2)
    write_lwm_checkpoint(tmp_path / "params", params, dtype=torch.bfloat16)
    out = convert_lwm(tmp_path / "params", tmp_path / "wm", preset="test", shard_bytes=64 * 1024, progress=False,
                      **SHAPE)
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1 and "lm_head.weight" in index["weight_map"]
    wm = WorldModel.from_pretrained(out, dtype=torch.bfloat16)
    assert wm.llama.lm_head.weight.dtype == torch.bfloat16
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    # the vision half of the embedding is vte: vision id v -> V_text + v
    vte = params[("transformer", "vte", "embedding")].to(torch.bfloat16)
    assert torch.equal(wm.llama.model.embed_tokens.weight[V_TEXT:], vte)


def test_reader_yields_every_record_and_restores_chunked_arrays(tmp_path):
    big = torch.arange(5000, dtype=torch.float32).reshape(50, 100)
    write_lwm_checkpoint(tmp_path / "c", {("transformer", "x"): big, ("lm_head", "kernel"): big[:3]},
                         max_chunk_bytes=1000)
    records = dict(read_checkpoint(tmp_path / "c"))
    assert torch.equal(records[("transformer", "x")], big) and records[("lm_head", "kernel")].shape == (3, 100)


def test_truncated_checkpoint_is_refused_naming_the_byte(tmp_path):
    write_lwm_checkpoint(tmp_path / "params", lwm_params(scan=True))
    data = (tmp_path / "params").read_bytes()
    (tmp_path / "cut").write_bytes(data[:len(data) - 100])
    with pytest.raises(ValueError, match="truncated"):
        convert_lwm(tmp_path / "cut", tmp_path / "wm", preset="test", progress=False, **SHAPE)
    assert not (tmp_path / "wm").exists(), "nothing half-written is left"


def test_missing_parameter_is_named(tmp_path):
    params = lwm_params(scan=False)
    del params[("transformer", "h", "1", "ffn_norm", "kernel")]
    write_lwm_checkpoint(tmp_path / "params", params)
    with pytest.raises(ValueError, match="model.layers.1.post_attention_layernorm.weight"):
        convert_lwm(tmp_path / "params", tmp_path / "wm", preset="test", progress=False, **SHAPE)


def test_override_that_contradicts_the_checkpoint_is_refused(tmp_path):
    write_lwm_checkpoint(tmp_path / "params", lwm_params(scan=True))
    with pytest.raises(ValueError, match="hidden_size=128 was given but the checkpoint's shapes say 64"):
        convert_lwm(tmp_path / "params", tmp_path / "wm", preset="test", progress=False, hidden_size=128,
                    **SHAPE)


def test_lwm_7b_needs_llamas_tokenizer_and_takes_a_sentencepiece_model(tmp_path):
    import sentencepiece as spm

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["You are a helpful assistant. USER: Generate a video of driving vehicles.",
                                 "ASSISTANT: <vision> a car drives on a road at night in the rain"] * 50))
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(tmp_path / "tokenizer"), vocab_size=120,
                                   model_type="bpe", bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
                                   hard_vocab_limit=False, minloglevel=2)
    write_lwm_checkpoint(tmp_path / "params", lwm_params(scan=True))
    out = convert_lwm(tmp_path / "params", tmp_path / "wm", tokenizer=tmp_path / "tokenizer.model", preset="test",
                      progress=False, **SHAPE)
    from transformers import AutoTokenizer

    from openvica_sim.models.world_model import encode_prompt

    ids = encode_prompt(AutoTokenizer.from_pretrained(out, local_files_only=True), V_TEXT)
    assert ids[0] == 1 and ids.count(1) == 1 and max(ids) < 120, "one BOS first, then ids of the sentencepiece model"
    from openvica_sim.convert.lwm import _text_tokenizer
    from openvica_sim.models.world_model import WorldModelConfig

    with pytest.raises(ValueError, match="LLaMA-2's tokenizer"):  # LWM's 32000 text ids cannot run without it
        _text_tokenizer(None, WorldModelConfig())


def test_openvica_convert_then_bundle_create_gives_a_bundle_that_rolls_out(tmp_path, capsys):
    import numpy as np

    from openvica_sim.bundle import load_bundle, read_meta
    from openvica_sim.cli import main
    from openvica_sim.models.tokenizer import create_tokenizer
    from openvica_sim.simulator import Simulator

    write_lwm_checkpoint(tmp_path / "params", lwm_params(scan=True))
    assert main(["convert", "lwm", "--params", str(tmp_path / "params"), "--out", str(tmp_path / "wm"),
                 "--preset", "test", "--num-attention-heads", str(HEADS), "--rope-theta", str(THETA),
                 "--codebook-size", "64"]) == 0
    create_tokenizer("test", seed=0).save_pretrained(tmp_path / "tok")  # K = 64, as the world model's
    assert main(["bundle", "create", "--tokenizer", str(tmp_path / "tok"), "--world-model", str(tmp_path / "wm"),
                 "--out", str(tmp_path / "bundle")]) == 0
    assert read_meta(tmp_path / "bundle")["parts"]["video_decoder"], "VDEC inflated from DEC"
    bundle = load_bundle(tmp_path / "bundle")
    frames = np.random.default_rng(0).integers(0, 256, (1, 2, 64, 64, 3), dtype=np.uint8)
    out = Simulator(bundle, top_k=8).rollout(frames, 1, seeds=[0])
    assert out.tokens.shape == (1, 1, 16, 16) and out.frames.shape == (1, 1, 256, 256, 3)

    create_tokenizer("tiny", seed=0).save_pretrained(tmp_path / "tok1024")
    assert main(["bundle", "create", "--tokenizer", str(tmp_path / "tok1024"), "--world-model", str(tmp_path / "wm"),
                 "--out", str(tmp_path / "bad")]) == 1
    assert "codebook_size=1024" in capsys.readouterr().err and not (tmp_path / "bad").exists()
