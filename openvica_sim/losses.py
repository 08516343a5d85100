"""The paper's training losses, equations (1)-(8) of section III-C, and the world model's cross-entropy.

Written here rather than taken from diffusers: its legacy quantiser's `commit_loss` puts beta on the codebook term,
the opposite of eq. (4) (see models/tokenizer.py). Every function returns a scalar mean over the batch.

Dimensions: B batch, C channels, H x W pixels, d code dimension, h x w token grid, L sequence length, V vocabulary.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

# Paper IV-A and Table III (the proposed setting): lambda_1, lambda_2, lambda', lambda_CB, lambda_SSL, lambda_G, beta
L1_WEIGHT, L2_WEIGHT, PERCEPTUAL_WEIGHT = 0.2, 2.0, 1.0
CODEBOOK_WEIGHT, SSL_WEIGHT, GENERATOR_WEIGHT, BETA = 1.0, 0.1, 1.0, 0.25
SSL_EPS = 1e-8


def perceptual_loss(features: Callable[[torch.Tensor], Sequence[torch.Tensor]], x_hat: torch.Tensor,
                    x: torch.Tensor) -> torch.Tensor:
    """Eq. (3): sum over layers l of ||phi_l(x_hat) - phi_l(x)||^2 (mean over elements per layer, summed over l).

    `features` maps frames (B, 3, H, W) in [-1, 1] to the chosen layers' activations of an ImageNet network.
    """
    fake, real = features(x_hat), features(x)
    return sum(F.mse_loss(a, b.detach()) for a, b in zip(fake, real, strict=True))


def reconstruction_loss(x_hat: torch.Tensor, x: torch.Tensor, features=None, l1: float = L1_WEIGHT,
                        l2: float = L2_WEIGHT, perceptual: float = PERCEPTUAL_WEIGHT) -> dict[str, torch.Tensor]:
    """Eq. (2): lambda_1 ||x_hat - x||_1 + lambda_2 ||x_hat - x||_2^2 + lambda' J'(x_hat, x), as its terms and "rec".

    The norms are means over pixels (the paper's weights were set for per-pixel means, as in GAIA-1).
    `features=None` (no perceptual network) drops J'.
    """
    terms = {"l1": F.l1_loss(x_hat, x), "l2": F.mse_loss(x_hat, x)}
    rec = l1 * terms["l1"] + l2 * terms["l2"]
    if features is not None and perceptual:
        terms["perceptual"] = perceptual_loss(features, x_hat, x)
        rec = rec + perceptual * terms["perceptual"]
    return {**terms, "rec": rec}


def codebook_loss(z_q: torch.Tensor, z_tilde: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """Eq. (4): ||sg(z~) - z||^2 (moves the codebook) + beta ||z~ - sg(z)||^2 (commits the encoder).

    z_q: the selected codebook vectors z (B, d, h, w), with gradient to the codebook; z_tilde: encoder output z~.
    """
    return F.mse_loss(z_q, z_tilde.detach()) + beta * F.mse_loss(z_tilde, z_q.detach())


def locality_loss(z_tilde: torch.Tensor, z_tilde_pasted: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Not in the paper: ||z~(x) - z~(x')||^2 where x' is x with some regions pasted over, at the token positions
    `keep` (B, h, w) that the paste left alone (the pasted regions and a margin around them excluded), relative to the
    latents' variance over the batch (so shrinking every latent does not lower it).

    A token should depend on its own patch and its neighbours, not on the rest of the frame. ENC's GroupNorms pool
    their statistics over the whole frame, so without this a car entering at the left edge moves every latent (a
    64x64 black square flipped 90 % of the codes ten patches away in the first embedded TOK), and the world model
    is asked to predict flips that no motion explains. z_tilde, z_tilde_pasted: (B, d, h, w), both with gradients.
    """
    if not keep.any():
        raise ValueError("keep selects no token position: paste smaller regions")
    moved = (z_tilde - z_tilde_pasted).pow(2).sum(1)  # (B, h, w)
    scale = z_tilde.detach().var(dim=(0, 2, 3)).sum().clamp_min(1e-12)  # total variance of a latent vector
    return moved[keep].mean() / scale


def straight_through(z_q: torch.Tensor, z_tilde: torch.Tensor) -> torch.Tensor:
    """z in the forward pass, the identity to z~ in the backward pass (paper III-C b: gradients of J_rec, J_SSL
    and J_G are copied from z to z~, reaching the codebook only through eq. (4))."""
    return z_tilde + (z_q - z_tilde).detach()


def ssl_loss(z_projected: torch.Tensor, teacher: torch.Tensor, eps: float = SSL_EPS) -> torch.Tensor:
    """Eq. (5): 1 - cos(z~_SSL, z') per token, with the denominator clamped at eps; mean over tokens.

    z_projected: z' = FC(z) (B, h*w, 384); teacher: the teacher's patch features on the same grid (B, h*w, 384).
    """
    dot = (teacher.detach() * z_projected).sum(-1)
    norms = (teacher.detach().norm(dim=-1) * z_projected.norm(dim=-1)).clamp_min(eps)
    return (1 - dot / norms).mean()


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Eq. (6): J_G = -D(x_hat), averaged over the discriminator's patches (and frames, for the 3D D of eq. (8))."""
    return -logits_fake.mean()


def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Eq. (7): 0.5 (ReLU(1 - D(x)) + ReLU(1 + D(x_hat))), the hinge loss; per patch, then averaged."""
    return 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())


def total_tokenizer_loss(rec: torch.Tensor, codebook: torch.Tensor, ssl: torch.Tensor | None = None,
                         generator: torch.Tensor | None = None, ssl_weight: float = SSL_WEIGHT,
                         codebook_weight: float = CODEBOOK_WEIGHT, generator_weight: float = GENERATOR_WEIGHT):
    """Eq. (1): J_total = J_rec + lambda_CB J_CB + lambda_SSL J_SSL + lambda_G J_G (absent terms count as 0;
    J_G is passed only once the GAN is switched on)."""
    total = rec + codebook_weight * codebook
    if ssl is not None:
        total = total + ssl_weight * ssl
    if generator is not None:
        total = total + generator_weight * generator
    return total


def video_decoder_loss(frames_hat: torch.Tensor, frames: torch.Tensor, features=None,
                       generator: torch.Tensor | None = None, l1: float = L1_WEIGHT, l2: float = L2_WEIGHT,
                       perceptual: float = PERCEPTUAL_WEIGHT,
                       generator_weight: float = GENERATOR_WEIGHT) -> dict[str, torch.Tensor]:
    """Eq. (8): sum over the window's frames tau of J_rec(x_hat_tau, x_tau) + J_G-3D, as its terms and "total".

    frames_hat, frames: (B, 3, T, H, W) with T = 3 (frames t-1, t, t+1); generator: J_G-3D, once switched on.
    """
    per_frame = [reconstruction_loss(frames_hat[:, :, tau], frames[:, :, tau], features, l1, l2, perceptual)
                 for tau in range(frames.shape[2])]
    out = {key: sum(r[key] for r in per_frame) for key in per_frame[0]}
    out["total"] = out["rec"] + (generator_weight * generator if generator is not None else 0.0)
    return out


def world_model_loss(logits: torch.Tensor, targets: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Paper III-C c: teacher-forced cross-entropy over the image tokens only.

    logits: (B, L, V) for the input sequence; targets: (B, L) the next id of every position (the input shifted by
    one); loss_mask: (B, L) bool, True where the target is an image code that the model must predict. False for
    targets in the prompt, for end-of-frame targets (forced at inference, so a loss there teaches nothing the
    sampler uses) and for ego-command targets (given, not predicted; docs/design.md "Ego conditioning").
    """
    picked = logits[loss_mask]  # (P, V)
    if picked.numel() == 0:
        raise ValueError("the loss mask selects no image-token targets; check the sequence layout")
    return F.cross_entropy(picked.float(), targets[loss_mask])
