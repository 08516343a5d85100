"""Train the ego-motion probe (issue 17): the ego speed and yaw rate over (t-1, t] from frames t-1 and t.

    python training/probe.py data.store=runs/embedded/tokens-train.zarr data.val_store=runs/embedded/tokens-val.zarr \
        run.dir=runs/probe                                                    # the embedded default's probe, CPU
    ray job submit --working-dir . -- python training/probe.py data.store=/shared/bdd-train.zarr \
        scaling=cluster scaling.strategy=ddp scaling.num_workers=4 run.dir=/shared/runs/probe

One step: a batch of labelled frame pairs (`EgoFrameWindows`), half of them mirrored left-right with their yaw rate
negated (trainer.flip), and the smooth-L1 loss of the standardised (speed, yaw rate). The labels' mean and std come
from data.store and are saved with the probe. The run ends with run.dir/ego_probe/ (and, with data.val_store, its
errors on the held-out pairs against predicting the mean, in ego_probe/accuracy.json), which
`openvica eval video --ego-probe` takes.
"""

from __future__ import annotations

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from openvica_sim.data.loaders import EgoFrameWindows, ego_statistics
from openvica_sim.data.store import TokenStore
from openvica_sim.metrics.ego import probe_accuracy
from openvica_sim.models.ego_probe import EgoProbe, EgoProbeConfig
from openvica_sim.training.common import adamw, batches, check, clip_grad, prepare, resolve, step_generator
from openvica_sim.training.loop import Context, Stage, run_stage

REQUIRED = {"data.store": str, "trainer.max_steps": int, "trainer.batch_size": int, "trainer.checkpoint_every": int,
            "scaling.num_workers": int, "optim.lr": float, "run.dir": str, "seed": int}


def build(context: Context) -> Stage:
    cfg, device = context.cfg, context.device
    store = TokenStore(cfg["data"]["store"])
    torch.manual_seed(cfg["seed"])  # the same initial weights on every rank and every launch
    config = EgoProbeConfig(image_size=cfg["model"]["image_size"], widths=tuple(cfg["model"]["widths"]),
                            fps=float(store.clips[0].get("fps", 4.0)), **ego_statistics(store))
    probe = EgoProbe(config).to(device).train()
    net = prepare(probe, context.world)
    optimizer = adamw(probe.parameters(), cfg["optim"])

    def data(start: int):
        windows = EgoFrameWindows(store, window=2, seed=cfg["seed"], rank=context.rank, world_size=context.world)
        return batches(windows, context.per_worker_batch, start, num_workers=cfg["data"]["loader_workers"])

    def step(batch: dict, index: int) -> dict:
        frames = batch["frames"].to(device)  # (B, 2, 3, H, W)
        target = probe.standardise(batch["speed_mps"].to(device), batch["yaw_rate_rps"].to(device))  # (B, 2)
        if cfg["trainer"]["flip"]:  # a mirrored world turns the other way at the same speed
            flip = torch.rand(len(frames), generator=step_generator(cfg["seed"], index, context.rank)) < 0.5
            flip = flip.to(device)
            frames = torch.where(flip[:, None, None, None, None], frames.flip(-1), frames)
            mirrored_yaw = -(target[:, 1] * probe.std[1] + probe.mean[1] * 2) / probe.std[1]  # standardised -yaw
            target = torch.stack([target[:, 0], torch.where(flip, mirrored_yaw, target[:, 1])], dim=1)
        predicted = net(frames)
        loss = F.smooth_l1_loss(predicted, target, beta=0.5)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_grad(probe.parameters(), cfg["optim"]["grad_clip"])
        optimizer.step()
        error = (probe.to_physical(predicted.detach()) - probe.to_physical(target)).abs().mean(0)
        return {"loss": loss.item(), "grad_norm": grad_norm, "speed_mae_mps": error[0].item(),
                "yaw_rate_mae_rps": error[1].item()}

    def export(folder) -> None:
        probe.eval()
        accuracy = None
        if cfg["data"]["val_store"]:
            held_out = EgoFrameWindows(cfg["data"]["val_store"], window=2, shuffle=False)
            accuracy = {"store": str(cfg["data"]["val_store"]),
                        **probe_accuracy(probe, held_out, config.label_mean)}
            print(f"held-out pairs: {accuracy}", flush=True)
        probe.save_pretrained(folder / "ego_probe", accuracy)

    count = sum(p.numel() for p in probe.parameters())
    return Stage(name="train probe", trained=probe, optimizers=optimizer, batches=data, step=step, export=export,
                 postfix=("loss", "speed_mae_mps", "yaw_rate_mae_rps"),
                 describe=f"ego-motion probe: {count:,} parameters, labels {config.label_mean} +- {config.label_std}")


def run(cfg: DictConfig) -> None:
    """Resolve and check on the driver, then launch (in-process or on Ray)."""
    plain = resolve(cfg)
    check(plain, REQUIRED)
    run_stage(plain, build)


@hydra.main(version_base="1.3", config_path="conf", config_name="probe")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
