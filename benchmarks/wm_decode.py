"""World-model decoding speed: the engine's KV-cached loop against a no-cache loop and HF `generate`.

docs/design.md "Speed, by construction". Continues B clips by N frames after T random seed frames given as
codes (no pixels, so no TOK), and times WM token generation only: VDEC decoding is excluded. Three ways:

  engine    `Simulator.start(tokens=...)` then `Simulator.predict` of N frames: exactly the WM path that
            `Simulator.step` (and so the env) runs, without the VDEC decode and host copies step adds. The rates
            time the generation; the prefill of the seed frames is timed apart ("prefill_seconds"; the prompt's
            KV is computed once per Simulator, during warm-up).
            The engine decodes at least `min_rows` rows (4 by default, docs/design.md "Determinism"): "rows".
  naive     every new token re-runs the whole sequence (prompt + seed frames + generated so far) through the
            LLaMA with no cache, top-k over the code rows, end-of-frame forced: the baseline for the KV
            cache. O(L^2), so capped at --naive-frames; compare frames_per_s (per-frame rates), which favour
            naive when it runs fewer frames (its sequences stay shorter).
  generate  `llama.generate(do_sample=True, top_k=k, use_cache=True)`: transformers' own loop over the full
            vocabulary, end-of-frame not forced ("forces_eof": false), as the library baseline.

One JSON line per (method, batch) on stdout; for lwm-7b (or with --peak-bandwidth-gbs) a last
{"bench": "wm_decode_bound"} line with the batch-1 memory-bandwidth bound, and on every engine line its roofline:
the bytes a step must read (the weights the engine touches, once per forward, plus the KV cache of every real row
over the positions in context) times the forwards per frame (256 raster, 15 w + 16 with --wavefront w), against
the given bandwidth. --context-frames sets how many frames are in context when timing starts (the seed frames):
2 is the paper's T, 14 puts the timed frames at the full 16-frame context (about 4,100 positions). Commands:

    .venv/bin/python benchmarks/wm_decode.py --preset tiny --batch 1 4 --frames 6 --json --threads 1
        # 2-core CPU: ~20 min, nearly all of it naive; --threads 1 when others share the CPU (spinning threads stall)
    .venv/bin/python benchmarks/wm_decode.py --preset test --batch 1 --frames 1
    .venv/bin/python benchmarks/wm_decode.py --preset lwm-7b --device cuda --dtype bf16 --batch 1 8 32 \\
        --frames 4 --naive-frames 1 --json
    .venv/bin/python benchmarks/wm_decode.py --preset tiny --batch 1 --frames 2 --methods engine --wavefront 2 --json
"""

from __future__ import annotations

import argparse
import gc

import torch

from _common import DTYPES, device_name, emit, git_sha, log, timed
from openvica_sim.bundle import PRESETS, Bundle, create_random_bundle
from openvica_sim.models.world_model import WorldModel, create_world_model
from openvica_sim.sampling import derive_seeds
from openvica_sim.simulator import MIN_SEED_FRAMES, Simulator

METHODS = ("engine", "naive", "generate")
NAIVE_WARMUP_TOKENS = 16  # naive has no cache or state to warm; a whole frame would cost as much as a measured one


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--frames", type=int, default=4, help="N frames generated after the seed frames")
    p.add_argument("--seed-frames", "--context-frames", dest="seed_frames", type=int, default=MIN_SEED_FRAMES,
                   help="frames in context when timing starts (the seed frames; default 2, the paper's T); 14 times "
                   "the last frames of a full 16-frame context")
    p.add_argument("--wavefront", type=int, default=None, metavar="W", help="wavefront decoding of width W "
                   "(Simulator(wavefront=W)); default raster")
    p.add_argument("--compile", action="store_true", help="the compiled static decode step (Simulator(compile=True)); "
                   "compiled and recorded in the warm-up, not timed")
    p.add_argument("--quant", choices=["int8"], default=None, help="int8 weight-only world model (WorldModel.quantize)")
    p.add_argument("--kv-dtype", choices=["fp8"], default=None, help="the float8 e4m3 KV cache (Simulator(kv_dtype=))")
    p.add_argument("--naive-frames", type=int, default=None, help="default: min(N, 2) for lwm-7b, else N")
    p.add_argument("--top-k", type=int, default=1000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--warmup", type=int, default=1, help="warm-up runs (1 frame each) before each timed run")
    p.add_argument("--min-rows", type=int, default=None, help="engine row width; default: the Simulator's")
    p.add_argument("--peak-bandwidth-gbs", type=float, default=None, help="default 3350 (H100 SXM HBM3)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's); 1 on a shared CPU, where idle-spinning threads stall")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="JSON lines only (no table on stderr)")
    args = p.parse_args(argv)
    if args.frames < 1 or args.seed_frames < MIN_SEED_FRAMES or min(args.batch) < 1:
        p.error(f"need --frames >= 1, --seed-frames >= {MIN_SEED_FRAMES} and --batch >= 1")
    if args.seed_frames + args.frames > 16:
        p.error(f"--context-frames {args.seed_frames} + --frames {args.frames} exceed the 16-frame context: the "
                f"engine would slide and re-prefill inside the timed part")
    args.dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    if args.naive_frames is None:
        args.naive_frames = min(args.frames, 2) if args.preset == "lwm-7b" else args.frames
    return args


def build_bundle(preset: str, device: torch.device, dtype: torch.dtype, seed: int) -> Bundle:
    """A random bundle built directly on `device` (no VDEC: its decoding is not timed).

    Raises:
        SystemExit: CUDA asked for but absent, or the world model does not fit in this machine's memory.
    """
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("wm_decode: --device cuda but torch sees no CUDA device; use --device cpu")
    if device.type == "cpu":
        shapes = create_world_model(PRESETS[preset]["world_model"], device="meta")  # shapes only, no memory
        params = sum(p.numel() for p in shapes.parameters())
        need, have = params * 4, _available_memory_bytes()  # create_world_model builds in fp32, then casts
        if need > 0.9 * have:
            raise SystemExit(f"wm_decode: preset {preset!r} has a {params / 1e9:.1f}B-parameter world model, "
                             f"{need / 2**30:.0f} GiB to build in fp32, but this machine has {have / 2**30:.0f} GiB "
                             f"available; run it on a GPU: --device cuda --dtype bf16")
    return create_random_bundle(preset, seed=seed, video_decoder=False, device=device, dtype=dtype)


def _available_memory_bytes() -> int:
    with open("/proc/meminfo") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["MemAvailable"].split()[0]) * 1024


def seed_inputs(sim: Simulator, batch: int, seed_frames: int, seed: int):
    """Random seed codes (B, T, h, w), the same sequence as merged-vocabulary ids (B, P + T n'), row seeds."""
    gen = torch.Generator().manual_seed(seed)
    K = sim.wm.config.codebook_size
    tokens = torch.randint(0, K, (batch, seed_frames, sim.grid, sim.grid), generator=gen).to(sim.device)
    frames = sim.layout.frame_ids(tokens).reshape(batch, -1)  # the engine's own frame layout
    ids = torch.cat([sim.prompt_ids.expand(batch, -1), frames], dim=1)
    return tokens, ids, derive_seeds(seed, batch)


def run_engine(sim: Simulator, tokens, seeds, frames: int, device: torch.device) -> dict:
    """The env's WM path (`Simulator.step` = predict + decode; the decode is excluded): generation and prefill
    seconds, apart (a compiled step's compilation and recording happen in `warm_up`, untimed)."""
    state, prefill = timed(lambda: sim.start(tokens=tokens, seeds=seeds), device)
    sim.warm_up(state)
    _, seconds = timed(lambda: sim.predict(state, frames), device)
    return {"seconds": seconds, "prefill_seconds": prefill}


def run_naive(wm: WorldModel, ids: torch.Tensor, num_tokens: int, top_k: int, frame_length: int,
              context_frames: int, prompt_length: int, seed: int) -> torch.Tensor:
    """The no-cache baseline: each new id re-runs the whole sequence; end-of-frame is forced, not sampled.

    Deliberately not library code: it is what the engine is measured against. Like the engine it keeps at
    most `context_frames` frames (the oldest dropped), so positions stay in range on long runs.
    """
    cfg = wm.config
    gen = torch.Generator(device=ids.device).manual_seed(seed)
    seq = torch.cat([ids, ids.new_zeros(ids.shape[0], num_tokens)], dim=1)  # (B, L_max)
    prompt, length = seq[:, :prompt_length], ids.shape[1]
    for _ in range(num_tokens):
        offset = length - prompt_length
        if offset % frame_length == frame_length - 1:  # the slot after n codes: end-of-frame
            seq[:, length] = cfg.end_of_frame_id
        else:
            first = max(0, offset // frame_length - (context_frames - 1)) * frame_length
            window = torch.cat([prompt, seq[:, prompt_length + first:length]], dim=1)
            logits = wm.llama(input_ids=window, use_cache=False, logits_to_keep=1).logits[:, -1]
            values, top = logits[:, cfg.text_vocab_size:cfg.text_vocab_size + cfg.codebook_size].float().topk(top_k)
            pick = torch.multinomial(values.softmax(-1), 1, generator=gen)
            seq[:, length] = cfg.vision_id(top.gather(1, pick)[:, 0])
        length += 1
    return seq


def run_generate(wm: WorldModel, ids: torch.Tensor, num_tokens: int, top_k: int, seed: int) -> torch.Tensor:
    torch.manual_seed(seed)  # generate samples from the global RNG
    # min_new_tokens = max_new_tokens: a random model may sample </s>, and every run must make num_tokens ids.
    return wm.llama.generate(input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=top_k,
                             max_new_tokens=num_tokens, min_new_tokens=num_tokens, use_cache=True)


def measure(method: str, sim: Simulator, args, batch: int, device: torch.device) -> dict:
    """Warm up, then time one run of `method` at `batch`; the record's rates count real clips only."""
    tokens, ids, seeds = seed_inputs(sim, batch, args.seed_frames, args.seed)
    n1, k = sim.bundle.frame_length, min(args.top_k, sim.wm.config.codebook_size)
    def naive(num_tokens: int):
        return run_naive(sim.wm, ids, num_tokens, k, n1, sim.context_frames, len(sim.prompt_ids), args.seed)

    runs = {"engine": lambda frames: run_engine(sim, tokens, seeds, frames, device),
            "naive": lambda frames: {"seconds": timed(lambda: naive(frames * n1), device)[1]},
            "generate": lambda frames: {"seconds": timed(lambda: run_generate(sim.wm, ids, frames * n1, k, args.seed),
                                                         device)[1]}}
    warm = (lambda: naive(NAIVE_WARMUP_TOKENS)) if method == "naive" else (lambda: runs[method](1))
    frames = args.naive_frames if method == "naive" else args.frames
    record = {"method": method, "batch": batch, "rows": max(batch, sim.min_rows) if method == "engine" else batch,
              "frames": frames, "forces_eof": method != "generate"}
    try:
        for _ in range(args.warmup):
            warm()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        timing = runs[method](frames)
    except torch.cuda.OutOfMemoryError:
        return {**record, "error": "out of memory", "seconds": None, "tokens_per_s": None, "frames_per_s": None}
    finally:
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    seconds = timing["seconds"]
    record.update(timing, tokens_per_s=batch * frames * n1 / seconds, frames_per_s=batch * frames / seconds)
    if device.type == "cuda":
        record["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if method == "engine":
        record["forwards_per_frame"] = forwards_per_frame(sim)
        if args.peak_bandwidth_gbs is not None or args.preset == "lwm-7b":
            record.update(roofline(sim, batch, args.seed_frames, frames, args.peak_bandwidth_gbs or 3350.0,
                                   record["frames_per_s"]))
    return record


def forwards_per_frame(sim: Simulator) -> int:
    return sim.n if sim.schedule is None else sim.schedule.num_steps


def roofline(sim: Simulator, batch: int, context_frames: int, frames: int, peak_gbs: float, measured: float) -> dict:
    """The memory-bound frames/s of the timed frames: per forward the engine's weight reads plus the KV of every real
    row over the mean number of positions in context, times the forwards per frame (module docstring)."""
    weights = bound_record(sim.wm, peak_gbs, sim.bundle.frame_length, sim.kv_dtype)
    n1 = sim.bundle.frame_length
    mean_positions = len(sim.prompt_ids) + (context_frames + frames / 2) * n1
    step_bytes = weights["engine_weight_bytes_per_token"] + batch * weights["kv_bytes_per_position"] * mean_positions
    bound = peak_gbs * 1e9 / (step_bytes * forwards_per_frame(sim)) * batch
    return {"roofline_bandwidth_gbs": peak_gbs, "roofline_bytes_per_forward": step_bytes,
            "roofline_frames_per_s": bound, "roofline_fraction": measured / bound,
            "context_positions_mean": mean_positions}


def bound_record(wm: WorldModel, peak_gbs: float, frame_length: int, kv_dtype: str | None = None) -> dict:
    """Batch-1 decoding is memory bound: at best one read of the weights per token (docs/design.md). Int8 layers count
    their int8 weights and scales; an fp8 cache one byte per value plus a float32 scale per head vector."""
    from openvica_sim.models.world_model import Int8Linear

    cfg, elt = wm.config, next(wm.parameters()).element_size()
    tensors = list(wm.parameters()) + [t for m in wm.modules() if isinstance(m, Int8Linear) for t in (m.weight, m.scales)]
    weights = sum(t.numel() * t.element_size() for t in tensors)
    # What the engine really reads per token: the embedding table is only indexed, the head only at the K code rows.
    engine_reads = (weights - (wm.llama.lm_head.weight.numel() + wm.llama.model.embed_tokens.weight.numel()) * elt
                    + cfg.codebook_size * cfg.hidden_size * elt)
    bound = peak_gbs * 1e9 / weights
    return {"bench": "wm_decode_bound", "peak_bandwidth_gbs": peak_gbs, "weight_bytes": weights,
            "bound_tokens_per_s_batch1": bound, "bound_frames_per_s_batch1": bound / frame_length,
            "engine_weight_bytes_per_token": engine_reads,
            "bound_tokens_per_s_batch1_engine_reads": peak_gbs * 1e9 / engine_reads,
            "kv_bytes_per_position": 2 * cfg.num_layers * cfg.num_kv_heads * (
                cfg.head_dim + 4 if kv_dtype == "fp8" else cfg.head_dim * elt),
            "note": "weights only; KV-cache reads (kv_bytes_per_position x context x rows) come on top"}


def print_table(records: list[dict]) -> None:
    log(f"{'method':>9} {'batch':>5} {'rows':>4} {'frames':>6} {'seconds':>9} {'tokens/s':>10} {'frames/s':>9} "
        f"{'vs naive':>8}")
    for r in records:
        if r.get("error"):
            log(f"{r['method']:>9} {r['batch']:>5} {r['rows']:>4} {r['frames']:>6}  {r['error']}")
            continue
        speedup = f"{r['speedup_vs_naive']:.1f}x" if "speedup_vs_naive" in r else ""
        log(f"{r['method']:>9} {r['batch']:>5} {r['rows']:>4} {r['frames']:>6} {r['seconds']:>9.2f} "
            f"{r['tokens_per_s']:>10.1f} {r['frames_per_s']:>9.3f} {speedup:>8}")


def main(argv=None) -> None:
    args = parse_args(argv)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    if args.threads:
        torch.set_num_threads(args.threads)
    log(f"building a random {args.preset!r} bundle on {device} in {args.dtype} ...")
    bundle = build_bundle(args.preset, device, dtype, args.seed)
    if args.quant:
        bundle.world_model.quantize(args.quant)
    sim_kwargs = {} if args.min_rows is None else {"min_rows": args.min_rows}
    sim = Simulator(bundle, top_k=args.top_k, wavefront=args.wavefront, compile=args.compile, kv_dtype=args.kv_dtype,
                    **sim_kwargs)
    common = {"bench": "wm_decode", "git": git_sha(), "device": device_name(device), "dtype": args.dtype,
              "preset": args.preset, "seed_frames": args.seed_frames, "tokens_per_frame": bundle.frame_length,
              "top_k": args.top_k, "warmup": args.warmup, "wavefront": args.wavefront, "compile": args.compile,
              "quant": args.quant, "kv_dtype": args.kv_dtype}
    if device.type == "cpu":
        common["threads"] = torch.get_num_threads()
    records = []
    try:
        with torch.inference_mode():
            for batch in args.batch:
                rows = []
                for method in args.methods:
                    log(f"{method} at batch {batch} ...")
                    rows.append({**common, **measure(method, sim, args, batch, device)})
                naive = next((r for r in rows if r["method"] == "naive" and r["frames_per_s"]), None)
                for r in rows:
                    if naive is not None and r["method"] != "naive" and r["frames_per_s"]:
                        r["speedup_vs_naive"] = r["frames_per_s"] / naive["frames_per_s"]
                    emit(r)
                records += rows
        if args.preset == "lwm-7b" or args.peak_bandwidth_gbs is not None:
            peak = 3350.0 if args.peak_bandwidth_gbs is None else args.peak_bandwidth_gbs
            emit({**common, **bound_record(bundle.world_model, peak, bundle.frame_length, args.kv_dtype),
                  "bench": "wm_decode_bound"})
    finally:
        if not args.json:
            print_table(records)
        del sim, bundle
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
