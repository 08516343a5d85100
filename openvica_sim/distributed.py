"""Scale-out on Ray (docs/design.md "Scale-out (Ray)"): a pool of simulator actors, and the ingest over Ray tasks.

    with SimulatorPool(bundle_dir, num_workers=8, use_gpu=True) as pool:      # one actor per GPU
        for batch in pool.map(rollout_batch, requests, batch_size=32):       # in order of completion
            save(batch.items, batch.results)

An actor (`SimulatorActor`) loads the bundle once, onto its own GPU (or the CPU in tests), and serves batched
calls `fn(simulator, items) -> list[result]`, one result per item. `fn` travels by reference when it is an
importable top-level function (cloudpickle pickles those by name), so work such as "generate and commit these
samples" is one function of the caller's module, e.g. `rollout_batch` below.

The driver cuts the items into batches and keeps `calls_per_actor` calls in flight on every actor (`ray.wait`),
so an actor never idles while its next batch is shipped. Failures: an actor's death surfaces on its pending
calls as `RayActorError` (Ray 2.60, measured: `ActorUnavailableError` while Ray restarts it, `ActorDiedError`
once its `max_restarts` are spent); those batches go back to the front of the queue and run on the living
actors. The dead actor gets a probe call that Ray retries (max_task_retries=-1) until the restarted actor has
reloaded the bundle; it serves again once the probe returns, and leaves the pool if its restarts are spent. A
batch that fails `max_batch_failures` times (one that kills every actor it lands on) or a pool without actors
left ends the map with a RuntimeError; an exception raised by `fn` itself is not a failure of the actor and
propagates at once, as the `RayTaskError` Ray raises (an instance of the original exception class, with its
message and remote traceback).

Results are identical wherever a batch ran: a rollout's draws depend on its sampler seed alone (docs/design.md
"Determinism"), so a retried batch gives what the first attempt would have given. A batch whose actor died may
have run in part or in full before (Ray: "the task may or may not have been executed"), so `fn`'s side effects
must be idempotent, as the scenario generator's per-clip commits are.

The core modules import no ray; this module is the edge that does.
"""

from __future__ import annotations

import os
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple

import numpy as np
import ray
import torch
from ray.exceptions import ActorDiedError, ObjectLostError, RayActorError
from tqdm.auto import tqdm

from .bundle import read_meta
from .simulator import Rollout, Simulator

# A call fails with these when its actor (or the node holding its result) died: requeue it, never when fn raised.
ACTOR_FAILURES = (RayActorError, ObjectLostError)


def connect(address: str | None = None) -> bool:
    """Join Ray unless this process already did: the cluster at `address`, else `RAY_ADDRESS`, else a new local
    one. Returns True when this call initialised Ray (its caller shuts it down again)."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS")
    try:
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    except ConnectionError as e:
        hint = auth_hint()
        raise ConnectionError(f"{e}{'; ' + hint if hint else ''}") from e
    return True


def auth_hint() -> str | None:
    """Why joining a cluster may fail on this machine, and what to set, when the likely cause is Ray's token auth:
    once `ray.init` has run here, Ray keeps a token in ~/.ray/auth_token and a later `ray start --head` turns
    token auth on, while a driver without RAY_AUTH_MODE does not send it ("Failed to connect to Ray cluster at ...",
    which does not say why)."""
    token = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
    if os.environ.get("RAY_AUTH_MODE") or not token.is_file():
        return None
    return (f"this machine has a Ray auth token ({token}), so a cluster started here with `ray start --head` "
            f"expects it: set RAY_AUTH_MODE=token for this command (or RAY_AUTH_MODE=disabled for both `ray start` "
            f"and this command); see the README, \"Scale-out on Ray\"")


def bundle_folder(bundle: str | os.PathLike | None) -> str:
    """The absolute bundle folder an actor loads (None: the embedded default), checked on the driver first.

    Raises:
        TypeError: a loaded `Bundle` (actors live in other processes: pass its folder, see `save_bundle`).
        FileNotFoundError / ValueError: no bundle at the path, or one of another format version (`read_meta`).
    """
    if bundle is None:
        from . import embedded

        bundle = embedded.bundle_path()
    if not isinstance(bundle, (str, os.PathLike)):
        raise TypeError(f"bundle={type(bundle).__name__}: Ray actors load the bundle themselves, so pass a bundle "
                        f"folder (write a loaded one with openvica_sim.bundle.save_bundle) or None for the default")
    path = Path(bundle).expanduser().resolve()
    read_meta(path)
    return str(path)


def use_reserved_cpus(cpus: float) -> None:
    """In a Ray actor or task: run as many torch threads as the CPUs it reserved (at least 1).

    Ray sets OMP_NUM_THREADS to them only when the driver's environment has none; an inherited OMP_NUM_THREADS=2
    gave each of 2 pool actors on 2 cores 2 threads, and the pool ran at 0.35 of linear (0.85 with this).
    """
    torch.set_num_threads(max(1, int(cpus)))


INGEST_TASK_CPUS = 1


# ---- the actor --------------------------------------------------------------------------------------------------

class SimulatorActor:
    """One simulator per Ray actor: loads the bundle once, then runs batched calls on it.

    Plain class; the pool makes it an actor with `ray.remote(SimulatorActor).options(...)` and its resources.
    """

    def __init__(self, bundle: str, device: str, simulator_kwargs: dict, cpus: float):
        from .bundle import load_bundle

        use_reserved_cpus(cpus)
        self.simulator = Simulator(load_bundle(bundle, device=device), **simulator_kwargs)

    def run(self, fn: Callable[[Simulator, list], list], items: list) -> list:
        """`fn(simulator, items)`, checked to give one result per item.

        Raises:
            TypeError: `fn` returned something that is not a list of len(items) results.
        """
        results = fn(self.simulator, items)
        if not isinstance(results, list) or len(results) != len(items):
            got = f"{len(results)} results" if isinstance(results, list) else type(results).__name__
            raise TypeError(f"{getattr(fn, '__qualname__', fn)} returned {got} for {len(items)} items; a pool function "
                            f"returns a list with one result per item, in the items' order")
        return results

    def pid(self) -> int:
        """The actor's process id (tests kill it); also the probe that tells a restarted actor is ready."""
        return os.getpid()


# ---- the pool ---------------------------------------------------------------------------------------------------

class BatchResult(NamedTuple):
    """One finished batch: `items[start:start + len(items)]` of the map's input and their results."""

    start: int
    items: list
    results: list


class SimulatorPool:
    """Simulator actors on Ray that run batched calls, with requeue on actor failure (module docstring).

    Args:
        bundle: a bundle folder (None: the embedded default); every actor loads it once.
        num_workers: actors (the scenario spec's `scaling.num_workers`).
        use_gpu: one GPU per actor (`gpus_per_actor` of them; fractions share a GPU) and device "cuda";
            otherwise CPU actors (tests). The scenario spec's `scaling.use_gpu`.
        simulator_kwargs: for `Simulator(bundle, **simulator_kwargs)` (top_k, temperature, decoder, ...).
        address: the Ray cluster; default `RAY_ADDRESS`, else a new local cluster (shut down by `close`).
            An already initialised Ray is used as it is.
        max_restarts: how often Ray restarts each actor after its process died (it reloads the bundle).
        max_batch_failures: actor deaths one batch may meet before the map gives up on it.
        cpus_per_actor: Ray CPUs each actor reserves; it runs that many torch threads (at least 1).
        calls_per_actor: calls in flight per actor: 2 keeps an actor busy while the next batch is shipped.

    Raises:
        ValueError: bad counts, or a cluster with fewer GPUs or CPUs than the actors need (they would wait forever).
        FileNotFoundError / TypeError: see `bundle_folder`.
        RuntimeError: an actor failed to start (the message carries its error, e.g. a bad simulator kwarg).
    """

    def __init__(self, bundle: str | os.PathLike | None = None, num_workers: int = 1, use_gpu: bool = False,
                 gpus_per_actor: float = 1, simulator_kwargs: dict | None = None, address: str | None = None,
                 max_restarts: int = 3, max_batch_failures: int = 3, cpus_per_actor: float = 1,
                 calls_per_actor: int = 2):
        if num_workers < 1:
            raise ValueError(f"num_workers={num_workers} must be at least 1")
        if use_gpu and gpus_per_actor <= 0:
            raise ValueError(f"gpus_per_actor={gpus_per_actor} must be positive with use_gpu=True")
        if max_restarts < 0 or max_batch_failures < 1 or calls_per_actor < 1:
            raise ValueError(f"max_restarts={max_restarts} must be >= 0, max_batch_failures={max_batch_failures} "
                             f"and calls_per_actor={calls_per_actor} >= 1")
        self.bundle = bundle_folder(bundle)
        self.max_batch_failures, self.calls_per_actor = max_batch_failures, calls_per_actor
        self.failed_calls = 0  # calls lost to actor deaths and queued again (all maps)
        self._owns_ray = connect(address)
        try:
            check_resources(num_workers, cpus_per_actor, gpus_per_actor if use_gpu else 0,
                            "lower num_workers (scaling.num_workers) or the CPUs/GPUs per actor, or point "
                            "RAY_ADDRESS at a larger cluster")
            actor = ray.remote(SimulatorActor).options(
                num_cpus=cpus_per_actor, num_gpus=gpus_per_actor if use_gpu else 0,
                max_restarts=max_restarts, max_task_retries=0)  # retries are the driver's: on a living actor
            device = "cuda" if use_gpu else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES: "cuda" is the actor's own GPU
            self._actors = [actor.remote(self.bundle, device, dict(simulator_kwargs or {}), cpus_per_actor)
                            for _ in range(num_workers)]
            self._live = set(range(num_workers))
            self._probes: dict[ray.ObjectRef, int] = {}  # probe call -> actor, for actors that died mid-call
            self._last_failure: BaseException | None = None
            self.pids()  # wait until every actor has loaded the bundle, so start-up errors surface here
        except ActorDiedError as e:
            self.close()
            raise RuntimeError(f"a simulator actor failed to start with bundle {self.bundle} and simulator_kwargs="
                               f"{simulator_kwargs}: {e}") from e
        except BaseException:
            self.close()
            raise

    @property
    def num_workers(self) -> int:
        """Actors still in the pool (restarting ones included; those out of restarts excluded)."""
        return len(self._live)

    def pids(self) -> list[int]:
        """The process ids of the living actors (waits behind their calls in flight, and for restarts)."""
        return ray.get([self._actors[a].pid.options(max_task_retries=-1).remote() for a in sorted(self._live)])

    def map(self, fn: Callable[[Simulator, list], list], items: Iterable, batch_size: int = 1,
            progress: bool = True) -> Iterator[BatchResult]:
        """Run `fn(simulator, batch)` over `items` cut into batches of `batch_size`; yield each finished batch
        (with its items and their start index) in order of completion, every item exactly once.

        Raises:
            ValueError: batch_size < 1.
            RuntimeError: no actor left, or a batch met `max_batch_failures` actor deaths.
            ray.exceptions.RayTaskError: `fn` raised (an instance of its exception class too).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size} must be at least 1")
        items = list(items)
        queue = deque((start, items[start:start + batch_size]) for start in range(0, len(items), batch_size))
        calls: dict[ray.ObjectRef, tuple[int, int, list]] = {}  # call -> (actor, start, batch)
        load, failures = Counter(), Counter()
        with tqdm(total=len(items), unit="item", desc="simulator pool", disable=not progress) as bar:
            while queue or calls:
                self._submit(fn, queue, calls, load)
                if not calls and not self._probes:
                    raise RuntimeError(f"no simulator actor left for {sum(len(b) for _, b in queue)} items: every "
                                       f"actor died and used up its restarts; last failure: {self._last_failure}")
                [ref], _ = ray.wait([*calls, *self._probes], num_returns=1)
                if ref in self._probes:
                    self._settle_probe(ref)
                    continue
                actor, start, batch = calls.pop(ref)
                load[actor] -= 1
                try:
                    results = ray.get(ref)
                except ACTOR_FAILURES as e:
                    self.failed_calls += 1
                    failures[start] += 1
                    if failures[start] >= self.max_batch_failures:
                        raise RuntimeError(f"the batch of items {start}..{start + len(batch) - 1} met "
                                           f"{failures[start]} actor deaths (max_batch_failures="
                                           f"{self.max_batch_failures}); does it exhaust the actor's memory? "
                                           f"last failure: {e}") from e
                    queue.appendleft((start, batch))
                    self._probe(actor, e)
                    continue
                bar.update(len(batch))
                yield BatchResult(start, batch, results)

    def run(self, fn: Callable[[Simulator, list], list], items: Iterable, batch_size: int = 1,
            progress: bool = True) -> list:
        """`map`, collected: every item's result, in the items' order."""
        items = list(items)
        results: list[Any] = [None] * len(items)
        for batch in self.map(fn, items, batch_size, progress):
            results[batch.start:batch.start + len(batch.results)] = batch.results
        return results

    def close(self) -> None:
        """End the actors (and the local Ray cluster, when the pool started it)."""
        if ray.is_initialized():  # not when garbage collected after the cluster went down
            for actor in getattr(self, "_actors", []):
                ray.kill(actor, no_restart=True)
        self._actors, self._live, self._probes = [], set(), {}
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    def __enter__(self) -> "SimulatorPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- scheduling ---------------------------------------------------------------------------------------------
    def _submit(self, fn, queue: deque, calls: dict, load: Counter) -> None:
        """Hand queued batches to the least loaded serving actors, up to `calls_per_actor` each."""
        probing = set(self._probes.values())
        while queue:
            free = [a for a in sorted(self._live - probing) if load[a] < self.calls_per_actor]
            if not free:
                return
            actor = min(free, key=lambda a: load[a])
            start, batch = queue.popleft()
            calls[self._actors[actor].run.remote(fn, batch)] = (actor, start, batch)
            load[actor] += 1

    def _probe(self, actor: int, failure: BaseException) -> None:
        """Take a failed actor out of service until a probe call returns: Ray retries the probe
        (max_task_retries=-1) until the restarted actor has reloaded the bundle, or fails it once the actor is
        out of restarts. (A plain call to a restarting actor fails at once with ActorUnavailableError.)"""
        self._last_failure = failure
        if actor in self._live and actor not in self._probes.values():
            self._probes[self._actors[actor].pid.options(max_task_retries=-1).remote()] = actor

    def _settle_probe(self, ref: ray.ObjectRef) -> None:
        actor = self._probes.pop(ref)
        try:
            ray.get(ref)  # restarted: serving again
        except ACTOR_FAILURES as e:  # out of restarts, or its restart failed (e.g. the bundle no longer loads)
            self._last_failure = e
            self._live.discard(actor)


def check_resources(actors: int, cpus: float, gpus: float, fix: str) -> None:
    """Raise ValueError, ending with `fix`, when the cluster lacks the CPUs or GPUs that `actors` actors (or
    tasks) need at once: Ray would leave them pending forever."""
    have = ray.cluster_resources()
    needs = {"GPU": actors * gpus, "CPU": actors * cpus}
    short = {k: (need, have.get(k, 0)) for k, need in needs.items() if need > have.get(k, 0)}
    if short:
        detail = ", ".join(f"{need:g} {k} needed, {got:g} in the cluster" for k, (need, got) in short.items())
        raise ValueError(f"{actors} Ray actor(s) cannot all be placed: {detail}; {fix}")


# ---- batched work for the pool ----------------------------------------------------------------------------------

@dataclass(eq=False)
class RolloutRequest:
    """One rollout for `rollout_batch`: seed tokens (T, h, w) or seed frames (T, H, W, 3) uint8, a sampler seed,
    and the frames to predict; `actions` (num_frames, 2) for action-conditioned bundles."""

    seed: int
    num_frames: int
    tokens: np.ndarray | None = None
    frames: np.ndarray | None = None
    actions: np.ndarray | None = None


def rollout_batch(simulator: Simulator, requests: list[RolloutRequest]) -> list[Rollout]:
    """A pool function: the requests' rollouts in one batched engine call; each result is a `Rollout` of one clip.

    Raises:
        ValueError: requests of one batch that differ in num_frames, seed kind or shape, or in having actions
            (the engine steps a batch together: batch alike requests, or use batch_size=1).
    """
    kinds = {(r.num_frames, r.tokens is None, np.shape(r.tokens if r.frames is None else r.frames),
              r.actions is None) for r in requests}
    if len(kinds) > 1:
        raise ValueError(f"one batch holds requests of {len(kinds)} kinds (num_frames, seed frames or tokens, seed "
                         f"shape, actions or not): {sorted(kinds, key=str)}; batch alike requests or use batch_size=1")
    first = requests[0]

    def stack(key: str) -> np.ndarray | None:
        return None if getattr(first, key) is None else np.stack([getattr(r, key) for r in requests])

    out = simulator.rollout(stack("frames"), first.num_frames, seeds=[r.seed for r in requests],
                            tokens=stack("tokens"), actions=stack("actions"))
    return [Rollout(frames=out.frames[i:i + 1], tokens=out.tokens[i:i + 1], surprise=out.surprise[i:i + 1],
                    seed_tokens=out.seed_tokens[i:i + 1]) for i in range(len(requests))]


# ---- ingest on Ray ----------------------------------------------------------------------------------------------

def ingest_on_ray(bdd_root: str | os.PathLike, split: str, out: str | os.PathLike, load_encoder: Callable[[], Any],
                  num_workers: int, use_gpu: bool = False, address: str | None = None, max_retries: int = 3,
                  progress: bool = True, **ingest_kwargs) -> list:
    """`data.ingest.ingest` as `num_workers` Ray tasks: task i ingests shard i/num_workers into its own part of
    `out`, then the driver consolidates the index (docs/design.md "Zarr 3": one writer per part).

    Resumable as the local ingest: a rerun with the same `num_workers` skips the clips each part holds (a
    different count shards the videos otherwise, and re-ingests those found in another part; consolidate keeps
    one copy). Ray reruns a task whose worker died (`max_retries`), which resumes its part the same way.

    Args:
        load_encoder: a picklable function that loads the tokenizer (or bundle) in the task, e.g.
            `functools.partial(load_bundle, path, device="cuda")`; every task loads its own.
        use_gpu: one GPU per task (load the encoder on "cuda").
        ingest_kwargs: fps, limit (per shard), store_frames, batch_size, subset of `ingest`.

    Returns: the tasks' `IngestReport`s, by shard; `store_clips` of each is the final consolidated count.

    Raises:
        FileNotFoundError: no `bdd_root/videos/<split>` (checked before Ray starts).
        ValueError: num_workers < 1, or a cluster without the GPUs asked for.
    """
    from .data.bdd100k import list_videos
    from .data.store import consolidate

    if num_workers < 1:
        raise ValueError(f"num_workers={num_workers} must be at least 1")
    bdd_root, out = Path(bdd_root).expanduser().resolve(), Path(out).expanduser().resolve()  # tasks run elsewhere
    list_videos(bdd_root, split)
    owns_ray = connect(address)
    try:
        if use_gpu:
            check_resources(1, 1, 1, "ingest on the CPU (--device cpu) or point RAY_ADDRESS at a cluster with "
                            "GPUs")  # tasks queue for the GPUs there are, but need one
        task = ray.remote(_ingest_shard).options(num_cpus=INGEST_TASK_CPUS, num_gpus=1 if use_gpu else 0,
                                                 max_retries=max_retries)
        refs = {task.remote(bdd_root, split, out, load_encoder, (i, num_workers), ingest_kwargs): i
                for i in range(num_workers)}
        reports = [None] * num_workers
        with tqdm(total=num_workers, unit="shard", desc=f"ingest {out.name}", disable=not progress) as bar:
            pending = list(refs)
            while pending:
                [ref], pending = ray.wait(pending, num_returns=1)
                reports[refs[ref]] = ray.get(ref)
                bar.update(1)
    finally:
        if owns_ray:
            ray.shutdown()
    store_clips = len(consolidate(out)["clips"])  # all parts are complete now: the final index
    for report in reports:
        report.store_clips = store_clips
    return reports


def _ingest_shard(bdd_root: Path, split: str, out: Path, load_encoder: Callable[[], Any], shard: tuple[int, int],
                  ingest_kwargs: dict):
    """One Ray task of `ingest_on_ray`: load the encoder, ingest one shard into its part."""
    from .data.ingest import ingest

    use_reserved_cpus(INGEST_TASK_CPUS)
    return ingest(bdd_root, split, out, load_encoder(), shard=shard, progress=False, **ingest_kwargs)
