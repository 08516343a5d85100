"""The batched engine: continue B clips of T seed frames, one frame (0.25 s) per step (paper Fig. 2).

    seed frames --TOK--> tokens --WM(prompt, frames)--> next frame's n codes --VDEC(t-1, t, t+1)--> frame t

How it is fast (docs/design.md "Speed, by construction"):
- the fixed prompt is prefilled once per Simulator and its KV cache copied into every row;
- all rows decode together, one forward per token, with a static KV cache;
- sampling (top-k, Gumbel-max with hashed noise) stays on the device: no host sync per token;
- the head projects onto the K code rows only; end-of-frame and ego ids are forced, never sampled,
  and a frame's last code is fed together with its end-of-frame (and the next frame's ego ids) in one forward;
- when the context is full the oldest half of the frames is dropped and the rest re-prefilled at contiguous
  positions (one forward per several frames), so positions stay inside the trained T + N = 16 frames and
  memory stays bounded however long the rollout.

How it is reproducible (docs/design.md "Determinism"): every draw depends only on (row seed, position, id), and
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
from .models.world_model import FP8KVCache, KVCache
from .sampling import sample_top_k

MIN_SEED_FRAMES = 2  # the paper's T = 2; VDEC needs frame t-1 for the first emitted frame
TRAINED_CONTEXT_FRAMES = 16  # T + N of WM fine-tuning (paper III-C c)
# The fixed row width of the WM's matrix products: every width >= 4 rounds alike (MKL on this project's CPU; one to
# three rows take a GEMV-like path that rounds differently).
MIN_ROWS = 4
# The torch threads the tokenizer's and decoders' convolutions run on, on a CPU. Their results depend on the thread
# count (oneDNN and the native convolution alike, measured: a VDEC frame at 1 and at 2 threads differs), the world
# model's matrix products here do not; so a frame is defined at this count, whatever torch's is. At 1 thread VDEC
# takes 0.27 s a frame instead of 0.18 on this project's 2 cores.
CODEC_THREADS = 1


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
    top_k: int | None = None  # this rollout's top-k; None: the simulator's (`Simulator.branch(..., top_k=)`)

    def clone(self) -> "SimState":
        rows = torch.arange(self.cache.rows, device=self.seeds.device)
        return SimState(cache=self.cache.gather(rows), seeds=self.seeds.clone(), history=self.history.clone(),
                        previous=self.previous.clone(), batch_size=self.batch_size,
                        next_frame_index=self.next_frame_index, position=self.position,
                        ahead=[(t.clone(), s.clone()) for t, s in self.ahead], top_k=self.top_k)


@contextlib.contextmanager
def codec_threads(device: torch.device, count: int | None = CODEC_THREADS):
    """Run the block's convolutions on `count` torch threads on a CPU (a frame must not depend on how many threads
    torch was given: a Ray actor has one, a laptop eight); elsewhere, or with count None, as they are."""
    if device.type != "cpu" or count is None:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class Simulator:
    """Batched rollouts of one bundle.

    Args:
        bundle: the models (see `openvica_sim.bundle.load_bundle`).
        top_k: sample among the k most probable codes; default the bundle's `top_k` (openvica.json "sampling"),
            the paper's k = 1000 (Table V) for the 7B system.
        temperature: softmax temperature; 0 is greedy. Default the bundle's (openvica.json "sampling", 1.0 if unset).
        decoder: "video_decoder" (VDEC, one frame of lookahead) or "tokenizer" (the image DEC, the
            paper's TOK+WM+DEC system). Default: VDEC when the bundle has one.
        context_frames: frames the WM sees at most; past that the oldest half is dropped. Default the bundle's
            (openvica.json "sampling"; 16, the T + N of the paper's fine-tuning): a longer context is outside what
            the WM was trained on.
        min_rows: decode at least this many rows (padding idle ones): batch invariance (module docstring).
        wavefront: decode each frame by the wavefront schedule of this width (row r starts once row r - 1 has that
            many codes: 15 w + 16 forwards a frame instead of 256, `models.sequence.Wavefront`); default the
            bundle's (openvica.json "sampling"), None there too: raster; 16 or more is raster order (bit for bit).
        compile: run the one-id decode steps of raster decoding as a compiled step at static shapes
            (`openvica_sim.compiled`: a CUDA graph per shape on a GPU); its first use compiles (`warm_up` does it
            ahead). The eager engine is the reference: tokens are the same.
        kv_dtype: "fp8" keeps the KV cache in float8 e4m3 with per-position, per-head scales (`FP8KVCache`): half
            the cache memory of bf16, at a quality cost measured by `benchmarks/quant_quality.py`; None: the world
            model's dtype.
        codec_threads: torch threads of the tokenizer's and decoders' convolutions on a CPU (CODEC_THREADS = 1): a
            frame is bitwise the same at every torch thread count because it is computed at this one. None: torch's
            count (faster with many cores; frames then depend on it, tokens do not).
    """

    def __init__(self, bundle: Bundle, top_k: int | None = None, temperature: float | None = None,
                 decoder: str | None = None,
                 context_frames: int | None = None, min_rows: int = MIN_ROWS, wavefront: int | None = None,
                 compile: bool = False, kv_dtype: str | None = None, codec_threads: int | None = CODEC_THREADS):
        top_k = bundle.top_k if top_k is None else top_k
        context_frames = bundle.context_frames if context_frames is None else context_frames
        wavefront = bundle.wavefront if wavefront is None else wavefront
        temperature = bundle.temperature if temperature is None else temperature
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
        if kv_dtype not in (None, "fp8"):
            raise ValueError(f"kv_dtype={kv_dtype!r}: choose 'fp8' or None (the world model's dtype)")
        if kv_dtype == "fp8" and compile:
            raise ValueError("kv_dtype='fp8' with compile=True: the compiled step reads a plain cache; use one")
        self.bundle, self.top_k, self.temperature = bundle, top_k, temperature
        self.decoder, self.context_frames, self.min_rows = decoder, context_frames, min_rows
        self.codec_threads = codec_threads
        self.wm = bundle.world_model
        self.device = next(self.wm.parameters()).device
        self.lookahead = 1 if decoder == "video_decoder" else 0
        self.layout = bundle.layout
        self.n = self.layout.tokens_per_frame
        self.schedule = None if wavefront is None else self.layout.wavefront(wavefront)
        if self.schedule is not None and self.schedule.raster:  # raster order: the raster loop is the same, faster
            self.schedule, wavefront = None, None
        self.wavefront = wavefront
        self._code_index = torch.arange(self.n, device=self.device)  # + a frame's first sampler position
        self.grid = self.layout.grid
        self.prompt_ids = torch.tensor(bundle.prompt_ids, device=self.device)
        self.max_len = len(self.prompt_ids) + context_frames * bundle.frame_length
        self._compiled = None
        if compile:
            from .compiled import CompiledDecodeStep

            self._compiled = CompiledDecodeStep(self.wm, self.max_len)
            self.max_len = self._compiled.cache_len  # its block-rounded cache
        self._cache_class = FP8KVCache if kv_dtype == "fp8" else KVCache
        self.kv_dtype = kv_dtype
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
        history = self.layout.frame_ids(seed_tokens, self._action_ids(actions, B, T, rows))  # (W, T, n')
        cache = self._cache_class(self.wm.config, B, self.max_len, self._kv_dtype, self.device)
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
            frames = self._decode(state.previous[:B], codes[:B], state.ahead[0][0][:B] if self.lookahead else None,
                                  self.decoder)
        state.previous = codes
        out = StepOutput(frames=postprocess(frames), tokens=codes[:B].cpu().numpy(),
                         surprise=frame_surprise[:B].float().cpu().numpy(), frame_index=state.next_frame_index)
        state.next_frame_index += 1
        return out

    def rollout(self, frames: np.ndarray | None, num_frames: int, seeds: list[int], *,
                tokens: np.ndarray | None = None, actions: np.ndarray | None = None,
                seed_actions: np.ndarray | None = None, commands: np.ndarray | None = None,
                progress: bool = False) -> Rollout:
        """Continue B clips by `num_frames` frames: `start` then `num_frames` x `step`.

        `actions` (B, num_frames, 2): the ego command of each step, as the env takes it (with VDEC's lookahead the
        action of step k shapes the frame shown at step k + 1); or `commands` (B, num_frames, 2): the ego command of
        each predicted frame itself (the world model predicts all frames with them, `predict`, then the decoder
        decodes them: no latency; how a drive is replayed). `seed_actions` (B, T, 2): the ego motion of the seed
        frames. All three in [-1, 1] (`ActionCoding.to_normalized`), for action-conditioned bundles; ignored by
        others, and "unknown" where not given or NaN.
        """
        if num_frames < 1:
            raise ValueError(f"num_frames={num_frames} must be at least 1")
        if actions is not None and commands is not None:
            raise ValueError("pass actions (per env step) or commands (per predicted frame), not both")
        state = self.start(frames, seeds, tokens=tokens, actions=seed_actions)
        seed_tokens = self.layout.codes(state.history)[:state.batch_size]
        if commands is not None:
            commands = np.asarray(commands, np.float64)
            B = state.batch_size
            if commands.shape != (B, num_frames, 2):
                raise ValueError(f"commands must be (B, num_frames, 2) = ({B}, {num_frames}, 2), got {commands.shape}")
            ahead = np.concatenate([commands, commands[:, -1:]], 1)  # VDEC's lookahead frame: the last command again
            codes, surprises = self.predict(state, num_frames + 1, ahead)
            with self.timed("video_decoder" if self.decoder == "video_decoder" else "tokenizer_decoder"):
                shown = self.decode_frames(torch.cat([seed_tokens[:B, -1:], codes], dim=1))
            return Rollout(frames=shown, tokens=codes[:, :num_frames].cpu().numpy(),
                           surprise=surprises[:, :num_frames].float().cpu().numpy(),
                           seed_tokens=seed_tokens.cpu().numpy())
        outs = []
        for k in tqdm(range(num_frames), desc="rollout", unit="frame", disable=not progress):
            outs.append(self.step(state, None if actions is None else np.asarray(actions)[:, k]))
        return Rollout(frames=np.stack([o.frames for o in outs], 1), tokens=np.stack([o.tokens for o in outs], 1),
                       surprise=np.stack([o.surprise for o in outs], 1),
                       seed_tokens=seed_tokens.cpu().numpy())

    def branch(self, state: SimState, rows: list[int], seeds: list[int], top_k: int | None = None) -> SimState:
        """New rollouts continuing from rows of `state` (repeats allowed) with new sampler seeds, sharing
        the prefilled context instead of recomputing it (scenario branching); `top_k` for these rollouts only
        (the evaluation's top-k sweep: one prefill, every k)."""
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k={top_k} must be at least 1 (1 is greedy)")
        if len(rows) != len(seeds):
            raise ValueError(f"got {len(rows)} rows but {len(seeds)} seeds")
        if not rows or max(rows) >= state.batch_size or min(rows) < 0:
            raise ValueError(f"rows {rows} must index the state's {state.batch_size} clips")
        B, W = len(rows), max(len(rows), self.min_rows)
        index = torch.tensor(rows + [rows[0]] * (W - B), device=self.device)
        seeds_t = torch.tensor([int(s) for s in seeds] + [int(seeds[0])] * (W - B), dtype=torch.int64, device=self.device)
        return SimState(cache=state.cache.gather(index[:B]), seeds=seeds_t, history=state.history[index],
                        previous=state.previous[index], batch_size=B, next_frame_index=state.next_frame_index,
                        position=state.position, ahead=[(t[index], s[index]) for t, s in state.ahead],
                        top_k=state.top_k if top_k is None else top_k)

    @torch.inference_mode()
    def predict(self, state: SimState, num_frames: int, actions: np.ndarray | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The world model alone: the codes (B, F, h, w) and surprise (B, F) of the next F = `num_frames` frames,
        frame j generated after the ego command `actions[:, j]` ((B, F, 2) in [-1, 1]; action-conditioned bundles),
        with no decoding and so no lookahead latency (the evaluation's path; `step` is the env's). The same draws as
        `step` makes: a rollout's codes are `predict`'s. The state moves on by F frames; do not mix it with `step`.

        Raises:
            ValueError: a state that `step` has run ahead, or actions of the wrong shape.
        """
        if state.ahead:
            raise ValueError("predict() continues a state that step() has run ahead of its shown frames; use one of "
                             "the two per state (branch a fresh one from `start`)")
        B = state.batch_size
        if actions is not None and np.shape(actions) != (B, num_frames, 2):
            raise ValueError(f"actions must be (B, F, 2) = ({B}, {num_frames}, 2), got {np.shape(actions)}")
        codes, surprises = [], []
        with self.timed("world_model"):
            for j in range(num_frames):
                frame, frame_surprise = self._generate_frame(
                    state, self._step_action_ids(None if actions is None else np.asarray(actions)[:, j], state))
                codes.append(frame[:B])
                surprises.append(frame_surprise[:B])
                state.previous = frame
        state.next_frame_index += num_frames
        return torch.stack(codes, 1), torch.stack(surprises, 1)

    @torch.inference_mode()
    def decode_frames(self, tokens: torch.Tensor | np.ndarray, decoder: str | None = None) -> np.ndarray:
        """Frames uint8 (B, F, H, W, 3) of codes (B, F + 2, h, w): the frame before, F frames, the frame after,
        each frame decoded as `step` decodes it, from (t-1, t, t+1) by VDEC or from t alone by DEC (`decoder`
        "video_decoder" or "tokenizer"; default the simulator's)."""
        decoder = decoder or self.decoder
        if decoder == "video_decoder" and self.bundle.video_decoder is None:
            raise ValueError("decoder='video_decoder' but the bundle has no video_decoder/; use decoder='tokenizer'")
        tokens = torch.as_tensor(tokens, device=self.device).long()
        if tokens.ndim != 4 or tokens.shape[1] < 3:
            raise ValueError(f"tokens must be (B, F + 2, h, w) with F >= 1, got {tuple(tokens.shape)}")
        frames = [postprocess(self._decode(tokens[:, f - 1], tokens[:, f], tokens[:, f + 1], decoder))
                  for f in range(1, tokens.shape[1] - 1)]
        return np.stack(frames, 1)

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
        with codec_threads(dev, self.codec_threads):
            codes = [tok.encode(x[i:i + batch_size].to(dev, dtype)) for i in range(0, len(x), batch_size)]
        return torch.cat(codes).to(self.device).reshape(*lead, self.grid, self.grid)

    @torch.inference_mode()
    def score(self, tokens, speed_mps=None, yaw_rate_rps=None, *, stride: int | None = None, batch_size: int = 8,
              cached: bool = False, progress: bool = False) -> list[np.ndarray]:
        """Teacher-forced surprise of real clips: per frame, the mean -log p(code | prompt, frames before it) that
        `step` reports for a generated frame (`metrics.teacher_forced_surprise`), here for the codes the clip has.

        With a wavefront simulator, each frame's codes are predicted as the wavefront schedule predicts them (each
        code sees only the codes sampled before it; `metrics.surprise.wavefront_sequence`): the cost in nats of that
        schedule is `score` with it minus `score` without it.

        With `cached`, the codes go through the engine's own cached path instead of one uncached forward: the seed
        frames prefilled, then each frame in one forward that writes its keys and values before attending (raster
        only), so that what the cache does to them (an 8-bit `kv_dtype`) is measured too.

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
        by_length: dict[tuple[int, int], list] = {}  # windows of one length and context batch together
        for i, c in enumerate(clips):
            for start, stop, first in sliding_windows(len(c), self.context_frames, stride, MIN_SEED_FRAMES):
                by_length.setdefault((stop - start, first - start), []).append((i, start, stop, first))
        out = [np.full(len(c), np.nan, np.float32) for c in clips]
        bar = tqdm(total=sum(map(len, by_length.values())), desc="score", unit="window", disable=not progress)
        for (_, context), windows in by_length.items():
            for k in range(0, len(windows), batch_size):
                batch = windows[k:k + batch_size]
                codes = torch.stack([clips[i][a:b] for i, a, b, _ in batch]).to(self.device)  # (b, F, h, w)
                ids = None if ego is None else torch.stack([ego[i][a:b] for i, a, b, _ in batch]).to(self.device)
                frames = self.layout.frame_ids(codes, ids)  # (b, F, n')
                if cached:
                    values = self._cached_surprise(frames, context).cpu().numpy()
                else:
                    values = teacher_forced_surprise(self.wm, self.prompt_ids, frames, self.layout, self.wavefront,
                                                     context).cpu().numpy()  # (b, F)
                for (i, a, b, first), v in zip(batch, values):
                    out[i][first:b] = v[first - a:]
                bar.update(len(batch))
        bar.close()
        return out

    def _cached_surprise(self, frames: torch.Tensor, context: int) -> torch.Tensor:
        """Surprise (b, F) of real frames (b, F, n') through the cache: frames [0, context) prefilled, each later frame
        fed in one forward (its predecessor's last code and end-of-frame, its ego ids, its codes but the last); NaN
        for the context frames."""
        if self.schedule is not None:
            raise ValueError("score(cached=True) decodes in raster order; use a simulator without a wavefront")
        b, F, _ = frames.shape
        cache = self._cache_class(self.wm.config, b, self.max_len, self._kv_dtype, self.device)
        cache.fill_prefix(self._prompt_cache())
        self.wm.forward_cached(frames[:, :context].reshape(b, -1)[:, :-2], cache)
        codes = self.layout.codes(frames).reshape(b, F, self.n)
        out = torch.full((b, F), float("nan"), device=self.device)
        offset = self.layout.code_offset
        for f in range(context, F):
            ids = torch.cat([frames[:, f - 1, -2:], frames[:, f, :offset + self.n - 1]], dim=1)
            hidden = self.wm.forward_cached(ids, cache)[:, 1 + offset:]  # (b, n, D): the id before each code
            out[:, f] = surprise(token_log_probs(self.wm.code_logits(hidden).float(), codes[:, f]))
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
        """Sample the next frame's n codes for every row: (W, h, w) codes and (W,) surprise.

        The first forward feeds the last frame's final code and end-of-frame (and this frame's ego ids); its last
        output predicts code 0. Then raster order (one code per forward) or the wavefront schedule. Code j is drawn
        with the sampler noise of position `state.position + j` whatever the order, so a schedule that samples
        every code from the same distribution as raster draws the same codes.
        """
        if state.history.shape[1] >= self.context_frames:
            self._slide(state)
        feed = state.history[:, -1, -2:]  # the last frame's final code + end-of-frame, not yet in the cache
        if action_ids is not None:
            feed = torch.cat([feed, self.layout.vision_id(action_ids)], dim=1)
        logits = self._forward(state, feed)
        W = logits.shape[0]
        codes = torch.empty(W, self.n, dtype=torch.long, device=self.device)
        logps = torch.empty(W, self.n, dtype=torch.float32, device=self.device)
        positions = self._code_index + state.position  # (n,) sampler positions of this frame's codes
        if self.schedule is None:
            self._raster(state, logits, codes, logps, positions)
        else:
            self._wavefront(state, logits, codes, logps, positions)
        state.position += self.n
        frame = self.layout.frame_ids(codes.view(W, 1, self.grid, self.grid),
                                      None if action_ids is None else action_ids[:, None])
        state.history = torch.cat([state.history, frame], dim=1)
        return codes.view(W, self.grid, self.grid), surprise(logps)

    def _sample(self, state: SimState, logits: torch.Tensor, codes, logps, j: int, positions: torch.Tensor) -> None:
        """Draw code j of every row from its code logits (W, K), with the noise of raster position j (`positions`:
        the frame's n sampler positions on the device, made once per frame: no host-to-device copy per code)."""
        top_k = self.top_k if state.top_k is None else state.top_k
        codes[:, j] = sample_top_k(logits, state.seeds, positions[j], top_k, self.temperature)
        logps[:, j] = token_log_probs(logits, codes[:, j])

    def _sample_many(self, state: SimState, logits: torch.Tensor, codes, logps, targets: list[int],
                     positions: torch.Tensor) -> None:
        """Draw codes `targets` (Q of them) of every row from logits (W, Q, K) in one call, each with the noise of its
        own raster position: the draws `_sample` would make one by one, bit for bit (elementwise hash, row-wise top-k)."""
        R, Q, K = logits.shape  # R rows: all W, or the B real ones
        top_k = self.top_k if state.top_k is None else state.top_k
        flat = logits.reshape(R * Q, K)
        index = torch.as_tensor(targets, device=self.device)
        drawn = sample_top_k(flat, state.seeds[:R].repeat_interleave(Q), positions[index].repeat(R), top_k,
                             self.temperature)  # (R Q,)
        codes[:R, index] = drawn.view(R, Q)
        logps[:R, index] = token_log_probs(flat, drawn).view(R, Q)

    def _raster(self, state: SimState, logits, codes, logps, positions) -> None:
        for j in range(self.n):
            self._sample(state, logits, codes, logps, j, positions)
            if j < self.n - 1:  # the last code is fed with its end-of-frame at the next frame's start
                ids = self.layout.vision_id(codes[:, j:j + 1])
                if self._compiled is None:
                    logits = self._forward(state, ids)
                else:
                    logits = self.wm.code_logits(self._compiled(ids, state.cache)[:, -1]).float()

    def warm_up(self, state: SimState) -> None:
        """Compile every shape the compiled decode step meets in a rollout of `state` (`compile=True`), so that no
        step of it compiles: on a scratch copy of its cache, which is left untouched."""
        if self._compiled is not None:
            self._compiled.warm_up(state.cache, state.seeds.shape[0])

    def _wavefront(self, state: SimState, logits, codes, logps, positions) -> None:
        """The frame's codes by the wavefront schedule (`models.sequence.Wavefront`): at each step, one forward of
        every active row's query (its predecessor's code, or the previous frame's code there as a stand-in) and of
        the row ends to be written, at their raster positions, each attending to the codes already written."""
        schedule, cache = self.schedule, state.cache
        B, W = state.batch_size, codes.shape[0]
        first = cache.length  # the position of code 0
        previous = self.layout.codes(state.history[:, -1]).reshape(codes.shape[0], -1)  # (W, n): stand-ins
        written = np.zeros(self.n, dtype=bool)  # codes whose own keys and values are in the cache
        self._sample(state, logits, codes, logps, 0, positions)
        for step in range(1, schedule.num_steps):
            targets = schedule.codes_at(step)
            inputs = [(j - 1, not schedule.needs_stand_in(j), j) for j in targets]  # (slot, real, code it predicts)
            inputs += [(q, True, None) for q in schedule.codes_at(step - 1)
                       if q + 1 < self.n and schedule.needs_stand_in(q + 1)]  # row ends, their successor long drawn
            inputs.sort()
            for slot, real, _ in inputs:
                written[slot] |= real  # a forward writes its inputs before attending
            # The products run on B x L rows; padding rows are needed only while that is under the fixed width
            # (module docstring: every width from min_rows on rounds alike), i.e. in the first steps of a frame.
            rows = B if B * len(inputs) >= self.min_rows else W
            ids = torch.stack([codes[:rows, slot] if real else previous[:rows, slot] for slot, real, _ in inputs], 1)
            visible = np.zeros((len(inputs), first + max(slot for slot, _, _ in inputs) + 1), dtype=bool)
            visible[:, :first] = True  # the prompt and the frames before
            for i, (slot, real, _) in enumerate(inputs):
                visible[i, first:first + slot + 1] = written[:slot + 1]
                visible[i, first + slot] = True  # itself, a stand-in too
            hidden = self.wm.forward_at(self.layout.vision_id(ids), [first + slot for slot, _, _ in inputs], cache,
                                        torch.from_numpy(visible).to(self.device))
            queries = [i for i, (_, _, j) in enumerate(inputs) if j is not None]
            targets = [inputs[i][2] for i in queries]
            logits = self.wm.code_logits(hidden[:, queries]).float()  # (rows, Q, K): one product for the step's codes
            self._sample_many(state, logits, codes, logps, targets, positions)
            if rows < W:  # idle rows repeat row 0, as everywhere in the engine
                codes[rows:, targets], logps[rows:, targets] = codes[:1, targets], logps[:1, targets]
        cache.length = first + self.n - 1  # as raster leaves it: the last code comes with the next end-of-frame

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
            self._prompt_kv = self._cache_class(self.wm.config, 1, len(self.prompt_ids), self._kv_dtype, self.device)
            self.wm.forward_cached(self.prompt_ids[None], self._prompt_kv)
        return self._prompt_kv

    @property
    def _kv_dtype(self) -> torch.dtype:
        return next(self.wm.parameters()).dtype

    # ---- decoding --------------------------------------------------------------------------------
    def _decode(self, previous: torch.Tensor, codes: torch.Tensor, following: torch.Tensor | None,
                decoder: str) -> torch.Tensor:
        """Frame t of each row from codes (B, h, w) of t-1, t, t+1 (VDEC) or t alone (DEC): (B, 3, H, W).

        One row per call: a convolution's rounding depends on its batch size, and a frame must not depend on
        its neighbours any more than its tokens do (single env == vector env row, bit for bit).
        """
        if decoder == "tokenizer":
            model, inputs = self.bundle.tokenizer, codes
            decode = model.decode
        else:
            model, inputs = self.bundle.video_decoder, torch.stack([previous, codes, following], dim=1)  # (B, 3, h, w)
            decode = model.decode_window
        device = next(model.parameters()).device
        with codec_threads(device, self.codec_threads):
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
