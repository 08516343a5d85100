"""training/wm.py: the world model learns on a tiny synthetic store, resumes exactly, trains LoRA on a frozen base."""

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from openvica_sim.data.bdd_layout import write_bdd100k
from openvica_sim.data.ingest import ingest

CONF = str(Path(__file__).resolve().parent.parent / "training" / "conf")


@pytest.fixture(scope="module")
def store(tmp_path_factory, test_bundle):
    root = tmp_path_factory.mktemp("bdd")
    write_bdd100k(root, "train", num_videos=3, seconds=2.0, seed=3)
    out = root / "store.zarr"
    ingest(root, "train", out, test_bundle, progress=False)
    return out


def config(store, run_dir, *overrides):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("wm", overrides=[
            "model=tiny", "model.preset=test", f"data.store={store}", "data.num_future_frames=2",
            "data.loader_workers=0", f"run.dir={run_dir}", "trainer.batch_size=2", "trainer.log_every=1",
            "optim.warmup_steps=2", "optim.lr=3e-3", "optim.min_lr=3e-4", "optim.decay_steps=40", *overrides])


def train(store, run_dir, *overrides) -> list[dict]:
    from openvica_sim.training.wm import run

    run(config(store, run_dir, *overrides))
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_loss_falls_and_the_run_ends_with_a_loadable_world_model(store, tmp_path):
    from openvica_sim.models.world_model import WorldModel

    metrics = train(store, tmp_path / "run", "trainer.max_steps=30", "trainer.checkpoint_every=30")
    losses = [m["loss"] for m in metrics]
    assert [m["step"] for m in metrics] == list(range(1, 31))
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    assert {"lr", "grad_norm", "tokens_per_s"} <= set(metrics[0])
    wm = WorldModel.from_pretrained(tmp_path / "run" / "world_model")
    assert wm.config.codebook_size == 64


def test_a_resumed_run_continues_the_uninterrupted_loss_curve(store, tmp_path):
    whole = train(store, tmp_path / "whole", "trainer.max_steps=6", "trainer.checkpoint_every=3")
    first = train(store, tmp_path / "resumed", "trainer.max_steps=3", "trainer.checkpoint_every=3")
    assert len(first) == 3
    resumed = train(store, tmp_path / "resumed", "trainer.max_steps=6", "trainer.checkpoint_every=3")
    assert [m["step"] for m in resumed] == list(range(1, 7))
    for a, b in zip(whole, resumed):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6), (a, b)


def test_a_rerun_with_another_model_config_is_refused(store, tmp_path):
    train(store, tmp_path / "run", "trainer.max_steps=1", "trainer.checkpoint_every=1")
    with pytest.raises(ValueError, match="another model/data/optim config"):
        train(store, tmp_path / "run", "trainer.max_steps=2", "optim.lr=1e-3")


def test_missing_store_is_named_before_anything_runs(tmp_path):
    from openvica_sim.training.wm import run

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("wm", overrides=["model=tiny", f"run.dir={tmp_path}/run"])
    with pytest.raises(ValueError, match="data.store is not set"):
        run(cfg)


def test_action_conditioned_training_puts_ego_ids_before_each_frame(store, tmp_path):
    from openvica_sim.actions import ActionCoding
    from openvica_sim.data.loaders import TokenWindows
    from openvica_sim.models.world_model import create_world_model
    from openvica_sim.training.wm import make_batch

    config = create_world_model("test").config
    window = TokenWindows(store, window=3)
    batch = torch.utils.data.default_collate([window[0], window[1]])
    coding = ActionCoding(config.codebook_size)
    inputs, targets, mask = make_batch(batch, [1, 5, 6], config, coding, 0.0, torch.Generator().manual_seed(0),
                                       torch.device("cpu"))
    n_prime = 2 + 256 + 1
    assert inputs.shape == (2, 3 + 3 * n_prime - 1)
    first_frame = torch.cat([inputs[:, 3:], targets[:, -1:]], 1)[:, :n_prime]
    assert (first_frame[:, :2] >= config.vision_id(coding.first_vision_id)).all(), "ego ids lead each frame"
    assert first_frame[0, -1] == config.end_of_frame_id
    assert mask.sum() == 2 * 3 * 256, "the loss counts codes only: no prompt, ego or end-of-frame targets"
    train(store, tmp_path / "run", "trainer.max_steps=2", "trainer.checkpoint_every=2",
          "data.action_conditioned=true")


def test_lora_trains_adapters_and_norms_and_leaves_the_base_weights_unchanged(store, tmp_path):
    from openvica_sim.models.world_model import WorldModel, build_text_tokenizer, create_world_model

    base = create_world_model("test", seed=5)
    base.save_pretrained(tmp_path / "base")
    build_text_tokenizer().save_pretrained(tmp_path / "base")
    before = {k: v.clone() for k, v in base.llama.state_dict().items()}
    train(store, tmp_path / "run", "trainer.max_steps=3", "trainer.checkpoint_every=3", f"model.init={tmp_path}/base",
          "model.lora.enabled=true", "model.lora.r=4", "model.lora.alpha=4")
    after = WorldModel.from_pretrained(tmp_path / "base").llama.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the base folder is never written"
    merged = WorldModel.from_pretrained(tmp_path / "base", adapter=tmp_path / "run" / "world_model_adapter")
    moved = merged.llama.state_dict()
    assert not torch.equal(moved["model.layers.0.self_attn.q_proj.weight"],
                           before["model.layers.0.self_attn.q_proj.weight"]), "LoRA changed the merged weights"
    assert not torch.equal(moved["model.norm.weight"], before["model.norm.weight"]), "norms are trained fully"

    from openvica_sim.bundle import create_bundle, load_bundle
    from openvica_sim.models.tokenizer import create_tokenizer

    create_tokenizer("test").save_pretrained(tmp_path / "tok")
    create_bundle(tmp_path / "tok", tmp_path / "base", tmp_path / "bundle",
                  adapter=tmp_path / "run" / "world_model_adapter")  # merged at load time
    loaded = load_bundle(tmp_path / "bundle").world_model.llama.state_dict()
    assert torch.allclose(loaded["model.layers.0.self_attn.q_proj.weight"], moved["model.layers.0.self_attn.q_proj.weight"])


def test_lora_at_lwm_7b_shapes_trains_the_papers_share_of_parameters():
    """Paper III-C c: 2.39 % of 6.97B parameters trainable. Built on the meta device: no memory, no weights."""
    from openvica_sim.models.world_model import WorldModelConfig
    from openvica_sim.training.wm import add_lora, trainable_fraction
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        llama = LlamaForCausalLM(WorldModelConfig().to_llama_config())
        model = add_lora(llama, {"r": 64, "alpha": 64, "dropout": 0.0})
    trainable, total = trainable_fraction(model)
    print(f"lwm-7b LoRA r=64: {trainable / 1e6:.1f}M of {total / 1e9:.3f}B trainable ({100 * trainable / total:.2f} %)")
    assert 6.9e9 < total < 7.0e9 and 2.3 < 100 * trainable / total < 2.45


def test_code_noise_misplaces_input_codes_of_predicted_frames_only_and_keeps_targets_clean(store):
    from openvica_sim.data.loaders import TokenWindows
    from openvica_sim.models.world_model import create_world_model
    from openvica_sim.training.wm import make_batch

    config = create_world_model("test").config
    batch = torch.utils.data.default_collate([TokenWindows(store, window=4)[i] for i in range(2)])
    args = ([1, 5, 6], config, None, 0.0)
    clean_inputs, clean_targets, mask = make_batch(batch, *args, torch.Generator().manual_seed(0), torch.device("cpu"))
    inputs, targets, noisy_mask = make_batch(batch, *args, torch.Generator().manual_seed(0), torch.device("cpu"),
                                             code_noise=0.3, num_seed_frames=2)
    assert torch.equal(targets, clean_targets) and torch.equal(mask, noisy_mask), "targets never see the noise"
    n_prime = 256 + 1
    changed = (inputs != clean_inputs)[:, 3:]  # after the 3 prompt ids: the frames, less the last id
    per_frame = torch.nn.functional.pad(changed, (0, 1)).reshape(2, 4, n_prime).float().mean(-1)
    assert per_frame[:, :2].sum() == 0, "seed frames stay real"
    assert ((per_frame[:, 2:] > 0.1) & (per_frame[:, 2:] < 0.35)).all(), per_frame  # ~0.3 minus same-code draws
    assert (inputs[clean_inputs != inputs] >= config.vision_id(0)).all(), "only codes are replaced, by codes"


def test_self_feed_puts_the_models_own_draws_into_predicted_frames_only(store, tmp_path):
    from openvica_sim.data.loaders import TokenWindows
    from openvica_sim.models.sequence import SequenceLayout
    from openvica_sim.models.world_model import create_world_model
    from openvica_sim.training.wm import make_batch, self_feed

    wm = create_world_model("test")
    batch = torch.utils.data.default_collate([TokenWindows(store, window=4)[i] for i in range(2)])
    prompt = [1, 5, 6]
    inputs, _, _ = make_batch(batch, prompt, wm.config, None, 0.0, torch.Generator().manual_seed(0),
                              torch.device("cpu"))
    layout = SequenceLayout.of(wm.config, batch["tokens"].shape[-1], False)
    with torch.no_grad():
        logits = wm(inputs)
    greedy = self_feed(inputs, logits, layout, len(prompt), 1.0, 2, torch.Generator().manual_seed(0), temperature=0)
    codes = logits[..., layout.vision_id(0):layout.vision_id(layout.codebook_size)].argmax(-1) + layout.vision_id(0)
    start = len(prompt) + 2 * layout.frame_length  # first id of frame 2
    fed = layout.code_targets(inputs) & (torch.arange(inputs.shape[1]) >= start)
    assert torch.equal(greedy[fed], codes[:, :-1][fed[:, 1:]]), "each fed code is the draw for its position"
    assert torch.equal(greedy[~fed], inputs[~fed]), "prompt, seed frames and end-of-frame ids stay real"
    half = self_feed(inputs, logits, layout, len(prompt), 0.5, 2, torch.Generator().manual_seed(1))
    share = ((half != inputs)[fed].float().mean() / (greedy != inputs)[fed].float().mean()).item()
    assert 0.3 < share < 0.7, share  # about half of the draws that differ from the real code
    assert torch.equal(half[:, :start], inputs[:, :start]) and (half[fed] >= layout.vision_id(0)).all()
    rows = train(store, tmp_path / "run", "trainer.max_steps=4", "trainer.self_feed=0.5")
    assert len(rows) == 4 and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
