"""Surprise: how unexpected a frame is to the world model.

surprise(frame) = mean over the frame's n codes of -log p(code | prompt, past), where p is the WM's
softmax over the K codes at temperature 1, before top-k (the model's belief, not the sampler's). The
same number scores generated frames (env `info["surprise"]`) and real ones under teacher forcing
(scenario mining), so the two are comparable.
"""

from __future__ import annotations

import torch


def token_log_probs(code_logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under softmax(code_logits): (..., K), (...) -> (...) in float32."""
    logp = code_logits.float().log_softmax(dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def surprise(log_probs: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood in nats over the last dimension (a frame's codes): (..., n) -> (...)."""
    return -log_probs.mean(dim=-1)
