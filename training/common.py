"""What the training scripts share (docs/design.md "Training runs"): the run folder, checkpoints, the learning-rate
schedule, resumable data order, the discriminator step, and launching the loop (`training/loop.py`) in-process or as
a Ray Train `TorchTrainer`.

A run folder `run.dir`:

    config.yaml                     the resolved config of the first launch (later launches must match it)
    metrics.jsonl                   one JSON object per logged step: step, loss (+ components), lr, throughput
    checkpoints/step-NNNNNNN/       trainable.safetensors, optimizer.pt, state.json, then COMPLETE (written last)
    <the bundle part>               at the end: world_model/ (or world_model_adapter/), tokenizer/, video_decoder/

Resume is exact by construction: every random draw of step s derives from (seed, s, rank) and the data order from
(seed, epoch), so a restarted run that loads step s's weights and optimiser state computes step s+1 as the
uninterrupted run did.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from safetensors.torch import load_file, save_file

COMPLETE = "COMPLETE"


# ---- config -------------------------------------------------------------------------------------------------------

def resolve(cfg: DictConfig) -> dict:
    """The config as plain data, resolved on the driver (workers cannot resolve ${hydra:...}); run.dir made absolute
    (a Ray job's working directory is a throwaway copy)."""
    out = OmegaConf.to_container(cfg, resolve=True)
    out.pop("hydra", None)
    out["run"]["dir"] = str(Path(out["run"]["dir"]).expanduser().resolve())
    return out


def check(cfg: dict, required: dict[str, type]) -> None:
    """Raise one ValueError listing every missing or mistyped key (dotted names)."""
    errors = []
    for dotted, kind in required.items():
        node = cfg
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None or node == "???":
            errors.append(f"{dotted} is not set")
        elif not isinstance(node, kind) or isinstance(node, bool) and kind is not bool:
            errors.append(f"{dotted}={node!r} should be {getattr(kind, '__name__', kind)}")
    workers = max(1, cfg["scaling"]["num_workers"])
    if cfg["trainer"]["batch_size"] % workers:
        errors.append(f"trainer.batch_size={cfg['trainer']['batch_size']} is the global batch and must be a multiple "
                      f"of scaling.num_workers={workers}")
    if errors:
        raise ValueError("bad training config:\n  " + "\n  ".join(errors))


def lr_at(step: int, optim: dict) -> float:
    """Linear warm-up to optim.lr over warmup_steps, cosine decay to optim.min_lr over decay_steps, then constant."""
    lr, min_lr, warmup, decay = optim["lr"], optim["min_lr"], optim["warmup_steps"], optim["decay_steps"]
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, decay))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t))


# ---- the run folder -----------------------------------------------------------------------------------------------

class RunFolder:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.checkpoints = self.path / "checkpoints"

    def start(self, cfg: dict) -> None:
        """Create the folder and write config.yaml; on a rerun, refuse a config that changes the model or data
        (trainer.max_steps may grow: that continues a finished run)."""
        self.path.mkdir(parents=True, exist_ok=True)
        config_file = self.path / "config.yaml"
        if config_file.is_file():
            old = OmegaConf.to_container(OmegaConf.load(config_file))
            keep = lambda c: {k: v for k, v in c.items() if k not in ("trainer", "scaling", "run")}
            if keep(old) != keep(cfg):
                raise ValueError(f"{self.path} holds a run with another model/data/optim config; use a new run.dir "
                                 f"or the same settings (only trainer.*, scaling.* may change on resume)")
        _atomic_write_text(config_file, OmegaConf.to_yaml(OmegaConf.create(cfg)))

    def log(self, record: dict) -> None:
        with open(self.path / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def metrics(self) -> list[dict]:
        path = self.path / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []

    def latest_checkpoint(self) -> Path | None:
        done = sorted(p for p in self.checkpoints.glob("step-*") if (p / COMPLETE).is_file())
        return done[-1] if done else None

    def save_checkpoint(self, step: int, model: "torch.nn.Module | dict", optimizer: "torch.optim.Optimizer | dict",
                        state: dict, keep: int = 2) -> Path:
        """Write checkpoint `step` into a temp folder, mark it complete, rename it into place; keep the last `keep`.

        `model`'s trainable parameters are saved (frozen ones come from the run's config), or `model` is that
        dict already (gathered from FSDP shards by `gather_checkpoint`); `optimizer` is an optimiser, `Optimizers`
        (generator and discriminator) or its state dict; `state` is JSON (step, data position, counters)."""
        final = self.checkpoints / f"step-{step:07d}"
        tmp = self.checkpoints / f".tmp-step-{step:07d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(trainable_state(model) if isinstance(model, torch.nn.Module) else model, tmp / "trainable.safetensors")
        torch.save(optimizer.state_dict() if hasattr(optimizer, "state_dict") else optimizer, tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}))
        (tmp / COMPLETE).write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        for old in sorted(p for p in self.checkpoints.glob("step-*") if (p / COMPLETE).is_file())[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def read_checkpoint(path: Path) -> tuple[dict, dict, dict]:
        """(trainable weights, optimiser state, state.json) of a complete checkpoint folder."""
        return (load_file(path / "trainable.safetensors"), torch.load(path / "optimizer.pt", weights_only=True),
                json.loads((path / "state.json").read_text()))

    def truncate_metrics(self, step: int) -> None:
        """Drop metrics logged after `step` (a crashed run's steps that the resumed run will redo)."""
        kept = [m for m in self.metrics() if m["step"] <= step]
        _atomic_write_text(self.path / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in kept))


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().contiguous() for name, p in _unwrap(model).named_parameters() if p.requires_grad}


def load_trainable_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = {name: p for name, p in _unwrap(model).named_parameters() if p.requires_grad}
    if set(params) != set(state):
        raise ValueError(f"checkpoint does not fit the model: missing {sorted(set(params) - set(state))[:4]}, "
                         f"unexpected {sorted(set(state) - set(params))[:4]}")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(state[name])


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model  # DDP


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ---- frozen loss networks (TOK and VDEC) ---------------------------------------------------------------------------

def check_loss_networks(loss: dict) -> None:
    """A weighted perceptual (3) or SSL (5) term needs its network's local path: say which key, before any work."""
    needs = {"perceptual": ("perceptual_net", "torchvision VGG16 weights, e.g. vgg16-397923af.pth"),
             "ssl": ("teacher", "a DINOv2 ViT-S/14 folder, e.g. dinov2-small/")}
    errors = []
    for weight, (key, what) in needs.items():
        if loss.get(weight) and loss.get(key) in (None, "???"):
            errors.append(f"loss.{weight}={loss[weight]} needs loss.{key}=PATH ({what}), or set loss.{weight}=0 "
                          f"to train without that term")
    if errors:
        raise ValueError("bad training config:\n  " + "\n  ".join(errors))


def frozen_networks(loss: dict, device: torch.device) -> dict:
    """{"perceptual": VGG16 features or None, "teacher": DINOv2 or None}, frozen, for the weighted terms only."""
    from openvica_sim.models.perceptual import load_vgg16
    from openvica_sim.models.teacher import load_dinov2

    return {"perceptual": load_vgg16(loss["perceptual_net"], device) if loss.get("perceptual") else None,
            "teacher": load_dinov2(loss["teacher"], device) if loss.get("ssl") else None}


# ---- optimisation -------------------------------------------------------------------------------------------------

def adamw(params, optim: dict) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices and kernels only (not on norms and biases), settings from `optim`."""
    params = [p for p in params if p.requires_grad]
    return torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": optim["weight_decay"]},
                              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                             lr=optim["lr"], betas=tuple(optim["betas"]), eps=optim["eps"])


def clip_grad(params, max_norm: float | None) -> float:
    """Clip the global gradient norm at `max_norm` (0 or None: only measure it); returns the norm before."""
    params = [p for p in params if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm or float("inf"))
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)  # FSDP: a replicated DTensor


class Optimizers(dict):
    """Several optimisers saved and loaded as one (the GAN stages: generator "g" and discriminator "d")."""

    def state_dict(self) -> dict:
        return {name: opt.state_dict() for name, opt in self.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, opt in self.items():
            opt.load_state_dict(state[name])

    def set_lr(self, lr: float) -> None:
        set_lr(self.values(), lr)


def set_lr(optimizers, lr: float) -> None:
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = lr


def psnr_db(mse: float) -> float:
    """PSNR (dB) of a mean squared error of model frames in [-1, 1] (peak-to-peak 2), for the training logs."""
    return 10 * math.log10(4.0 / max(mse, 1e-12))


def discriminator_update(d_net, optimizer: torch.optim.Optimizer, real: torch.Tensor, fake: torch.Tensor) -> float:
    """One step of the discriminator with the hinge loss, eq. (7) (or its 3D form), on real and generated samples
    of the same batch, the generator's output detached (Fig. 3, selectors **). Real and fake go through D in one
    call, so DDP sees one forward; returns the loss."""
    from openvica_sim.losses import discriminator_loss

    scores_real, scores_fake = d_net(torch.cat([real, fake.detach()])).chunk(2)
    loss = discriminator_loss(scores_real, scores_fake)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


def progress(start: int, total: int, enabled: bool, desc: str):
    """A tqdm bar on rank 0 (None elsewhere)."""
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=desc, unit="step")


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    """The generator of every random draw of (step, rank): resume-exact by construction."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 1009 + rank)


# ---- data order ---------------------------------------------------------------------------------------------------

class StepIndexed(torch.utils.data.Dataset):
    """A store dataset indexed by the running sample count k of this rank: epoch k // len, item k % len of that
    epoch's (seed, epoch) order. A run resumed at step s starts at k = s * batch: the same samples, in order."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __getitem__(self, k: int):
        epoch, i = divmod(k, len(self.dataset))
        if epoch != self.dataset.epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[i]

    def __len__(self) -> int:
        return 2**62  # endless; the sampler decides where to start


class _CountFrom(torch.utils.data.Sampler):
    def __init__(self, start: int):
        self.start = start

    def __iter__(self):
        k = self.start
        while True:
            yield k
            k += 1


def batches(dataset, batch_size: int, start_step: int, num_workers: int = 0):
    """Endless batches of this rank's samples, starting where step `start_step` starts."""
    return iter(torch.utils.data.DataLoader(StepIndexed(dataset), batch_size=batch_size,
                                            sampler=_CountFrom(start_step * batch_size), num_workers=num_workers,
                                            persistent_workers=num_workers > 0, drop_last=True))


# ---- workers and launching ----------------------------------------------------------------------------------------

def worker_context(use_gpu: bool) -> tuple[int, int, torch.device]:
    """(rank, world size, device) inside a Ray Train worker, or (0, 1, cpu/cuda) in-process."""
    try:
        import ray.train

        context = ray.train.get_context()
        rank, world = context.get_world_rank(), context.get_world_size()
    except (ImportError, RuntimeError, AttributeError):
        rank, world = 0, 1
    if use_gpu:
        if world > 1:
            import ray.train.torch

            return rank, world, ray.train.torch.get_device()
        return rank, world, torch.device("cuda")
    return rank, world, torch.device("cpu")


def prepare(model: torch.nn.Module, world: int, strategy: str = "ddp", shard_blocks: tuple[str, ...] = (),
            bf16: bool = False) -> torch.nn.Module:
    """DDP, or FSDP (`shard`), across Ray Train workers; the model itself alone. Build the optimiser after this:
    FSDP replaces the parameters by sharded ones."""
    if world == 1:
        return model
    if strategy == "fsdp":
        if not shard_blocks:
            raise ValueError("scaling.strategy=fsdp is implemented for training/wm.py only; use scaling.strategy=ddp")
        return shard(model, shard_blocks, bf16)
    if strategy != "ddp":
        raise ValueError(f"scaling.strategy={strategy!r}: choose ddp or fsdp")
    import ray.train.torch

    return ray.train.torch.prepare_model(model, parallel_strategy="ddp")


def shard(model: torch.nn.Module, block_types: tuple[str, ...], bf16: bool) -> torch.nn.Module:
    """FSDP2 (`torch.distributed.fsdp.fully_shard`): each block (a decoder layer), then the root, sharded over the
    workers; with `bf16`, gathered for compute in bf16 and gradients reduced in fp32.

    Not FSDP1 (Ray's `prepare_model(parallel_strategy="fsdp")`): in torch 2.13 it refuses a CPU ("FSDP needs a
    non-CPU accelerator device") or crashes with device_id=cpu, so it could never be tested here; FSDP2 runs on
    gloo as on NCCL, keeps per-parameter sharding (frozen and LoRA weights side by side) and is torch's
    recommended API. Mixed dtypes (frozen bf16, trainable fp32) need `bf16`: FSDP2 all-gathers one dtype."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else \
        MixedPrecisionPolicy()
    blocks = [m for m in model.modules() if type(m).__name__ in block_types]
    if not blocks:
        raise ValueError(f"no {block_types} modules to shard in {type(model).__name__}")
    for block in blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def gather_checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """(trainable weights, optimiser state) as whole tensors, for `RunFolder.save_checkpoint`. With FSDP every
    worker must call it (it gathers the shards; rank 0 receives them, on the CPU); otherwise it only reads."""
    if not is_sharded(model):
        return trainable_state(model), optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                         get_optimizer_state_dict)

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    weights = get_model_state_dict(model, options=options)
    return ({k: v.contiguous() for k, v in weights.items() if k in trainable},
            get_optimizer_state_dict(model, optimizer, options=options))


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a checkpoint's optimiser state into an optimiser over `model`'s (possibly sharded) parameters.

    Raises:
        ValueError: the checkpoint was written under the other strategy (FSDP keys states by parameter name,
            a plain optimiser by index).
    """
    by_name = any(isinstance(k, str) for k in state.get("state", {}))
    if by_name != is_sharded(model):
        raise ValueError(f"this run's checkpoints were written with scaling.strategy={'fsdp' if by_name else 'ddp'}"
                         f" (or one worker); resume with that strategy")
    if not by_name:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))


def report(metrics: dict, world: int) -> None:
    """Tell Ray Train (every worker calls it: it is a barrier); nothing in-process."""
    if world > 1:
        import ray.train

        ray.train.report(metrics)


def launch(train_loop, cfg: dict) -> None:
    """Run `train_loop(cfg)` in this process (scaling.num_workers = 0) or on a Ray Train TorchTrainer with
    scaling.num_workers workers (RAY_ADDRESS or the cluster of `ray job submit` is used when there is one)."""
    scaling = cfg["scaling"]
    if scaling["num_workers"] == 0:
        train_loop(cfg)
        return
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from openvica_sim.distributed import connect

    connect()  # RAY_ADDRESS or the job's cluster, with the auth hint when joining fails
    trainer = TorchTrainer(
        train_loop, train_loop_config=cfg,
        scaling_config=ScalingConfig(num_workers=scaling["num_workers"], use_gpu=scaling["use_gpu"]),
        run_config=RunConfig(name=Path(cfg["run"]["dir"]).name, storage_path=str(Path(cfg["run"]["dir"]) / "ray"),
                             failure_config=FailureConfig(max_failures=scaling["max_failures"])))
    trainer.fit()
