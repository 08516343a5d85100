"""World model (WM): a LLaMA that predicts the next frame's tokens from a prompt and past frames (paper III-A b).

LWM-Chat-1M keeps separate text and vision embeddings and heads; we merge them into ONE vocabulary
(docs/design.md) so the WM is a plain `transformers.LlamaForCausalLM` that peft, FSDP and vLLM take unchanged:

    ids [0, V_text)                      text (the LLaMA-2 tokenizer's ids)
    id  V_text + v, v < K                vision code v (K = codebook size)
    id  V_text + K, V_text + K + 1       end-of-frame, end-of-vision
    id  V_text + K + 2 + ...             ego-command ids (openvica_sim.actions), then unused ids

A sequence is the fixed prompt, then per frame [ego command (2 ids, action-conditioned bundles only)]
+ n = 256 codes + end-of-frame, i.e. n' = 257 (or 259) ids per frame (`models.sequence.SequenceLayout`).

Dimensions: B batch, L sequence length, D hidden size, K codebook size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

CONFIG_NAME = "openvica_world_model.json"
PROMPT = "You are a helpful assistant. USER: Generate a video of driving vehicles. ASSISTANT: <vision>"
NUM_SPECIAL_VISION_IDS = 2  # end-of-frame, end-of-vision (LWM: vision ids 8192, 8193)


@dataclass(frozen=True)
class WorldModelConfig:
    text_vocab_size: int = 32000  # LLaMA-2
    codebook_size: int = 8192  # K, must equal the tokenizer's
    vision_vocab_size: int = 8448  # LWM's vision vocabulary: 8192 codes + 2 specials + 254 spare ids
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_layers: int = 32
    num_heads: int = 32
    num_kv_heads: int = 32
    rope_theta: float = 50_000_000.0  # LWM-Chat-1M
    rms_norm_eps: float = 1e-6  # LWM's LLaMAConfig default
    max_position_embeddings: int = 1_048_576  # LWM-Chat-1M's context

    def __post_init__(self):
        if self.vision_vocab_size < self.codebook_size + NUM_SPECIAL_VISION_IDS:
            raise ValueError(
                f"vision_vocab_size={self.vision_vocab_size} cannot hold codebook_size={self.codebook_size} codes "
                f"plus end-of-frame and end-of-vision; it must be at least {self.codebook_size + NUM_SPECIAL_VISION_IDS}")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(f"hidden_size={self.hidden_size}, num_heads={self.num_heads} and "
                             f"num_kv_heads={self.num_kv_heads} do not divide evenly")

    @property
    def vocab_size(self) -> int:
        return self.text_vocab_size + self.vision_vocab_size

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def vision_id(self, v: int | torch.Tensor) -> int | torch.Tensor:
        """Merged-vocabulary id of vision token v."""
        return self.text_vocab_size + v

    @property
    def end_of_frame_id(self) -> int:
        return self.vision_id(self.codebook_size)

    @property
    def end_of_vision_id(self) -> int:
        return self.vision_id(self.codebook_size + 1)

    @property
    def num_spare_vision_ids(self) -> int:
        """Vision ids after the codes and the two specials: room for ego-command tokens."""
        return self.vision_vocab_size - self.codebook_size - NUM_SPECIAL_VISION_IDS

    def to_llama_config(self) -> LlamaConfig:
        """The only place a `LlamaConfig` is built."""
        return LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            max_position_embeddings=self.max_position_embeddings,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            tie_word_embeddings=False,  # LWM has separate heads
            bos_token_id=1, eos_token_id=2, pad_token_id=0,
        )


PRESETS: dict[str, dict] = {
    # LWM-Chat-1M: LLaMA-2 7B with the merged 32000 + 8448 vocabulary.
    "lwm-7b": {},
    # Same layout, small enough to train on the synthetic world and run 14 frames on 2 CPU cores in seconds.
    # rope_theta 10k: trained from scratch on 16-frame windows, so LWM's 1M-context base buys nothing.
    # 2 layers: a CPU decode step is bound by reading the layers' weights and by per-op overhead, both per layer
    # (docs/speed.md, "The CPU decode step").
    "tiny": dict(text_vocab_size=384, codebook_size=1024, vision_vocab_size=1216, hidden_size=256,
                 intermediate_size=704, num_layers=2, num_heads=4, num_kv_heads=4, rope_theta=10_000.0,
                 max_position_embeddings=8192),
    # The embedded default's second generation (issue 19): the tiny family's vocabulary for a K = 256 tokenizer
    # (the 190 ids after the codes and specials hold the ego ids, as in tiny), deeper and narrower: copying a
    # patch from where the ego's motion moved it takes attention steps, not width; about the tiny preset's
    # parameters and training cost per id. Its rollouts decode by wavefront (the bundle's default) to stay in the
    # demo's 30 s on 2 cores.
    "embedded": dict(text_vocab_size=384, codebook_size=256, vision_vocab_size=448, hidden_size=192,
                     intermediate_size=512, num_layers=4, num_heads=4, num_kv_heads=4, rope_theta=10_000.0,
                     max_position_embeddings=8192),
    # For unit tests only.
    "test": dict(text_vocab_size=384, codebook_size=64, vision_vocab_size=200, hidden_size=64,
                 intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=2, rope_theta=10_000.0,
                 max_position_embeddings=8192),
}


class WorldModel(nn.Module):
    """WM: a `LlamaForCausalLM` over the merged vocabulary, plus the layout of docs/design.md."""

    def __init__(self, config: WorldModelConfig, llama: LlamaForCausalLM | None = None):
        super().__init__()
        self.config = config
        self.llama = llama if llama is not None else LlamaForCausalLM(config.to_llama_config())
        # the CPU decode step's fused weights (`_cpu_decode_weights`): plain attributes, not in the state dict
        self._cpu_params: list[nn.Parameter] | None = None
        self._cpu_weights: list[dict] = []
        self._cpu_weights_version: tuple | None = None

    def hidden_states(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Last-layer hidden states (B, L, D) of a whole sequence, by transformers' own forward (no cache)."""
        return self.llama.model(input_ids=input_ids, use_cache=False).last_hidden_state

    def code_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the K codes only, (..., D) -> (..., K).

        At a code position the only valid continuations are codes (end-of-frame and ego ids are forced),
        so the engine samples from, and measures surprise under, the head's code rows alone: 1/5 of the
        full head's work for LWM's 40448-id vocabulary.
        """
        start = self.config.text_vocab_size
        weight = self.llama.lm_head.weight[start:start + self.config.codebook_size]  # (K, D)
        return hidden @ weight.t()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Full-vocabulary logits (B, L, V), as used for training."""
        return self.llama(input_ids=input_ids, use_cache=False).logits

    def forward_cached(self, input_ids: torch.Tensor, cache: "KVCache") -> torch.Tensor:
        """Hidden states (W, L, D) of ids appended at positions cache.length ..; writes their keys and values.

        The inference path of the engine: the same layers and weights as `forward` (the tests compare
        the two), with attention over only the filled part of our own static cache. transformers' StaticCache
        attends over the whole buffer under a mask, which on a CPU costs more than the rest of a tiny model.

        `input_ids` may have more rows W than the cache (B = cache.rows): rows B.. are padding that only widen
        the matrix products (the engine's fixed row width, for batch invariance); they attend to nothing and
        their outputs are meaningless. Attention and the cache, which grow with the context, cost B rows, not W:
        at batch 1 and a 4-row width that is 4x less key/value traffic (docs/speed.md, "The CPU decode step").
        """
        W, L = input_ids.shape
        start = cache.length
        if start + L > cache.max_len:
            raise ValueError(f"{L} new ids at position {start} overflow the cache of {cache.max_len}")
        positions = torch.arange(start, start + L, device=input_ids.device)
        # causal within the new ids, everything before them visible; a single id sees all: no mask at all
        mask = None if L == 1 else (torch.arange(start + L, device=input_ids.device)[None] <= positions[:, None])
        hidden = self._cached_layers(input_ids, positions, cache, mask, None)
        cache.length = start + L
        return hidden

    def forward_at(self, input_ids: torch.Tensor, positions: list[int], cache: "KVCache",
                   visible: torch.Tensor) -> torch.Tensor:
        """Hidden states (W, L, D) of ids at the given positions, in any order and not necessarily contiguous
        (wavefront decoding, `models.sequence.Wavefront`): their keys and values are written at those positions,
        then each id attends to the cache positions its row of `visible` (L, max(positions) + 1) marks.
        `cache.length` grows to the furthest position written."""
        W, L = input_ids.shape
        end = max(positions) + 1
        if end > cache.max_len:
            raise ValueError(f"position {end - 1} overflows the cache of {cache.max_len}")
        if tuple(visible.shape) != (L, end):
            raise ValueError(f"visible must be (L, max position + 1) = ({L}, {end}), got {tuple(visible.shape)}")
        index = torch.as_tensor(positions, device=input_ids.device)
        hidden = self._cached_layers(input_ids, index, cache, visible, (index, end))
        cache.length = max(cache.length, end)
        return hidden

    def _cached_layers(self, input_ids, positions: torch.Tensor, cache: "KVCache", mask, at) -> torch.Tensor:
        model = self.llama.model
        x = model.embed_tokens(input_ids)
        cos, sin = model.rotary_emb(x, positions[None])
        if x.device.type == "cpu":
            for i, weights in enumerate(self._cpu_decode_weights()):
                x = self._cpu_layer(weights, x, cos, sin, cache, i, mask, at)
        else:
            for i, layer in enumerate(model.layers):
                x = x + self._attention(layer.self_attn, layer.input_layernorm(x), cos, sin, cache, i, mask, at)
                x = x + layer.mlp(layer.post_attention_layernorm(x))
        return model.norm(x)

    def hidden_states_at(self, input_ids: torch.Tensor, positions: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Last-layer hidden states (B, L, D) of a whole sequence whose ids sit at `positions` (L,) and attend where
        `visible` (L, L) is True (key j visible to query i), uncached: the reference of `forward_at` and of
        teacher-forced surprise under a wavefront schedule. With positions arange(L) and a causal mask it equals
        `hidden_states` (transformers' forward)."""
        model = self.llama.model
        x = model.embed_tokens(input_ids)
        cos, sin = model.rotary_emb(x, positions[None])
        c = self.config
        B, L, _ = x.shape
        for layer in model.layers:
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(B, L, c.num_heads, c.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(B, L, c.num_kv_heads, c.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(B, L, c.num_kv_heads, c.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=visible, enable_gqa=c.num_kv_heads != c.num_heads)
            x = x + attn.o_proj(out.transpose(1, 2).reshape(B, L, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return model.norm(x)

    def _cpu_decode_weights(self) -> list[dict]:
        """Per layer, the weights of a decode step fused (q|k|v, gate|up) and transposed, rebuilt when any changes.

        On a CPU a small model's decode step is bound by per-op overhead, small-M GEMMs and reading the weights:
        three products per layer instead of seven, and no module calls (docs/speed.md, "The CPU decode step", has
        what it saved). It copies the layer weights, which a CPU model can afford; on a GPU that would be 13 GB
        for 7B, and launch overhead is CUDA graphs' job.
        The parameter list is taken once (walking the modules for it costs about as much as a tiny id). Int8 layers
        (`quantize`) are dequantized into these copies: on a CPU that is the quantised model's exact arithmetic
        in fp32, which is what measuring its quality cost needs.
        """
        layers = self.llama.model.layers
        if self._cpu_params is None:
            self._cpu_params = list(layers.parameters()) + list(layers.buffers())
        version = tuple((p.data_ptr(), p._version) for p in self._cpu_params)
        if self._cpu_weights_version != version:
            with torch.no_grad():
                a, m = "self_attn", "mlp"
                w = lambda layer, block, name: _dense_weight(getattr(getattr(layer, block), name))  # noqa: E731
                self._cpu_weights = [dict(
                    in_norm=layer.input_layernorm.weight.detach(), post_norm=layer.post_attention_layernorm.weight.detach(),
                    qkv=torch.cat([w(layer, a, "q_proj"), w(layer, a, "k_proj"), w(layer, a, "v_proj")]).t().contiguous(),
                    o=w(layer, a, "o_proj").t().contiguous(),
                    gate_up=torch.cat([w(layer, m, "gate_proj"), w(layer, m, "up_proj")]).t().contiguous(),
                    down=w(layer, m, "down_proj").t().contiguous()) for layer in layers]
            self._cpu_weights_version = version
        return self._cpu_weights

    def _cpu_layer(self, w: dict, x, cos, sin, cache: "KVCache", layer: int, mask, at) -> torch.Tensor:
        """One decoder layer of `forward_cached` with `_cpu_decode_weights`: the same function as transformers'."""
        W, L, D = x.shape
        B, c = cache.rows, self.config
        h = F.rms_norm(x, (D,), w["in_norm"], c.rms_norm_eps).reshape(W * L, D)
        qkv = (h @ w["qkv"]).view(W, L, c.num_heads + 2 * c.num_kv_heads, c.head_dim).transpose(1, 2)[:B]
        qk, v = qkv.split([c.num_heads + c.num_kv_heads, c.num_kv_heads], dim=1)
        half = c.head_dim // 2  # rotary position embedding of queries and keys at once, as transformers computes it
        qk = qk * cos[:, None] + torch.cat([-qk[..., half:], qk[..., :half]], dim=-1) * sin[:, None]
        q, k = qk.split([c.num_heads, c.num_kv_heads], dim=1)
        out = _attend_cached(q, k, v, cache, layer, mask, W, at).reshape(W * L, -1)
        x = x + (out @ w["o"]).view(W, L, D)
        h = F.rms_norm(x, (D,), w["post_norm"], c.rms_norm_eps).reshape(W * L, D)
        gate, up = (h @ w["gate_up"]).split(c.intermediate_size, dim=-1)
        return x + ((F.silu(gate) * up) @ w["down"]).view(W, L, D)

    def _attention(self, attn, x, cos, sin, cache: "KVCache", layer: int, mask, at) -> torch.Tensor:
        W, L, _ = x.shape
        B, c = cache.rows, self.config
        q = attn.q_proj(x).view(W, L, c.num_heads, c.head_dim).transpose(1, 2)[:B]  # (B, heads, L, head_dim)
        k = attn.k_proj(x).view(W, L, c.num_kv_heads, c.head_dim).transpose(1, 2)[:B]
        v = attn.v_proj(x).view(W, L, c.num_kv_heads, c.head_dim).transpose(1, 2)[:B]
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        return attn.o_proj(_attend_cached(q, k, v, cache, layer, mask, W, at))

    def quantize(self, mode: str) -> "WorldModel":
        """Weight-only int8 (`mode="int8"`): every linear layer of the decoder blocks keeps its weight as int8 with one
        scale per output channel (`Int8Linear`, gpt-fast's scheme), half the bytes of bf16 to read per token; the
        embedding and the head stay as they are. In place; returns the model.

        Raises:
            ValueError: an unknown mode.
        """
        if mode != "int8":
            raise ValueError(f"quantize mode={mode!r}: the one weight quantisation is 'int8' (weight-only)")
        for layer in self.llama.model.layers:
            for block, names in (("self_attn", ("q_proj", "k_proj", "v_proj", "o_proj")),
                                 ("mlp", ("gate_proj", "up_proj", "down_proj"))):
                owner = getattr(layer, block)
                for name in names:
                    linear = getattr(owner, name)
                    if not isinstance(linear, Int8Linear):
                        setattr(owner, name, Int8Linear(linear))
        self._cpu_params, self._cpu_weights_version = None, None
        return self

    # ---- files -----------------------------------------------------------------------------------
    def save_pretrained(self, path: str | Path) -> None:
        """A standard transformers folder (config.json + safetensors) plus our config."""
        path = Path(path)
        self.llama.save_pretrained(path, safe_serialization=True)
        (path / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype = torch.float32, adapter: str | Path | None = None) -> "WorldModel":
        """Load a world-model folder; merge a peft LoRA adapter folder into it when one is given.

        Raises:
            FileNotFoundError: `path` (or `adapter`) is not a model folder.
            ValueError: the folder's vocabulary does not fit our config.
        """
        path = Path(path)
        config = cls.read_config(path)
        llama = LlamaForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True, local_files_only=True)
        if adapter is not None:
            llama = _merge_adapter(llama, Path(adapter))
        return cls(config, llama).to(device).eval()


    @staticmethod
    def read_config(path: str | Path) -> WorldModelConfig:
        """Our config of a world-model folder, checked against its transformers config.json (no weights read).

        Raises:
            FileNotFoundError: `path` is not a world-model folder.
            ValueError: config.json's vocabulary does not match ours.
        """
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} is not a world-model folder: no config.json")
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{path} has no {CONFIG_NAME}: convert LWM checkpoints with `openvica convert lwm`")
        config = WorldModelConfig(**json.loads((path / CONFIG_NAME).read_text()))
        vocab_size = json.loads((path / "config.json").read_text()).get("vocab_size")
        if vocab_size != config.vocab_size:
            raise ValueError(f"{path}/config.json has vocab_size={vocab_size} but {CONFIG_NAME} says "
                             f"{config.text_vocab_size} text + {config.vision_vocab_size} vision = {config.vocab_size}")
        return config


class Int8Linear(nn.Module):
    """A linear layer with its weight in int8 and one scale per output channel: y = (x W_q^T) * s, with
    W_q = round(W / s) and s = max |W_row| / 127. Weight-only: activations stay in the compute dtype."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        if linear.bias is not None:
            raise ValueError("Int8Linear quantises bias-free layers (LLaMA's); this one has a bias")
        weight = linear.weight.detach().float()
        scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127.0  # (out, 1)
        self.register_buffer("weight", (weight / scale).round().clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scale[:, 0].to(linear.weight.dtype))
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype)) * self.scales.to(x.dtype)

    def dequantized(self) -> torch.Tensor:
        """The weight it computes with, (out, in), in the scales' dtype."""
        return self.weight.to(self.scales.dtype) * self.scales[:, None]


def _dense_weight(linear: nn.Module) -> torch.Tensor:
    return linear.dequantized() if isinstance(linear, Int8Linear) else linear.weight


class KVCache:
    """Keys and values of every layer for B rows, preallocated to `max_len` positions (gpt-fast style).

    keys, values: (layers, B, kv_heads, max_len, head_dim); positions [0, length) are filled. Only real rows
    have a cache: the engine's padding rows attend to nothing (`WorldModel.forward_cached`). `write` and `read` are
    how attention uses it (`FP8KVCache` stores them in 8 bits).
    """

    def __init__(self, config: WorldModelConfig, rows: int, max_len: int, dtype: torch.dtype,
                 device: torch.device | str):
        shape = (config.num_layers, rows, config.num_kv_heads, max_len, config.head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def rows(self) -> int:
        return self.keys.shape[1]

    @property
    def max_len(self) -> int:
        return self.keys.shape[3]

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor, start: int | None = None,
              index: torch.Tensor | None = None) -> None:
        """Store k, v (B, Hkv, L, hd) at positions start .. start + L, or at the positions `index` (L,)."""
        if index is None:
            self.keys[layer, :, :, start:start + k.shape[2]] = k
            self.values[layer, :, :, start:start + k.shape[2]] = v
        else:
            self.keys[layer].index_copy_(2, index, k)
            self.values[layer].index_copy_(2, index, v)

    def read(self, layer: int, end: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values (B, Hkv, end, hd) of positions [0, end), in the compute dtype."""
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def fill_prefix(self, other: "KVCache") -> None:
        """Copy the filled positions of a one-row cache (the prompt) into every row; forget the rest."""
        n = other.length
        for mine, theirs in zip(self._tensors(), other._tensors()):
            mine[:, :, :, :n] = theirs[:, :1, :, :n]
        self.length = n

    def gather(self, index: torch.Tensor) -> "KVCache":
        """A new cache whose row i is row index[i] of this one (a copy when index is arange)."""
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        for name in self._tensor_names:
            tensor = getattr(self, name)
            setattr(new, name, _bits(tensor).index_select(1, index).view(tensor.dtype))
        return new

    _tensor_names = ("keys", "values")

    def _tensors(self) -> list[torch.Tensor]:
        return [getattr(self, name) for name in self._tensor_names]


FP8_MAX = 448.0  # the largest finite float8 e4m3 value


class FP8KVCache(KVCache):
    """A KV cache in float8 e4m3 with one float32 scale per layer, row, head and position (amax / 448 of that
    head's vector): half the bytes of bf16 per position (the 7B's 0.5 MiB per position and clip becomes about
    0.25), read back as `dtype`. Off by default (`Simulator(kv_dtype="fp8")`); on a CPU it measures the quality
    cost (Delta nats per code) that the GPU's memory saving comes with."""

    _tensor_names = ("keys", "values", "key_scales", "value_scales")

    def __init__(self, config: WorldModelConfig, rows: int, max_len: int, dtype: torch.dtype,
                 device: torch.device | str):
        shape = (config.num_layers, rows, config.num_kv_heads, max_len, config.head_dim)
        self.keys = torch.zeros(shape, dtype=torch.float8_e4m3fn, device=device)
        self.values = torch.zeros(shape, dtype=torch.float8_e4m3fn, device=device)
        self.key_scales = torch.ones((*shape[:-1], 1), dtype=torch.float32, device=device)
        self.value_scales = torch.ones((*shape[:-1], 1), dtype=torch.float32, device=device)
        self.dtype, self.length = dtype, 0

    def write(self, layer, k, v, start=None, index=None) -> None:
        (k8, ks), (v8, vs) = fp8_quantize(k), fp8_quantize(v)
        if index is None:
            stop = start + k.shape[2]
            self.keys[layer, :, :, start:stop], self.key_scales[layer, :, :, start:stop] = k8, ks
            self.values[layer, :, :, start:stop], self.value_scales[layer, :, :, start:stop] = v8, vs
        else:
            for store, value in ((self.keys, k8), (self.key_scales, ks), (self.values, v8), (self.value_scales, vs)):
                _bits(store[layer]).index_copy_(2, index, _bits(value))  # torch 2.13's CPU has no float8 index_copy

    def read(self, layer, end):
        k = self.keys[layer, :, :, :end].to(self.dtype) * self.key_scales[layer, :, :, :end].to(self.dtype)
        v = self.values[layer, :, :, :end].to(self.dtype) * self.value_scales[layer, :, :, :end].to(self.dtype)
        return k, v


def _bits(x: torch.Tensor) -> torch.Tensor:
    """float8 tensors as their bytes (uint8) for the index ops torch's CPU lacks for float8; others as they are."""
    return x.view(torch.uint8) if x.dtype == torch.float8_e4m3fn else x


def fp8_quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., hd) -> (float8 e4m3 values, float32 scales (..., 1)) with x ~ values * scales, per vector."""
    scale = (x.detach().abs().amax(dim=-1, keepdim=True).float() / FP8_MAX).clamp_min(1e-12)
    return (x.float() / scale).to(torch.float8_e4m3fn), scale


def _attend_cached(q, k, v, cache: "KVCache", layer: int, mask, W: int, at=None) -> torch.Tensor:
    """Write the B real rows' k, v (B, Hkv, L, hd) into the layer's cache, after its filled part or, with `at` =
    (position index (L,), end), at those positions, and attend q (B, H, L, hd) over the cache up to there:
    (W, L, H * hd), rows B.. padding (any values do; row 0's keep the next product at width W)."""
    B, L = q.shape[0], q.shape[2]
    if at is None:
        end = cache.length + L
        cache.write(layer, k, v, start=cache.length)
    else:
        index, end = at
        cache.write(layer, k, v, index=index)
    out = _attend(q, *cache.read(layer, end), mask)
    out = out.transpose(1, 2).reshape(B, L, -1)
    return torch.cat([out, out[:1].expand(W - B, -1, -1)]) if W > B else out


MAX_BATCHED_ATTENTION_IDS = 16  # decode steps (1 id, or a frame's last code + end-of-frame + ego ids) and no more


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Attention of q (B, H, L, hd) over k, v (B, Hkv, S, hd), `mask` (L, S) True where visible: (B, H, L, hd).

    Batch invariant: a row's result does not depend on the other rows, which the engine promises for tokens.
    torch 2.13's CPU SDPA is not (a row computed at batch 1 and at batch 2 differs in the last bit), so decode
    steps, a few ids against the whole cache, use two plain matmuls, which are (tested on CPU, L = 1 and 3); the
    prefill, many ids at once, calls SDPA one row at a time instead of materialising (L, S) scores for all rows.
    """
    B, H, L, hd = q.shape
    Hkv = k.shape[1]
    if L > MAX_BATCHED_ATTENTION_IDS:
        return torch.cat([F.scaled_dot_product_attention(q[i:i + 1], k[i:i + 1], v[i:i + 1], attn_mask=mask,
                                                         enable_gqa=Hkv != H) for i in range(B)])
    G = H // Hkv  # query heads per key/value head (grouped-query attention)
    q = q.reshape(B, Hkv, G * L, hd)
    scores = (q @ k.transpose(-1, -2)) * hd ** -0.5  # (B, Hkv, G*L, S)
    if mask is not None:
        scores = scores.masked_fill(~mask.repeat(G, 1), float("-inf"))
    return (scores.softmax(dim=-1) @ v).reshape(B, H, L, hd)


def create_world_model(preset: str = "tiny", seed: int = 0, dtype: torch.dtype = torch.float32,
                       device: str | torch.device = "cpu", **overrides) -> WorldModel:
    """A randomly initialised world model of a preset's shape (tests, benchmarks, from-scratch training)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown world-model preset {preset!r}; choose one of {sorted(PRESETS)}")
    config = WorldModelConfig(**{**PRESETS[preset], **overrides})
    torch.manual_seed(seed)
    with torch.device(device):
        llama = LlamaForCausalLM(config.to_llama_config()).to(dtype)
    return WorldModel(config, llama).eval()


def build_text_tokenizer(vocab_size: int = 384):
    """A small byte-level BPE text tokenizer, built offline, for tiny and random world models.

    The real WM uses LLaMA-2's tokenizer from the converted LWM folder; this one exists so that
    small bundles store a text tokenizer of the same kind and the prompt path is always exercised.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]  # LLaMA-2's ids 0, 1, 2
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([PROMPT] * 4 + [PROMPT.lower()], trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def encode_prompt(text_tokenizer, text_vocab_size: int, prompt: str = PROMPT) -> list[int]:
    """Token ids of the fixed prompt, BOS included, as LWM's vision-generation code feeds it.

    Raises:
        ValueError: the tokenizer emits ids outside the world model's text vocabulary.
    """
    ids = list(text_tokenizer(prompt)["input_ids"])
    bos = text_tokenizer.bos_token_id
    if bos is not None and ids[:1] != [bos]:  # LWM writes "<s>" before its prompts; tokenizers differ on adding it
        ids = [bos, *ids]
    if max(ids) >= text_vocab_size:
        raise ValueError(f"the text tokenizer produced id {max(ids)} but the world model has only "
                         f"{text_vocab_size} text ids; the tokenizer does not belong to this model")
    return ids


def _merge_adapter(llama: LlamaForCausalLM, adapter: Path) -> LlamaForCausalLM:
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter} is not a peft adapter folder: no adapter_config.json")
    from peft import PeftModel

    return PeftModel.from_pretrained(llama, adapter).merge_and_unload()
