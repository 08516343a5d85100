"""OpenViCA-v0's vector env spread over Ray actors: N sub-envs in A batched engines, stepped in parallel.

    envs = gym.make_vec("OpenViCA-Ray-v0", num_envs=32, num_actors=4, use_gpu=True)   # 8 rows per GPU
    envs = RayVectorEnv(num_envs=32, num_actors=4, bundle="bundle/", use_gpu=True)    # the same

Actor j hosts a local `OpenViCAVectorEnv` of sub-envs [lo_j, hi_j), N / A of them (the first N mod A actors one
more), and steps them in one batched engine call; all actors step at once and the driver concatenates their
observations, rewards and infos. Reset and the NEXT_STEP autoreset happen inside the actors. Spaces, reset
options and the info layout (dicts of arrays with `_key` masks) are those of `OpenViCAVectorEnv`.

Same seeds, same frames: sub-env i is seeded with `seed + i` whichever actor hosts it, and a row's draws depend
on its sampler seed alone (docs/design.md "Determinism"), so this env returns what `OpenViCAVectorEnv` returns,
bit for bit where the engine's batch invariance holds: measured on CPU in float32, where decode widths of 4 and
more agree bitwise (the test compares engines of 3 + 2 rows with one of 5). On a GPU in bf16 different widths
need not round alike (docs/design.md), and the actors' engines are N / A rows wide, not N: there the two envs agree
in distribution, and bit for bit only with the same rows per engine.

Across processes the env takes folders, not models: `bundle` a bundle folder (default the embedded bundle),
`clips` a folder of clips or a token store, None (the default clips) or a picklable `ClipSource` (e.g.
`SyntheticClips()`);
folders must be readable on every node. A `reward_fn` runs in the actors, so it must pickle (cloudpickle takes
functions and closures).

The registry reaches it through its own id, `OpenViCA-Ray-v0`, whose only entry point is this vector env
(`gym.make` of it fails: one env cannot be spread over actors; use OpenViCA-v0).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import ray
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space
from ray.exceptions import ActorDiedError

from openvica_sim.bundle import FPS
from openvica_sim.distributed import bundle_folder, check_resources, connect, use_reserved_cpus
from openvica_sim.simulator import MIN_SEED_FRAMES

from .openvica_env import MAX_EPISODE_STEPS, RewardFn, check_actions
from openvica_sim.data.clips import ClipSource
from .vector import OpenViCAVectorEnv, per_env_option, render_frames, sub_env_seeds


class RayVectorEnv(VectorEnv):
    """N OpenViCA-v0 sub-envs over `num_actors` Ray actors; the API, spaces and infos of `OpenViCAVectorEnv`.

    Args: those of `OpenViCAVectorEnv` (bundle a folder, not a `Bundle`; device follows use_gpu), plus
        num_actors: actors (at most num_envs); each holds num_envs / num_actors sub-envs.
        use_gpu: one GPU per actor (`gpus_per_actor` of them), device "cuda"; otherwise CPU actors.
        cpus_per_actor: Ray CPUs each actor reserves.
        address: the Ray cluster (default RAY_ADDRESS, else a new local one, shut down by `close`).

    Raises:
        ValueError: num_actors outside 1..num_envs, or a cluster too small for the actors.
        TypeError / FileNotFoundError: a `Bundle` object or a missing bundle folder.
        RuntimeError: an actor failed to build its env (the message carries the actor's error).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": FPS, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, num_actors: int = 1, bundle: str | os.PathLike | None = None,
                 clips: ClipSource | str | os.PathLike | None = None, top_k: int | None = None,
                 temperature: float = 1.0,
                 use_gpu: bool = False, gpus_per_actor: float = 1, cpus_per_actor: float = 1,
                 address: str | None = None, decoder: str | None = None, render_mode: str | None = None,
                 reward_fn: RewardFn | None = None, seed_frames: int = MIN_SEED_FRAMES,
                 context_frames: int | None = None, max_episode_steps: int | None = MAX_EPISODE_STEPS,
                 wavefront: int | None = None):
        if not 1 <= num_actors <= num_envs:
            raise ValueError(f"num_actors={num_actors} must lie in 1..num_envs={num_envs}: every actor hosts at "
                             f"least one sub-env")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode={render_mode!r}: choose one of {self.metadata['render_modes']} or None")
        self.num_envs, self.num_actors, self.render_mode = num_envs, num_actors, render_mode
        self.max_episode_steps = None if max_episode_steps == -1 else max_episode_steps
        sizes = [num_envs // num_actors + (j < num_envs % num_actors) for j in range(num_actors)]
        bounds = np.cumsum([0, *sizes])
        self._rows = [slice(int(lo), int(hi)) for lo, hi in zip(bounds[:-1], bounds[1:])]  # actor j's sub-envs
        kwargs = dict(bundle=bundle_folder(bundle), clips=_absolute(clips), top_k=top_k,
                      temperature=temperature, device="cuda" if use_gpu else "cpu", decoder=decoder,
                      render_mode=render_mode, reward_fn=reward_fn, seed_frames=seed_frames,
                      context_frames=context_frames, max_episode_steps=max_episode_steps, wavefront=wavefront)
        self._owns_ray = connect(address)
        self._actors: list = []
        try:
            gpus = gpus_per_actor if use_gpu else 0
            check_resources(num_actors, cpus_per_actor, gpus, "lower num_actors or the CPUs/GPUs per actor, or "
                            "point RAY_ADDRESS at a larger cluster")
            host = ray.remote(_EnvHost).options(num_cpus=cpus_per_actor, num_gpus=gpus)
            self._actors = [host.remote(rows.stop - rows.start, kwargs, cpus_per_actor) for rows in self._rows]
            description = ray.get([actor.describe.remote() for actor in self._actors])[0]
        except ActorDiedError as e:  # the env's constructor raised in an actor: bad arguments, a bad bundle
            self.close_extras()
            raise RuntimeError(f"an OpenViCA-Ray-v0 actor failed to start: {e}") from e
        except BaseException:
            self.close_extras()
            raise
        self.single_observation_space = description["single_observation_space"]
        self.single_action_space = description["single_action_space"]
        self.action_conditioned, self.action_coding = description["action_conditioned"], description["action_coding"]
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self._frames: np.ndarray | None = None  # (N, S, S, 3) the current observations

    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-env; `seed` an int (sub-env i gets seed + i, on whichever actor), a list of N, or None."""
        super().reset(seed=seed if isinstance(seed, int) else None)
        seeds = sub_env_seeds(seed, self.num_envs)
        options = dict(options or {})
        for key, value in options.items():
            if per_env_option(key, value) and len(value) != self.num_envs:
                raise ValueError(f"options[{key!r}] holds {len(value)} values for num_envs={self.num_envs}; give "
                                 f"one for all sub-envs or one per sub-env")
        share = lambda rows: {k: v[rows] if per_env_option(k, v) else v for k, v in options.items()}  # noqa: E731
        calls = [actor.reset.remote(seeds[rows], share(rows)) for actor, rows in zip(self._actors, self._rows)]
        obs, infos = zip(*ray.get(calls))
        self._frames = np.concatenate(obs)
        return self._frames.copy(), _concatenate_infos(infos)

    def step(self, actions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if self._frames is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        actions = check_actions(actions, self.action_space.shape)
        results = ray.get([actor.step.remote(actions[rows]) for actor, rows in zip(self._actors, self._rows)])
        obs, rewards, terminated, truncated, infos = zip(*results)
        self._frames = np.concatenate(obs)
        return (self._frames.copy(), np.concatenate(rewards), np.concatenate(terminated), np.concatenate(truncated),
                _concatenate_infos(infos))

    def render(self) -> tuple[np.ndarray, ...] | None:
        """The current frame of every sub-env, as `OpenViCAVectorEnv.render` returns them."""
        return render_frames(self.render_mode, self._frames)

    def close_extras(self, **kwargs) -> None:
        """End the actors (and the local Ray cluster, when this env started it)."""
        if ray.is_initialized():  # not when garbage collected after the cluster went down
            for actor in self._actors:
                ray.kill(actor, no_restart=True)
        self._actors, self._frames = [], None
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False


def _absolute(clips: ClipSource | str | os.PathLike | None) -> ClipSource | str | None:
    """A clip folder or store as an absolute path (actors need not share the driver's working directory)."""
    return str(Path(clips).expanduser().resolve()) if isinstance(clips, (str, os.PathLike)) else clips


def _concatenate_infos(infos: tuple[dict, ...]) -> dict[str, Any]:
    """The actors' vector infos as one: each key's arrays (values and `_key` masks) joined along the sub-envs."""
    keys = list(infos[0])
    assert all(list(info) == keys for info in infos), "actors returned different info keys: lockstep broken"
    return {key: np.concatenate([info[key] for info in infos]) for key in keys}


class _EnvHost:
    """Inside one actor: a local `OpenViCAVectorEnv` with this actor's share of the sub-envs."""

    def __init__(self, num_envs: int, kwargs: dict, cpus: float):
        use_reserved_cpus(cpus)
        self.env = OpenViCAVectorEnv(num_envs=num_envs, **kwargs)

    def describe(self) -> dict:
        env = self.env
        return {"single_observation_space": env.single_observation_space,
                "single_action_space": env.single_action_space,
                "action_conditioned": env.action_conditioned, "action_coding": env.action_coding}

    def reset(self, seeds: list[int | None], options: dict):
        return self.env.reset(seed=seeds, options=options)

    def step(self, actions: np.ndarray):
        return self.env.step(actions)
