"""The paper's metrics (issue 17): each equals an independent reference computed here from the same features,
identical inputs give 0 (FID, FVD, CMMD, LPIPS) or the maximum (PSNR, SSIM, MS-SSIM), and the metrics move the right
way when frames are blurred or shuffled in time. Feature networks are tiny random ones in the real file formats."""

import numpy as np
import pytest
import scipy.linalg
import torch

from openvica_sim.metrics import distribution, networks, reconstruction


def blur(frames: np.ndarray, passes: int = 4) -> np.ndarray:
    x = torch.from_numpy(frames.reshape(-1, *frames.shape[-3:])).permute(0, 3, 1, 2).float()
    kernel = torch.ones(3, 1, 5, 5) / 25
    for _ in range(passes):
        x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate"), kernel, groups=3)
    return x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy().reshape(frames.shape)


# ---- reconstruction ------------------------------------------------------------------------------------------------

def test_psnr_equals_the_formula_per_frame_and_caps_identical_frames(synthetic_clips):
    a, b = synthetic_clips[0], blur(synthetic_clips[0])
    expected = [10 * np.log10(255 ** 2 / np.mean((x.astype(float) - y) ** 2)) for x, y in zip(a, b)]
    np.testing.assert_allclose(reconstruction.psnr(a, b), expected, rtol=1e-12)
    assert np.all(reconstruction.psnr(a, a) == reconstruction.PSNR_MAX_DB)


def test_ssim_and_ms_ssim_are_one_for_identical_frames_and_fall_with_blur(synthetic_clips):
    a = synthetic_clips[0][:3]
    for metric in (reconstruction.ssim, reconstruction.ms_ssim):
        np.testing.assert_allclose(metric(a, a), 1.0, atol=5e-5)  # float32 round-off in flat sky and road
        assert np.all(metric(blur(a), a) < metric(blur(a, passes=1), a)) and np.all(metric(blur(a), a) < 0.99)


def test_ssim_is_torchmetrics_per_image_not_over_the_batch(synthetic_clips):
    from torchmetrics.functional.image import structural_similarity_index_measure

    a, b = synthetic_clips[1][:2], blur(synthetic_clips[1][:2])
    per_image = reconstruction.ssim(a, b)
    image = lambda x: torch.from_numpy(x).permute(0, 3, 1, 2).double() / 255  # noqa: E731
    one = structural_similarity_index_measure(image(a[:1]), image(b[:1]), data_range=1.0)  # float64 on [0, 1]: exact
    assert per_image.shape == (2,) and per_image[0] == pytest.approx(float(one), abs=1e-4)  # float32 round-off
    each = structural_similarity_index_measure(image(a), image(b), data_range=1.0, reduction="none")
    np.testing.assert_allclose(per_image, each.numpy(), atol=1e-4)


def test_ms_ssim_refuses_frames_too_small_for_five_scales():
    small = np.zeros((1, 64, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="160 pixels"):
        reconstruction.ms_ssim(small, small)


def test_reconstruction_metrics_name_mismatched_shapes(synthetic_clips):
    with pytest.raises(ValueError, match="differ in shape"):
        reconstruction.psnr(synthetic_clips[0], synthetic_clips[0][:2])


def test_lpips_equals_its_definition_over_the_alexnet_backbone(feature_networks, synthetic_clips):
    net = networks.load_lpips(feature_networks["alexnet"])
    a, b = synthetic_clips[2][:2], blur(synthetic_clips[2][:2])
    # the definition, written out here: scaling layer, five ReLU taps, channel-normalised squared differences
    # weighted by lpips' linear layers (the v0.1 alex.pth torchmetrics ships), spatial mean, sum over layers
    lin = torch.load(networks.installed_lpips_linear("alex"), map_location="cpu", weights_only=True)
    shift = torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1)
    scale = torch.tensor([.458, .448, .450]).view(1, 3, 1, 1)
    x = (torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1 - shift) / scale
    y = (torch.from_numpy(b).permute(0, 3, 1, 2).float() / 127.5 - 1 - shift) / scale
    features = net.backbone.features
    total = torch.zeros(2)
    layer = 0
    for i, module in enumerate(features):
        x, y = module(x), module(y)
        if i in (1, 4, 7, 9, 11):
            nx, ny = x / (x.norm(dim=1, keepdim=True) + 1e-10), y / (y.norm(dim=1, keepdim=True) + 1e-10)
            total += ((nx - ny) ** 2 * lin[f"lin{layer}.model.1.weight"]).sum(1).mean(dim=(1, 2))
            layer += 1
    np.testing.assert_allclose(reconstruction.lpips(b, a, net), total.numpy(), rtol=1e-4)
    assert np.all(reconstruction.lpips(a, a, net) == 0)


def test_lpips_takes_a_vgg16_backbone_with_its_linear_layers(feature_networks, synthetic_clips):
    net = networks.load_lpips(feature_networks["vgg16"], feature_networks["vgg16_lpips"])
    a = synthetic_clips[3][:2]
    assert np.all(reconstruction.lpips(a, a, net) == 0)
    assert np.all(reconstruction.lpips(blur(a), a, net) > reconstruction.lpips(blur(a, passes=1), a, net))


def test_lpips_errors_name_the_file_where_it_is_published_and_the_flag(tmp_path, feature_networks):
    with pytest.raises(FileNotFoundError, match=r"absent\.pth.*alexnet-owt-7be5be79\.pth.*--lpips-net"):
        networks.load_lpips(tmp_path / "absent.pth")
    with pytest.raises(ValueError, match=r"--lpips-linear"):
        networks.load_lpips(feature_networks["vgg16"], feature_networks["alexnet"])  # not LPIPS linear layers
    with pytest.raises(ValueError, match="do not fit"):
        networks.load_lpips(feature_networks["vgg16"], networks.installed_lpips_linear("vgg"))  # real widths


# ---- distribution --------------------------------------------------------------------------------------------------

def reference_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """StyleGAN-V's formula: biased float64 statistics and scipy's sqrtm."""
    mu_a, mu_b = a.astype(np.float64).mean(0), b.astype(np.float64).mean(0)
    cov_a, cov_b = np.cov(a.astype(np.float64), rowvar=False, bias=True), np.cov(b, rowvar=False, bias=True)
    root, _ = scipy.linalg.sqrtm(cov_a @ cov_b, disp=False)
    return float(np.real(np.square(mu_a - mu_b).sum() + np.trace(cov_a + cov_b - 2 * root)))


def test_fid_equals_the_scipy_reference_on_the_inception_features(feature_networks, synthetic_clips):
    net = networks.load_inception(feature_networks["inception"])
    a = distribution.inception_features(synthetic_clips[:3].reshape(-1, 256, 256, 3), net)
    b = distribution.inception_features(synthetic_clips[3:].reshape(-1, 256, 256, 3), net)
    assert a.shape == (24, 16) and a.dtype == np.float32
    assert distribution.fid(a, b) == pytest.approx(reference_frechet(a, b), rel=1e-6)
    assert distribution.fid(a, a) == pytest.approx(0.0, abs=1e-8)


def test_the_frechet_distance_stays_real_for_singular_covariances():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 32)), rng.normal(size=(5, 32)) + 1  # 5 samples in 32 dimensions: rank 4
    value = distribution.fid(a, b)
    assert np.isfinite(value) and value > 0
    # the trace term from eigenvalues of the symmetric form equals the (real part of) scipy's on this input
    assert value == pytest.approx(reference_frechet(a, b), rel=1e-4)


def test_fvd_equals_the_scipy_reference_rises_when_frames_are_shuffled_and_fid_does_not(feature_networks,
                                                                                        synthetic_clips):
    i3d = networks.load_i3d(feature_networks["i3d"])
    inception = networks.load_inception(feature_networks["inception"])
    rng = np.random.default_rng(0)
    real = synthetic_clips[3:]
    generated = synthetic_clips[:3]
    shuffled = np.stack([clip[rng.permutation(len(clip))] for clip in generated])
    fa, fb, fs = (distribution.i3d_features(v, i3d) for v in (generated, real, shuffled))
    assert fa.shape == (3, 16)
    assert distribution.fvd(fa, fb) == pytest.approx(reference_frechet(fa, fb), rel=1e-5, abs=1e-9)
    assert distribution.fvd(fa, fa) == pytest.approx(0.0, abs=1e-8)
    assert distribution.fvd(fs, fa) > 0 and distribution.fvd(fs, fb) > distribution.fvd(fa, fb)
    frames = lambda v: distribution.inception_features(v.reshape(-1, 256, 256, 3), inception)  # noqa: E731
    assert distribution.fid(frames(shuffled), frames(real)) == pytest.approx(
        distribution.fid(frames(generated), frames(real)), rel=1e-9)


def test_cmmd_equals_its_formula_on_unit_clip_embeddings(feature_networks, synthetic_clips):
    embedder = networks.load_clip(feature_networks["clip"])
    x = distribution.clip_embeddings(synthetic_clips[:2].reshape(-1, 256, 256, 3), embedder)
    y = distribution.clip_embeddings(synthetic_clips[2:5].reshape(-1, 256, 256, 3)[:13], embedder)  # no remainder
    assert x.shape == (16, 12) and y.shape == (13, 12)
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, rtol=1e-5)

    def k(a, b):
        return np.exp(-((a[:, None, :].astype(float) - b[None]) ** 2).sum(-1) / (2 * 10.0 ** 2))

    expected = 1000 * (k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean())
    assert distribution.cmmd(x, y) == pytest.approx(expected, rel=1e-9)
    assert distribution.cmmd(x, x) == pytest.approx(0.0, abs=1e-12)


def test_clip_embeddings_follow_the_folders_preprocessing(feature_networks, synthetic_clips):
    from transformers import CLIPVisionModelWithProjection

    embedder = networks.load_clip(feature_networks["clip"])
    frames = synthetic_clips[0][:2]
    from transformers import CLIPConfig

    config = CLIPConfig.from_pretrained(feature_networks["clip"]).vision_config
    config.projection_dim = 12
    model = CLIPVisionModelWithProjection.from_pretrained(feature_networks["clip"], config=config,
                                                          local_files_only=True).eval()
    x = torch.nn.functional.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255, size=(32, 32),
                                        mode="bicubic", antialias=True).clamp(0, 1)
    x = (x - torch.tensor(networks.CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(networks.CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model(pixel_values=x).image_embeds
    expected = expected / expected.norm(dim=-1, keepdim=True)
    np.testing.assert_allclose(distribution.clip_embeddings(frames, embedder), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_distribution_metrics_grow_as_frames_are_blurred_away_from_the_real_ones(feature_networks, synthetic_clips):
    inception = networks.load_inception(feature_networks["inception"])
    clip = networks.load_clip(feature_networks["clip"])
    real = synthetic_clips.reshape(-1, 256, 256, 3)
    real_features, real_embeddings = distribution.inception_features(real, inception), distribution.clip_embeddings(
        real, clip)
    fid, cmmd = [], []
    for passes in (1, 4, 16):
        blurred = blur(real, passes)
        fid.append(distribution.fid(distribution.inception_features(blurred, inception), real_features))
        cmmd.append(distribution.cmmd(distribution.clip_embeddings(blurred, clip), real_embeddings))
    assert 0 < fid[0] < fid[1] < fid[2], fid
    assert 0 < cmmd[0] < cmmd[1] < cmmd[2], cmmd


def test_feature_network_errors_name_the_file_where_it_is_published_and_the_flag(tmp_path, feature_networks):
    with pytest.raises(FileNotFoundError, match=r"absent\.pt.*inception-2015-12-05\.pt.*--inception"):
        networks.load_inception(tmp_path / "absent.pt")
    (tmp_path / "broken.pt").write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match=r"broken\.pt is not a TorchScript file.*i3d_torchscript\.pt.*--i3d"):
        networks.load_i3d(tmp_path / "broken.pt")
    with pytest.raises(FileNotFoundError, match=r"clip-vit-large-patch14-336.*--clip-model"):
        networks.load_clip(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ValueError, match="not CLIP"):
        networks.load_clip(tmp_path)


def test_files_are_hashed_for_the_record(feature_networks):
    digest = networks.file_sha256(feature_networks["inception"])
    assert len(digest) == 64 and digest == networks.file_sha256(feature_networks["inception"])
    assert networks.file_sha256(feature_networks["clip"]) != digest  # a folder: its files, by name
