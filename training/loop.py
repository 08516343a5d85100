"""The one training loop (torchtitan's `train.py` shape): a stage gives its model, optimisers, batches, step and
export; the loop does the rest the same way for every stage, tok, wm, vdec and the ego-motion probe alike
(docs/design.md "Training runs"):

    worker context -> read the last complete checkpoint -> build the stage -> resume it -> for each step: learning
    rate, `stage.step(batch, s)`, log to metrics.jsonl, progress bar, checkpoint + Ray report -> `stage.export`

A stage's `step` does one optimisation step and returns its record (floats: "loss" and whatever else it measures);
the loop adds "step", "lr" and the throughput (`rate_key`, in the stage's unit: `samples(batch)` per second over all
workers). Resume is exact because `stage.batches(start)` starts where step `start` starts and every random draw of a
step derives from `step_generator(seed, step, rank)`. A stage whose model must load its weights before it is
sharded (the world model under FSDP) reads `context.checkpoint` in `build` and says so with `resumed=True`; for the
others the loop loads the checkpoint's trainable weights and optimiser state into `trained` and `optimizers`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from openvica_sim.training.common import (Optimizers, RunFolder, launch, load_trainable_state, lr_at, progress,
                                          report, set_lr, trainable_state, worker_context)


@dataclass
class Context:
    """Where a stage runs: its config (resolved, plain data), rank, world size, device, and the last complete
    checkpoint of its run folder as (trainable weights, optimiser state, state.json), or None."""

    cfg: dict
    rank: int
    world: int
    device: torch.device
    checkpoint: tuple[dict, dict, dict] | None = None

    @property
    def per_worker_batch(self) -> int:
        return self.cfg["trainer"]["batch_size"] // self.world

    @property
    def start(self) -> int:
        """The step this launch starts at: 0, or the checkpoint's."""
        return 0 if self.checkpoint is None else int(self.checkpoint[2]["step"])


def _batch_size(batch) -> int:
    return len(next(iter(batch.values()))) if isinstance(batch, dict) else len(batch)


@dataclass
class Stage:
    """What a training stage gives the loop."""

    name: str  # the progress bar's label, e.g. "train probe"
    trained: torch.nn.Module  # every module whose trainable weights a checkpoint keeps
    optimizers: Optimizers | torch.optim.Optimizer
    batches: Callable[[int], Iterator[Any]]  # batches of this rank from step `start` on
    step: Callable[[Any, int], dict]  # one optimisation step on a batch at step index s -> record
    export: Callable[[Path], None]  # after the last step, on every rank (rank 0 writes): the bundle part
    rate_key: str = "samples_per_s"  # the throughput's name in the record, e.g. "images_per_s"
    samples: Callable[[Any], int] = _batch_size  # what `rate_key` counts in a batch
    postfix: tuple[str, ...] = ("loss",)  # record keys shown on the progress bar
    describe: str = ""  # printed once at the start (parameter counts, ...)
    resumed: bool = False  # the stage loaded context.checkpoint itself (before sharding)
    checkpoint_state: Callable[[], tuple[dict, dict]] | None = None  # (weights, optimiser state), every rank
    extra_state: Callable[[], dict] = field(default=dict)  # more JSON for state.json (e.g. codebook counters)
    load_extra_state: Callable[[dict], None] = field(default=lambda state: None)


def train(cfg: dict, build: Callable[[Context], Stage]) -> None:
    """Run `build(context)`'s stage to trainer.max_steps in this worker (called by `launch`, in-process or on Ray)."""
    trainer, optim = cfg["trainer"], cfg["optim"]
    rank, world, device = worker_context(cfg["scaling"]["use_gpu"])
    run = RunFolder(cfg["run"]["dir"])
    latest = run.latest_checkpoint()
    context = Context(cfg, rank, world, device, run.read_checkpoint(latest) if latest is not None else None)
    stage = build(context)
    start = context.start
    if context.checkpoint is not None:
        weights, optimizer_state, state = context.checkpoint
        if not stage.resumed:
            load_trainable_state(stage.trained, weights)
            stage.optimizers.load_state_dict(optimizer_state)
        stage.load_extra_state(state)
    if rank == 0:
        print(f"{stage.describe}{'; ' if stage.describe else ''}"
              f"{'resuming at step ' + str(start) if start else 'starting'}", flush=True)
        run.truncate_metrics(start)
    data = stage.batches(start)
    optimizers = stage.optimizers.values() if isinstance(stage.optimizers, Optimizers) else [stage.optimizers]
    bar = progress(start, trainer["max_steps"], rank == 0, stage.name)
    for step in range(start, trainer["max_steps"]):
        started = time.perf_counter()
        batch = next(data)
        lr = lr_at(step, optim)
        set_lr(optimizers, lr)
        record = stage.step(batch, step)
        done = step + 1
        record = {"step": done, **record, "lr": lr,
                  stage.rate_key: stage.samples(batch) * world / (time.perf_counter() - started)}
        if rank == 0 and (done % trainer["log_every"] == 0 or done == trainer["max_steps"]):
            run.log(record)
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{record[k]:.3g}" for k in stage.postfix if k in record} | {"lr": f"{lr:.1e}"})
        if done % trainer["checkpoint_every"] == 0 or done == trainer["max_steps"]:
            weights, optimizer_state = (stage.checkpoint_state() if stage.checkpoint_state is not None
                                        else (trainable_state(stage.trained), stage.optimizers.state_dict()))
            if rank == 0:
                run.save_checkpoint(done, weights, optimizer_state,
                                    {"samples_per_rank": done * context.per_worker_batch, **stage.extra_state()})
            report({"step": done, "loss": record["loss"]}, world)
    if bar is not None:
        bar.close()
    stage.export(run.path)


def run_stage(plain: dict, build: Callable[[Context], Stage]) -> None:
    """Start the run folder (refusing a changed config) and launch the loop in-process or on Ray Train."""
    RunFolder(plain["run"]["dir"]).start(plain)
    launch(_Loop(build), plain)


class _Loop:
    """`train(cfg, build)` as the one-argument loop `launch` and Ray Train call; picklable when `build` is an
    importable function (Ray ships it to the workers by name)."""

    def __init__(self, build: Callable[[Context], Stage]):
        self.build = build

    def __call__(self, cfg: dict) -> None:
        train(cfg, self.build)
