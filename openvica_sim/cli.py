"""`openvica`: roll out a simulator, inspect a bundle, make random bundles and synthetic seed frames.

    openvica rollout --bundle BUNDLE --frames a.png b.png --steps 14 --out rollout.mp4
    openvica rollout --bundle BUNDLE --video drive.mov --steps 14 --top-k 1000 --seed 0 --out rollout.mp4
    openvica info --bundle BUNDLE
    openvica bundle random --preset tiny --out BUNDLE
    openvica synthetic frames --out seeds/ --frames 2
    openvica data ingest --bdd-root BDD100K --split val --subset val-500 --out val-500.zarr --bundle BUNDLE
    openvica convert lwm --params LWM-1M-Jax/params --tokenizer LWM-Text-1M/tokenizer.model --out wm/
    openvica convert vqgan --checkpoint LWM-1M-Jax/vqgan --out tok/
    openvica bundle create --tokenizer tok/ --world-model wm/ --out BUNDLE
    openvica eval video --bundle BUNDLE --clips val-500.zarr --list val-500 --inception inception-2015-12-05.pt \
        --i3d i3d_torchscript.pt --clip-model clip-vit-large-patch14-336/ --lpips-net alexnet.pth --out eval/
    openvica eval images --bundle BUNDLE --images bdd100k/images/100k/val --out eval-images/
    openvica synthetic store --out train.zarr --drives 96 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

from .scenarios.ego import PROGRAMS as EGO_PROGRAMS


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    try:
        return args.run(args) or 0
    except (FileNotFoundError, FileExistsError, ValueError, TypeError, pickle.UnpicklingError) as e:
        # user errors (bad paths, bad files, bad values): one clear line, no traceback
        print(f"openvica: error: {e}", file=sys.stderr)
        return 1


def rollout(args) -> int:
    import torch

    from .bundle import load_bundle, read_meta
    from .frames import model_view
    from .sampling import derive_seeds
    from .simulator import Simulator
    from .video_io import read_image, read_video, write_contact_sheet, write_video

    if args.bundle is None:
        from . import embedded

        args.bundle = str(embedded.bundle_path())
    read_meta(args.bundle)  # a missing or wrong bundle fails before any work
    if not args.frames and not args.video:
        from . import embedded

        first = sorted(p for p in embedded.clips_path().iterdir() if p.is_dir())[0]
        args.frames = sorted(str(p) for p in first.iterdir())[:2]
    if args.frames:
        seed_frames = np.stack([read_image(p) for p in args.frames])
    else:
        seed_frames = read_video(args.video, fps=args.video_fps)
        seed_frames = seed_frames[-args.seed_frames:] if args.seed_frames else seed_frames
    if len(seed_frames) < 2:
        raise ValueError(f"need at least 2 seed frames, got {len(seed_frames)} from {args.frames or args.video}")
    if len({s.shape for s in seed_frames}) != 1:
        raise ValueError(f"seed frames differ in size: {[s.shape for s in seed_frames]}")
    ego_program, seed_ego, commands = _ego_commands(args, len(seed_frames))
    with torch.no_grad():  # a block, not torch.set_grad_enabled(False): that would leak into callers of main()
        started = time.perf_counter()
        bundle = load_bundle(args.bundle, device=args.device)
        sim = Simulator(bundle, top_k=args.top_k, temperature=args.temperature, wavefront=args.wavefront,
                        decoder={"vdec": "video_decoder", "dec": "tokenizer", None: None}[args.decoder])
        sim.profile = True  # the world model's and the decoder's seconds, reported below
        loaded = time.perf_counter()
        coding, ego = bundle.action_coding, bundle.action_conditioned  # others roll out frame by frame, as before
        out = sim.rollout(seed_frames[None], args.steps, seeds=derive_seeds(args.seed, 1), progress=True,
                          seed_actions=coding.to_normalized(*seed_ego.T)[None] if ego else None,
                          commands=coding.to_normalized(*commands[:args.steps].T)[None] if ego else None)
        done = time.perf_counter()
    seed_view = model_view(seed_frames)
    video = np.concatenate([seed_view, out.frames[0]])
    out_path = write_video(args.out, video, fps=bundle.fps)
    sheet = Path(args.sheet) if args.sheet else Path(args.out).with_suffix(".png")
    write_contact_sheet(sheet, [video], num_seed_frames=len(seed_view),
                        labels=[f"{Path(args.bundle).name}: {len(seed_view)} seed + {args.steps} predicted frames, "
                                f"top-k {sim.top_k}, seed {args.seed}"
                                + (f", wavefront {sim.wavefront}" if sim.wavefront else "")
                                + (f", ego {ego_program}" if bundle.action_conditioned else "")])
    print(json.dumps({"video": str(out_path), "contact_sheet": str(sheet), "seed_frames": len(seed_view),
                      "frames": args.steps, "wavefront": sim.wavefront, "context_frames": sim.context_frames,
                      "ego": ego_program if bundle.action_conditioned else "ignored (the bundle is not action-conditioned)",
                      "load_s": round(loaded - started, 2), "rollout_s": round(done - loaded, 2),
                      "world_model_s": round(sim.timings.get("world_model", 0), 2),
                      "surprise_per_frame": np.round(out.surprise[0], 3).tolist()}))
    return 0


def _ego_commands(args, num_seed_frames: int) -> tuple[str, np.ndarray, np.ndarray]:
    """(program, seed ego (T, 2), commands (steps, 2)) in m/s and rad/s for `rollout --ego`: the seed clip's
    own ego motion (`replay`, from an ego.json beside the seed frames) or a scenario program from the seed's last
    state (NaN: unknown)."""
    from .scenarios.ego import commands as program_commands

    ego_file = Path(args.frames[0]).parent / "ego.json" if args.frames else None
    ego, last = None, num_seed_frames - 1
    if ego_file is not None and ego_file.is_file():
        data = json.loads(ego_file.read_text())
        ego = np.stack([np.asarray(data["speed_mps"], np.float64), np.asarray(data["yaw_rate_rps"], np.float64)], 1)
        # ego.json has one entry per image of the folder, in name order: the seed frames' own are at their places
        images = sorted(p.name for p in ego_file.parent.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        last = images.index(Path(args.frames[-1]).name) if Path(args.frames[-1]).name in images else last
    program = args.ego or ("replay" if ego is not None else "constant")
    first = last + 1 - num_seed_frames
    seed_ego = ego[first:last + 1] if ego is not None and first >= 0 and len(ego) > last else np.full(
        (num_seed_frames, 2), np.nan)
    if program == "replay":
        if ego is None:
            raise ValueError("--ego replay needs the seed clip's ego.json beside its frames (the embedded seed clips "
                             "have one); pick a program instead, e.g. --ego constant")
        future = ego[last + 1:]
        if len(future) == 0:
            raise ValueError(f"{ego_file} holds no ego motion after the {num_seed_frames} seed frames")
        future = np.concatenate([future, np.repeat(future[-1:], max(0, args.steps + 1 - len(future)), 0)])
        return program, seed_ego, future[:args.steps + 1]
    return program, seed_ego, program_commands(program, {}, args.steps + 1, *seed_ego[-1])


def info(args) -> int:
    from .bundle import read_meta

    meta = read_meta(args.bundle)
    sizes = {p.name: sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
             for p in Path(args.bundle).iterdir() if p.is_dir()}
    meta["bytes"] = {**sizes, "total": sum(sizes.values())}
    if args.params:
        from .bundle import load_bundle

        bundle = load_bundle(args.bundle)
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        meta["parameters"] = {
            "tokenizer_encoder": sum(p.numel() for p in bundle.tokenizer.encoder_parameters()),
            "tokenizer_decoder": sum(p.numel() for p in bundle.tokenizer.decoder_parameters()),
            "world_model": count(bundle.world_model),
            "video_decoder": count(bundle.video_decoder) if bundle.video_decoder is not None else 0}
    print(json.dumps(meta, indent=2))
    return 0


def bundle_random(args) -> int:
    from .bundle import create_random_bundle, save_bundle

    bundle = create_random_bundle(args.preset, seed=args.seed, action_conditioned=args.action_conditioned)
    print(f"wrote random {args.preset} bundle to {save_bundle(bundle, args.out)} (random weights: its video is noise)")
    return 0


def synthetic_frames(args) -> int:
    from .data.synthetic import Drive, render_clip
    from .video_io import write_image

    frames = render_clip(Drive(speed_mps=args.speed, yaw_rate_rps=args.yaw_rate, timeofday=args.timeofday),
                         args.frames)
    out = Path(args.out)
    for i, frame in enumerate(frames):
        write_image(out / f"{i:06d}.png", frame)
    print(f"wrote {len(frames)} synthetic frames to {out}/")
    return 0


def bundle_create(args) -> int:
    from .bundle import create_bundle

    out = create_bundle(args.tokenizer, args.world_model, args.out, video_decoder=args.video_decoder,
                        action_conditioned=args.action_conditioned, adapter=args.adapter, top_k=args.top_k,
                        temperature=args.temperature,
                        context_frames=args.context_frames, wavefront=args.wavefront)
    how = "given" if args.video_decoder else "inflated from the tokenizer's decoder"
    print(f"wrote bundle {out} (video decoder {how}); try: openvica rollout --bundle {out} --video drive.mov")
    return 0


def convert_lwm(args) -> int:
    import torch

    from .convert.lwm import convert_lwm as convert

    overrides = {k: v for k, v in vars(args).items() if k in _LWM_FLAGS and v is not None}
    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)
    out = convert(args.params, args.out, tokenizer=args.tokenizer, preset=args.preset, dtype=dtype,
                  param_scan_axis=args.param_scan_axis, overwrite=args.overwrite, **overrides)
    print(f"wrote world model {out}; next: openvica bundle create --tokenizer TOK --world-model {out} --out BUNDLE")
    return 0


def convert_vqgan(args) -> int:
    from .convert.vqgan import convert_vqgan as convert
    from .convert.vqgan import import_amused_vqvae

    source = Path(args.checkpoint)
    if source.is_dir():  # aMUSEd's vqvae/ folder, already in diffusers format
        out = import_amused_vqvae(source, Path(args.out), overwrite=args.overwrite)
    else:
        out = convert(source, Path(args.out), resolution=args.resolution, overwrite=args.overwrite)
    print(f"wrote tokenizer {out}")
    return 0


_LWM_FLAGS = ("num_heads", "num_kv_heads", "rope_theta", "rms_norm_eps", "max_position_embeddings", "codebook_size")


def _bundle_tokenizer(bundle: Path, device: str):
    from .bundle import load_bundle

    return load_bundle(bundle, device=device, video_decoder=False).tokenizer


def _tokenizer_loader(args):
    """A picklable loader of the tokenizer of --tokenizer, or of --bundle (default: the embedded default's bundle).
    Absolute paths: with --ray it runs in Ray workers, whose working directory may differ."""
    import functools

    if args.tokenizer:
        from .models.tokenizer import Tokenizer

        return functools.partial(Tokenizer.from_pretrained, Path(args.tokenizer).resolve(), device=args.device)
    if args.bundle is None:
        from . import embedded

        args.bundle = embedded.bundle_path()
    return functools.partial(_bundle_tokenizer, Path(args.bundle).resolve(), args.device)


def _shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(x) for x in text.split("/"))
    except ValueError as e:
        raise ValueError(f"--shard {text!r}: expected i/n, e.g. 0/4 for the first of 4 processes") from e
    return index, count


def synthetic_store(args) -> int:
    from .data.synthetic_store import write_synthetic_store

    index = write_synthetic_store(args.out, _tokenizer_loader(args)(), num_drives=args.drives, seconds=args.seconds,
                                  fps=args.fps, seed=args.seed, split=args.split, world=args.world,
                                  shard=_shard(args.shard))
    print(f"{args.out}: {len(index['clips'])} synthetic drives, {index['num_frames']} frames (tokens, frames, ego "
          f"motion, car boxes on every frame)")
    if len(index["clips"]) < args.drives:  # the other shards' drives are not in the index until they finish
        print(f"{args.out}: {len(index['clips'])} of --drives {args.drives} so far: the last shard to finish indexes "
              f"them all (rerunning a shard that died adds its missing drives)")
    return 0


def data_retokenize(args) -> int:
    from .data.retokenize import retokenize_store

    index = retokenize_store(args.store, args.out, _tokenizer_loader(args)(), shard=_shard(args.shard),
                             batch_size=args.batch_size)
    print(f"{args.out}: {len(index['clips'])} clips, {index['num_frames']} frames re-encoded")
    return 0


def _networks(args):
    from .evaluation import FeatureNetworks

    return FeatureNetworks(inception=args.inception, i3d=getattr(args, "i3d", None), clip_model=args.clip_model,
                           lpips_net=args.lpips_net, lpips_linear=args.lpips_linear, device=args.device)


def eval_video(args) -> int:
    import torch

    from .evaluation import VideoEvalSettings, evaluate_video

    if args.bundle is None:
        from . import embedded

        args.bundle = str(embedded.bundle_path())
    if args.clips is None:
        from . import embedded

        args.clips = str(embedded.clips_path())
    settings = VideoEvalSettings(
        bundle=args.bundle, clips=args.clips, list=args.list, limit=args.limit, seed_frames=args.seed_frames,
        num_frames=args.frames, start_frame=args.start_frame, top_k=args.top_k, decoders=args.decoder,
        temperature=args.temperature, seed=args.seed, transcode=not args.no_transcode, batch_size=args.batch_size,
        wavefront=args.wavefront,
        device=args.device, dtype=args.dtype, num_workers=args.num_workers, use_gpu=args.use_gpu,
        networks=_networks(args), ego_probe=args.ego_probe)
    with torch.no_grad():
        result = evaluate_video(settings, args.out)
    print(json.dumps({"out": args.out, "seconds": result["settings"]["seconds"],
                      "results": [{k: r[k] for k in ("system", "k", "decoder", "fid", "fvd", "cmmd", "psnr", "lpips",
                                                     "surprise")} for r in result["results"]]}))
    return 0


def eval_images(args) -> int:
    import torch

    from .evaluation import ImageEvalSettings, evaluate_images

    if args.bundle is None:
        from . import embedded

        args.bundle = str(embedded.bundle_path())
    settings = ImageEvalSettings(bundle=args.bundle, images=args.images, limit=args.limit,
                                 batch_size=args.batch_size, device=args.device, networks=_networks(args))
    with torch.no_grad():
        result = evaluate_images(settings, args.out)
    print(json.dumps({"out": args.out, "seconds": result["settings"]["seconds"], **result["results"][0]}))
    return 0


def _network_flags(parser, video: bool) -> None:
    g = parser.add_argument_group("feature networks (local files; a metric whose file is not given is skipped)")
    g.add_argument("--inception", metavar="PATH", help="FID: inception-2015-12-05.pt (StyleGAN2-ADA's TorchScript)")
    if video:
        g.add_argument("--i3d", metavar="PATH", help="FVD: i3d_torchscript.pt (StyleGAN-V's TorchScript)")
    g.add_argument("--clip-model", metavar="DIR", help="CMMD: a transformers CLIP ViT-L/14-336 folder")
    g.add_argument("--lpips-net", metavar="PATH", help="LPIPS: torchvision AlexNet (alexnet-owt-7be5be79.pth) or "
                   "VGG16 (vgg16-397923af.pth) weights")
    g.add_argument("--lpips-linear", metavar="PATH", help="LPIPS v0.1 linear layers (default: the alex.pth / vgg.pth "
                   "that the installed torchmetrics ships)")


def synthetic_bdd100k(args) -> int:
    from .data.bdd_layout import write_bdd100k

    manifest = write_bdd100k(args.out, args.split, num_videos=args.videos, seconds=args.seconds, seed=args.seed,
                             corrupt=args.corrupt, without_info=args.without_info, progress=True)
    print(f"wrote {len(manifest['ids'])} synthetic {args.split} videos ({args.seconds:g} s, 1280x720, 30 fps) "
          f"in the BDD100K layout under {args.out}/")
    return 0


def data_ingest(args) -> int:
    from .data.ingest import ingest

    index, count = _shard(args.shard)
    load_encoder = _tokenizer_loader(args)
    options = dict(fps=args.fps, limit=args.limit, store_frames=args.store_frames, batch_size=args.batch_size,
                   subset=args.subset)
    if args.ray:
        from .distributed import ingest_on_ray

        if count != 1:
            raise ValueError(f"--shard {args.shard} with --ray: Ray shards the videos itself; give --num-workers")
        reports = ingest_on_ray(args.bdd_root, args.split, args.out, load_encoder, args.num_workers,
                                use_gpu=args.device.startswith("cuda"), **options)
    else:
        reports = [ingest(args.bdd_root, args.split, args.out, load_encoder(), shard=(index, count), **options)]
    for report in reports:
        print(report.summary, file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="openvica", description="openvica-sim: a learned driving simulator "
                                "(tokenizer + world model + video decoder, after OpenViCA).")
    sub = p.add_subparsers(title="commands")

    r = sub.add_parser("rollout", help="continue seed frames into a driving video (mp4 + contact sheet)",
                       description="Tokenize 2+ seed frames, let the world model predict the next frames "
                       "(0.25 s each), decode them, and write an mp4 at 4 fps plus a PNG contact sheet.")
    r.add_argument("--bundle", default=None,
                   help="simulator bundle folder (openvica.json inside); default: the embedded tiny simulator")
    src = r.add_mutually_exclusive_group()
    src.add_argument("--frames", nargs="+", metavar="IMAGE", help="seed frames, oldest first (PNG/JPG, any size); "
                     "default: the first 2 frames of the embedded default's first held-out seed clip")
    src.add_argument("--video", help="seed video (mp4/mov); its last --seed-frames frames at --video-fps are used")
    r.add_argument("--seed-frames", type=int, default=2, help="frames of --video to seed with (default 2, the paper's T)")
    r.add_argument("--video-fps", type=float, default=4.0, help="rate at which --video is sampled (default 4)")
    r.add_argument("--steps", type=int, default=14, help="frames to predict (default 14, the paper's N)")
    r.add_argument("--top-k", type=int, default=None,
                   help="top-k sampling (default: the bundle's; the paper's 7B system: 1000, Table V)")
    r.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature (0 = greedy; default: the bundle's)")
    r.add_argument("--seed", type=int, default=0, help="sampler seed: same seed, same video")
    r.add_argument("--ego", default=None, choices=["replay", *EGO_PROGRAMS],
                   help="ego commands of an action-conditioned bundle, one per predicted frame: replay the seed "
                   "clip's own (its ego.json; the default when there is one) or a scenario program from the seed's "
                   "last ego state (default constant)")
    r.add_argument("--wavefront", type=int, default=None, metavar="W",
                   help="wavefront decoding: row r of a frame starts once row r-1 has W codes (15W+16 world-model "
                   "forwards a frame instead of 256; W=2: 5.6x fewer); default: the bundle's (openvica.json "
                   "\"sampling\"), raster where it names none; 16 is raster")
    r.add_argument("--decoder", choices=["vdec", "dec"], default=None,
                   help="vdec: 3D video decoder (default when present); dec: image decoder (TOK+WM+DEC)")
    r.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    r.add_argument("--out", default="rollout.mp4", help="output mp4 (default rollout.mp4)")
    r.add_argument("--sheet", default=None, help="contact sheet PNG (default: --out with .png)")
    r.set_defaults(run=rollout)

    i = sub.add_parser("info", help="print a bundle's openvica.json, sizes and (--params) parameter counts")
    i.add_argument("--bundle", required=True)
    i.add_argument("--params", action="store_true", help="load the models and count their parameters")
    i.set_defaults(run=info)

    b = sub.add_parser("bundle", help="make bundles").add_subparsers(title="bundle commands")
    br = b.add_parser("random", help="a bundle of randomly initialised models (tests, benchmarks)")
    br.add_argument("--preset", default="tiny", help="tiny | embedded | test | lwm-7b (7B needs ~28 GB in fp32)")
    br.add_argument("--out", required=True)
    br.add_argument("--seed", type=int, default=0)
    br.add_argument("--action-conditioned", action="store_true", help="reserve ego-command tokens (docs/design.md)")
    br.set_defaults(run=bundle_random)
    bc = b.add_parser("create", help="assemble a bundle from converted parts",
                      description="Join a tokenizer folder (openvica convert vqgan, or aMUSEd's vqvae/), a world-model "
                      "folder (openvica convert lwm) and optionally a video decoder into one bundle; without "
                      "--video-decoder, VDEC is inflated from the tokenizer's decoder (equal to it frame by frame).")
    bc.add_argument("--tokenizer", required=True, help="diffusers VQModel folder (TOK + DEC)")
    bc.add_argument("--world-model", required=True, help="world-model folder from `openvica convert lwm`")
    bc.add_argument("--video-decoder", default=None, help="VDEC folder (default: inflate DEC)")
    bc.add_argument("--adapter", default=None, help="LoRA adapter of a training/wm.py run (run.dir/world_model_adapter)")
    bc.add_argument("--action-conditioned", action="store_true", help="the world model was fine-tuned with ego tokens")
    bc.add_argument("--top-k", type=int, default=None,
                    help="the bundle's sampling default (default: 1000, the paper's, or the codebook size if smaller)")
    bc.add_argument("--context-frames", type=int, default=16,
                    help="frames its world model was trained on (T + N; default 16, the paper's): the engine's context")
    bc.add_argument("--wavefront", type=int, default=None, metavar="W",
                    help="its default decoding schedule: wavefront of width W (default raster)")
    bc.add_argument("--temperature", type=float, default=1.0,
                    help="its default sampling temperature (default 1.0; 0 is greedy)")
    bc.add_argument("--out", required=True)
    bc.set_defaults(run=bundle_create)

    c = sub.add_parser("convert", help="convert published pretrained files (offline, no jax)").add_subparsers(
        title="convert commands")
    cl = c.add_parser("lwm", help="LWM-Chat-1M's msgpack `params` -> transformers Llama folder (merged vocabulary)",
                      description="Read LWM's streaming msgpack checkpoint (fp32 or bf16, scan or numbered layers) "
                      "without jax and write a LlamaForCausalLM folder: embedding = [text; vision] rows, head = "
                      "[lm_head; vision_head], q/k permuted from LWM's interleaved to transformers' half-split RoPE. "
                      "Shapes come from the checkpoint; the preset gives what it does not hold.")
    cl.add_argument("--params", required=True, help="LWM's `params` file (the one loaded as params::<path>)")
    cl.add_argument("--out", required=True, help="new world-model folder")
    cl.add_argument("--tokenizer", default=None, help="LLaMA-2's tokenizer.model (or a tokenizer folder)")
    cl.add_argument("--preset", default="lwm-7b", help="lwm-7b (32 heads, RoPE theta 5e7, eps 1e-6) | tiny | test")
    cl.add_argument("--num-attention-heads", dest="num_heads", type=int, default=None)
    cl.add_argument("--num-kv-heads", type=int, default=None)
    cl.add_argument("--rope-theta", type=float, default=None, help="RoPE base (LWM-Chat-1M: 50000000)")
    cl.add_argument("--rms-norm-eps", type=float, default=None)
    cl.add_argument("--max-position-embeddings", type=int, default=None)
    cl.add_argument("--codebook-size", type=int, default=None, help="codes among the vision ids (LWM: 8192)")
    cl.add_argument("--param-scan-axis", type=int, default=0, help="axis of stacked layers in the scan layout")
    cl.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                    help="of the written weights (auto: as in the checkpoint)")
    cl.add_argument("--overwrite", action="store_true")
    cl.set_defaults(run=convert_lwm)
    cv = c.add_parser("vqgan", help="LWM's VQGAN pickle (or aMUSEd's vqvae/ folder) -> diffusers VQModel folder",
                      description="Read LWM's VQGAN parameter pickle with a restricted unpickler (numpy arrays and "
                      "plain containers only; anything else is refused and nothing runs), infer the architecture "
                      "from the shapes, and write a diffusers VQModel folder. A folder is taken as aMUSEd's vqvae/.")
    cv.add_argument("--checkpoint", required=True, help="LWM's `vqgan` pickle, or an aMUSEd vqvae/ folder")
    cv.add_argument("--out", required=True, help="new tokenizer folder")
    cv.add_argument("--resolution", type=int, default=256, help="frame size the tokenizer is used at (default 256)")
    cv.add_argument("--overwrite", action="store_true")
    cv.set_defaults(run=convert_vqgan)

    d = sub.add_parser("data", help="datasets").add_subparsers(title="data commands")
    di = d.add_parser("ingest", help="BDD100K videos -> tokenized Zarr store (resumable, shardable)",
                      description="Decode each video at --fps, preprocess as the paper, tokenize with the bundle's "
                      "tokenizer and append to a Zarr v3 store with ego motion and attributes. Corrupt videos are "
                      "reported and skipped; rerunning resumes; --shard i/n lets n processes write one store.")
    di.add_argument("--bdd-root", required=True, help="BDD100K root: videos/<split>/*.mov, labels/, info/100k/")
    di.add_argument("--split", default="train", choices=["train", "val", "test"])
    di.add_argument("--out", required=True, help="the store, e.g. bdd-train.zarr")
    which = di.add_mutually_exclusive_group()
    which.add_argument("--bundle", help="bundle whose tokenizer encodes the frames (default: the embedded default's; "
                       "the store then only fits that bundle)")
    which.add_argument("--tokenizer", help="or a tokenizer folder (e.g. training/tok.py's run.dir/tokenizer)")
    di.add_argument("--fps", type=float, default=4.0, help="4 for the video sets, 0.2 for BDDimg/5s (paper Table I)")
    di.add_argument("--limit", type=int, default=None, help="at most this many videos (of this shard)")
    di.add_argument("--subset", choices=["val-500"], default=None, help="the paper's fixed 500 validation videos")
    di.add_argument("--store-frames", action="store_true", help="keep the 256x256 frames (TOK/DEC, VDEC training)")
    di.add_argument("--shard", default="0/1", help="i/n: this process ingests videos i, i+n, ... (default 0/1)")
    di.add_argument("--batch-size", type=int, default=16, help="frames per tokenizer call")
    di.add_argument("--device", default="cpu")
    di.add_argument("--ray", action="store_true", help="shard the videos over Ray tasks (RAY_ADDRESS, or a local "
                    "cluster), one part each, consolidated at the end; rerun with the same --num-workers to resume")
    di.add_argument("--num-workers", type=int, default=2, help="with --ray: tasks, i.e. shards (default 2); "
                    "with --device cuda each task takes one GPU")
    di.set_defaults(run=data_ingest)
    dr = d.add_parser("retokenize", help="re-encode a store's frames with another tokenizer into a new store",
                      description="After fine-tuning TOK (training/tok.py), the world model needs its clips encoded "
                      "anew: this re-encodes the frames a store keeps (ingested with --store-frames, or `openvica "
                      "synthetic store`) and copies everything else. Resumable; --shard i/n lets n processes write "
                      "one store.")
    dr.add_argument("store", help="the source store (with frames)")
    dr.add_argument("--out", required=True, help="the new store")
    which = dr.add_mutually_exclusive_group(required=True)
    which.add_argument("--tokenizer", help="tokenizer folder, e.g. training/tok.py's run.dir/tokenizer")
    which.add_argument("--bundle", help="or a bundle whose tokenizer encodes the frames")
    dr.add_argument("--shard", default="0/1", help="i/n: this process re-encodes clips i, i+n, ... (default 0/1)")
    dr.add_argument("--batch-size", type=int, default=16, help="frames per tokenizer call")
    dr.add_argument("--device", default="cpu")
    dr.set_defaults(run=data_retokenize)

    sc = sub.add_parser("scenarios", help="rare-scenario datasets: generate, replay, mine real clips, test a "
                        "detector").add_subparsers(title="scenarios commands")
    from .scenarios import generate as scenario_generate
    from .scenarios import harness as scenario_harness
    from .scenarios import mine as scenario_mine

    scenario_generate.add_parser(sc)
    scenario_generate.add_replay_parser(sc)
    scenario_mine.add_parser(sc)
    scenario_harness.add_parser(sc)

    e = sub.add_parser("eval", help="evaluate a bundle: the paper's metrics and protocol (Tables II-VI)").add_subparsers(
        title="eval commands")
    ev = e.add_parser("video", help="rollouts vs the real continuation: FID/FVD/CMMD, PSNR/SSIM/LPIPS per frame, "
                      "top-k sweep, DEC vs VDEC, ego-command adherence",
                      description="The paper's video protocol: from each clip's T seed frames predict N frames and "
                      "compare them with the clip's real continuation (Tables IV-VI), with the transcoding rows "
                      "(TOK+DEC, TOK+VDEC, no WM) as references; an ego-motion probe adds command adherence. Writes "
                      "OUT/metrics.json, OUT/report.md, plots and samples.png; rollouts are cached per clip in "
                      "OUT/rollouts/, so a killed run resumes. The guide: docs/evaluate.md.")
    ev.add_argument("--bundle", default=None, help="simulator bundle (default: the embedded default)")
    ev.add_argument("--clips", default=None, help="a token store ingested with --store-frames, or a folder of clips "
                    "(default: the embedded default's held-out seed clips)")
    ev.add_argument("--list", default=None, help="'val-500' (the paper's 500 validation clips) or a file of clip ids")
    ev.add_argument("--limit", type=int, default=None, help="at most this many clips")
    ev.add_argument("--seed-frames", type=int, default=2, help="T (default 2)")
    ev.add_argument("--frames", type=int, default=14, help="N, frames predicted per clip (default 14)")
    ev.add_argument("--start-frame", type=int, default=0, help="where each clip's window starts (default 0)")
    ev.add_argument("--top-k", type=int, nargs="+", default=None,
                    help="one or more k (Table V: 1 10 100 1000 8192); default the bundle's")
    ev.add_argument("--decoder", nargs="+", choices=["vdec", "dec"], default=None,
                    help="decoders to score (Table VI); default both the bundle has")
    ev.add_argument("--no-transcode", action="store_true", help="skip the TOK+DEC / TOK+VDEC reference rows")
    ev.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: the bundle's)")
    ev.add_argument("--seed", type=int, default=0, help="sampler seed: clip i samples with sha256(seed:clip id)")
    ev.add_argument("--wavefront", type=int, default=None, metavar="W", help="decode by the wavefront schedule of "
                    "width W (`openvica rollout --wavefront`); default: the bundle's, raster where it names none; "
                    "16 is raster")
    ev.add_argument("--ego-probe", metavar="DIR", default=None,
                    help="ego-motion probe folder (training/probe.py) for command adherence")
    _network_flags(ev, video=True)
    ev.add_argument("--batch-size", type=int, default=8, help="clips per engine call")
    ev.add_argument("--device", default="cpu")
    ev.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                    help="the world model's (default: bf16 on CUDA, fp32 on CPU)")
    ev.add_argument("--num-workers", type=int, default=0,
                    help="Ray simulator actors for the rollouts (RAY_ADDRESS or a local cluster); 0: this process")
    ev.add_argument("--use-gpu", action="store_true", help="with --num-workers: one GPU per actor")
    ev.add_argument("--out", required=True, help="output folder")
    ev.set_defaults(run=eval_video)
    ei = e.add_parser("images", help="TOK+DEC reconstruction of single images (Tables II-III)",
                      description="Encode and decode each image with the bundle's TOK and DEC and compare with the "
                      "preprocessed image: PSNR, SSIM, MS-SSIM, LPIPS per image, FID and CMMD of the set. Writes "
                      "OUT/metrics.json and OUT/report.md. The guide: docs/evaluate.md.")
    ei.add_argument("--bundle", default=None, help="simulator bundle (default: the embedded default)")
    ei.add_argument("--images", required=True, help="a folder of PNG/JPEG images, or a store with frames")
    ei.add_argument("--limit", type=int, default=None, help="at most this many images")
    _network_flags(ei, video=False)
    ei.add_argument("--batch-size", type=int, default=16)
    ei.add_argument("--device", default="cpu")
    ei.add_argument("--out", required=True, help="output folder")
    ei.set_defaults(run=eval_images)

    s = sub.add_parser("synthetic", help="the synthetic driving world").add_subparsers(title="synthetic commands")
    sf = s.add_parser("frames", help="render one synthetic clip as PNG frames (seed frames for demos)")
    sf.add_argument("--out", required=True)
    sf.add_argument("--frames", type=int, default=2)
    sf.add_argument("--speed", type=float, default=12.0, help="ego speed, m/s")
    sf.add_argument("--yaw-rate", type=float, default=0.05, help="ego yaw rate, rad/s")
    sf.add_argument("--timeofday", default="day", choices=["day", "dusk", "night"])
    sf.set_defaults(run=synthetic_frames)
    sb = s.add_parser("bdd100k", help="write synthetic drives in the BDD100K layout (videos, labels, info)",
                      description="Render drives of the synthetic world as 1280x720 30 fps videos with det_20 labels "
                      "and info files, so `openvica data ingest --bdd-root OUT` runs exactly as on BDD100K.")
    sb.add_argument("--out", required=True, help="root folder of the tree (videos/, labels/, info/100k/)")
    sb.add_argument("--split", default="train", choices=["train", "val", "test"])
    sb.add_argument("--videos", type=int, default=8, help="number of videos (default 8)")
    sb.add_argument("--seconds", type=float, default=10.0, help="length of each video (default 10)")
    sb.add_argument("--seed", type=int, default=0, help="video i depends on (seed, i) only")
    sb.add_argument("--corrupt", type=int, default=0, help="make the last N videos undecodable (robustness tests)")
    sb.add_argument("--without-info", type=int, default=0, help="drop the info file of N videos")
    sb.set_defaults(run=synthetic_bdd100k)
    ss = s.add_parser("store", help="render synthetic drives straight into a token store (frames, tokens, ego "
                      "motion, car boxes on every frame)",
                      description="Render drives of the synthetic world at the model's 256x256 view (the view the "
                      "BDD100K-layout videos give after preprocessing, without the video coding) and tokenise them "
                      "into a store like `openvica data ingest --store-frames` writes; reruns add missing drives.")
    ss.add_argument("--out", required=True, help="the store, e.g. synthetic-train.zarr")
    ss.add_argument("--drives", type=int, default=8, help="number of drives (default 8)")
    ss.add_argument("--seconds", type=float, default=10.0, help="length of each drive (default 10)")
    ss.add_argument("--fps", type=float, default=4.0)
    ss.add_argument("--seed", type=int, default=0, help="drive i depends on (seed, i) only, as `synthetic bdd100k`")
    ss.add_argument("--world", choices=["commanded", "cruise", "piecewise"], default="commanded",
                    help="commanded: an ego that changes speed and lane and swerves, on bending roads (default); "
                    "cruise: a lane keeper on a road of constant bend (`synthetic bdd100k`'s drives); piecewise: the "
                    "commanded world's roads driven by open-loop commands that brake, speed up and turn off the road's "
                    "bend every 0.5 to 2.5 s (frames that teach a world model its commands)")
    ss.add_argument("--split", default="train", choices=["train", "val", "test"])
    ss.add_argument("--shard", default="0/1", help="i/n: this process renders drives i, i+n, ... into part i (run n "
                    "processes for one store; default 0/1)")
    tok = ss.add_mutually_exclusive_group()
    tok.add_argument("--bundle", help="bundle whose tokenizer encodes the frames (default: the embedded default's)")
    tok.add_argument("--tokenizer", help="or a tokenizer folder")
    ss.add_argument("--device", default="cpu")
    ss.set_defaults(run=synthetic_store)
    _name_guides(p)
    return p


GUIDES = {"rollout": "getting-started.md", "info": "getting-started.md", "bundle": "weights.md",
          "convert": "weights.md", "data": "ingest.md", "scenarios": "scenarios.md", "eval": "evaluate.md",
          "synthetic": "getting-started.md", "synthetic bdd100k": "ingest.md", "synthetic store": "ingest.md",
          "bundle random": "getting-started.md"}  # command -> its guide in docs/ (the top-level name, or a refinement)


def _name_guides(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> None:
    """Every subcommand's --help ends with the guide that explains it (docs/<page>)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                here = (*path, name)
                guide = GUIDES.get(" ".join(here)) or GUIDES.get(here[0])
                if guide:
                    child.epilog = (f"{child.epilog.rstrip('. ')}. " if child.epilog else "") + f"Guide: docs/{guide}"
                _name_guides(child, here)


if __name__ == "__main__":
    sys.exit(main())
