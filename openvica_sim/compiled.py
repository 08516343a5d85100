"""The world model's one-id decode step at static shapes, compiled (issue 18): no host work inside a frame.

The eager engine (`WorldModel.forward_cached`) computes the rotary embedding of each position anew, slices the cache
to the filled length (a shape that grows every id) and, on a GPU, launches hundreds of small kernels per id from
Python: at batch 1 the 7B step measured 29 ms where reading its weights takes 3.1 ms (README "Speed"). This step
keeps everything the GPU needs at fixed addresses and fixed shapes so that `torch.compile` captures it once:

- the position is a one-element device tensor (a view into a precomputed `arange`), never a host int turned into a
  tensor; the rotary table of every position is computed once, with the model's own rotary module, and indexed;
- the new keys and values are written into the static cache by index (`index_copy_`) at that position;
- attention reads the cache up to the next multiple of `block` positions past the id, under a mask: at most
  `block - 1` unfilled positions more than the eager step, not the whole 16-frame buffer (4,133 positions: 4x more
  KV than a short context needs). The attended length is a dynamic dimension of one compiled graph, so a rollout
  never recompiles (`torch.compiler.set_stance("fail_on_recompile")` holds after `warm_up`; tested);
- on CUDA, mode "reduce-overhead" replays the step as a CUDA graph, one per block count (`warm_up` records them).

It computes what the eager step computes (the same weights, the same order of operations per layer), so tokens
are the eager engine's: tested token for token on CPU. Raster decode steps of one id use it (`Simulator(...,
compile=True)`); prefill, the frame's first forward and wavefront steps stay eager.

Dimensions: W rows (B real, the cache's), D hidden, Hq / Hkv heads, hd head size, S attended positions.
"""

from __future__ import annotations

import torch

DEFAULT_BLOCK = 256  # attended positions are rounded up to this: ~17 shapes for a 16-frame context


class CompiledDecodeStep:
    """`step(ids (W, 1), cache) -> hidden (W, 1, D)` of a `WorldModel`, appending at `cache.length`, compiled."""

    def __init__(self, world_model, max_len: int, block: int = DEFAULT_BLOCK, mode: str | None = None):
        self.wm, self.block = world_model, int(block)
        # a cache one position longer than its last block: every attended span is a strict prefix, one stride
        self.cache_len = self.span(max_len - 1) + 1
        device = next(world_model.parameters()).device
        self.positions = torch.arange(self.cache_len, device=device)  # views of this are the step's positions
        probe = torch.zeros(1, 1, world_model.config.hidden_size, device=device,
                            dtype=next(world_model.parameters()).dtype)
        with torch.no_grad():  # the model's own rotary module: the same cos/sin the eager step computes
            self.cos, self.sin = world_model.llama.model.rotary_emb(probe, self.positions[None])
        if mode is None:
            mode = "reduce-overhead" if device.type == "cuda" else "default"
        self.mode = mode
        self._step = torch.compile(self._forward, fullgraph=True, dynamic=True, mode=mode)

    def span(self, position: int) -> int:
        """Attended positions for an id at `position`: the filled ones rounded up to a whole block."""
        return (position // self.block + 1) * self.block

    @torch.inference_mode()  # always: grad mode is part of what a compiled graph is specialised on
    def __call__(self, ids: torch.Tensor, cache) -> torch.Tensor:
        position = cache.length
        if cache.max_len != self.cache_len:
            raise ValueError(f"a compiled step needs caches of {self.cache_len} positions (`cache_len`), got "
                             f"{cache.max_len}")
        span = self.span(position)
        keys, values = cache.keys[:, :, :, :span], cache.values[:, :, :, :span]  # views: writes reach the cache
        if keys.is_cuda:  # a CUDA graph may mutate only inputs at fixed addresses: this cache's are, for its life
            torch._dynamo.mark_static_address(keys)
            torch._dynamo.mark_static_address(values)
        hidden = self._step(ids.contiguous(), self.positions[position:position + 1], keys, values)
        cache.length = position + 1
        return hidden

    @torch.inference_mode()  # the engine's tensors are inference tensors: a graph is specialised on that too
    def warm_up(self, cache, rows: int) -> None:
        """Compile (and on CUDA record) every shape a rollout meets, one id at the end of each block, at `rows` rows
        (the engine's width), on a scratch copy of `cache`."""
        scratch = type(cache).__new__(type(cache))
        scratch.keys, scratch.values = cache.keys.clone(), cache.values.clone()
        ids = torch.zeros(rows, 1, dtype=torch.long, device=cache.keys.device)
        for position in range(self.block - 1, self.cache_len - 1, self.block):
            scratch.length = position
            self(ids, scratch)

    def _forward(self, ids, position, keys, values):
        wm = self.wm
        model, c = wm.llama.model, wm.config
        x = model.embed_tokens(ids)  # (W, 1, D)
        cos, sin = self.cos[:, position], self.sin[:, position]  # (1, 1, hd)
        B, span = keys.shape[1], keys.shape[3]
        visible = self.positions[:span] <= position  # (S,)
        for i, layer in enumerate(model.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(-1, 1, c.num_heads, c.head_dim).transpose(1, 2)[:B]
            k = attn.k_proj(h).view(-1, 1, c.num_kv_heads, c.head_dim).transpose(1, 2)[:B]
            v = attn.v_proj(h).view(-1, 1, c.num_kv_heads, c.head_dim).transpose(1, 2)[:B]
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            keys[i].index_copy_(2, position, k)
            values[i].index_copy_(2, position, v)
            out = _attend(q, keys[i], values[i], visible)  # (B, 1, Hq hd)
            out = torch.cat([out, out[:1].expand(x.shape[0] - B, -1, -1)]) if x.shape[0] > B else out
            x = x + attn.o_proj(out)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return model.norm(x)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding as transformers' `apply_rotary_pos_emb` computes it (halves rotated)."""
    half = x.shape[-1] // 2
    return x * cos[:, None] + torch.cat([-x[..., half:], x[..., :half]], dim=-1) * sin[:, None]


def _attend(q, k, v, visible) -> torch.Tensor:
    """One query per row over S cached positions, masked where not yet filled: (B, 1, Hq hd), the eager engine's
    two-matmul attention (`world_model._attend`), batch invariant."""
    B, H, _, hd = q.shape
    Hkv = k.shape[1]
    q = q.reshape(B, Hkv, H // Hkv, hd)
    scores = (q @ k.transpose(-1, -2)) * hd ** -0.5  # (B, Hkv, G, S)
    scores = scores.masked_fill(~visible, float("-inf"))
    return (scores.softmax(dim=-1) @ v).reshape(B, 1, H * hd)
