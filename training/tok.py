"""Fine-tune the image tokenizer and decoder, TOK+DEC (paper III-C b, Fig. 3): eqs. (1)-(7).

    python training/tok.py data.store=bdd-img.zarr model.tokenizer.init=vqgan/ \
        loss.perceptual_net=vgg16-397923af.pth loss.teacher=dinov2-small/           # the paper's run
    python training/tok.py model=tiny data.store=synthetic.zarr loss.perceptual=0 loss.ssl=0   # tiny, from scratch

One step on a batch of frames x (a store ingested with --store-frames):
    z~ = ENC(x); k = VQ(z~); z = CB[k]                        codebook indices and vectors
    x^ = DEC(sg-copy of z to z~)                              straight-through (III-C b)
    J_total = J_rec(x^, x) + J_CB(z, z~) + 0.1 J_SSL(FC(z), DINOv2(x)) [+ J_G = -D(x^) from trainer.gan_start]
    then, from trainer.gan_start, D is trained on the same batch with the hinge loss J_D (7).
J_rec = 0.2 L1 + 2 L2 + 1.0 J' (eq. 2, 3; Table III's proposed setting), J_CB with beta = 0.25 (eq. 4).

The perceptual network (torchvision VGG16 weights) and the teacher (a DINOv2 folder) are read from local paths;
`loss.perceptual=0` / `loss.ssl=0` drop a term (the embedded default does: this machine has neither network).
With `trainer.dead_code_restart_every` > 0, codes no batch used for that many steps are moved onto encoder outputs
that the codebook serves worst (drawn with probability proportional to their squared distance to the nearest code,
k-means++ seeding): not in the paper (it fine-tunes a trained VQGAN), but training a codebook from scratch needs it,
and a restart onto latents that already have a code makes near-duplicate codes, whose flips nothing can predict.

Two terms for a tokenizer that a small world model can predict (the embedded default, issue 19; not in the paper):
- `loss.locality` > 0 adds `losses.locality_loss`: each frame is also encoded with random regions pasted over from
  another frame of the batch, and the latents away from them must not move (ENC's GroupNorms otherwise let any change
  anywhere move every latent).
- `model.tokenizer.codebook_size` other than the initial tokenizer's: the run starts from that tokenizer's ENC and
  DEC with a new codebook of that size, k-means of its encoder outputs on the first batches (a trained codebook's
  near-duplicate codes merge; ENC and DEC then adapt).

The run ends with `run.dir/tokenizer/`, the bundle part that `openvica bundle create --tokenizer` takes.
"""

from __future__ import annotations

import hydra
import torch
from omegaconf import DictConfig
from torch import nn

from openvica_sim.data.loaders import ImageSamples
from openvica_sim.losses import (codebook_loss, generator_loss, locality_loss, reconstruction_loss, ssl_loss,
                                 straight_through, total_tokenizer_loss)
from openvica_sim.models.discriminator import DiscriminatorConfig, PatchDiscriminator
from openvica_sim.models.tokenizer import Tokenizer, create_tokenizer
from openvica_sim.training.common import (Optimizers, adamw, batches, check, check_loss_networks, clip_grad,
                                          discriminator_update, frozen_networks, prepare, psnr_db, resolve,
                                          step_generator)
from openvica_sim.training.loop import Context, Stage, run_stage

REQUIRED = {"data.store": str, "model.tokenizer.preset": str, "model.tokenizer.init": str,
            "trainer.max_steps": int, "trainer.batch_size": int, "trainer.checkpoint_every": int,
            "trainer.gan_start": int, "scaling.num_workers": int, "optim.lr": float, "run.dir": str, "seed": int}


class TokenizerTraining(nn.Module):
    """TOK+DEC with the SSL adapter FC(d -> teacher width): the generator side of Fig. 3 in one forward."""

    def __init__(self, tokenizer: Tokenizer, teacher_width: int | None, beta: float):
        super().__init__()
        self.tokenizer = tokenizer
        self.ssl_head = nn.Linear(tokenizer.config.latent_channels, teacher_width) if teacher_width else None
        self.beta = beta

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """frames (B, 3, H, W) -> reconstruction x^, codes (B, h, w), J_CB, z~, and z' = FC(z) (B, h*w, C) if SSL."""
        tok = self.tokenizer
        z_tilde = tok.encode_latents(frames)  # (B, d, h, w)
        with torch.no_grad():
            codes = tok.quantize(z_tilde)  # argmin: no gradient
        z_q = tok.embed(codes)  # CB[k], gradient to the codebook through eq. (4) only
        z = straight_through(z_q, z_tilde)
        out = {"x_hat": tok.decode_latents(z), "codes": codes, "codebook": codebook_loss(z_q, z_tilde, self.beta),
               "z_tilde": z_tilde}
        if self.ssl_head is not None:
            out["z_ssl"] = self.ssl_head(z.flatten(2).transpose(1, 2))  # (B, h*w, C)
        return out


def build(cfg: dict, device: torch.device) -> tuple[TokenizerTraining, PatchDiscriminator, dict, bool]:
    """(TOK+DEC with SSL head, D, frozen loss networks {"perceptual", "teacher"}) on `device`, and whether the codebook
    is new: with a model.tokenizer.codebook_size other than the initial tokenizer's it is a placeholder of that size,
    which `seed_codebook` fills on a fresh start and a checkpoint on resume."""
    t, loss = cfg["model"]["tokenizer"], cfg["loss"]
    K = t.get("codebook_size")
    new_codebook = False
    if t["init"] == "random":
        tokenizer = create_tokenizer(t["preset"], seed=cfg["seed"], **({"codebook_size": K} if K else {}))
    else:
        tokenizer = Tokenizer.from_pretrained(t["init"])
        if K and K != tokenizer.config.codebook_size:
            tokenizer = tokenizer.with_codebook(torch.zeros(K, tokenizer.config.latent_channels))
            new_codebook = True
    frozen = frozen_networks(loss, device)
    teacher_width = frozen["teacher"].config.hidden_size if frozen["teacher"] is not None else None
    torch.manual_seed(cfg["seed"] + 1)  # the SSL head and D: the same init on every rank and every launch
    model = TokenizerTraining(tokenizer, teacher_width, loss["beta"]).to(device).train()
    size = tokenizer.config.image_size
    discriminator = PatchDiscriminator(DiscriminatorConfig(image_size=size, **cfg["discriminator"])).to(device)
    return model, discriminator, frozen, new_codebook


def build_stage(context: Context) -> Stage:
    """The TOK+DEC stage of the loop: alternate generator (eq. 1) and discriminator (eq. 7) steps, restart dead codes,
    export `tokenizer/`."""
    cfg, device, world = context.cfg, context.device, context.world
    trainer, optim, loss_w = cfg["trainer"], cfg["optim"], cfg["loss"]

    def batches_from(start: int):
        dataset = ImageSamples(cfg["data"]["store"], seed=cfg["seed"], rank=context.rank, world_size=world)
        return batches(dataset, context.per_worker_batch, start, num_workers=cfg["data"]["loader_workers"])

    model, discriminator, frozen, new_codebook = build(cfg, device)
    if new_codebook and context.checkpoint is None:
        # the generator of step max_steps, which no training step draws from
        seed_codebook(model.tokenizer, batches_from(0), step_generator(cfg["seed"], trainer["max_steps"], 0), world,
                      device)
    optimizers = Optimizers(g=adamw(model.parameters(), optim), d=adamw(discriminator.parameters(), optim))
    trained = nn.ModuleDict({"generator": model, "discriminator": discriminator})
    K = model.tokenizer.config.codebook_size
    idle = torch.zeros(K, dtype=torch.long)  # steps since each code was last used
    generator_net, d_net = prepare(model, world), prepare(discriminator, world)
    grid = (model.tokenizer.config.tokens_per_side,) * 2

    def step(batch: dict, index: int) -> dict:
        nonlocal idle
        x = batch["frames"].to(device)
        gan = index >= trainer["gan_start"]
        out = generator_net(x)  # generator (TOK+DEC): eq. (1)
        rec = reconstruction_loss(out["x_hat"], x, frozen["perceptual"], loss_w["l1"], loss_w["l2"],
                                  loss_w["perceptual"])
        ssl = None
        if model.ssl_head is not None:
            ssl = ssl_loss(out["z_ssl"], frozen_teacher_targets(frozen["teacher"], x, grid))
        g = generator_loss(d_net(out["x_hat"])) if gan else None
        total = total_tokenizer_loss(rec["rec"], out["codebook"], ssl, g, ssl_weight=loss_w["ssl"],
                                     codebook_weight=loss_w["codebook"], generator_weight=loss_w["generator"])
        local = None
        if loss_w.get("locality"):
            pasted, keep = paste_regions(x, step_generator(cfg["seed"], index, context.rank))
            local = locality_loss(out["z_tilde"], model.tokenizer.encode_latents(pasted), keep)
            total = total + loss_w["locality"] * local
        optimizers["g"].zero_grad(set_to_none=True)
        total.backward()
        grad_norm = clip_grad(model.parameters(), optim["grad_clip"])
        optimizers["g"].step()
        record = {"loss": total.item(), **{k: v.item() for k, v in rec.items() if k != "rec"},
                  "codebook": out["codebook"].item(), "grad_norm": grad_norm, "psnr": psnr_db(rec["l2"].item())}
        if gan:  # the discriminator, eq. (7), alternately on the same batch
            record.update(generator=g.item(), discriminator=discriminator_update(d_net, optimizers["d"], x,
                                                                                 out["x_hat"]))
        if ssl is not None:
            record["ssl"] = ssl.item()
        if local is not None:
            record["locality"] = local.item()
        used = _all_codes_used(out["codes"], K, world)
        idle = torch.where(used, 0, idle + 1)
        every = trainer["dead_code_restart_every"]
        # never in the last `every` steps: a restarted code needs steps for DEC to learn it before the export
        if every and (index + 1) % every == 0 and index + 1 + every <= trainer["max_steps"]:
            restarted = restart_dead_codes(model.tokenizer, x, idle >= every,
                                           step_generator(cfg["seed"], index, 0), world)
            idle[idle >= every] = 0
            if restarted:
                record["codes_restarted"] = restarted
        record["codes_used"] = int(used.sum())
        return record

    def load_extra_state(state: dict) -> None:
        nonlocal idle
        idle = torch.tensor(state["idle_steps"], dtype=torch.long)

    def export(folder) -> None:
        if context.rank == 0:
            model.tokenizer.save_pretrained(folder / "tokenizer")

    describe = (f"tokenizer: {sum(p.numel() for p in model.parameters()):,} trainable parameters (TOK+DEC"
                f"{' + SSL head' if model.ssl_head is not None else ''}), D "
                f"{sum(p.numel() for p in discriminator.parameters()):,}")
    return Stage(name="train tok", trained=trained, optimizers=optimizers, batches=batches_from, step=step,
                 export=export, rate_key="images_per_s", postfix=("loss", "psnr"), describe=describe,
                 extra_state=lambda: {"idle_steps": idle.tolist()}, load_extra_state=load_extra_state)


def frozen_teacher_targets(teacher, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    from openvica_sim.models.teacher import teacher_features

    return teacher_features(teacher, x, grid).to(x.dtype)


def _all_codes_used(codes: torch.Tensor, K: int, world: int) -> torch.Tensor:
    """(K,) bool: used by this step's batch on any rank."""
    counts = torch.bincount(codes.flatten(), minlength=K).cpu()
    if world > 1:
        import torch.distributed as dist

        counts = counts.to(codes.device)
        dist.all_reduce(counts)
        counts = counts.cpu()
    return counts > 0


def paste_regions(x: torch.Tensor, generator: torch.Generator, patch: int = 16, sizes: tuple[int, int] = (2, 6),
                  margin: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames x (B, 3, H, W) with one token-aligned rectangle of sizes[0]..sizes[1] tokens a side pasted over from the
    next frame of the batch, and keep (B, H / patch, W / patch): the token positions at least `margin` tokens away
    from it (what `losses.locality_loss` holds still)."""
    B, _, H, W = x.shape
    h, w = H // patch, W // patch
    out, keep = x.clone(), torch.ones(B, h, w, dtype=torch.bool, device=x.device)
    donor = x.roll(1, dims=0)
    size = torch.randint(sizes[0], sizes[1] + 1, (B, 2), generator=generator)
    corner = (torch.rand(B, 2, generator=generator) * (torch.tensor([h, w]) - size + 1)).long()
    for b in range(B):
        (r, c), (dh, dw) = corner[b].tolist(), size[b].tolist()
        rows, cols = slice(r * patch, (r + dh) * patch), slice(c * patch, (c + dw) * patch)
        out[b, :, rows, cols] = donor[b, :, rows, cols]
        keep[b, max(r - margin, 0):r + dh + margin, max(c - margin, 0):c + dw + margin] = False
    return out, keep


@torch.no_grad()
def seed_codebook(tokenizer: Tokenizer, batches, generator: torch.Generator, world: int, device: torch.device,
                  num_batches: int = 8, iterations: int = 20) -> None:
    """Fill the codebook with k-means (k-means++ seeding, then Lloyd) of the encoder outputs of the first batches
    (rank 0's, broadcast): a trained ENC moving to another codebook size keeps its latents, and its codebook
    starts where they are."""
    latents = []
    for _, batch in zip(range(num_batches), batches):
        z = tokenizer.encode_latents(batch["frames"].to(device))
        latents.append(z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).float().cpu())
    latents = torch.cat(latents)
    K = tokenizer.config.codebook_size
    if len(latents) < K:
        raise ValueError(f"{len(latents)} encoder outputs cannot seed {K} codes; raise trainer.batch_size")
    centres = latents[torch.randint(len(latents), (1,), generator=generator)]
    nearest = torch.cdist(latents, centres).squeeze(1).pow(2)
    for _ in range(K - 1):
        pick = torch.multinomial(nearest.clamp_min(1e-12), 1, generator=generator)
        centres = torch.cat([centres, latents[pick]])
        nearest = torch.minimum(nearest, (latents - latents[pick]).pow(2).sum(1))
    for _ in range(iterations):
        assign = torch.cdist(latents, centres).argmin(1)
        sums = torch.zeros_like(centres).index_add_(0, assign, latents)
        counts = torch.bincount(assign, minlength=K).float()[:, None]
        centres = torch.where(counts > 0, sums / counts.clamp_min(1), centres)
    centres = centres.to(device=tokenizer.codebook.device, dtype=tokenizer.codebook.dtype)
    if world > 1:
        import torch.distributed as dist

        dist.broadcast(centres, src=0)
    tokenizer.codebook.copy_(centres)


@torch.no_grad()
def restart_dead_codes(tokenizer: Tokenizer, x: torch.Tensor, dead: torch.Tensor,
                       generator: torch.Generator, world: int) -> int:
    """Move the `dead` codebook vectors onto encoder outputs of this batch (rank 0's, broadcast to all ranks so the
    replicas stay equal), drawn with probability proportional to their squared distance to the nearest live code;
    returns how many moved. Their Adam moments are left as they are."""
    n = int(dead.sum())
    if n == 0:
        return 0
    latents = tokenizer.encode_latents(x).permute(0, 2, 3, 1).reshape(-1, tokenizer.config.latent_channels)
    live = tokenizer.codebook[~dead.to(tokenizer.codebook.device)]
    far = torch.cdist(latents.float(), live.float()).min(1).values.pow(2) if len(live) else torch.ones(len(latents))
    pick = torch.multinomial(far.cpu().clamp_min(1e-12), n, replacement=n > len(latents), generator=generator)
    new = latents[pick.to(latents.device)]
    if world > 1:
        import torch.distributed as dist

        dist.broadcast(new, src=0)
    tokenizer.codebook[dead.to(tokenizer.codebook.device)] = new.to(tokenizer.codebook.dtype)
    return n


def run(cfg: DictConfig) -> None:
    """Resolve and check on the driver, then launch (in-process or on Ray)."""
    plain = resolve(cfg)
    check(plain, REQUIRED)
    check_loss_networks(plain["loss"])
    run_stage(plain, build_stage)


@hydra.main(version_base="1.3", config_path="conf", config_name="tok")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
