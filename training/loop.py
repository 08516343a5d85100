"""The one training loop (torchtitan's `train.py` shape): a stage gives its model, optimisers, batches, step and
export; the loop does the rest the same way for every stage (DESIGN.md "Training runs"):

    worker context -> build the stage -> resume from the last complete checkpoint -> for each step: learning rate,
    `stage.step(batch)`, log to metrics.jsonl, progress bar, checkpoint + Ray report -> `stage.export(run.dir)`

A stage's `step` does one optimisation step and returns its record (floats: "loss" and whatever else it measures);
the loop adds "step", "lr" and the throughput. Resume is exact because `stage.batches(start)` starts where step
`start` starts and every random draw of a step derives from `step_generator(seed, step, rank)`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from openvica_sim.training.common import (Optimizers, RunFolder, launch, lr_at, progress, report, set_lr,
                                          worker_context)


@dataclass
class Context:
    """Where a stage runs: its config (resolved, plain data), rank, world size and device."""

    cfg: dict
    rank: int
    world: int
    device: torch.device

    @property
    def per_worker_batch(self) -> int:
        return self.cfg["trainer"]["batch_size"] // self.world


@dataclass
class Stage:
    """What a training stage gives the loop."""

    name: str  # the progress bar's label, e.g. "train probe"
    trained: torch.nn.Module  # every module whose trainable weights a checkpoint keeps
    optimizers: Optimizers | torch.optim.Optimizer
    batches: Callable[[int], Iterator[Any]]  # batches of this rank from step `start` on
    step: Callable[[Any, int], dict]  # one optimisation step on a batch at step index s -> record
    export: Callable[[Path], None]  # rank 0, after the last step: write the bundle part into run.dir
    samples: Callable[[Any], int] = lambda batch: len(next(iter(batch.values())))  # for samples_per_s
    postfix: tuple[str, ...] = ("loss",)  # record keys shown on the progress bar
    describe: str = ""  # printed once at the start (parameter counts, ...)


def train(cfg: dict, build: Callable[[Context], Stage]) -> None:
    """Run `build(context)`'s stage to trainer.max_steps in this worker (called by `launch`, in-process or on Ray)."""
    trainer, optim = cfg["trainer"], cfg["optim"]
    rank, world, device = worker_context(cfg["scaling"]["use_gpu"])
    context = Context(cfg, rank, world, device)
    run = RunFolder(cfg["run"]["dir"])
    stage = build(context)
    start = 0
    latest = run.latest_checkpoint()
    if latest is not None:
        start = run.load_checkpoint(latest, stage.trained, stage.optimizers)["step"]
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
                  "samples_per_s": stage.samples(batch) * world / (time.perf_counter() - started)}
        if rank == 0 and (done % trainer["log_every"] == 0 or done == trainer["max_steps"]):
            run.log(record)
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{record[k]:.3g}" for k in stage.postfix if k in record} | {"lr": f"{lr:.1e}"})
        if done % trainer["checkpoint_every"] == 0 or done == trainer["max_steps"]:
            if rank == 0:
                run.save_checkpoint(done, stage.trained, stage.optimizers,
                                    {"samples_per_rank": done * context.per_worker_batch})
            report({"step": done, "loss": record["loss"]}, world)
    if bar is not None:
        bar.close()
    if rank == 0:
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
