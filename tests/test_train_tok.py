"""training/tok.py: TOK+DEC learn with every term of eq. (1) active, D alternates, the run resumes exactly."""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

CONF = str(Path(__file__).resolve().parent.parent / "training" / "conf")


def config(store, run_dir, networks, *overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("tok", overrides=[
            "model=tiny", "model.tokenizer.preset=test", f"data.store={store}", "data.loader_workers=0",
            f"run.dir={run_dir}", "trainer.batch_size=2", "trainer.log_every=1", "trainer.gan_start=3",
            "optim.warmup_steps=2", "optim.lr=2e-3", "optim.min_lr=2e-4", "optim.decay_steps=40",
            f"loss.perceptual_net={networks['perceptual_net']}", f"loss.teacher={networks['teacher']}",
            "discriminator.channels=4", *overrides])


def train(store, run_dir, networks, *overrides) -> list[dict]:
    from openvica_sim.training.tok import run

    run(config(store, run_dir, networks, *overrides))
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_every_loss_term_is_active_and_reconstruction_improves(frame_store, loss_networks, tmp_path):
    from openvica_sim.models.tokenizer import Tokenizer

    metrics = train(frame_store, tmp_path / "run", loss_networks, "trainer.max_steps=24",
                    "trainer.checkpoint_every=24")
    assert [m["step"] for m in metrics] == list(range(1, 25))
    before, after = metrics[:2], metrics[3:]
    assert all("generator" not in m for m in before)  # J_G and J_D start at trainer.gan_start
    for m in after:
        assert {"l1", "l2", "perceptual", "codebook", "ssl", "generator", "discriminator"} <= set(m)
        assert m["perceptual"] > 0 and m["ssl"] > 0
    first = sum(m["l1"] for m in metrics[:4]) / 4
    last = sum(m["l1"] for m in metrics[-4:]) / 4
    assert last < 0.8 * first, [m["l1"] for m in metrics]
    tokenizer = Tokenizer.from_pretrained(tmp_path / "run" / "tokenizer")
    assert tokenizer.config.codebook_size == 64


def test_a_resumed_run_continues_the_uninterrupted_loss_curve(frame_store, loss_networks, tmp_path):
    whole = train(frame_store, tmp_path / "whole", loss_networks, "trainer.max_steps=6", "trainer.checkpoint_every=4")
    train(frame_store, tmp_path / "resumed", loss_networks, "trainer.max_steps=4", "trainer.checkpoint_every=4")
    resumed = train(frame_store, tmp_path / "resumed", loss_networks, "trainer.max_steps=6",
                    "trainer.checkpoint_every=4")
    assert [m["step"] for m in resumed] == list(range(1, 7))
    for a, b in zip(whole, resumed):  # steps 5, 6 run with the GAN on: D and its optimiser resumed too
        for key in ("loss", "l1", "discriminator"):
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), (key, a, b)


def test_dead_codes_are_moved_onto_encoder_outputs(frame_store, tmp_path):
    metrics = train(frame_store, tmp_path / "run", {"perceptual_net": "null", "teacher": "null"}, "loss.perceptual=0",
                    "loss.ssl=0", "trainer.max_steps=4", "trainer.checkpoint_every=4",
                    "trainer.dead_code_restart_every=2", "trainer.gan_start=100")
    assert metrics[1]["codes_restarted"] > 0  # 2 frames x 256 positions never use all 64 random codes
    assert "perceptual" not in metrics[0] and "ssl" not in metrics[0]


def test_a_weighted_term_without_its_network_is_named(frame_store, tmp_path):
    from openvica_sim.training.tok import run

    cfg = config(frame_store, tmp_path / "run", {"perceptual_net": "null", "teacher": "null"})
    with pytest.raises(ValueError, match=r"loss.perceptual=1.0 needs loss.perceptual_net=PATH") as error:
        run(cfg)
    assert "loss.ssl=0.1 needs loss.teacher=PATH" in str(error.value)


def test_restarted_codes_land_on_latents_the_codebook_serves_worst():
    import torch

    from openvica_sim.models.tokenizer import create_tokenizer
    from openvica_sim.training.tok import restart_dead_codes

    tokenizer = create_tokenizer("test")
    x = torch.rand(1, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        latents = tokenizer.encode_latents(x).permute(0, 2, 3, 1).reshape(-1, 8)  # 256 latents
        tokenizer.codebook[:] = latents[:64]  # every code sits on one of the first 64 latents
    dead = torch.zeros(64, dtype=torch.bool)
    dead[:8] = True
    restart_dead_codes(tokenizer, x, dead, torch.Generator().manual_seed(0), world=1)
    # a latent that a live code already sits on (distance 0) is never drawn: no restart duplicates a live code
    assert torch.cdist(tokenizer.codebook[:8], tokenizer.codebook[8:]).min() > 1e-6


def test_pasted_regions_leave_the_kept_positions_untouched():
    import torch

    from openvica_sim.training.tok import paste_regions

    x = torch.rand(4, 3, 64, 64)
    pasted, keep = paste_regions(x, torch.Generator().manual_seed(0), patch=16, sizes=(1, 2), margin=1)
    changed = (pasted != x).any(1).reshape(4, 4, 16, 4, 16).any(-1).any(2)  # (B, h, w) token changed
    assert changed.any() and not (changed & keep).any()
    assert keep.any() and not keep.all()


def test_locality_loss_is_zero_for_unmoved_latents_and_scale_free():
    import torch

    from openvica_sim.losses import locality_loss

    z = torch.randn(2, 8, 4, 4)
    moved = z.clone()
    moved[:, :, 0, 0] += 1.0
    keep = torch.ones(2, 4, 4, dtype=torch.bool)
    keep[:, 0, 0] = False
    assert locality_loss(z, moved, keep) == 0
    keep[:, 0, 0] = True
    assert locality_loss(10 * z, 10 * moved, keep) == pytest.approx(locality_loss(z, moved, keep).item(), rel=1e-5)
    with pytest.raises(ValueError, match="keep selects no token"):
        locality_loss(z, moved, torch.zeros(2, 4, 4, dtype=torch.bool))


def test_a_trained_tokenizer_moves_to_a_smaller_codebook_seeded_by_kmeans_and_keeps_latents_local(frame_store,
                                                                                                   tmp_path):
    from openvica_sim.models.tokenizer import Tokenizer

    off = {"perceptual_net": "null", "teacher": "null"}
    train(frame_store, tmp_path / "first", off, "loss.perceptual=0", "loss.ssl=0", "trainer.max_steps=2",
          "trainer.checkpoint_every=2", "trainer.gan_start=100")
    metrics = train(frame_store, tmp_path / "second", off, "loss.perceptual=0", "loss.ssl=0",
                    f"model.tokenizer.init={tmp_path / 'first' / 'tokenizer'}", "model.tokenizer.codebook_size=16",
                    "loss.locality=1.0", "trainer.max_steps=2", "trainer.checkpoint_every=2", "trainer.gan_start=100")
    assert all(m["locality"] > 0 for m in metrics)
    first = Tokenizer.from_pretrained(tmp_path / "first" / "tokenizer")
    second = Tokenizer.from_pretrained(tmp_path / "second" / "tokenizer")
    assert (first.config.codebook_size, second.config.codebook_size) == (64, 16)
    assert second.codebook.abs().sum() > 0 and len(set(map(tuple, second.codebook.tolist()))) == 16
