"""The embedded default's acceptance measures (issue 7), on held-out clips: does each part do its job?

- `reconstruction_psnr`: TOK then DEC (or VDEC) against the frames, PSNR in dB over uint8 pixels.
- `teacher_forced_cross_entropy`: the WM's next-code cross-entropy on real clips, in nats, with the training
  loss's mask (code targets only); chance is log K.
- `continuation_distances`: how far a rollout's frames are (mean squared error) from the world's own continuation
  of the same seed and from the same frames of the other clips. A world model that "keeps the road" is nearer
  its own continuation than a different clip.

Dimensions: C clips, T frames, H x W pixels; frames are uint8 (C, T, H, W, 3).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from openvica_sim.frames import postprocess, preprocess


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of uint8 images a vs b, over all their pixels (peak 255)."""
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * math.log10(255.0 ** 2 / max(mse, 1e-12)))


@torch.inference_mode()
def reconstruction_psnr(bundle, frames: np.ndarray, decoder: str = "tokenizer", batch_size: int = 16) -> float:
    """Mean per-frame PSNR (dB) of frames (C, T, H, W, 3) uint8 after TOK and DEC ("tokenizer") or VDEC
    ("video_decoder", which decodes each clip's frames with their neighbours)."""
    values = []
    for clip in frames:
        x = preprocess(clip)  # (T, 3, S, S)
        target = postprocess(x)
        tokens = torch.cat([bundle.tokenizer.encode(b) for b in x.split(batch_size)])  # (T, h, w)
        if decoder == "video_decoder":
            decoded = bundle.video_decoder.decode_video(tokens[None], max_windows=batch_size)[0]
        else:
            decoded = torch.cat([bundle.tokenizer.decode(t) for t in tokens.split(batch_size)])
        values += [psnr(d, t) for d, t in zip(postprocess(decoded), target)]
    return float(np.mean(values))


@torch.inference_mode()
def teacher_forced_cross_entropy(bundle, tokens: torch.Tensor) -> float:
    """Mean cross-entropy (nats per code) of the WM predicting every code of clips tokens (C, T, h, w), with the
    prompt first, as in training (`training/wm.py`: code targets only, ego ids "unknown" when conditioned).

    It is the mean `teacher_forced_surprise` of the frames, so under the softmax over the K codes that the engine
    samples from; the training loss's softmax over the whole vocabulary gives at least as much, and the two agree
    once the WM puts no mass on text or special ids at code positions (on the embedded default's 8 seed clips: 2.4359
    here, 2.4382 over the whole vocabulary).
    """
    from openvica_sim.models.world_model import frame_ids

    from .surprise import teacher_forced_surprise

    wm = bundle.world_model
    device = next(wm.parameters()).device
    tokens = tokens.to(device)
    C, T = tokens.shape[:2]
    ego = None
    if bundle.action_conditioned:
        ego = torch.as_tensor(bundle.action_coding.unknown_ids((C, T)), device=device)
    frames = frame_ids(wm.config, tokens, ego)  # (C, T, n')
    # one clip at a time bounds memory; every frame has n codes, so the mean over frames is the mean over codes
    per_frame = [teacher_forced_surprise(wm, bundle.prompt_ids, frames[i:i + 1], bundle.tokens_per_frame)
                 for i in range(C)]
    return torch.cat(per_frame).mean().item()


def continuation_distances(generated: np.ndarray, real: np.ndarray) -> dict:
    """How near rollouts stay to the world's own continuation. generated: (C, N, H, W, 3) rollouts of C clips;
    real: (C, N, H, W, 3) the same clips' real continuations. Distances are mean squared errors in uint8 units
    squared, averaged over the N frames.

    Returns {"own": (C,) to its own continuation, "other": (C,) mean over the other clips' continuations (the
    expected distance to a different clip), "nearest_other": (C,) the most similar other clip's, "nearer_own":
    share of clips with own < other, "nearer_own_than_any": share with own < nearest_other}. The last is strict:
    two clips of the same weather and light can be nearer each other than a good rollout is to either.
    """
    if generated.shape != real.shape or generated.ndim != 5 or len(real) < 2:
        raise ValueError(f"expected generated and real of one shape (C >= 2, N, H, W, 3), got {generated.shape} "
                         f"and {real.shape}")
    g, r = generated.astype(np.float32), real.astype(np.float32)
    d = np.stack([((g - r[j]) ** 2).mean(axis=(1, 2, 3, 4)) for j in range(len(r))], axis=1)  # (C, C): d[i, j]
    own = np.diag(d).copy()
    others = d[~np.eye(len(r), dtype=bool)].reshape(len(r), len(r) - 1)
    return {"own": own, "other": others.mean(1), "nearest_other": others.min(1),
            "nearer_own": float(np.mean(own < others.mean(1))),
            "nearer_own_than_any": float(np.mean(own < others.min(1)))}
