"""World model (WM): a LLaMA that predicts the next frame's tokens from a prompt and past frames (paper III-A b).

LWM-Chat-1M keeps separate text and vision embeddings and heads; we merge them into ONE vocabulary
(DESIGN.md) so the WM is a plain `transformers.LlamaForCausalLM` that peft, FSDP and vLLM take unchanged:

    ids [0, V_text)                      text (the LLaMA-2 tokenizer's ids)
    id  V_text + v, v < K                vision code v (K = codebook size)
    id  V_text + K, V_text + K + 1       end-of-frame, end-of-vision
    id  V_text + K + 2 + ...             ego-command ids (openvica_sim.actions), then unused ids

A sequence is the fixed prompt, then per frame [ego command (2 ids, action-conditioned bundles only)]
+ n = 256 codes + end-of-frame, i.e. n' = 257 (or 259) ids per frame.

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
    # 2 layers: a CPU decode step is bound by reading the layers' weights and by per-op overhead, both per layer.
    # The embedded 14-frame rollout on 2 cores (`openvica rollout`, runs alternated): 4 layers 26-31 s, 2 layers 14-15 s.
    "tiny": dict(text_vocab_size=384, codebook_size=1024, vision_vocab_size=1216, hidden_size=256,
                 intermediate_size=704, num_layers=2, num_heads=4, num_kv_heads=4, rope_theta=10_000.0,
                 max_position_embeddings=8192),
    # For unit tests only.
    "test": dict(text_vocab_size=384, codebook_size=64, vision_vocab_size=200, hidden_size=64,
                 intermediate_size=128, num_layers=2, num_heads=2, num_kv_heads=2, rope_theta=10_000.0,
                 max_position_embeddings=8192),
}


class WorldModel(nn.Module):
    """WM: a `LlamaForCausalLM` over the merged vocabulary, plus the layout of DESIGN.md."""

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
        at batch 1 and a 4-row width that is 4x less key/value traffic (18 -> 7 ms per id at 4k positions, tiny).
        """
        W, L = input_ids.shape
        start = cache.length
        if start + L > cache.max_len:
            raise ValueError(f"{L} new ids at position {start} overflow the cache of {cache.max_len}")
        if W < cache.rows:
            raise ValueError(f"{W} rows of ids for a cache of {cache.rows} rows; pass at least one row per cache row")
        model = self.llama.model
        x = model.embed_tokens(input_ids)
        positions = torch.arange(start, start + L, device=x.device)[None]
        cos, sin = model.rotary_emb(x, positions)
        # causal within the new ids, everything before them visible; a single id sees all: no mask at all
        mask = None if L == 1 else (torch.arange(start + L, device=x.device)[None] <= positions[0, :, None])
        if x.device.type == "cpu":
            for i, weights in enumerate(self._cpu_decode_weights()):
                x = self._cpu_layer(weights, x, cos, sin, cache, i, mask)
        else:
            for i, layer in enumerate(model.layers):
                x = x + self._attention(layer.self_attn, layer.input_layernorm(x), cos, sin, cache, i, mask)
                x = x + layer.mlp(layer.post_attention_layernorm(x))
        cache.length = start + L
        return model.norm(x)

    def _cpu_decode_weights(self) -> list[dict]:
        """Per layer, the weights of a decode step fused (q|k|v, gate|up) and transposed, rebuilt when any changes.

        On a CPU a small model's decode step is bound by per-op overhead, small-M GEMMs (4 rows x 256 runs at a
        third of a 1-row GEMV here) and reading the weights (the tiny preset's `num_layers` comment): three products
        per layer instead of seven and no module calls took the 4-layer tiny WM's 14-frame rollout from 31.7 to
        25-27 s on 2 cores. It copies the layer weights, which a CPU model can afford; on a GPU that would be 13 GB
        for 7B, and launch overhead is CUDA graphs' job.
        The parameter list is taken once (walking the modules each step would cost 0.5 ms an id).
        """
        layers = self.llama.model.layers
        if self._cpu_params is None:
            self._cpu_params = list(layers.parameters())
        version = tuple((p.data_ptr(), p._version) for p in self._cpu_params)
        if self._cpu_weights_version != version:
            with torch.no_grad():
                self._cpu_weights = [dict(
                    in_norm=layer.input_layernorm.weight.detach(), post_norm=layer.post_attention_layernorm.weight.detach(),
                    qkv=torch.cat([layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight,
                                   layer.self_attn.v_proj.weight]).t().contiguous(),
                    o=layer.self_attn.o_proj.weight.t().contiguous(),
                    gate_up=torch.cat([layer.mlp.gate_proj.weight, layer.mlp.up_proj.weight]).t().contiguous(),
                    down=layer.mlp.down_proj.weight.t().contiguous()) for layer in layers]
            self._cpu_weights_version = version
        return self._cpu_weights

    def _cpu_layer(self, w: dict, x, cos, sin, cache: "KVCache", layer: int, mask) -> torch.Tensor:
        """One decoder layer of `forward_cached` with `_cpu_decode_weights`: the same function as transformers'."""
        W, L, D = x.shape
        B, c = cache.rows, self.config
        h = F.rms_norm(x, (D,), w["in_norm"], c.rms_norm_eps).reshape(W * L, D)
        qkv = (h @ w["qkv"]).view(W, L, c.num_heads + 2 * c.num_kv_heads, c.head_dim).transpose(1, 2)[:B]
        qk, v = qkv.split([c.num_heads + c.num_kv_heads, c.num_kv_heads], dim=1)
        half = c.head_dim // 2  # rotary position embedding of queries and keys at once, as transformers computes it
        qk = qk * cos[:, None] + torch.cat([-qk[..., half:], qk[..., :half]], dim=-1) * sin[:, None]
        q, k = qk.split([c.num_heads, c.num_kv_heads], dim=1)
        out = _attend_cached(q, k, v, cache, layer, mask, W).reshape(W * L, -1)
        x = x + (out @ w["o"]).view(W, L, D)
        h = F.rms_norm(x, (D,), w["post_norm"], c.rms_norm_eps).reshape(W * L, D)
        gate, up = (h @ w["gate_up"]).split(c.intermediate_size, dim=-1)
        return x + ((F.silu(gate) * up) @ w["down"]).view(W, L, D)

    def _attention(self, attn, x, cos, sin, cache: "KVCache", layer: int, mask) -> torch.Tensor:
        W, L, _ = x.shape
        B, c = cache.rows, self.config
        q = attn.q_proj(x).view(W, L, c.num_heads, c.head_dim).transpose(1, 2)[:B]  # (B, heads, L, head_dim)
        k = attn.k_proj(x).view(W, L, c.num_kv_heads, c.head_dim).transpose(1, 2)[:B]
        v = attn.v_proj(x).view(W, L, c.num_kv_heads, c.head_dim).transpose(1, 2)[:B]
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        return attn.o_proj(_attend_cached(q, k, v, cache, layer, mask, W))

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


class KVCache:
    """Keys and values of every layer for B rows, preallocated to `max_len` positions (gpt-fast style).

    keys, values: (layers, B, kv_heads, max_len, head_dim); positions [0, length) are filled. Only real rows
    have a cache: the engine's padding rows attend to nothing (`WorldModel.forward_cached`).
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

    def fill_prefix(self, other: "KVCache") -> None:
        """Copy the filled positions of a one-row cache (the prompt) into every row; forget the rest."""
        n = other.length
        self.keys[:, :, :, :n] = other.keys[:, :1, :, :n]
        self.values[:, :, :, :n] = other.values[:, :1, :, :n]
        self.length = n

    def gather(self, index: torch.Tensor) -> "KVCache":
        """A new cache whose row i is row index[i] of this one (a copy when index is arange)."""
        new = KVCache.__new__(KVCache)
        new.keys, new.values = self.keys.index_select(1, index), self.values.index_select(1, index)
        new.length = self.length
        return new


def _attend_cached(q, k, v, cache: "KVCache", layer: int, mask, W: int) -> torch.Tensor:
    """Append the B real rows' k, v (B, Hkv, L, hd) to the layer's cache and attend q (B, H, L, hd) over it:
    (W, L, H * hd), rows B.. padding (any values do; row 0's keep the next product at width W)."""
    B, L = q.shape[0], q.shape[2]
    end = cache.length + L
    cache.keys[layer, :, :, cache.length:end] = k
    cache.values[layer, :, :, cache.length:end] = v
    out = _attend(q, cache.keys[layer, :, :, :end], cache.values[layer, :, :, :end], mask)
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


def frame_ids(config: WorldModelConfig, codes: torch.Tensor, ego_ids: torch.Tensor | None = None) -> torch.Tensor:
    """The sequence layout of frames: codes (..., F, h, w) [+ ego vision ids (..., F, 2)] -> merged ids (..., F, n'):
    per frame [ego speed, ego yaw] + h*w codes + end-of-frame. The engine and the training loop both use it."""
    flat = codes.reshape(*codes.shape[:-2], -1)  # (..., F, n)
    parts = [config.vision_id(flat), torch.full((*flat.shape[:-1], 1), config.end_of_frame_id, dtype=torch.long,
                                                device=codes.device)]
    if ego_ids is not None:
        parts.insert(0, config.vision_id(ego_ids))
    return torch.cat(parts, dim=-1)


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
