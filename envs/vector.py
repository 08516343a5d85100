"""OpenViCA-v0 as a native vector env: N sub-envs, one batched engine call per step (the fast path).

    gym.make_vec("OpenViCA-v0", num_envs=N, vectorization_mode="vector_entry_point")

The engine keeps one `SimState` of N rows and decodes them together: one world-model forward per token
for all sub-envs, where N single envs would make N. Sub-env i behaves exactly as a single `OpenViCAEnv`
reset with the same seed (gymnasium's sync vector env seeds sub-env i with `seed + i`; so does this one),
because each row's samples depend only on its own sampler seed (docs/design.md "Determinism").

Lockstep. The engine advances all rows together: one context length, one sampler counter. So sub-envs
reset together: all start at `reset()`, none terminates, and all are truncated at the same step, which
makes every autoreset (Gymnasium's NEXT_STEP mode: the step after a truncation returns the sub-env's
reset observation, reward 0, terminated and truncated False) one of all rows at once. A partial reset
(`options["reset_mask"]` with some False) would need per-row contexts, and is refused.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from openvica_sim.bundle import FPS, Bundle
from openvica_sim.simulator import MIN_SEED_FRAMES, SimState

from .openvica_env import (MAX_EPISODE_STEPS, RewardFn, SimulatorEnvMixin, check_actions, draw_episode, step_info)
from openvica_sim.data.clips import ClipSource


def per_env_option(key: str, value: Any) -> bool:
    """Whether a reset option gives one value per sub-env (a list of clip ids, frames (N, T, H, W, 3)) rather
    than one for all of them (`RayVectorEnv` splits those over its actors by the same rule)."""
    if key == "clip":
        return value is not None and not isinstance(value, str)
    return key == "frames" and getattr(value, "ndim", None) == 5


def sub_env_seeds(seed: int | list[int | None] | None, num_envs: int) -> list[int | None]:
    """A vector env's `reset(seed=...)` as one seed per sub-env: an int gives sub-env i seed + i, None gives Nones.

    Raises:
        ValueError: a list whose length is not num_envs.
    """
    seeds = [seed + i for i in range(num_envs)] if isinstance(seed, int) else seed
    seeds = [None] * num_envs if seeds is None else list(seeds)
    if len(seeds) != num_envs:
        raise ValueError(f"got {len(seeds)} seeds for num_envs={num_envs}; pass one per sub-env, "
                         f"one int (sub-env i gets seed + i) or None")
    return seeds


class OpenViCAVectorEnv(SimulatorEnvMixin, VectorEnv):
    """N OpenViCA-v0 sub-envs stepped by one batched engine; spaces, options and info as `OpenViCAEnv`'s.

    Args: those of `OpenViCAEnv`, plus `num_envs` and `max_episode_steps` (default 14, the paper's horizon;
    None or -1 for endless episodes). Reset options apply to every sub-env, or per sub-env: `{"clip": [id] * N}`,
    `{"frames": uint8 (N, T, H, W, 3)}`. Infos are dicts of arrays with `_key` masks, as gymnasium's
    vector envs make them: `tokens` (N, h, w), `surprise` (N,), `frame_index` (N,), `clip_id` (N,) object.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": FPS, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, bundle: Bundle | str | os.PathLike | None = None,
                 clips: ClipSource | str | os.PathLike | None = None, top_k: int | None = None, temperature: float = 1.0,
                 device: str | torch.device = "cpu", decoder: str | None = None, render_mode: str | None = None,
                 reward_fn: RewardFn | None = None, seed_frames: int = MIN_SEED_FRAMES,
                 context_frames: int | None = None, max_episode_steps: int | None = MAX_EPISODE_STEPS,
                 wavefront: int | None = None):
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs} must be at least 1")
        if max_episode_steps == -1:  # gym.make's "no TimeLimit", so the same kwargs work in every vectorization mode
            max_episode_steps = None
        if max_episode_steps is not None and max_episode_steps < 1:
            raise ValueError(f"max_episode_steps={max_episode_steps} must be at least 1, or None (or -1) for no limit")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}: choose one of {self.metadata['render_modes']} or None")
        self.num_envs, self.max_episode_steps = num_envs, max_episode_steps
        self._setup_simulator(bundle, clips, top_k, temperature, device, decoder, context_frames, wavefront)
        self.render_mode, self.reward_fn, self.seed_frames = render_mode, reward_fn, seed_frames
        size = self.bundle.frame_size
        self.single_observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.sub_env_np_randoms: list[np.random.Generator | None] = [None] * num_envs  # sub-env i's np_random
        self._state: SimState | None = None
        self._clip_ids: list[str | None] = [None] * num_envs
        self._frames: np.ndarray | None = None  # (N, S, S, 3) the current observations
        self._steps = np.zeros(num_envs, dtype=np.int64)  # steps since each sub-env's reset
        self._autoreset = np.zeros(num_envs, dtype=np.bool_)  # truncated at the last step: reset at this one

    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-env; `seed` an int (sub-env i gets seed + i), a list of N, or None."""
        super().reset(seed=seed if isinstance(seed, int) else None)
        seeds = sub_env_seeds(seed, self.num_envs)
        for i, s in enumerate(seeds):  # as gymnasium.Env.reset(seed=s) does in each sub-env of a sync vector env
            if s is not None or self.sub_env_np_randoms[i] is None:
                self.sub_env_np_randoms[i], _ = seeding.np_random(s)
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is not None and not np.all(mask):
            raise ValueError(f"reset_mask={np.asarray(mask).tolist()}: the sub-envs of OpenViCAVectorEnv run in "
                             f"lockstep in one batched engine and reset together; reset all of them (no mask)")
        return self._start(self._per_env_options(options))

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._state is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        actions = check_actions(actions, self.action_space.shape)
        zeros = np.zeros(self.num_envs, dtype=np.bool_)
        if self._autoreset.any():  # NEXT_STEP autoreset; lockstep makes it all sub-envs (module docstring)
            assert self._autoreset.all(), "sub-envs fell out of lockstep"
            obs, infos = self._start([{} for _ in range(self.num_envs)])
            return obs, np.zeros(self.num_envs), zeros, zeros.copy(), infos
        out = self.simulator.step(self._state, actions)
        self._frames = out.frames
        self._steps += 1
        truncated = (self._steps >= self.max_episode_steps if self.max_episode_steps is not None else zeros.copy())
        self._autoreset = truncated.copy()
        infos = self._batched_infos(out.frame_index, out.tokens, out.surprise.astype(np.float64))
        rewards = np.zeros(self.num_envs)
        if self.reward_fn is not None:
            for i in range(self.num_envs):
                info = step_info(self._clip_ids[i], out.frame_index, out.tokens[i], out.surprise[i])
                rewards[i] = float(self.reward_fn(self._frames[i].copy(), info))
        return self._frames.copy(), rewards, zeros, truncated, infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        """The current frame of every sub-env, as gymnasium's sync vector env returns them."""
        return render_frames(self.render_mode, self._frames)

    def close_extras(self, **kwargs) -> None:
        self._state = None

    # ---- helpers ---------------------------------------------------------------------------------
    def _start(self, options: list[dict]) -> tuple[np.ndarray, dict[str, Any]]:
        """Draw every sub-env's episode from its own np_random and start them as one batch."""
        episodes = [draw_episode(rng, self.clip_source, opts, self.seed_frames)
                    for rng, opts in zip(self.sub_env_np_randoms, options)]
        lengths = sorted({len(e.frames) for e in episodes})
        if len(lengths) > 1:
            raise ValueError(f"sub-envs got different numbers of seed frames {lengths}; the batched engine needs "
                             f"the same T for all: give options['frames'] of one length")
        self._state = self.simulator.start(np.stack([e.frames for e in episodes]), seeds=[e.row_seed for e in episodes])
        self._clip_ids = [e.clip_id for e in episodes]
        self._frames = np.stack([e.frames[-1] for e in episodes])
        self._steps[:] = 0
        self._autoreset[:] = False
        tokens = self._state.previous[:self.num_envs].cpu().numpy()  # the last seed frames' codes
        infos = self._batched_infos(self._state.next_frame_index - 1, tokens, np.full(self.num_envs, np.nan))
        return self._frames.copy(), infos

    def _per_env_options(self, options: dict) -> list[dict]:
        """Split reset options into one dict per sub-env: a list of N clip ids or (N, T, H, W, 3) frames go
        one per sub-env, anything else to all of them."""
        per_env = [dict(options) for _ in range(self.num_envs)]
        clips, frames = options.get("clip"), options.get("frames")
        if per_env_option("clip", clips):
            if len(clips) != self.num_envs:
                raise ValueError(f"options['clip'] lists {len(clips)} clips for num_envs={self.num_envs}; "
                                 f"give one id for all sub-envs or one per sub-env")
            for opts, clip in zip(per_env, clips):
                opts["clip"] = clip
        if per_env_option("frames", frames):
            if len(frames) != self.num_envs:
                raise ValueError(f"options['frames'] holds {len(frames)} clips for num_envs={self.num_envs}; give "
                                 f"(T, H, W, 3) for all sub-envs or (N, T, H, W, 3), one clip per sub-env")
            for opts, clip_frames in zip(per_env, frames):
                opts["frames"] = clip_frames
        return per_env

    def _batched_infos(self, frame_index: int, tokens: np.ndarray, surprise: np.ndarray) -> dict[str, Any]:
        """The sub-envs' `step_info`s as arrays with all-True `_key` masks, the layout `VectorEnv._add_info` builds."""
        n = self.num_envs
        clip_ids = np.empty(n, dtype=object)
        clip_ids[:] = self._clip_ids
        infos = {"clip_id": clip_ids, "frame_index": np.full(n, frame_index, dtype=np.int64),
                 "tokens": tokens, "surprise": surprise}
        return {**infos, **{f"_{key}": np.ones(n, dtype=np.bool_) for key in infos}}


def render_frames(render_mode: str | None, frames: np.ndarray | None) -> tuple[np.ndarray, ...] | None:
    """A vector env's `render()`: copies of the current frames (N, S, S, 3), one per sub-env (None without a mode).

    Raises:
        gym.error.ResetNeeded: before the first reset.
    """
    if render_mode is None:
        gym.logger.warn('render() without a render_mode; make the env with render_mode="rgb_array"')
        return None
    if frames is None:
        raise gym.error.ResetNeeded("call reset() before render()")
    return tuple(frame.copy() for frame in frames)
