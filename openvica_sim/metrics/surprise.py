"""Surprise: how unexpected a frame is to the world model.

surprise(frame) = mean over the frame's n codes of -log p(code | prompt, past), where p is the WM's
softmax over the K codes at temperature 1, before top-k (the model's belief, not the sampler's). The
same number scores generated frames (env `info["surprise"]`) and real ones under teacher forcing
(`teacher_forced_surprise`: scenario mining, the embedded default's quality), so the two are comparable.

Dimensions: B windows, F frames, n codes per frame, n' ids per frame in the WM sequence, K codes, P prompt ids.
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


@torch.inference_mode()
def teacher_forced_surprise(world_model, prompt_ids, frames: torch.Tensor, codes_per_frame: int) -> torch.Tensor:
    """Surprise (B, F) of every frame of B windows of real frames, each code predicted from the prompt and all ids
    before it, by one uncached forward (`WorldModel.hidden_states`): what `Simulator.step` would report had it
    sampled these codes in this context. Frame 0 is predicted from the prompt alone.

    Args:
        world_model: a `WorldModel` (anything with `hidden_states`, `code_logits` and `config.vision_id`).
        prompt_ids: the fixed prompt (P,) (`Bundle.prompt_ids`).
        frames: merged-vocabulary frames (B, F, n') in the layout of `world_model.frame_ids`:
            [ego ids] + n codes + end-of-frame.
        codes_per_frame: n; the n' - n - 1 ids before a frame's codes are ego ids (given, never scored).
    """
    B, F, frame_length = frames.shape
    n = codes_per_frame
    offset = frame_length - n - 1  # ego ids before the codes: 0, or 2 when action-conditioned
    if offset < 0:
        raise ValueError(f"frames of {frame_length} ids cannot hold {n} codes and an end-of-frame")
    prompt = torch.as_tensor(prompt_ids, device=frames.device)
    sequence = torch.cat([prompt.expand(B, -1), frames.reshape(B, -1)], dim=1)  # (B, P + F n')
    hidden = world_model.hidden_states(sequence)  # (B, L, D)
    first_code = len(prompt) + offset + frame_length * torch.arange(F, device=frames.device)  # (F,)
    out = torch.empty(B, F, dtype=torch.float32, device=frames.device)
    for f in range(F):  # one frame at a time: logits (B, n, K) and not (B, F n, K), 1 GB at B = 8 for K = 8192
        start = int(first_code[f])
        logits = world_model.code_logits(hidden[:, start - 1:start - 1 + n])  # the id before each code predicts it
        codes = frames[:, f, offset:offset + n] - world_model.config.vision_id(0)
        out[:, f] = surprise(token_log_probs(logits, codes))
    return out


def sliding_windows(num_frames: int, window: int, stride: int, context: int) -> list[tuple[int, int, int]]:
    """How to score a clip of `num_frames` frames with windows of at most `window` frames: [(start, stop, first)],
    where window [start, stop) scores its frames [first, stop). Every frame from `context` on is scored exactly
    once, with at least `context` frames of the same window before it; frames [0, context) are not scored.

    Windows start every `stride` frames, as the engine slides its context (keep the last window - stride frames,
    then generate `stride` more), and the last one ends at the clip's end with the full `window` frames (more context
    and one window length for batching); a clip shorter than `window` is one window.

    Raises:
        ValueError: stride outside [1, window - context], or window <= context.
    """
    if window <= context:
        raise ValueError(f"window={window} frames leaves nothing to score after {context} frames of context")
    if not 1 <= stride <= window - context:
        raise ValueError(f"stride={stride} must be in [1, {window - context}]: a window of {window} frames that moves "
                         f"by more than {window - context} leaves frames with fewer than {context} of context")
    if num_frames <= context:
        return []
    if num_frames <= window:
        return [(0, num_frames, context)]
    windows, start, scored = [], 0, context  # `scored`: frames [0, scored) are done
    while start + window < num_frames:
        windows.append((start, start + window, scored))
        scored, start = start + window, start + stride
    windows.append((num_frames - window, num_frames, scored))
    return windows
