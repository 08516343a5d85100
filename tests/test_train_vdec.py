"""training/vdec.py: VDEC learns eq. (8) on 3-frame windows of a frozen TOK, D-3D alternates, resume is exact."""

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

CONF = str(Path(__file__).resolve().parent.parent / "training" / "conf")


@pytest.fixture(scope="module")
def tokenizer_dir(test_bundle, tmp_path_factory):
    """The frozen TOK: the test bundle's tokenizer as a folder (training/tok.py's run.dir/tokenizer in real use)."""
    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    test_bundle.tokenizer.save_pretrained(out)
    return out


def config(store, run_dir, tokenizer, networks, *overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("vdec", overrides=[
            "model=tiny", f"model.tokenizer.init={tokenizer}", f"data.store={store}", "data.loader_workers=0",
            f"run.dir={run_dir}", "trainer.batch_size=1", "trainer.log_every=1", "trainer.gan_start=3",
            "optim.warmup_steps=2", "optim.lr=2e-3", "optim.min_lr=2e-4", "optim.decay_steps=40",
            f"loss.perceptual_net={networks['perceptual_net']}", "discriminator.channels=4", *overrides])


def train(store, run_dir, tokenizer, networks, *overrides) -> list[dict]:
    from openvica_sim.training.vdec import run

    run(config(store, run_dir, tokenizer, networks, *overrides))
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_every_term_of_eq_8_is_active_and_reconstruction_improves(frame_store, tokenizer_dir, loss_networks,
                                                                    tmp_path):
    from openvica_sim.models.tokenizer import Tokenizer
    from openvica_sim.models.video_decoder import VideoDecoder

    metrics = train(frame_store, tmp_path / "run", tokenizer_dir, loss_networks, "trainer.max_steps=14",
                    "trainer.checkpoint_every=14", "trainer.gan_start=10")
    assert [m["step"] for m in metrics] == list(range(1, 15))
    assert all("generator" not in m for m in metrics[:10])
    for m in metrics[10:]:
        assert {"l1", "l2", "perceptual", "generator", "discriminator"} <= set(m) and m["perceptual"] > 0
    first = sum(m["l1"] for m in metrics[:3]) / 3
    last = sum(m["l1"] for m in metrics[7:10]) / 3  # before the GAN: the reconstruction terms alone
    assert last < 0.8 * first, [m["l1"] for m in metrics]
    video_decoder = VideoDecoder.from_pretrained(tmp_path / "run" / "video_decoder")
    tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    assert torch.equal(video_decoder.codebook, tokenizer.codebook)  # decodes the frozen TOK's tokens
    inflated = VideoDecoder.from_tokenizer(tokenizer)
    centre = (slice(None), slice(None), 0)  # trained: the off-centre temporal slices are no longer zero
    assert video_decoder.decoder.conv_in.weight[centre].abs().sum() > 0
    assert inflated.decoder.conv_in.weight[centre].abs().sum() == 0


def test_a_resumed_run_continues_the_uninterrupted_loss_curve(frame_store, tokenizer_dir, loss_networks, tmp_path):
    tok = tokenizer_dir
    whole = train(frame_store, tmp_path / "whole", tok, loss_networks, "trainer.max_steps=5",
                  "trainer.checkpoint_every=4")
    train(frame_store, tmp_path / "resumed", tok, loss_networks, "trainer.max_steps=4", "trainer.checkpoint_every=4")
    resumed = train(frame_store, tmp_path / "resumed", tok, loss_networks, "trainer.max_steps=5",
                    "trainer.checkpoint_every=4")
    assert [m["step"] for m in resumed] == list(range(1, 6))
    for a, b in zip(whole, resumed):
        for key in ("loss", "l1", "discriminator"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (key, a, b)


def test_a_random_tokenizer_is_refused(frame_store, tmp_path):
    from openvica_sim.training.vdec import run

    cfg = config(frame_store, tmp_path / "run", "random", {"perceptual_net": "null"}, "loss.perceptual=0",
                 "trainer.max_steps=1")
    with pytest.raises(ValueError, match="tokens of a trained TOK"):
        run(cfg)
