"""Gymnasium environments over the simulator (installed as openvica_sim.envs).

`import openvica_sim` registers them (there is no plugin entry point in Gymnasium 1.x), so

    import gymnasium as gym, openvica_sim
    env = gym.make("OpenViCA-v0")                      # or gym.make("openvica_sim:OpenViCA-v0")
    envs = gym.make_vec("OpenViCA-v0", num_envs=8)     # the native vector env: one batched engine
    envs = gym.make_vec("OpenViCA-Ray-v0", num_envs=32, num_actors=4, use_gpu=True)  # 4 engines on Ray actors

OpenViCA-Ray-v0 is OpenViCA-v0 (same spaces, dynamics, seeds and frames) executed by `RayVectorEnv`: a backend,
not a new env, registered under its own id because gymnasium's vectorization modes are a closed set. It has
only a vector entry point (one env cannot be spread over actors: `gym.make` it as OpenViCA-v0).

This module imports only gymnasium; the env classes (and torch, and ray) load when an env is made.
"""

from __future__ import annotations

import gymnasium

# id -> registration. New spaces or dynamics bump the version (STYLE.md 4) and the env docstring's history.
ENVS: dict[str, dict] = {
    "OpenViCA-v0": dict(
        entry_point="openvica_sim.envs.openvica_env:OpenViCAEnv",
        vector_entry_point="openvica_sim.envs.vector:OpenViCAVectorEnv",
        max_episode_steps=14,  # the paper's horizon: N = 14 frames after T = 2 seed frames
    ),
    "OpenViCA-Ray-v0": dict(
        vector_entry_point="openvica_sim.envs.ray_vector:RayVectorEnv",  # OpenViCA-v0's sub-envs on Ray actors
        max_episode_steps=14,  # as OpenViCA-v0
    ),
}

_LAZY = {"OpenViCAEnv": "openvica_env", "EnvState": "openvica_env", "OpenViCAVectorEnv": "vector",
         "RayVectorEnv": "ray_vector"}
__all__ = ["ENVS", "register_envs", *_LAZY]  # clip sources: openvica_sim.data.clips


def register_envs() -> None:
    """Register every env of `ENVS` with gymnasium, skipping ids already registered (a second import)."""
    for env_id, registration in ENVS.items():
        if env_id not in gymnasium.registry:
            gymnasium.register(id=env_id, **registration)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
