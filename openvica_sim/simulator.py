"""The batched engine: continue B clips of T seed frames, one frame (0.25 s) per step (paper Fig. 2).

    seed frames --TOK--> tokens --WM(prompt, frames)--> next frame's n codes --VDEC(t-1, t, t+1)--> frame t

How it is fast (DESIGN.md "Speed, by construction"):
- the fixed prompt is prefilled once per Simulator and its KV cache copied into every row;
- all rows decode together, one forward per token, with a static KV cache;
- sampling (top-k, Gumbel-max with hashed noise) stays on the device: no host sync per token;
- the head projects onto the K code rows only; end-of-frame and ego ids are forced, never sampled,
  and a frame's last code is fed together with its end-of-frame (and the next frame's ego ids) in one forward;
- when the context is full the oldest half of the frames is dropped and the rest re-prefilled at contiguous
  positions (one forward per several frames), so positions stay inside the trained T + N = 16 frames and
  memory stays bounded however long the rollout.

How it is reproducible (DESIGN.md "Determinism"): every draw depends only on (row seed, position, id), and
the engine decodes at a fixed row width, padding idle rows, because a GEMV at one row and a GEMM at several
round differently. So a clip's tokens depend on its seed alone, not on the batch it ran in.

Dimensions: B clips (W >= B rows as run), T seed frames, F frames in context, n codes per frame (h x w),
n' ids per frame in the WM sequence, K codebook size, P prompt length.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .bundle import Bundle
from .frames import postprocess, preprocess
from .metrics import sliding_windows, surprise, teacher_forced_surprise, token_log_probs
from .models.world_model import KVCache, frame_ids
from .sampling import sample_top_k

MIN_SEED_FRAMES = 2  # the paper's T = 2; VDEC needs frame t-1 for the first emitted frame
TRAINED_CONTEXT_FRAMES = 16  # T + N of WM fine-tuning (paper III-C c)
# The fixed row width of the WM's matrix products: every width >= 4 rounds alike (MKL on this project's CPU; one to
# three rows take a GEMV-like path that rounds differently).
MIN_ROWS = 4


@dataclass
class StepOutput:
    """One emitted frame per clip."""

    frames: np.ndarray  # (B, H, W, 3) uint8
    tokens: np.ndarray  # (B, h, w) int64
    surprise: np.ndarray  # (B,) float32, nats per code
    frame_index: int  # index in the clip; seed frames are 0 .. T-1


@dataclass
class Rollout:
    """N predicted frames per clip, after T seed frames."""

    frames: np.ndarray  # (B, N, H, W, 3) uint8
    tokens: np.ndarray  # (B, N, h, w) int64
    surprise: np.ndarray  # (B, N) float32
    seed_tokens: np.ndarray  # (B, T, h, w) int64


@dataclass
class SimState:
    """Everything a batch of rollouts needs to continue: copy it to branch futures (`Simulator.branch`)."""

    cache: KVCache  # B rows: the padding rows W - B widen the matrix products only
    seeds: torch.Tensor  # (W,) int64 sampler seed per row
    history: torch.Tensor  # (W, F, n') merged-vocabulary ids of the frames in context
    previous: torch.Tensor  # (W, h, w) codes of the last emitted (or last seed) frame: VDEC's t-1
    batch_size: int  # B real rows; rows B..W-1 pad the fixed width
    next_frame_index: int  # index of the next frame to emit
    position: int = 0  # codes sampled so far in this rollout: the sampler's counter
    ahead: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # generated, not yet shown

    def clone(self) -> "SimState":
        rows = torch.arange(self.cache.rows, device=self.seeds.device)
        return SimState(cache=self.cache.gather(rows), seeds=self.seeds.clone(), history=self.history.clone(),
                        previous=self.previous.clone(), batch_size=self.batch_size,
                        next_frame_index=self.next_frame_index, position=self.position,
                        ahead=[(t.clone(), s.clone()) for t, s in self.ahead])


class Simulator:
    """Batched rollouts of one bundle.

    Args:
        bundle: the models (see `openvica_sim.bundle.load_bundle`).
        top_k: sample among the k most probable codes; default the bundle's `top_k` (openvica.json "sampling"),
            the paper's k = 1000 (Table V) for the 7B system.
        temperature: softmax temperature; 0 is greedy.
        decoder: "video_decoder" (VDEC, one frame of lookahead) or "tokenizer" (the image DEC, the
            paper's TOK+WM+DEC system). Default: VDEC when the bundle has one.
        context_frames: frames the WM sees at most; past that the oldest half is dropped. Default 16,
            the T + N of fine-tuning: a longer context is outside what the WM was trained on.
        min_rows: decode at least this many rows (padding idle ones): batch invariance (module docstring).
    """

    def __init__(self, bundle: Bundle, top_k: int | None = None, temperature: float = 1.0, decoder: str | None = None,
                 context_frames: int = TRAINED_CONTEXT_FRAMES, min_rows: int = MIN_ROWS):
        top_k = bundle.top_k if top_k is None else top_k
        if top_k < 1:
            raise ValueError(f"top_k={top_k} must be at least 1 (1 is greedy)")
        if temperature < 0:
            raise ValueError(f"temperature={temperature} must be >= 0 (0 is greedy)")
        decoder = decoder or ("video_decoder" if bundle.video_decoder is not None else "tokenizer")
        if decoder not in ("video_decoder", "tokenizer"):
            raise ValueError(f"decoder={decoder!r}: choose 'video_decoder' (VDEC) or 'tokenizer' (image DEC)")
        if decoder == "video_decoder" and bundle.video_decoder is None:
            raise ValueError("decoder='video_decoder' but the bundle has no video_decoder/; use decoder='tokenizer'")
        if context_frames < MIN_SEED_FRAMES + 1:
            raise ValueError(f"context_frames={context_frames} must be at least {MIN_SEED_FRAMES + 1}")
        self.bundle, self.top_k, self.temperature = bundle, top_k, temperature
        self.decoder, self.context_frames, self.min_rows = decoder, context_frames, min_rows
        self.wm = bundle.world_model
        self.device = next(self.wm.parameters()).device
        self.lookahead = 1 if decoder == "video_decoder" else 0
        self.n = bundle.tokens_per_frame
        self.grid = bundle.tokenizer.config.tokens_per_side
        self.prompt_ids = torch.tensor(bundle.prompt_ids, device=self.device)
        self.max_len = len(self.prompt_ids) + context_frames * bundle.frame_length
        self._prompt_kv = None
        self.profile = False  # True: `timings` accumulates the seconds of each stage (synchronising the device)
        self.timings: dict[str, float] = {}

    # ---- public API ------------------------------------------------------------------------------
    @torch.inference_mode()
    def start(self, frames: np.ndarray | None = None, seeds: list[int] | None = None, *,
              tokens: np.ndarray | torch.Tensor | None = None, actions: np.ndarray | None = None) -> SimState:
        """Tokenize B clips of T seed frames and prefill the WM with them.

        Args:
            frames: uint8 (B, T, H, W, 3) camera frames (any size: preprocessed as the paper), or
            tokens: (B, T, h, w) codes instead of frames.
            seeds: one sampler seed per clip (int64); the clip's rollout depends on it alone.
            actions: optional (B, T, 2) normalised ego commands of the seed frames (action-conditioned bundles).
        Raises:
            ValueError / TypeError: wrong shapes, dtypes, too few or too many seed frames, wrong seed count.
        """
        seed_tokens = self._seed_tokens(frames, tokens)  # (B, T, h, w)
        B, T = seed_tokens.shape[:2]
        if seeds is None or len(seeds) != B:
            raise ValueError(f"pass one sampler seed per clip: got {None if seeds is None else len(seeds)} for {B} clips")
        W = max(B, self.min_rows)
        pad = torch.zeros(W - B, dtype=torch.long, device=self.device)  # idle rows repeat row 0
        rows = torch.cat([torch.arange(B, device=self.device), pad])
        seed_tokens = seed_tokens[rows]
        seeds_t = torch.tensor([int(s) for s in seeds], dtype=torch.int64, device=self.device)[rows]
        history = self._frame_ids(seed_tokens, self._action_ids(actions, B, T, rows))  # (W, T, n')
        cache = KVCache(self.wm.config, B, self.max_len, self._kv_dtype, self.device)
        cache.fill_prefix(self._prompt_cache())
        state = SimState(cache=cache, seeds=seeds_t, history=history, previous=seed_tokens[:, -1],
                         batch_size=B, next_frame_index=T)
        self._prefill(state)
        return state

    @torch.inference_mode()
    def step(self, state: SimState, actions: np.ndarray | None = None) -> StepOutput:
        """Emit the next frame of every clip. `actions` (B, 2) in [-1, 1] is the ego command for the frame(s)
        generated now; with VDEC's lookahead it fully shapes the frame shown at the next step."""
        action_ids = self._step_action_ids(actions, state)
        with self.timed("world_model"):
            while len(state.ahead) <= self.lookahead:
                state.ahead.append(self._generate_frame(state, action_ids))
        codes, frame_surprise = state.ahead.pop(0)
        B = state.batch_size
        with self.timed("video_decoder" if self.decoder == "video_decoder" else "tokenizer_decoder"):
            frames = self._decode(state.previous[:B], codes[:B], state.ahead[0][0][:B] if self.lookahead else None)
        state.previous = codes
        out = StepOutput(frames=postprocess(frames), tokens=codes[:B].cpu().numpy(),
                         surprise=frame_surprise[:B].float().cpu().numpy(), frame_index=state.next_frame_index)
        state.next_frame_index += 1
        return out

    def rollout(self, frames: np.ndarray | None, num_frames: int, seeds: list[int], *,
                tokens: np.ndarray | None = None, actions: np.ndarray | None = None,
                progress: bool = False) -> Rollout:
        """Continue B clips by `num_frames` frames: `start` then `num_frames` x `step`.

        `actions` (B, num_frames, 2): the ego command of each step (action-conditioned bundles; ignored otherwise).
        """
        if num_frames < 1:
            raise ValueError(f"num_frames={num_frames} must be at least 1")
        state = self.start(frames, seeds, tokens=tokens)
        seed_tokens = self._history_codes(state)[:state.batch_size]
        outs = []
        for k in tqdm(range(num_frames), desc="rollout", unit="frame", disable=not progress):
            outs.append(self.step(state, None if actions is None else np.asarray(actions)[:, k]))
        return Rollout(frames=np.stack([o.frames for o in outs], 1), tokens=np.stack([o.tokens for o in outs], 1),
                       surprise=np.stack([o.surprise for o in outs], 1),
                       seed_tokens=seed_tokens.cpu().numpy())

    def branch(self, state: SimState, rows: list[int], seeds: list[int]) -> SimState:
        """New rollouts continuing from rows of `state` (repeats allowed) with new sampler seeds, sharing
        the prefilled context instead of recomputing it (scenario branching)."""
        if len(rows) != len(seeds):
            raise ValueError(f"got {len(rows)} rows but {len(seeds)} seeds")
        if not rows or max(rows) >= state.batch_size or min(rows) < 0:
            raise ValueError(f"rows {rows} must index the state's {state.batch_size} clips")
        B, W = len(rows), max(len(rows), self.min_rows)
        index = torch.tensor(rows + [rows[0]] * (W - B), device=self.device)
        seeds_t = torch.tensor([int(s) for s in seeds] + [int(seeds[0])] * (W - B), dtype=torch.int64, device=self.device)
        return SimState(cache=state.cache.gather(index[:B]), seeds=seeds_t, history=state.history[index],
                        previous=state.previous[index], batch_size=B, next_frame_index=state.next_frame_index,
                        position=state.position, ahead=[(t[index], s[index]) for t, s in state.ahead])

    @torch.inference_mode()
    def encode(self, frames: np.ndarray, batch_size: int = 1) -> torch.Tensor:
        """TOK on uint8 frames (..., H, W, 3) -> codes (..., h, w) on the engine's device.

        Frame by frame by default, for the reason given in `_decode`: a near-tie in the nearest-code search
        must not flip with the batch a frame happens to be encoded in.
        """
        x = preprocess(frames)  # (..., 3, S, S)
        lead = x.shape[:-3]
        x = x.reshape(-1, *x.shape[-3:])
        tok = self.bundle.tokenizer
        dev, dtype = next(tok.parameters()).device, next(tok.parameters()).dtype
        codes = [tok.encode(x[i:i + batch_size].to(dev, dtype)) for i in range(0, len(x), batch_size)]
        return torch.cat(codes).to(self.device).reshape(*lead, self.grid, self.grid)

    @torch.inference_mode()
    def score(self, tokens, speed_mps=None, yaw_rate_rps=None, *, stride: int | None = None, batch_size: int = 8,
              progress: bool = False) -> list[np.ndarray]:
        """Teacher-forced surprise of real clips: per frame, the mean -log p(code | prompt, frames before it) that
        `step` reports for a generated frame (`metrics.teacher_forced_surprise`), here for the codes the clip has.

        A clip is scored in windows of `context_frames` frames every `stride` frames (`metrics.sliding_windows`;
        default stride: the engine's slide, half the window), so every frame from the T-th on is scored once, with
        T = 2 or more frames of context and never more than the WM was trained on. The first T frames get NaN. The
        windows of all clips are batched, `batch_size` at a time.

        Args:
            tokens: clips of codes, each (F_i, h, w), of any lengths; or one array (B, F, h, w).
            speed_mps, yaw_rate_rps: ego motion of each clip, (F_i,) in m/s and rad/s, NaN where unknown (the token
                store's arrays). Action-conditioned bundles put each frame's ego ids before its codes as training does
                (`ActionCoding.vision_ids`), or the "unknown" ids without ego motion; other bundles ignore it.
        Returns:
            one float32 array (F_i,) per clip: nats per code, NaN for the first T frames.
        Raises:
            ValueError: codes not on the tokenizer's grid or outside [0, K), ego motion of the wrong length or only one
                of speed and yaw rate, a stride outside [1, context_frames - T], batch_size < 1.
        """
        stride = self.context_frames // 2 if stride is None else stride
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        if (speed_mps is None) != (yaw_rate_rps is None):
            raise ValueError("pass both speed_mps and yaw_rate_rps (NaN where unknown), or neither")
        clips = [c.long() if torch.is_tensor(c) else torch.from_numpy(np.asarray(c, dtype=np.int64)) for c in tokens]
        K = self.wm.config.codebook_size
        for i, c in enumerate(clips):
            if c.ndim != 3 or c.shape[1:] != (self.grid, self.grid):
                raise ValueError(f"clip {i}: codes must be (F, {self.grid}, {self.grid}), got {tuple(c.shape)}")
            if len(c) and (c.min() < 0 or c.max() >= K):
                raise ValueError(f"clip {i}: codes must be in [0, {K}), got values in [{c.min()}, {c.max()}]")
        ego = None
        if speed_mps is not None and self.bundle.action_conditioned:
            coding = self.bundle.action_coding
            if not len(speed_mps) == len(yaw_rate_rps) == len(clips):
                raise ValueError(f"ego motion of {len(speed_mps)} and {len(yaw_rate_rps)} clips for {len(clips)} clips")
            ego = [torch.from_numpy(coding.vision_ids(s, y)) for s, y in zip(speed_mps, yaw_rate_rps)]
            for i, (c, e) in enumerate(zip(clips, ego)):
                if e.shape != (len(c), 2):
                    raise ValueError(f"clip {i}: {len(c)} frames but ego motion of shape {tuple(e.shape[:-1])}")
        by_length: dict[int, list[tuple[int, int, int, int]]] = {}  # windows of one length batch together
        for i, c in enumerate(clips):
            for start, stop, first in sliding_windows(len(c), self.context_frames, stride, MIN_SEED_FRAMES):
                by_length.setdefault(stop - start, []).append((i, start, stop, first))
        out = [np.full(len(c), np.nan, np.float32) for c in clips]
        bar = tqdm(total=sum(map(len, by_length.values())), desc="score", unit="window", disable=not progress)
        for windows in by_length.values():
            for k in range(0, len(windows), batch_size):
                batch = windows[k:k + batch_size]
                codes = torch.stack([clips[i][a:b] for i, a, b, _ in batch]).to(self.device)  # (b, F, h, w)
                ids = None if ego is None else torch.stack([ego[i][a:b] for i, a, b, _ in batch]).to(self.device)
                frames = self._frame_ids(codes, ids)  # (b, F, n')
                values = teacher_forced_surprise(self.wm, self.prompt_ids, frames, self.n).cpu().numpy()  # (b, F)
                for (i, a, b, first), v in zip(batch, values):
                    out[i][first:b] = v[first - a:]
                bar.update(len(batch))
        bar.close()
        return out

    @contextlib.contextmanager
    def timed(self, stage: str):
        """Add the block's seconds to `timings[stage]` when profiling; the device is synchronised at both ends so
        that asynchronous CUDA work is charged to the stage that queued it."""
        if not self.profile:
            yield
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - started

    # ---- the WM loop -----------------------------------------------------------------------------
    @torch.inference_mode()
    def _generate_frame(self, state: SimState, action_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample the next frame's n codes for every row: (W, h, w) codes and (W,) surprise."""
        if state.history.shape[1] >= self.context_frames:
            self._slide(state)
        cfg = self.wm.config
        feed = state.history[:, -1, -2:]  # the last frame's final code + end-of-frame, not yet in the cache
        if action_ids is not None:
            feed = torch.cat([feed, cfg.vision_id(action_ids)], dim=1)
        logits = self._forward(state, feed)
        W = logits.shape[0]
        codes = torch.empty(W, self.n, dtype=torch.long, device=self.device)
        logps = torch.empty(W, self.n, dtype=torch.float32, device=self.device)
        for i in range(self.n):
            codes[:, i] = sample_top_k(logits, state.seeds, state.position, self.top_k, self.temperature)
            logps[:, i] = token_log_probs(logits, codes[:, i])
            state.position += 1
            if i < self.n - 1:  # the last code is fed with its end-of-frame at the next frame's start
                logits = self._forward(state, cfg.vision_id(codes[:, i:i + 1]))
        frame = self._frame_ids(codes.view(W, 1, self.grid, self.grid),
                                None if action_ids is None else action_ids[:, None])
        state.history = torch.cat([state.history, frame], dim=1)
        return codes.view(W, self.grid, self.grid), surprise(logps)

    def _forward(self, state: SimState, ids: torch.Tensor) -> torch.Tensor:
        """Append ids (W, L) to the cache; code logits (W, K) at the last position, float32."""
        hidden = self.wm.forward_cached(ids, state.cache)
        return self.wm.code_logits(hidden[:, -1]).float()

    def _prefill(self, state: SimState) -> None:
        """Run the frames in context through the WM after the prompt, all but the last two ids."""
        state.cache.length = len(self.prompt_ids)  # keep the prompt, overwrite the rest
        ids = state.history.reshape(state.history.shape[0], -1)[:, :-2]
        self.wm.forward_cached(ids, state.cache)

    def _slide(self, state: SimState) -> None:
        """Drop the oldest half of the context and re-prefill the rest at contiguous positions."""
        keep = self.context_frames - self.context_frames // 2
        state.history = state.history[:, -keep:]
        self._prefill(state)

    def _prompt_cache(self) -> KVCache:
        """The prompt's keys and values, computed once at batch 1 and copied into every rollout."""
        if self._prompt_kv is None:
            self._prompt_kv = KVCache(self.wm.config, 1, len(self.prompt_ids), self._kv_dtype, self.device)
            self.wm.forward_cached(self.prompt_ids[None], self._prompt_kv)
        return self._prompt_kv

    @property
    def _kv_dtype(self) -> torch.dtype:
        return next(self.wm.parameters()).dtype

    # ---- decoding --------------------------------------------------------------------------------
    def _decode(self, previous: torch.Tensor, codes: torch.Tensor, following: torch.Tensor | None) -> torch.Tensor:
        """Frame t of each row from codes (B, h, w) of t-1, t, t+1 (VDEC) or t alone (DEC): (B, 3, H, W).

        One row per call: a convolution's rounding depends on its batch size, and a frame must not depend on
        its neighbours any more than its tokens do (single env == vector env row, bit for bit).
        """
        if self.decoder == "tokenizer":
            model, inputs = self.bundle.tokenizer, codes
            decode = model.decode
        else:
            model, inputs = self.bundle.video_decoder, torch.stack([previous, codes, following], dim=1)  # (B, 3, h, w)
            decode = model.decode_window
        device = next(model.parameters()).device
        return torch.cat([decode(inputs[i:i + 1].to(device)) for i in range(len(inputs))])

    # ---- inputs ----------------------------------------------------------------------------------
    def _seed_tokens(self, frames, tokens) -> torch.Tensor:
        if (frames is None) == (tokens is None):
            raise ValueError("pass either seed frames (B, T, H, W, 3) uint8 or seed tokens (B, T, h, w), not both")
        if frames is not None:
            frames = np.asarray(frames) if not torch.is_tensor(frames) else frames
            if frames.ndim != 5:
                raise ValueError(f"seed frames must be (B, T, H, W, 3) uint8, got shape {tuple(frames.shape)}; "
                                 f"add a batch axis for one clip (frames[None])")
            self._check_seed_count(frames.shape[1])
            return self.encode(frames)
        tokens = torch.as_tensor(tokens, device=self.device).long()
        if tokens.ndim != 4 or tokens.shape[-2:] != (self.grid, self.grid):
            raise ValueError(f"seed tokens must be (B, T, {self.grid}, {self.grid}), got {tuple(tokens.shape)}")
        K = self.wm.config.codebook_size
        if tokens.min() < 0 or tokens.max() >= K:
            raise ValueError(f"seed tokens must be codes in [0, {K}), got values in [{tokens.min()}, {tokens.max()}]")
        self._check_seed_count(tokens.shape[1])
        return tokens

    def _check_seed_count(self, T: int) -> None:
        if T < MIN_SEED_FRAMES:
            raise ValueError(f"got {T} seed frame(s); the simulator needs at least {MIN_SEED_FRAMES} (the paper's T = 2)")
        if T >= self.context_frames:
            raise ValueError(f"got {T} seed frames but the context holds {self.context_frames} frames; pass at most "
                             f"{self.context_frames - 1} (the most recent ones) or raise context_frames")

    def _frame_ids(self, codes: torch.Tensor, action_ids: torch.Tensor | None) -> torch.Tensor:
        """Codes (W, F, h, w) [+ ego ids (W, F, 2)] -> merged-vocabulary frames (W, F, n')."""
        W, F = codes.shape[:2]
        if self.bundle.action_conditioned and action_ids is None:
            action_ids = torch.as_tensor(self.bundle.action_coding.unknown_ids((W, F)), device=codes.device)
        return frame_ids(self.wm.config, codes, action_ids if self.bundle.action_conditioned else None)

    def _history_codes(self, state: SimState) -> torch.Tensor:
        """The codes (W, F, h, w) of the frames in context."""
        ids = state.history[:, :, -self.n - 1:-1]  # drop ego ids and end-of-frame
        return (ids - self.wm.config.text_vocab_size).reshape(*ids.shape[:2], self.grid, self.grid)

    def _action_ids(self, actions, B: int, T: int, rows: torch.Tensor) -> torch.Tensor | None:
        if actions is None or not self.bundle.action_conditioned:
            return None
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (B, T, 2):
            raise ValueError(f"seed actions must be (B, T, 2) = ({B}, {T}, 2), got {actions.shape}")
        coding = self.bundle.action_coding
        ids = coding.vision_ids(*coding.from_normalized(actions))
        return torch.as_tensor(ids, device=self.device)[rows]

    def _step_action_ids(self, actions, state: SimState) -> torch.Tensor | None:
        if not self.bundle.action_conditioned:
            return None
        B, W = state.batch_size, state.seeds.shape[0]
        coding = self.bundle.action_coding
        if actions is None:
            ids = coding.unknown_ids((B,))
        else:
            actions = np.asarray(actions, dtype=np.float64)
            if actions.shape != (B, 2):
                raise ValueError(f"step actions must be (B, 2) = ({B}, 2) in [-1, 1], got shape {actions.shape}")
            if np.abs(actions).max() > 1 + 1e-6:
                raise ValueError(f"actions must lie in [-1, 1] (normalised speed, yaw rate); got max |a| = "
                                 f"{np.abs(actions).max():.3g}")
            ids = coding.vision_ids(*coding.from_normalized(actions))
        ids = torch.as_tensor(ids, device=self.device)
        return torch.cat([ids, ids[:1].expand(W - B, 2)])  # vision ids (W, 2)
