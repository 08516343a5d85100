"""Fine-tune the video decoder, VDEC (paper III-C d): eq. (8) and the 3D hinge loss.

    python training/vdec.py data.store=bdd-4fps.zarr model.tokenizer.init=runs/tok/tokenizer \
        loss.perceptual_net=vgg16-397923af.pth                                         # the paper's run
    python training/vdec.py model=tiny data.store=synthetic.zarr model.tokenizer.init=runs/tok/tokenizer \
        loss.perceptual=0                                                               # tiny, on a CPU

One step on a batch of 3-frame windows x_{t-1..t+1} (a 4 fps store ingested with --store-frames):
    k_tau = TOK(x_tau) per frame, by the fine-tuned and frozen TOK
    x^_{t-1..t+1} = VDEC(CB[k_{t-1..t+1}])                          all three frames of the window
    J_VDEC = sum_tau J_rec(x^_tau, x_tau) [+ J_G-3D = -D3(x^) from trainer.gan_start]     eq. (8)
    then, from trainer.gan_start, D-3D ("our D" inflated to 3D) is trained on the same batch with the hinge loss.
VDEC starts as DEC inflated (model.video_decoder.init: null), so step 0 decodes exactly as DEC does.

The run ends with `run.dir/video_decoder/`, the bundle part that `openvica bundle create --video-decoder` takes.
"""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig
from torch import nn

from openvica_sim.data.loaders import FrameWindows
from openvica_sim.losses import generator_loss, video_decoder_loss
from openvica_sim.models.discriminator import DiscriminatorConfig, PatchDiscriminator
from openvica_sim.models.tokenizer import Tokenizer
from openvica_sim.models.video_decoder import VideoDecoder
from openvica_sim.training.common import (Optimizers, adamw, batches, check, check_loss_networks, clip_grad,
                                          discriminator_update, frozen_networks, prepare, psnr_db, resolve)
from openvica_sim.training.loop import Context, Stage, run_stage

REQUIRED = {"data.store": str, "model.tokenizer.init": str, "trainer.max_steps": int, "trainer.batch_size": int,
            "trainer.checkpoint_every": int, "trainer.gan_start": int, "scaling.num_workers": int,
            "optim.lr": float, "run.dir": str, "seed": int}


class WindowDecoder(nn.Module):
    """VDEC decoding all frames of the window, as eq. (8) trains it (inference keeps the centre frame)."""

    def __init__(self, video_decoder: VideoDecoder):
        super().__init__()
        self.video_decoder = video_decoder

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens (B, 3, h, w) -> frames (B, 3, 3, H, W) = (B, colour, window, H, W), unclamped."""
        return self.video_decoder.decode_latents(self.video_decoder.embed(tokens))


def build(cfg: dict, device: torch.device) -> tuple[Tokenizer, WindowDecoder, PatchDiscriminator, dict]:
    """(frozen TOK, VDEC to train, D-3D, frozen perceptual network) on `device`."""
    m = cfg["model"]
    if m["tokenizer"]["init"] == "random":
        raise ValueError("model.tokenizer.init=random: VDEC is trained on the tokens of a trained TOK; pass "
                         "training/tok.py's run.dir/tokenizer (or a converted VQGAN folder)")
    tokenizer = Tokenizer.from_pretrained(m["tokenizer"]["init"], device=device).requires_grad_(False)
    if m["video_decoder"]["init"]:
        video_decoder = VideoDecoder.from_pretrained(m["video_decoder"]["init"], device=device)
        if not torch.equal(video_decoder.codebook, tokenizer.codebook):
            raise ValueError(f"model.video_decoder.init={m['video_decoder']['init']} holds another codebook than "
                             f"model.tokenizer.init={m['tokenizer']['init']}; VDEC must decode that TOK's tokens")
    else:
        # central inflation of DEC, in every conv (the paper) or in the coarse stages only (video_decoder.py)
        video_decoder = VideoDecoder.from_tokenizer(tokenizer,
                                                    temporal_up_blocks=m["video_decoder"].get("temporal_up_blocks"))
    video_decoder.train().requires_grad_(True)
    frozen = frozen_networks(cfg["loss"], device)
    torch.manual_seed(cfg["seed"] + 1)  # D-3D: the same init on every rank and every launch
    config = video_decoder.config
    discriminator = PatchDiscriminator(DiscriminatorConfig(image_size=config.image_size,
                                                           temporal_kernel_size=config.window,
                                                           **cfg["discriminator"])).to(device)
    return tokenizer, WindowDecoder(video_decoder).to(device), discriminator, frozen["perceptual"]


def build_stage(context: Context) -> Stage:
    """The VDEC stage of the loop: eq. (8) on 3-frame windows, then (from trainer.gan_start) D-3D; exports
    `video_decoder/`."""
    cfg, device, world = context.cfg, context.device, context.world
    trainer, optim, loss_w = cfg["trainer"], cfg["optim"], cfg["loss"]
    tokenizer, model, discriminator, perceptual = build(cfg, device)
    optimizers = Optimizers(g=adamw(model.parameters(), optim), d=adamw(discriminator.parameters(), optim))
    trained = nn.ModuleDict({"video_decoder": model, "discriminator": discriminator})
    decoder_net, d_net = prepare(model, world), prepare(discriminator, world)
    window = model.video_decoder.config.window

    def batches_from(start: int):
        dataset = FrameWindows(cfg["data"]["store"], window=window, seed=cfg["seed"], rank=context.rank,
                               world_size=world)
        return batches(dataset, context.per_worker_batch, start, num_workers=cfg["data"]["loader_workers"])

    def step(batch: dict, index: int) -> dict:
        frames = batch["frames"].to(device)  # (B, 3 frames, 3, H, W)
        B = frames.shape[0]
        with torch.no_grad():
            tokens = tokenizer.encode(frames.flatten(0, 1)).unflatten(0, (B, window))  # frozen TOK, per frame
        x = frames.transpose(1, 2)  # (B, colour, window, H, W), VDEC's layout
        gan = index >= trainer["gan_start"]
        x_hat = decoder_net(tokens)
        g = generator_loss(d_net(x_hat)) if gan else None
        losses = video_decoder_loss(x_hat, x, perceptual, g, loss_w["l1"], loss_w["l2"], loss_w["perceptual"],
                                    loss_w["generator"])
        optimizers["g"].zero_grad(set_to_none=True)
        losses["total"].backward()
        grad_norm = clip_grad(model.parameters(), optim["grad_clip"])
        optimizers["g"].step()
        record = {"loss": losses["total"].item(),
                  **{k: v.item() for k, v in losses.items() if k not in ("total", "rec")},
                  "grad_norm": grad_norm, "psnr": psnr_db(losses["l2"].item() / window)}
        if gan:  # J_D-3D: the hinge loss (7) on whole windows, alternately on the same batch
            record.update(generator=g.item(), discriminator=discriminator_update(d_net, optimizers["d"], x, x_hat))
        return record

    def export(folder) -> None:
        if context.rank == 0:
            model.video_decoder.save_pretrained(folder / "video_decoder")

    describe = (f"video decoder: {sum(p.numel() for p in model.parameters()):,} trainable parameters, D-3D "
                f"{sum(p.numel() for p in discriminator.parameters()):,}; window {window}")
    return Stage(name="train vdec", trained=trained, optimizers=optimizers, batches=batches_from, step=step,
                 export=export, rate_key="windows_per_s", postfix=("loss", "psnr"), describe=describe)


def run(cfg: DictConfig) -> None:
    """Resolve and check on the driver, then launch (in-process or on Ray)."""
    plain = resolve(cfg)
    check(plain, REQUIRED)
    check_loss_networks(plain["loss"])
    run_stage(plain, build_stage)


@hydra.main(version_base="1.3", config_path="conf", config_name="vdec")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
