"""Top-k sampling whose every draw depends only on (row seed, position, token id) (docs/design.md "Determinism").

Gumbel-max over the top-k logits: argmax(logit / temperature + g) with g = -log(-log u) is an exact
sample of softmax(logit / temperature) restricted to the top k. Here u comes from a counter-based hash
(splitmix64) of the row's seed, the token's position in the rollout and the candidate's id, computed
with int64 tensor ops on the device: no per-row generator loop, no global RNG state, and a row's draw
does not depend on its batch, its neighbours or the order of work, so a branched state continues
exactly as the original would with the same seed.
"""

from __future__ import annotations

import torch

_GOLDEN = -7046029254386353131  # 0x9E3779B97F4A7C15 as int64
_M1 = -4658895280553007687  # 0xBF58476D1CE4E5B9
_M2 = -7723592293110705685  # 0x94D049BB133111EB


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic on negatives)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def mix64(x: torch.Tensor) -> torch.Tensor:
    """splitmix64's finaliser on int64 tensors; products wrap modulo 2^64 as in C."""
    x = (x ^ _shr(x, 30)) * _M1
    x = (x ^ _shr(x, 27)) * _M2
    return x ^ _shr(x, 31)


def uniform(seeds: torch.Tensor, position: int | torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """U(0, 1) in float64 from hash(seed, position, id): seeds (B,), ids (B, k) -> (B, k). `position` is an int, an
    int64 tensor of one element on the seeds' device (the engine's: no host-to-device copy per token), or one
    position per row (B,) (several codes of a frame drawn at once: each exactly as if drawn alone)."""
    pos = position if torch.is_tensor(position) else torch.tensor(position, dtype=torch.int64, device=seeds.device)
    pos = pos.reshape(()) if pos.numel() == 1 else pos.view(-1, 1)
    h = mix64(mix64(seeds.view(-1, 1) + pos * _GOLDEN) + ids)
    return (_shr(h, 11).double() + 0.5) / float(1 << 53)


def sample_top_k(logits: torch.Tensor, seeds: torch.Tensor, position: int | torch.Tensor, top_k: int,
                 temperature: float) -> torch.Tensor:
    """Draw one id per row from softmax(logits / temperature) restricted to its top_k entries.

    logits (B, K), seeds (B,) int64, position: one for all rows or one per row (B,) -> ids (B,) int64. temperature 0
    or top_k 1 is greedy.
    """
    k = min(top_k, logits.shape[-1])
    values, ids = logits.topk(k, dim=-1)  # (B, k), sorted, so greedy is column 0
    if temperature <= 0 or k == 1:
        return ids[:, 0]
    gumbel = -torch.log(-torch.log(uniform(seeds, position, ids)))
    scores = values.double() / temperature + gumbel
    return ids.gather(1, scores.argmax(dim=1, keepdim=True)).squeeze(1)


def derive_seeds(seed: int, count: int) -> list[int]:
    """`count` independent int64 row seeds from one integer seed (CLI and env seeding)."""
    base = mix64(torch.tensor([seed & 0x7FFFFFFFFFFFFFFF], dtype=torch.int64))
    return mix64(base + torch.arange(1, count + 1, dtype=torch.int64) * _GOLDEN).tolist()
