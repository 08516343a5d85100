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
