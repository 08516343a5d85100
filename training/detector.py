"""Train the example object detector (issue 20, point 5): a small CenterNet on a store's labelled frames.

    openvica synthetic store --out det-train.zarr --drives 320 --seconds 6 --world cruise --seed 100
    openvica synthetic store --out det-val.zarr --drives 48 --seconds 6 --world cruise --seed 200 --split val
    python training/detector.py data.store=det-train.zarr data.val_store=det-val.zarr run.dir=runs/detector

The synthetic world labels every frame (its cars' boxes, free); a BDD100K store ingested with --store-frames has
boxes on its det_20 and box_track_20 frames. One step: a batch of labelled frames (`LabelledFrames`), half mirrored
left-right with their boxes (trainer.flip), a random gain and offset of the colours (trainer.jitter), and the
CenterNet loss (`models/detector.py`). The run ends with run.dir/detector/ and, with data.val_store, its COCOeval
on the held-out frames in detector/accuracy.json (`metrics.detection.detector_accuracy`: cars farther than
eval.max_distance_m are ignore regions); `openvica scenarios test --detector` takes the folder through
`openvica_sim.scenarios.examples.car_detector`.
"""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig

from openvica_sim.data.loaders import LabelledFrames
from openvica_sim.metrics.detection import detector_accuracy
from openvica_sim.models.detector import CenterNet, CenterNetConfig
from openvica_sim.training.common import adamw, batches, check, clip_grad, prepare, resolve, step_generator
from openvica_sim.training.loop import Context, Stage, run_stage

REQUIRED = {"data.store": str, "trainer.max_steps": int, "trainer.batch_size": int, "trainer.checkpoint_every": int,
            "scaling.num_workers": int, "optim.lr": float, "run.dir": str, "seed": int}


def build(context: Context) -> Stage:
    cfg, device = context.cfg, context.device
    torch.manual_seed(cfg["seed"])  # the same initial weights on every rank and every launch
    model_cfg = cfg["model"]
    config = CenterNetConfig(classes=tuple(model_cfg["classes"]), widths=tuple(model_cfg["widths"]),
                             head_width=model_cfg["head_width"], min_score=model_cfg["min_score"])
    detector = CenterNet(config).to(device).train()
    net = prepare(detector, context.world)
    optimizer = adamw(detector.parameters(), cfg["optim"])

    def data(start: int):
        frames = LabelledFrames(cfg["data"]["store"], classes=config.classes, seed=cfg["seed"], rank=context.rank,
                                world_size=context.world)
        return batches(frames, context.per_worker_batch, start, num_workers=cfg["data"]["loader_workers"])

    def step(batch: dict, index: int) -> dict:
        frames, boxes, classes = (batch[k].to(device) for k in ("frames", "boxes", "classes"))
        generator = step_generator(cfg["seed"], index, context.rank)
        B = len(frames)
        if cfg["trainer"]["flip"]:  # the world is left-right symmetric; boxes mirror with it
            flip = (torch.rand(B, generator=generator) < 0.5).to(device)
            frames = torch.where(flip[:, None, None, None], frames.flip(-1), frames)
            W = float(config.image_size)
            mirrored = torch.stack([W - boxes[..., 2], boxes[..., 1], W - boxes[..., 0], boxes[..., 3]], dim=-1)
            boxes = torch.where(flip[:, None, None], mirrored, boxes)
        jitter = cfg["trainer"]["jitter"]
        if jitter:  # exposure and white balance vary between cameras and under generated frames' colour drift
            gain = 1 + jitter * (2 * torch.rand(B, 3, 1, 1, generator=generator) - 1)
            shift = jitter * (2 * torch.rand(B, 3, 1, 1, generator=generator) - 1)
            frames = (frames * gain.to(device) + shift.to(device)).clamp(-1, 1)
        losses = detector.loss(net(frames), boxes, classes)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        grad_norm = clip_grad(detector.parameters(), cfg["optim"]["grad_clip"])
        optimizer.step()
        return {**{k: v.item() for k, v in losses.items()}, "grad_norm": grad_norm}

    def export(folder) -> None:
        detector.eval()
        accuracy = None
        if cfg["data"]["val_store"]:
            accuracy = detector_accuracy(detector.detect, cfg["data"]["val_store"], config.classes,
                                         max_distance_m=cfg["eval"]["max_distance_m"])
            overall = accuracy["overall"] or {}
            print(f"held-out frames: {accuracy['frames']}, boxes {accuracy['boxes']} (+{accuracy['ignored']} ignored), "
                  f"AP {overall.get('AP')}, AP50 {overall.get('AP50')}, AR100 {overall.get('AR100')}", flush=True)
        detector.save_pretrained(folder / "detector", accuracy)

    count = sum(p.numel() for p in detector.parameters())
    return Stage(name="train detector", trained=detector, optimizers=optimizer, batches=data, step=step, export=export,
                 rate_key="frames_per_s", postfix=("loss", "heatmap", "size"),
                 describe=f"CenterNet detector: {count:,} parameters, classes {list(config.classes)}")


def run(cfg: DictConfig) -> None:
    """Resolve and check on the driver, then launch (in-process or on Ray)."""
    plain = resolve(cfg)
    check(plain, REQUIRED)
    run_stage(plain, build)


@hydra.main(version_base="1.3", config_path="conf", config_name="detector")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
