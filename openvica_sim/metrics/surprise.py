"""Surprise: how unexpected a frame is to the world model.

surprise(frame) = mean over the frame's n codes of -log p(code | prompt, past), where p is the WM's
softmax over the K codes at temperature 1, before top-k (the model's belief, not the sampler's). The
same number scores generated frames (env `info["surprise"]`) and real ones under teacher forcing
(`teacher_forced_surprise`: scenario mining, the embedded default's quality), so the two are comparable.

Dimensions: B windows, F frames, n codes per frame, n' ids per frame in the WM sequence, K codes, P prompt ids.
"""

from __future__ import annotations

import numpy as np
import torch


def token_log_probs(code_logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under softmax(code_logits): (..., K), (...) -> (...) in float32."""
    logp = code_logits.float().log_softmax(dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def surprise(log_probs: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood in nats over the last dimension (a frame's codes): (..., n) -> (...)."""
    return -log_probs.mean(dim=-1)


@torch.inference_mode()
def teacher_forced_surprise(world_model, prompt_ids, frames: torch.Tensor, layout, wavefront: int | None = None,
                            context: int = 0) -> torch.Tensor:
    """Surprise (B, F) of every frame of B windows of real frames, each code predicted as the engine would predict it
    had it sampled these codes in this context: what `Simulator.step` reports for a generated frame.

    Raster (`wavefront` None): each code from the prompt and all ids before it, by one uncached forward
    (`WorldModel.hidden_states`); frame 0 is predicted from the prompt alone. With a wavefront width, frames
    [0, context) are the seed frames (prefilled, raster) and every later frame is predicted under the wavefront
    schedule, each code seeing only what the engine's query for it sees (`wavefront_sequence`), by one uncached
    forward per window with those positions and that visibility (`WorldModel.hidden_states_at`).

    Args:
        world_model: a `WorldModel` (anything with `hidden_states`, `hidden_states_at` and `code_logits`).
        prompt_ids: the fixed prompt (P,) (`Bundle.prompt_ids`).
        frames: merged-vocabulary frames (B, F, n') in `layout` (`SequenceLayout.frame_ids`): [ego ids] + n codes +
            end-of-frame; the ego ids are given, never scored.
        layout: the bundle's `SequenceLayout`.
        wavefront: the schedule's width, or None for raster.
        context: with a wavefront, how many leading frames are seed frames (at least 1); their surprise is raster.
    Raises:
        ValueError: frames that do not fit the layout, or a wavefront without a seed frame.
    """
    B, F, frame_length = frames.shape
    if frame_length != layout.frame_length:
        raise ValueError(f"frames of {frame_length} ids do not fit the layout's {layout.frame_length} per frame")
    n = layout.tokens_per_frame
    prompt = torch.as_tensor(prompt_ids, device=frames.device)
    sequence = torch.cat([prompt.expand(B, -1), frames.reshape(B, -1)], dim=1)  # (B, P + F n')
    codes = layout.codes(frames).reshape(B, F, n)  # (B, F, n)
    out = torch.empty(B, F, dtype=torch.float32, device=frames.device)
    if wavefront is None:
        hidden = world_model.hidden_states(sequence)  # (B, L, D)
        for f, start in enumerate(layout.first_codes(F, len(prompt))):
            # one frame at a time: logits (B, n, K), not (B, F n, K), 1 GB at B = 8 for K = 8192
            logits = world_model.code_logits(hidden[:, start - 1:start - 1 + n])  # the id before each code predicts it
            out[:, f] = surprise(token_log_probs(logits, codes[:, f]))
        return out
    extra, positions, visible, query = wavefront_sequence(len(prompt), F, layout, layout.wavefront(wavefront), context)
    visible = torch.from_numpy(visible).to(frames.device)
    positions = torch.from_numpy(positions).to(frames.device)
    for b in range(B):  # one window at a time: the (L, L) visibility makes attention O(L^2) memory per window
        stand_ins = sequence[b, torch.from_numpy(extra).to(frames.device)]  # the previous frame's code there
        hidden = world_model.hidden_states_at(torch.cat([sequence[b], stand_ins])[None], positions, visible)[0]
        for f in range(F):
            logits = world_model.code_logits(hidden[torch.from_numpy(query[f]).to(frames.device)])  # (n, K)
            out[b, f] = surprise(token_log_probs(logits, codes[b, f]))
    return out


def wavefront_sequence(prompt_length: int, num_frames: int, layout, schedule, context: int):
    """How a window of frames is read under a wavefront schedule, as one uncached sequence: the prompt and the frames
    at their own positions, then a stand-in entry for every code whose raster predecessor is not yet sampled
    (`models.sequence`), sitting at the predecessor's position.

    Every entry gets the time it enters the engine (seed frames and prompt: before all; a code: the step after it is
    sampled; a stand-in: the step its code is sampled; the last code and end-of-frame: with the next frame), and an
    entry sees the real entries at or before its position that entered no later than it, and itself.

    Returns (stand-in sources (E,): the sequence index of the id each stand-in repeats, positions (L,), visibility
    (L, L) bool, queries (F, n): the entry whose output predicts each code).

    Raises:
        ValueError: context < 1 (the first scored frame needs a previous frame for its stand-ins).
    """
    if context < 1:
        raise ValueError(f"context={context}: a wavefront window needs at least one seed frame before the scored ones")
    n, n1, offset = layout.tokens_per_frame, layout.frame_length, layout.code_offset
    steps, feeds, S = schedule.steps, schedule.feed_steps, schedule.num_steps
    base = prompt_length + num_frames * n1
    positions, time = list(range(base)), [-1] * base
    real = [True] * base
    sources, query = [], np.zeros((num_frames, n), dtype=np.int64)
    for f in range(num_frames):
        first = prompt_length + f * n1 + offset  # sequence index of the frame's code 0
        query[f] = first - 1 + np.arange(n)  # raster: the id before each code
        if f < context:
            continue
        t0 = (f - context) * (S + 2)  # this frame's clock: after everything of the frames before
        for k in range(first - offset, first):
            time[k] = t0  # its ego ids come with its first forward
        for j in range(n):
            time[first + j] = t0 + feeds[j]
        time[first + n] = t0 + S  # end-of-frame, with the next frame's first forward
        for j in range(1, n):
            if schedule.needs_stand_in(j):
                query[f, j] = len(positions)
                sources.append(first - n1 + j - 1)  # the previous frame's code at the predecessor's slot
                positions.append(first + j - 1)
                time.append(t0 + int(steps[j]))
                real.append(False)
    positions, time, real = np.asarray(positions), np.asarray(time), np.asarray(real)
    visible = real[None, :] & (positions[None, :] <= positions[:, None]) & (time[None, :] <= time[:, None])
    np.fill_diagonal(visible, True)
    return np.asarray(sources, dtype=np.int64), positions, visible, query


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
