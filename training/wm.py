"""Fine-tune the world model (paper III-C c): teacher-forced cross-entropy on image tokens, LoRA, AdamW, cosine.

    python training/wm.py data.store=bdd-train.zarr model.init=wm-7b/            # LWM-Chat-1M, LoRA (paper)
    python training/wm.py model=tiny data.store=synthetic.zarr                    # a tiny WM from scratch, CPU
    ray job submit --working-dir . -- python training/wm.py data.store=/shared/bdd.zarr model.init=/shared/wm-7b \
        scaling=cluster scaling.num_workers=8 run.dir=/shared/runs/wm

A sample is the fixed prompt then T + N = 16 frames of [ego ids] + 256 codes + end-of-frame (the engine's layout,
`models.sequence.SequenceLayout`). The loss counts the code targets only: prompt targets are fixed text, end-of-frame
targets are forced at inference, ego ids are given (see `losses.world_model_loss`). With data.action_conditioned,
each frame's ego ids come from the store's speed and yaw rate, replaced by "unknown" with probability
trainer.action_dropout (docs/design.md "Ego conditioning").

The run ends with `run.dir/world_model/` (full fine-tuning) or `run.dir/world_model_adapter/` (LoRA), the bundle
part that `openvica bundle create` takes.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig

from openvica_sim.actions import ActionCoding
from openvica_sim.data.loaders import TokenWindows
from openvica_sim.losses import world_model_loss
from openvica_sim.models.sequence import SequenceLayout
from openvica_sim.models.world_model import PROMPT, WorldModel, build_text_tokenizer, create_world_model, encode_prompt
from openvica_sim.sampling import sample_top_k
from openvica_sim.training.common import (adamw, batches, check, clip_grad, gather_checkpoint, is_sharded,
                                          load_optimizer_state, load_trainable_state, prepare, resolve,
                                          step_generator)
from openvica_sim.training.loop import Context, Stage, run_stage

SHARD_BLOCKS = ("LlamaDecoderLayer",)  # FSDP units: one per decoder layer, then the whole model

REQUIRED = {"data.store": str, "data.num_seed_frames": int, "data.num_future_frames": int, "trainer.max_steps": int,
            "trainer.batch_size": int, "trainer.checkpoint_every": int, "scaling.num_workers": int,
            "optim.lr": float, "run.dir": str, "seed": int}


def build_model(cfg: dict, device: torch.device):
    """The world model to train, its text tokenizer, and the trainable fraction; LoRA when model.lora.enabled."""
    m = cfg["model"]
    if m["init"] == "random":
        wm = create_world_model(m["preset"], seed=cfg["seed"])
        text_tokenizer = build_text_tokenizer()
    else:
        from transformers import AutoTokenizer

        frozen_dtype = torch.bfloat16 if device.type == "cuda" and m["lora"]["enabled"] else torch.float32
        wm = WorldModel.from_pretrained(m["init"], dtype=frozen_dtype)
        text_tokenizer = AutoTokenizer.from_pretrained(m["init"], local_files_only=True)
    if m["lora"]["enabled"]:
        wm.llama = add_lora(wm.llama, m["lora"])
    wm.to(device).train()
    if cfg["trainer"]["gradient_checkpointing"] and device.type == "cuda":
        wm.llama.gradient_checkpointing_enable()
    return wm, text_tokenizer


def add_lora(llama, lora: dict):
    """LoRA on every linear and embedding layer, norms trained fully (paper III-C c); trainable weights in fp32."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                                        "embed_tokens", "lm_head"],
                        modules_to_save=["input_layernorm", "post_attention_layernorm", "norm"])
    model = get_peft_model(llama, config)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    return model


def trainable_fraction(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters; peft's saved copies of the norms count once, as trainable."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for n, p in model.named_parameters() if "original_module" not in n)
    return trainable, total


def corrupt_codes(codes: torch.Tensor, rate: float, num_seed_frames: int, generator: torch.Generator) -> torch.Tensor:
    """A copy of codes (B, F, h, w) in which `rate` of the predicted frames' codes (frames >= num_seed_frames) are
    replaced by a code of the same frame at a random place: the kind of mistake a sampled frame makes (a plausible
    code in the wrong place). Fed as inputs with the clean codes as targets, so that the world model learns to
    recover from its own draws instead of trusting the codes above and left of the one it predicts (which teacher
    forcing always gets right, and a rollout does not)."""
    if rate <= 0:
        return codes
    B, F, h, w = codes.shape
    flat = codes.reshape(B, F, h * w).clone()
    hit = torch.rand(B, F, h * w, generator=generator) < rate  # drawn on the CPU (the step's generator), then moved
    hit[:, :num_seed_frames] = False  # seed frames are real frames in a rollout too
    source = torch.randint(0, h * w, (B, F, h * w), generator=generator)
    hit, source = hit.to(flat.device), source.to(flat.device)
    flat[hit] = torch.gather(flat, 2, source)[hit]
    return flat.reshape(B, F, h, w)


def self_feed(inputs: torch.Tensor, logits: torch.Tensor, layout: SequenceLayout, prompt_length: int, rate: float,
              num_seed_frames: int, generator: torch.Generator, top_k: int = 10, temperature: float = 0.5):
    """Parallel scheduled sampling: a copy of inputs (B, L) in which `rate` of the predicted frames' codes are the
    model's own draws (top-k, temperature) from teacher-forced logits (B, L, V) of those inputs. Trained on the clean
    targets, the model learns to continue from the mistakes it makes in a rollout; random misplacement
    (`corrupt_codes`) is not the distribution of those mistakes. One pass: a draw sees real codes before it."""
    if rate <= 0:
        return inputs
    first, K = layout.vision_id(0), layout.codebook_size
    B, L = inputs.shape
    scores = logits[..., first:first + K].float().reshape(B * L, K)  # codes only (the engine never draws other ids)
    seeds = torch.randint(0, 2 ** 62, (B * L,), generator=generator).to(scores.device)  # one row seed per position
    drawn = first + sample_top_k(scores, seeds, 0, top_k, temperature).view(B, L)  # (B, L): the draw for q + 1
    position = torch.arange(1, L, device=inputs.device)  # where each draw would be fed
    frame = torch.div(position - prompt_length, layout.frame_length, rounding_mode="floor")
    fed = layout.code_targets(inputs[:, 1:]) & (frame >= num_seed_frames)  # seed frames are real in a rollout
    hit = fed & (torch.rand(B, L - 1, generator=generator) < rate).to(inputs.device)
    out = inputs.clone()
    out[:, 1:] = torch.where(hit, drawn[:, :-1], inputs[:, 1:])
    return out


def make_batch(batch: dict, prompt_ids: list[int], config, coding: ActionCoding | None, dropout: float,
               generator: torch.Generator, device: torch.device, code_noise: float = 0.0, num_seed_frames: int = 2):
    """Store windows -> (input ids (B, L), target ids (B, L), loss mask (B, L)); with `code_noise`, the inputs'
    predicted frames carry that share of misplaced codes (`corrupt_codes`) and the targets stay clean."""
    codes = batch["tokens"].to(device)  # (B, F, h, w)
    B, F = codes.shape[:2]
    ego = None
    if coding is not None:
        ids = torch.as_tensor(coding.vision_ids(batch["speed_mps"].numpy(), batch["yaw_rate_rps"].numpy()))
        drop = torch.rand(B, F, generator=generator) < dropout  # 10 % "unknown": robust to missing ego data
        ego = torch.where(drop[..., None], torch.as_tensor(coding.unknown_ids((B, F))), ids).to(device)
    layout = SequenceLayout.of(config, codes.shape[-1], coding is not None)
    prompt = torch.tensor(prompt_ids, device=device).expand(B, -1)  # (B, M)

    def sequence(frame_codes: torch.Tensor) -> torch.Tensor:
        return torch.cat([prompt, layout.frame_ids(frame_codes, ego).reshape(B, -1)], dim=1)  # (B, M + F n')

    clean = sequence(codes)
    noisy = corrupt_codes(codes, code_noise, num_seed_frames, generator)
    inputs, targets = (clean if noisy is codes else sequence(noisy))[:, :-1], clean[:, 1:]
    return inputs, targets, layout.code_targets(targets)


def build_stage(context: Context) -> Stage:
    """The WM stage of the loop: teacher-forced cross-entropy on code targets. A checkpoint's weights load into the
    whole model before FSDP shards it (the optimiser is built after), so this stage resumes itself."""
    cfg, device, world, rank = context.cfg, context.device, context.world, context.rank
    trainer, optim = cfg["trainer"], cfg["optim"]
    wm, text_tokenizer = build_model(cfg, device)
    config = wm.config
    prompt_ids = encode_prompt(text_tokenizer, config.text_vocab_size, cfg["model"].get("prompt") or PROMPT)
    coding = ActionCoding(config.codebook_size) if cfg["data"]["action_conditioned"] else None
    bf16 = device.type == "cuda" and trainer["bf16"]
    # bf16 matrix products on a CPU with AVX512-BF16 (the embedded default's 2-core EPYC: 1.3x a step), fp32 weights
    autocast = bf16 or (device.type == "cpu" and bool(trainer.get("cpu_bf16")))
    if context.checkpoint is not None:  # whole weights into the whole model, before FSDP shards it
        load_trainable_state(wm, context.checkpoint[0])
    model = prepare(wm, world, cfg["scaling"]["strategy"], SHARD_BLOCKS, bf16)
    params = [p for p in wm.parameters() if p.requires_grad]  # after prepare: FSDP's sharded parameters
    optimizer = adamw(params, optim)  # no weight decay on norms (LLaMA-2)
    if context.checkpoint is not None:
        load_optimizer_state(wm, optimizer, context.checkpoint[1])
    window = cfg["data"]["num_seed_frames"] + cfg["data"]["num_future_frames"]

    feed = trainer.get("self_feed", 0.0)

    def layout(batch: dict) -> SequenceLayout:
        return SequenceLayout.of(config, batch["tokens"].shape[-1], coding is not None)

    def tokens(batch: dict) -> int:  # ids per batch: the prompt and every frame, minus the last (no target)
        frame = layout(batch).frame_length
        return len(batch["tokens"]) * (len(prompt_ids) + window * frame - 1)

    def batches_from(start: int):
        dataset = TokenWindows(cfg["data"]["store"], window=window, seed=cfg["seed"], rank=rank, world_size=world)
        return batches(dataset, context.per_worker_batch, start, num_workers=cfg["data"]["loader_workers"])

    def step(batch: dict, index: int) -> dict:
        generator = step_generator(cfg["seed"], index, rank)
        inputs, targets, mask = make_batch(batch, prompt_ids, config, coding, trainer["action_dropout"], generator,
                                           device, trainer.get("code_noise", 0.0), cfg["data"]["num_seed_frames"])
        if feed > 0:  # the model's own draws in place of some input codes (`self_feed`)
            with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                inputs = self_feed(inputs, model(inputs), layout(batch), len(prompt_ids), feed,
                                   cfg["data"]["num_seed_frames"], generator)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            logits = model(inputs)  # WorldModel.forward: full-vocabulary logits (B, L, V)
        loss = world_model_loss(logits, targets, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = clip_grad(params, optim["grad_clip"])
        optimizer.step()
        return {"loss": loss.item(), "grad_norm": float(grad_norm)}

    def export_part(folder) -> None:
        sharded = is_sharded(wm)
        if sharded:
            weights, _ = gather_checkpoint(wm, optimizer)  # every rank
        if rank == 0:
            whole = wm
            if sharded:  # export a whole copy, on the CPU
                whole, _ = build_model(cfg, torch.device("cpu"))
                load_trainable_state(whole, weights)
            export(whole, text_tokenizer, folder, cfg["model"]["lora"]["enabled"])

    trainable, total = trainable_fraction(wm)
    return Stage(name="train wm", trained=wm, optimizers=optimizer, batches=batches_from, step=step,
                 export=export_part, rate_key="tokens_per_s", resumed=True,
                 checkpoint_state=lambda: gather_checkpoint(wm, optimizer), samples=tokens,
                 describe=f"world model: {trainable:,} of {total:,} parameters trainable "
                          f"({100 * trainable / total:.2f} %)")


def export(wm: WorldModel, text_tokenizer, folder: Path, lora: bool) -> Path:
    """The bundle part: a full world-model folder, or the LoRA adapter (with the trained norms) beside the base."""
    if lora:
        out = folder / "world_model_adapter"
        wm.llama.save_pretrained(out, save_embedding_layers=False)  # embeddings are LoRA-adapted, not resized
        return out
    out = folder / "world_model"
    wm.save_pretrained(out)
    text_tokenizer.save_pretrained(out)
    return out


def run(cfg: DictConfig) -> None:
    """Resolve and check on the driver, then launch (in-process or on Ray)."""
    plain = resolve(cfg)
    check(plain, REQUIRED)
    run_stage(plain, build_stage)


@hydra.main(version_base="1.3", config_path="conf", config_name="wm")
def main(cfg: DictConfig) -> None:
    run(cfg)


if __name__ == "__main__":
    main()
