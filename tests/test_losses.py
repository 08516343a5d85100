"""losses.py: the paper's equations (1)-(8) and the world model's masked cross-entropy, term by term."""

import math

import pytest
import torch

from openvica_sim import losses


def test_codebook_loss_moves_the_codebook_with_weight_1_and_the_encoder_with_beta():
    z_q = torch.tensor([1.0, 2.0], requires_grad=True)  # selected codebook vectors
    z_tilde = torch.tensor([0.0, 0.0], requires_grad=True)  # encoder output
    losses.codebook_loss(z_q, z_tilde, beta=0.25).backward()
    # d/dz_q mean((z_q - sg z~)^2) = (z_q - z~); d/dz~ 0.25 mean((z~ - sg z_q)^2) = 0.25 (z~ - z_q)
    assert torch.allclose(z_q.grad, torch.tensor([1.0, 2.0]))
    assert torch.allclose(z_tilde.grad, 0.25 * torch.tensor([-1.0, -2.0]))


def test_straight_through_forwards_z_and_copies_gradients_to_the_encoder():
    z_q, z_tilde = torch.tensor([3.0]), torch.tensor([1.0], requires_grad=True)
    out = losses.straight_through(z_q, z_tilde)
    (2 * out).sum().backward()
    assert out.item() == 3.0 and z_tilde.grad.item() == 2.0


def test_ssl_loss_is_one_minus_cosine_per_token():
    teacher = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])
    assert losses.ssl_loss(torch.tensor([[[5.0, 0.0], [0.0, 1.0]]]), teacher).item() == pytest.approx(0.0)
    assert losses.ssl_loss(torch.tensor([[[0.0, 1.0], [1.0, 0.0]]]), teacher).item() == pytest.approx(1.0)
    assert losses.ssl_loss(torch.zeros(1, 2, 2), teacher).item() == pytest.approx(1.0), "eps guards a zero norm"


def test_hinge_discriminator_and_generator_losses():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5])
    # 0.5 (mean(relu(1 - real)) + mean(relu(1 + fake))) = 0.5 ((0 + 1) / 2 + (0 + 1.5) / 2)
    assert losses.discriminator_loss(real, fake).item() == pytest.approx(0.625)
    assert losses.generator_loss(fake).item() == pytest.approx(0.75)


def test_reconstruction_loss_weights_l1_l2_and_the_perceptual_term():
    x, x_hat = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5)
    features = lambda img: [img * 2, img.mean(1, keepdim=True)]
    out = losses.reconstruction_loss(x_hat, x, features)
    perceptual = 1.0 ** 2 + 0.5 ** 2  # layer 1: (2 * 0.5)^2, layer 2: 0.5^2
    assert out["perceptual"].item() == pytest.approx(perceptual)
    assert out["rec"].item() == pytest.approx(0.2 * 0.5 + 2.0 * 0.25 + 1.0 * perceptual)
    assert "perceptual" not in losses.reconstruction_loss(x_hat, x)


def test_total_and_video_decoder_losses_add_their_terms():
    one = torch.tensor(1.0)
    assert losses.total_tokenizer_loss(one, one, ssl=one, generator=one).item() == pytest.approx(1 + 1 + 0.1 + 1)
    frames = torch.zeros(1, 3, 3, 8, 8)
    out = losses.video_decoder_loss(frames + 0.5, frames, generator=torch.tensor(2.0))
    assert out["rec"].item() == pytest.approx(3 * (0.2 * 0.5 + 2.0 * 0.25)) and out["total"].item() == pytest.approx(
        out["rec"].item() + 2.0)


def test_world_model_loss_counts_masked_targets_only():
    logits = torch.zeros(1, 3, 4)
    logits[0, 0, 2] = 10.0  # confident and right at position 0
    targets = torch.tensor([[2, 1, 3]])
    mask = torch.tensor([[True, False, True]])
    expected = (-torch.log_softmax(logits[0, 0], -1)[2] + math.log(4)) / 2
    assert losses.world_model_loss(logits, targets, mask).item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="selects no image-token targets"):
        losses.world_model_loss(logits, targets, torch.zeros_like(mask))
