"""Env stepping speed: the native vector env (one batched engine call per step) against N single envs stepped
one by one (what a sync vector env does).

Both run through gymnasium as users do: `gym.make_vec(..., vectorization_mode="vector_entry_point")` and N x
`gym.make`, on one random bundle of a preset (a random model decodes as fast as a trained one). Each env is
reset and stepped once before timing (the first step also generates the video decoder's lookahead frame);
then `--steps` steps are timed, with no time limit, so no autoreset falls in the timed part. One JSON line per
(mode, num_envs) on stdout; frames_per_s counts the frames of all envs. The engine decodes at least 4 rows
(docs/design.md "Determinism"), so below 4 envs a vector step costs as much as one of 4 envs.

    .venv/bin/python benchmarks/env_step.py --json --preset tiny --num-envs 1 4 --steps 6
    .venv/bin/python benchmarks/env_step.py --json --preset lwm-7b --device cuda --num-envs 1 8 32 --steps 4
"""

from __future__ import annotations

import argparse
import statistics

import gymnasium as gym
import torch

from _common import DTYPES, device_name, emit, git_sha, log, timed
import openvica_sim  # noqa: F401  (registers OpenViCA-v0)
from openvica_sim.bundle import PRESETS, create_random_bundle

ENV_ID = "OpenViCA-v0"
MODES = ("vector", "single_loop")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--num-envs", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--steps", type=int, default=14, help="timed steps per env (after one warm-up step)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--decoder", choices=["video_decoder", "tokenizer"], default=None, help="default: the video decoder")
    p.add_argument("--top-k", type=int, default=1000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="world model dtype; default bf16 on cuda, fp32 on cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 on a shared CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="JSON lines only (no table on stderr)")
    args = p.parse_args(argv)
    if args.steps < 1 or min(args.num_envs) < 1:
        p.error("need --steps >= 1 and --num-envs >= 1")
    args.dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    return args


def measure_vector(bundle, args, num_envs: int, device: torch.device) -> list[float]:
    envs = gym.make_vec(ENV_ID, num_envs=num_envs, vectorization_mode="vector_entry_point", bundle=bundle,
                        decoder=args.decoder, top_k=args.top_k, max_episode_steps=None)
    try:
        envs.action_space.seed(args.seed)
        envs.reset(seed=args.seed)
        envs.step(envs.action_space.sample())  # warm-up: prompt cache, lookahead frame
        return [timed(lambda: envs.step(envs.action_space.sample()), device)[1] for _ in range(args.steps)]
    finally:
        envs.close()


def measure_single_loop(bundle, args, num_envs: int, device: torch.device) -> list[float]:
    envs = [gym.make(ENV_ID, bundle=bundle, decoder=args.decoder, top_k=args.top_k, max_episode_steps=-1)
            for _ in range(num_envs)]
    try:
        for i, env in enumerate(envs):
            env.action_space.seed(args.seed + i)
            env.reset(seed=args.seed + i)
            env.step(env.action_space.sample())  # warm-up, as above

        def step_all():
            for env in envs:
                env.step(env.action_space.sample())

        return [timed(step_all, device)[1] for _ in range(args.steps)]
    finally:
        for env in envs:
            env.close()


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    log(f"building a random {args.preset!r} bundle on {device} in {args.dtype} ...")
    bundle = create_random_bundle(args.preset, seed=args.seed, device=device, dtype=DTYPES[args.dtype])
    common = {"bench": "env_step", "git": git_sha(), "device": device_name(device), "dtype": args.dtype,
              "preset": args.preset, "decoder": args.decoder or "video_decoder", "top_k": args.top_k, "warmup": 1}
    if device.type == "cpu":
        common["threads"] = torch.get_num_threads()
    runs = {"vector": measure_vector, "single_loop": measure_single_loop}
    records = []
    try:
        for num_envs in args.num_envs:
            for mode in args.modes:
                log(f"{mode} with {num_envs} env(s) ...")
                seconds = runs[mode](bundle, args, num_envs, device)
                record = {**common, "mode": mode, "num_envs": num_envs, "steps": args.steps,
                          "seconds": sum(seconds), "step_ms_p50": 1e3 * statistics.median(seconds),
                          "frames_per_s": num_envs * args.steps / sum(seconds)}
                emit(record)
                records.append(record)
    finally:
        if not args.json:
            log(f"{'mode':>12} {'envs':>4} {'steps':>5} {'step ms p50':>11} {'frames/s':>9}")
            for r in records:
                log(f"{r['mode']:>12} {r['num_envs']:>4} {r['steps']:>5} {r['step_ms_p50']:>11.1f} {r['frames_per_s']:>9.3f}")
        del bundle
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
