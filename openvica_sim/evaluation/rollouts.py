"""The evaluation's rollouts: every variant of every clip from one prefill, batched, cached per clip.

A variant is one future of a clip: a top-k and the ego commands of the N + 1 predicted frames (one frame more than
shown: VDEC's lookahead). The top-k sweep of Table V and the ego-adherence branches are variants of the same clip:
`Simulator.start` prefills a batch of clips once, and every variant is a `branch` of that state (its own top-k) run
by `Simulator.predict`. Every variant of a clip uses the clip's sampler seed, sha256(seed:clip id), so variants
differ only in what they vary (common random numbers), and a clip's tokens depend neither on its batch nor on the
worker that ran it.

    rollouts/<variant>/<clip id>.npz     tokens (N + 1, h, w) uint16, surprise (N + 1,) float32, written atomically

A killed evaluation resumes: only missing files are generated. `rollouts/settings.json` holds what the tokens
depend on (bundle, sampler seed, temperature, T, N, clips); another evaluation in the same folder is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

SETTINGS_NAME = "settings.json"


@dataclass(eq=False)
class Variant:
    """One future of a clip: a name (its cache folder), a top-k, and commands (N + 1, 2) in [-1, 1] or None."""

    name: str
    top_k: int
    actions: np.ndarray | None = None


@dataclass(eq=False)
class ClipJob:
    """What a worker needs to roll out one clip: its seed tokens (T, h, w) and seed commands (T, 2) or None,
    the sampler seed, and the variants still missing from the cache."""

    clip_id: str
    seed_tokens: np.ndarray
    seed_actions: np.ndarray | None
    sampler_seed: int
    num_frames: int
    variants: list[Variant] = field(default_factory=list)


def sampler_seed(seed: int, clip_id: str) -> int:
    """A clip's sampler seed: the first 8 bytes of sha256(f"{seed}:{clip_id}") as a non-negative int64."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{clip_id}".encode()).digest()[:8], "little") & (2**63 - 1)


def rollout_jobs(simulator, jobs: list[ClipJob]) -> list[dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Every variant of a batch of clips (one `start`, one `branch` + `predict` per variant): per job
    {variant name: (tokens (N + 1, h, w) uint16, surprise (N + 1,) float32)}. A `SimulatorPool` function too.

    Raises:
        ValueError: jobs of one batch with different variant lists, horizons or seed shapes.
    """
    names = [[v.name for v in j.variants] for j in jobs]
    if len({tuple(n) for n in names}) > 1 or len({(j.num_frames, j.seed_tokens.shape) for j in jobs}) > 1:
        raise ValueError("one batch of evaluation jobs must share its variants, horizon and seed shape")
    first = jobs[0]
    seeds = [j.sampler_seed for j in jobs]
    actions = None if first.seed_actions is None else np.stack([j.seed_actions for j in jobs])
    state = simulator.start(tokens=np.stack([j.seed_tokens for j in jobs]), seeds=seeds, actions=actions)
    out: list[dict] = [{} for _ in jobs]
    rows = list(range(len(jobs)))
    for k, variant in enumerate(first.variants):
        branch = simulator.branch(state, rows, seeds, top_k=variant.top_k)
        commands = None if variant.actions is None else np.stack([j.variants[k].actions for j in jobs])
        tokens, surprise = simulator.predict(branch, first.num_frames, commands)
        tokens, surprise = tokens.cpu().numpy().astype(np.uint16), surprise.float().cpu().numpy()
        for i in rows:
            out[i][variant.name] = (tokens[i], surprise[i])
    return out


class RolloutCache:
    """rollouts/<variant>/<clip id>.npz under an evaluation folder (module docstring)."""

    def __init__(self, root: str | os.PathLike, settings: dict):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        file = self.root / SETTINGS_NAME
        if file.is_file():
            old = json.loads(file.read_text())
            if old != settings:
                changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
                raise ValueError(f"{self.root} holds rollouts of another evaluation (it differs in {changed}); use a "
                                 f"new --out folder, or the same settings to resume")
        else:
            _atomic_write(file, json.dumps(settings, indent=2, sort_keys=True).encode())

    def path(self, variant: str, clip_id: str) -> Path:
        return self.root / variant / f"{_safe(clip_id)}.npz"

    def has(self, variant: str, clip_id: str) -> bool:
        return self.path(variant, clip_id).is_file()

    def load(self, variant: str, clip_id: str) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.path(variant, clip_id)) as data:
            return data["tokens"].astype(np.int64), data["surprise"]

    def save(self, variant: str, clip_id: str, tokens: np.ndarray, surprise: np.ndarray) -> None:
        import io

        buffer = io.BytesIO()
        np.savez(buffer, tokens=tokens, surprise=surprise)
        path = self.path(variant, clip_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, buffer.getvalue())


def run_jobs(jobs: list[ClipJob], cache: RolloutCache, simulator=None, pool=None, batch_size: int = 8,
             progress: bool = True) -> None:
    """Roll out every job's variants (batches of `batch_size` clips alike in their variants) on `simulator` in this
    process or on a `SimulatorPool`, saving each clip's results to the cache as its batch finishes."""
    from tqdm.auto import tqdm

    groups: dict[tuple, list[ClipJob]] = {}
    for job in jobs:
        if job.variants:
            groups.setdefault(tuple(v.name for v in job.variants), []).append(job)
    batches = [group[i:i + batch_size] for group in groups.values() for i in range(0, len(group), batch_size)]
    if not batches:
        return

    def save(batch: list[ClipJob], results: list[dict]) -> None:
        for job, result in zip(batch, results):
            for name, (tokens, surprise) in result.items():
                cache.save(name, job.clip_id, tokens, surprise)

    if pool is not None:
        for done in pool.map(_pool_batch, batches, batch_size=1, progress=progress):
            save(done.items[0], done.results[0])
        return
    with tqdm(total=sum(map(len, batches)), desc="eval rollouts", unit="clip", disable=not progress) as bar:
        for batch in batches:
            save(batch, rollout_jobs(simulator, batch))
            bar.update(len(batch))


def _pool_batch(simulator, batches: list[list[ClipJob]]) -> list[list[dict]]:
    """A `SimulatorPool` function over items that are whole batches of jobs (one item per call)."""
    return [rollout_jobs(simulator, batch) for batch in batches]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
