"""OpenViCA-v0: the learned driving simulator behind Gymnasium's `Env` API (docs/design.md "The environment").

The env only adapts: it draws an episode (seed clip and sampler seed) from its `np_random`, hands the seed
frames to `openvica_sim.simulator.Simulator` at batch size 1, and turns each emitted frame into an
observation. `OpenViCAVectorEnv` (`vector.py`) runs the same engine with one row per sub-env; both share
the helpers at the top of this module, so a sub-env of the vector env and a single env with the same seed
produce the same frames.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from openvica_sim.bundle import FPS, META_NAME, Bundle, load_bundle
from openvica_sim.frames import model_view
from openvica_sim.sampling import derive_seeds
from openvica_sim.simulator import MIN_SEED_FRAMES, SimState, Simulator

from openvica_sim.data.clips import ClipSource, open_clips

MAX_EPISODE_STEPS = 14  # the paper's horizon: N = 14 predicted frames after T = 2 seed frames
RESET_OPTIONS = ("clip", "frames", "seed_frames")
RewardFn = Callable[[np.ndarray, dict], float]


# ---- shared by the single and the vector env ------------------------------------------------------
def default_bundle(device: str | torch.device = "cpu") -> Bundle:
    """The bundle `gym.make("OpenViCA-v0")` runs when given none: the embedded default, a tiny simulator trained
    on the synthetic world and shipped in the package (`openvica_sim.embedded`); loaded once per process."""
    from openvica_sim import embedded

    return open_bundle(embedded.bundle_path(), device)


def open_bundle(bundle: Bundle | str | os.PathLike | None, device: str | torch.device = "cpu") -> Bundle:
    """The env's `bundle` argument as a Bundle: None (the default), a Bundle, or a bundle folder.

    Folders are loaded once per process (per path, device and openvica.json time stamp), so the N envs of a
    sync vector env share one copy of the weights.

    Raises:
        FileNotFoundError: no bundle at the path (from `load_bundle`).
        TypeError: anything else.
    """
    if bundle is None:
        return default_bundle(device)
    if isinstance(bundle, Bundle):
        return bundle
    if not isinstance(bundle, (str, os.PathLike)):
        raise TypeError(f"bundle={bundle!r}: pass a bundle folder, a Bundle, or None for the default bundle")
    path = Path(bundle).resolve()
    stamp = (path / META_NAME).stat().st_mtime_ns if (path / META_NAME).is_file() else 0
    return _load_bundle_cached(str(path), str(torch.device(device)), stamp)


@functools.lru_cache(maxsize=4)
def _load_bundle_cached(path: str, device: str, stamp: int) -> Bundle:
    return load_bundle(path, device=device)


@dataclass
class Episode:
    """What a reset draws for one env: the seed frames as the model sees them and the sampler seed."""

    clip_id: str | None  # None when the frames came from options["frames"]
    frames: np.ndarray  # (T, S, S, 3) uint8: the centre crops the tokenizer reads
    row_seed: int  # the engine's sampler seed for this env's row


def draw_episode(np_random: np.random.Generator, source: ClipSource, options: dict | None,
                 seed_frames: int) -> Episode:
    """Choose the seed clip (unless `options` names it or gives frames) and the sampler seed, in that order.

    Every random choice comes from `np_random`, so a seeded reset is reproducible, and a sub-env of the
    vector env, holding the generator a single env would hold, draws exactly what that single env draws.

    Raises:
        ValueError: unknown options, an unknown clip id, too few seed frames, frames of a wrong shape.
        TypeError: frames that are not uint8.
    """
    options = dict(options or {})
    unknown = sorted(set(options) - set(RESET_OPTIONS))
    if unknown:
        raise ValueError(f"unknown reset option(s) {unknown}; the env understands {list(RESET_OPTIONS)}")
    num_frames = int(options.get("seed_frames", seed_frames))
    if num_frames < MIN_SEED_FRAMES:
        raise ValueError(f"seed_frames={num_frames}: the simulator needs at least {MIN_SEED_FRAMES} seed frames "
                         f"(the paper's T = 2)")
    if options.get("frames") is not None:
        if options.get("clip") is not None:
            raise ValueError("reset options give both 'frames' and 'clip'; pass one of them")
        clip_id, frames = None, options["frames"]
        if not isinstance(frames, (np.ndarray, torch.Tensor)) or frames.ndim != 4:
            shape = getattr(frames, "shape", None)
            raise ValueError(f"options['frames'] must be seed frames (T, H, W, 3) uint8, got "
                             f"{type(frames).__name__} of shape {shape}")
        if frames.shape[0] < MIN_SEED_FRAMES:
            raise ValueError(f"options['frames'] holds {frames.shape[0]} frame(s); the simulator needs at least "
                             f"{MIN_SEED_FRAMES} seed frames (the paper's T = 2)")
    else:
        clip_id = options.get("clip")
        if clip_id is None:
            clip_id = source.clip_ids[int(np_random.integers(len(source.clip_ids)))]
        frames = source.frames(clip_id, max_frames=num_frames)
        if len(frames) < num_frames:
            raise ValueError(f"clip {clip_id!r} has only {len(frames)} frame(s) but {num_frames} seed frames were "
                             f"asked for; lower options['seed_frames'] or choose a longer clip")
    row_seed = int(np_random.integers(0, np.iinfo(np.int64).max))
    return Episode(clip_id=clip_id, frames=model_view(frames), row_seed=row_seed)


def check_actions(actions: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Validate normalised ego commands of `shape` (..., 2) in [-1, 1]; return them as float32.

    Raises:
        ValueError: a wrong shape, or a value outside [-1, 1] (named, with the mapping to m/s and rad/s).
    """
    a = np.asarray(actions, dtype=np.float32)
    if a.shape != shape:
        raise ValueError(f"action of shape {a.shape} does not fit the action space: expected {shape}, "
                         f"[speed, yaw rate] normalised to [-1, 1] per env")
    if not np.all(np.isfinite(a)) or a.min() < -1 or a.max() > 1:
        raise ValueError(f"action {a.tolist()} lies outside the action space [-1, 1]^2: the normalised ego "
                         f"command [speed, yaw rate], speed_mps = (a0 + 1) / 2 * max_speed_mps and yaw_rate_rps = "
                         f"a1 * max_yaw_rate_rps (env.unwrapped.action_coding); clip it with np.clip(action, -1, 1)")
    return a


def step_info(clip_id: str | None, frame_index: int, tokens: np.ndarray, surprise: float) -> dict:
    """One env's info dict (the vector env's are these, batched with `_key` masks)."""
    return {"clip_id": clip_id, "frame_index": int(frame_index), "tokens": tokens, "surprise": float(surprise)}


# ---- the env ------------------------------------------------------------------------------------
@dataclass
class EnvState:
    """A copy of everything an episode needs to continue (`OpenViCAEnv.get_state`)."""

    simulator: SimState  # KV cache, context, sampler seed and counter, the frame of tokens ahead
    clip_id: str | None
    frame: np.ndarray  # (S, S, 3) the current observation


class SimulatorEnvMixin:
    """What the single and the vector env share: the bundle, its engine, the clip source, the action mapping."""

    def _setup_simulator(self, bundle, clips, top_k, temperature, device, decoder, context_frames,
                         wavefront=None) -> None:
        self.bundle = open_bundle(bundle, device)
        self.simulator = Simulator(self.bundle, top_k=top_k, temperature=temperature, decoder=decoder,
                                   context_frames=context_frames, wavefront=wavefront)
        self.clip_source = open_clips(clips)
        if not self.clip_source.has_frames:  # the env starts from pixels: its TOK encodes them, as for any camera
            raise ValueError(f"{self.clip_source} holds tokens only; the env needs the seed frames: ingest again with "
                             f"`openvica data ingest ... --store-frames`, or pass a folder of clips")

    @property
    def action_conditioned(self) -> bool:
        """Whether actions steer the world model (ego-conditioned bundle); otherwise they are ignored."""
        return self.bundle.action_conditioned

    @property
    def action_coding(self):
        """The mapping of normalised actions to m/s and rad/s (`openvica_sim.actions.ActionCoding`)."""
        return self.bundle.action_coding


class OpenViCAEnv(SimulatorEnvMixin, gym.Env):
    """Drive through a learned video world: every step, the world model continues the clip by one frame.

    ## Description
    OpenViCA (Möller et al.): a tokenizer turns camera frames into 16 x 16 codes, a LLaMA world model
    predicts the next frame's codes, and a 3D video decoder turns codes back into pixels. An episode
    continues T = 2 seed frames of a real (or synthetic) clip; each `step()` emits one frame, 0.25 s later.

    ## Observation space
    `Box(0, 255, (S, S, 3), uint8)`, S = the bundle's frame size (256): the current camera frame, the
    256 x 256 centre crop of the paper's preprocessing.

    ## Action space
    `Box(-1, 1, (2,), float32)`: the normalised ego command [speed, yaw rate] (`env.unwrapped.action_coding`,
    stored in the bundle's openvica.json):

        speed_mps    = (a[0] + 1) / 2 * 40      0 .. 40 m/s, 64 uniform bins
        yaw_rate_rps = a[1] * 0.6               -0.6 .. 0.6 rad/s, 64 mu-law bins (positive: to the right)

    Bundles without ego conditioning (`env.unwrapped.action_conditioned` is False) accept and ignore it.
    Timing: the video decoder needs the codes of the frame after the one it draws, so the engine keeps one
    frame of codes ahead. The action given at step k conditions the frame generated at step k, which is
    shown at step k + 1 (the first step generates two frames, both under its action). This one-frame
    latency is the paper's. With `decoder="tokenizer"` (image decoder, no lookahead) the action of step k
    shapes the frame shown at step k.

    ## Rewards
    0.0, or `reward_fn(obs, info)` when given: the simulator models the world, not a task.

    ## Starting state
    `reset()` draws a seed clip (uniformly, from `np_random`) and returns its last seed frame as the first
    observation. Options: `{"clip": id}` picks the clip, `{"frames": uint8 (T, H, W, 3)}` gives the seed
    frames themselves (any size: they are scaled and cropped as in the paper), `{"seed_frames": T}` how
    many frames of the clip seed the episode (default 2, at most 15).

    ## Episode end
    Never terminates. `gym.make` truncates after `max_episode_steps` = 14 steps (the paper's horizon);
    longer episodes run in bounded memory (the engine slides its 16-frame context window).

    ## Info
    `tokens` (h, w) int64 codes of the frame, `surprise` its mean negative log-likelihood in nats per code
    under the world model (NaN for the seed frame at reset: it was given, not predicted), `frame_index`
    (seed frames are 0 .. T-1), `clip_id` (None for `options["frames"]`).

    ## Reproducibility and branching
    `reset(seed=s)` fixes the episode: the clip and the engine's sampler seed both come from `np_random`,
    and the engine's draws depend on that seed alone. `env.unwrapped.get_state()` copies the episode (KV
    cache, context, sampler state); `set_state(state)` restores it, so several futures can branch from one
    moment; `set_state(state, seed=k)` continues with another sampler seed (see there).

    ## Arguments
    `gym.make("OpenViCA-v0", bundle=None, clips=None, top_k=None, temperature=1.0, device="cpu",
    decoder=None, render_mode=None, reward_fn=None, seed_frames=2, context_frames=None, wavefront=None,
    max_episode_steps=14)`:
    `bundle` a bundle folder (default: the embedded tiny bundle), `clips` the clips episodes start from: a folder
    of clips (one subfolder of PNG/JPEG frames or one video per clip), a token store from `openvica data ingest
    --store-frames` (`*.zarr`, clips by their store ids) or a `ClipSource` (`openvica_sim.data.clips`; default: the
    embedded bundle's held-out clips),
    `top_k` and `temperature` the sampling (top_k None: the bundle's default; the paper recommends k = 1000), `device` where a bundle folder is
    loaded (a `Bundle` object stays where it is), `decoder` "video_decoder" or "tokenizer" (default: the video
    decoder when the bundle has one), `context_frames` the frames the world model sees at most (default
    the bundle's: the window it was trained on, 16 for the paper's), `wavefront` the width of wavefront decoding (row r of a frame's codes starts once row r - 1 has
    that many: 15 w + 16 world-model forwards a frame instead of 256; None is raster, `Simulator`), `max_episode_steps`
    the TimeLimit (gymnasium's rule: None keeps the registered 14, -1 removes it).

    ## Version history
    - v0: initial version (issue 3).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": FPS}

    def __init__(self, bundle: Bundle | str | os.PathLike | None = None,
                 clips: ClipSource | str | os.PathLike | None = None, top_k: int | None = None, temperature: float = 1.0,
                 device: str | torch.device = "cpu", decoder: str | None = None, render_mode: str | None = None,
                 reward_fn: RewardFn | None = None, seed_frames: int = MIN_SEED_FRAMES,
                 context_frames: int | None = None, wavefront: int | None = None):
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}: choose one of {self.metadata['render_modes']} or None")
        self._setup_simulator(bundle, clips, top_k, temperature, device, decoder, context_frames, wavefront)
        self.render_mode, self.reward_fn, self.seed_frames = render_mode, reward_fn, seed_frames
        size = self.bundle.frame_size
        self.observation_space = spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = spaces.Box(-1.0, 1.0, (2,), np.float32)
        self._state: SimState | None = None
        self._clip_id: str | None = None
        self._frame: np.ndarray | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        episode = draw_episode(self.np_random, self.clip_source, options, self.seed_frames)
        self._state = self.simulator.start(episode.frames[None], seeds=[episode.row_seed])
        self._clip_id, self._frame = episode.clip_id, episode.frames[-1]
        tokens = self._state.previous[0].cpu().numpy()  # the last seed frame's codes
        info = step_info(self._clip_id, self._state.next_frame_index - 1, tokens, float("nan"))
        return self._frame.copy(), info

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        action = check_actions(action, self.action_space.shape)
        out = self.simulator.step(self._state, action[None])
        self._frame = out.frames[0]
        obs = self._frame.copy()
        info = step_info(self._clip_id, out.frame_index, out.tokens[0], out.surprise[0])
        reward = 0.0 if self.reward_fn is None else float(self.reward_fn(obs, info))
        return obs, reward, False, False, info

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn('render() without a render_mode; make the env with render_mode="rgb_array"')
            return None
        if self._frame is None:
            raise gym.error.ResetNeeded("call reset() before render()")
        return self._frame.copy()

    def get_state(self) -> EnvState:
        """A copy of the running episode, to restore with `set_state` (branch several futures from here).

        The TimeLimit wrapper's step count is not part of it: call this on `env.unwrapped`.
        """
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() before get_state()")
        with torch.inference_mode():
            return EnvState(simulator=self._state.clone(), clip_id=self._clip_id, frame=self._frame.copy())

    def set_state(self, state: EnvState, seed: int | None = None) -> None:
        """Continue from a copy made by `get_state` (the copy stays reusable for further branches).

        With the same sampler seed the continuation repeats the original exactly, frame for frame. `seed`
        replaces the row's sampler seed (derived with `derive_seeds(seed, 1)`), for a different future. The
        codes of the next frame were already drawn (the video decoder's lookahead, see the class docstring),
        so a new seed changes the codes from the frame after it.
        """
        with torch.inference_mode():
            self._state = state.simulator.clone()
            if seed is not None:
                self._state.seeds.fill_(derive_seeds(seed, 1)[0])
        self._clip_id, self._frame = state.clip_id, state.frame.copy()

    def close(self) -> None:
        self._state = None
