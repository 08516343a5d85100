"""The paper's video protocol (section IV, Tables IV-VI) and the simulator's own measures: `openvica eval video`.

For each clip: T = 2 seed frames, N = 14 predicted frames (the paper's FID14, CMMD14, FVD14), against the clip's
real continuation. Rows of the result, one per (system, k, decoder):

    copy-last                     the last seed frame repeated: a simulator that keeps the scene and never moves
    tok+dec, tok+vdec             transcoding, no world model: TOK then DEC / VDEC on the real frames (references)
    tok+wm+dec, tok+wm+vdec       rollouts at every top-k of the sweep (Table V), decoded by DEC / VDEC (Table VI);
                                  tok+wm+vdec is OpenViCA

Every row has FID, FVD, CMMD (against the real continuations), MSE, PSNR, SSIM, MS-SSIM, LPIPS (against the real
frame of the same index, also per predicted frame index: they fall with the horizon; MSE per clip too), the
synthetic world's scene checks (`metrics.scene`: how many of the real frame's lane-marking pixels and, where the
store has boxes, cars the generated frame still shows) and surprise (the WM's mean surprise at
the generated frames; on the transcoding rows, its teacher-forced surprise at the real ones). A metric whose feature
network is not given is null, and listed under "skipped". With an ego-motion probe, "adherence" holds the replay and
counterfactual measures of `metrics.ego`. For action-conditioned bundles, "ego_information" says how much the ego
ids tell the WM about the real frames, no decoder or probe in between: its teacher-forced surprise at them with every
ego id "unknown" minus with the clip's own ego motion, in nats per code (0: the WM ignores its commands).

Action-conditioned bundles are given each clip's own ego motion on the seed frames and, for the quality rows, on the
predicted frames (a replay of the real drive; unknown ego motion gives the "unknown" ids), so that the generated
continuation can be compared with the real one.
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from openvica_sim.metrics.ego import BRANCHES, counterfactual_accuracy, counterfactual_commands, replay_adherence

from .clips import EvalClips
from .rollouts import ClipJob, RolloutCache, Variant, run_jobs, sampler_seed
from .scoring import ClipScores, FeatureNetworks, FeatureSet

DECODERS = {"vdec": "video_decoder", "dec": "tokenizer"}


@dataclass
class VideoEvalSettings:
    """What `evaluate_video` runs; every field is recorded in metrics.json."""

    bundle: str
    clips: str
    list: str | None = None  # "val-500", or a file of clip ids
    limit: int | None = None
    seed_frames: int = 2  # T
    num_frames: int = 14  # N
    start_frame: int = 0  # the window of each clip starts here
    top_k: list[int] | None = None  # None: the bundle's
    decoders: list[str] | None = None  # "vdec", "dec"; None: both the bundle has
    temperature: float | None = None  # None: the bundle's
    seed: int = 0
    wavefront: int | None = None  # the decoding schedule (Simulator(wavefront=)); None: raster
    transcode: bool = True  # the "no WM" reference rows
    batch_size: int = 8  # clips per engine call
    device: str = "cpu"
    dtype: str | None = None  # the WM's; None: bf16 on CUDA, fp32 on CPU
    num_workers: int = 0  # > 0: rollouts on a Ray SimulatorPool of this many actors
    use_gpu: bool = False  # the pool's actors each take a GPU
    networks: FeatureNetworks = field(default_factory=FeatureNetworks)
    ego_probe: str | None = None
    samples: int = 4  # clips shown in samples.png


def evaluate_video(settings: VideoEvalSettings, out: str | Path, progress: bool = True, pool=None,
                   bundle=None) -> dict:
    """Run the video protocol into the folder `out` (metrics.json, report.md, plots, samples.png, rollouts/);
    return metrics.json's content. A rerun with the same settings resumes from the cached rollouts. `pool`: a
    running `SimulatorPool` of the same bundle and temperature for the rollouts (else settings.num_workers makes one).
    `bundle`: an already loaded `Bundle` to use instead of loading settings.bundle (benchmarks of random bundles;
    its sha256 is then recorded as "unsaved" unless settings.bundle is its folder).

    Raises:
        FileNotFoundError / ValueError: a missing bundle, clip source, list or feature network (the message says
            which flag fixes it), bad settings, or an `out` folder holding another evaluation.
    """
    from openvica_sim.bundle import load_bundle
    from openvica_sim.models.ego_probe import EgoProbe
    from openvica_sim.simulator import Simulator

    started = time.perf_counter()
    out = Path(out)
    T, N = settings.seed_frames, settings.num_frames
    if T < 2 or N < 1:
        raise ValueError(f"seed_frames={T} must be >= 2 (the paper's T = 2) and num_frames={N} >= 1")
    nets = settings.networks.load()  # before any work: a bad file fails now
    probe = EgoProbe.from_pretrained(settings.ego_probe, settings.device) if settings.ego_probe else None
    if bundle is None:
        dtype = getattr(torch, settings.dtype) if settings.dtype else None
        bundle = load_bundle(settings.bundle, device=settings.device, dtype=dtype)
    decoders = settings.decoders or (["vdec", "dec"] if bundle.video_decoder is not None else ["dec"])
    for d in decoders:
        if d not in DECODERS:
            raise ValueError(f"decoder {d!r}: choose among {sorted(DECODERS)}")
    if "vdec" in decoders and bundle.video_decoder is None:
        raise ValueError(f"--decoder vdec but {settings.bundle} has no video decoder; pass --decoder dec")
    ks = list(settings.top_k or [bundle.top_k])
    sim = Simulator(bundle, top_k=ks[0], temperature=settings.temperature, wavefront=settings.wavefront)
    clips = EvalClips.open(settings.clips, T + N + 1, settings.list, settings.limit, settings.start_frame,
                           min_length=T + N)
    record = _settings_record(settings, bundle, clips, ks, decoders, nets, probe, sim)
    cache = RolloutCache(out / "rollouts", {k: record[k] for k in ("bundle_sha256", "clip_list_sha256", "seed",
                                                                   "temperature", "seed_frames", "num_frames",
                                                                   "start_frame", "wavefront")})
    coding = bundle.action_coding if bundle.action_conditioned else None
    k_ego = bundle.top_k if bundle.top_k in ks else ks[0]
    ego_clips = [c for c in clips.clips if probe is not None and _ego_known(c, T + N)]
    own_pool = None
    try:
        jobs = []
        for i, clip in enumerate(_progress(clips.clips, progress, "eval seeds")):
            variants = [Variant(f"k{k}", k, _commands(coding, clip, T, N)) for k in ks]
            if clip in ego_clips and coding is not None:  # an unconditioned bundle's branches are its k_ego rollout
                variants += _ego_variants(coding, clip, ego_clips, T, N, k_ego, bundle.fps)
            variants = [v for v in variants if not cache.has(v.name, clip.clip_id)]
            if variants:
                frames = clips.frames(clip)
                jobs.append(ClipJob(clip.clip_id, sim.encode(frames[:T]).cpu().numpy(),
                                    _seed_commands(coding, clip, T), sampler_seed(settings.seed, clip.clip_id), N + 1,
                                    variants))
        if pool is None and settings.num_workers > 0 and jobs:
            from openvica_sim.distributed import SimulatorPool

            pool = own_pool = SimulatorPool(settings.bundle, settings.num_workers, use_gpu=settings.use_gpu,
                                            simulator_kwargs={"temperature": sim.temperature,
                                                              "wavefront": settings.wavefront})
        run_jobs(jobs, cache, sim, pool, settings.batch_size, progress)
    finally:
        if own_pool is not None:
            own_pool.close()
    rollout_s = time.perf_counter() - started
    rows, real, samples, ego_information = _score(settings, sim, clips, cache, nets, ks, decoders, progress)
    adherence = _adherence(probe, sim, clips, ego_clips, cache, coding, T, N, k_ego, decoders[0], bundle.fps,
                           progress) if probe is not None else None
    record.update(rollout_s=round(rollout_s, 1), seconds=round(time.perf_counter() - started, 1))
    result = {"settings": record, "results": rows, "adherence": adherence, "ego_information": ego_information,
              "skipped": dict(nets.skipped)}
    if probe is None:
        result["skipped"]["adherence"] = "not computed: pass --ego-probe DIR (training/probe.py's run.dir/ego_probe)"
    from .report import write_video_report

    write_video_report(out, result, samples)
    return result


# ---- variants and commands ------------------------------------------------------------------------------------------

def _commands(coding, clip, T: int, N: int) -> np.ndarray | None:
    """The clip's own ego motion on its N + 1 predicted frames, normalised (NaN: unknown), or None (unconditioned)."""
    if coding is None:
        return None
    return _normalised(coding, clip.speed_mps[T:T + N + 1], clip.yaw_rate_rps[T:T + N + 1], N + 1)


def _seed_commands(coding, clip, T: int) -> np.ndarray | None:
    return None if coding is None else _normalised(coding, clip.speed_mps[:T], clip.yaw_rate_rps[:T], T)


def _normalised(coding, speed: np.ndarray, yaw: np.ndarray, length: int) -> np.ndarray:
    speed, yaw = np.resize(np.append(speed, [np.nan] * length), length), np.resize(np.append(yaw, [np.nan] * length),
                                                                                    length)
    out = coding.to_normalized(np.nan_to_num(speed), np.nan_to_num(yaw)).astype(np.float64)
    out[~(np.isfinite(speed) & np.isfinite(yaw))] = np.nan  # the engine turns NaN into the "unknown" ids
    return out


def _ego_known(clip, length: int) -> bool:
    return bool(np.isfinite(clip.speed_mps[:length]).all() and np.isfinite(clip.yaw_rate_rps[:length]).all())


def _ego_variants(coding, clip, ego_clips: list, T: int, N: int, k: int, fps: float) -> list[Variant]:
    """The swapped-commands rollout and the five counterfactual branches of one clip (`metrics.ego`)."""
    other = ego_clips[(ego_clips.index(clip) + 1) % len(ego_clips)]
    variants = [Variant("ego-swapped", k, _normalised(coding, other.speed_mps[T:T + N + 1],
                                                      other.yaw_rate_rps[T:T + N + 1], N + 1))]
    for name, (speed, yaw) in counterfactual_commands(float(clip.speed_mps[T - 1]), N + 1, fps).items():
        variants.append(Variant(f"ego-{name}", k, coding.to_normalized(speed, yaw).astype(np.float64)))
    return variants


# ---- scoring ------------------------------------------------------------------------------------------------------

def _score(settings, sim, clips: EvalClips, cache: RolloutCache, nets: FeatureNetworks, ks: list[int],
           decoders: list[str], progress: bool) -> tuple[list[dict], FeatureSet, dict, dict | None]:
    """Every row's metrics, clip by clip: (rows, the real frames' features, sample frames for samples.png, what the ego
    ids tell the WM (`_ego_information`))."""
    T, N = settings.seed_frames, settings.num_frames
    real = FeatureSet(nets)
    systems = [("copy-last", None, None)] if settings.transcode else []
    for d in ("dec", "vdec"):  # the paper's order (Table V): per decoder, the transcoding reference, the top-k sweep
        if d in decoders:
            systems += [(f"tok+{d}", None, d)] if settings.transcode else []
            systems += [(f"tok+wm+{d}", k, d) for k in ks]
    scores = {key: ClipScores(nets) for key in systems}
    ego_surprise: dict[str, list[np.ndarray]] = {"with": [], "without": []}
    samples: dict = {"clip_ids": [], "real": [], "generated": [], "label": f"top-k {ks[0]}, {decoders[0]}"}
    for clip in _progress(clips.clips, progress, "eval metrics"):
        frames = clips.frames(clip)  # (T + N [+ 1], S, S, 3)
        target = frames[T:T + N]
        boxes = None if clip.boxes is None else [clip.boxes.get(T + j, []) for j in range(N)]
        real.add(target)
        codes = sim.encode(frames)  # (T + N [+ 1], h, w)
        if len(codes) < T + N + 1:  # no lookahead frame in the clip: its last frame stands in for it
            codes = torch.cat([codes, codes[-1:]])
        real_surprise = None
        if settings.transcode:
            real_surprise, blind = _real_surprise(sim, codes[:T + N], clip, T)
            if blind is not None:
                ego_surprise["with"].append(real_surprise)
                ego_surprise["without"].append(blind)
        for system, k, decoder in systems:
            if system == "copy-last":
                scores[(system, k, decoder)].add_pair(np.repeat(frames[T - 1:T], N, axis=0), target, boxes=boxes)
                continue
            if k is None:  # transcoding: frames T - 1 .. T + N of the real clip
                window, surprise = codes[T - 1:], real_surprise
            else:
                generated, surprise = cache.load(f"k{k}", clip.clip_id)
                window = torch.cat([codes[T - 1:T], torch.as_tensor(generated, device=codes.device)])
                surprise = surprise[:N]
            decoded = sim.decode_frames(window[None], DECODERS[decoder])[0]  # (N, S, S, 3)
            scores[(system, k, decoder)].add_pair(decoded, target, surprise, boxes)
            if (system, k, decoder) == (f"tok+wm+{decoders[0]}", ks[0], decoders[0]) and \
                    len(samples["real"]) < settings.samples:
                samples["clip_ids"].append(clip.clip_id)
                samples["real"].append(frames[:T + N])
                samples["generated"].append(np.concatenate([frames[:T], decoded]))
    rows = [{"system": system, "k": k, "decoder": decoder, **score.row(real)}
            for (system, k, decoder), score in scores.items()]
    return rows, real, samples, _ego_information(ego_surprise)


def _real_surprise(sim, codes: torch.Tensor, clip, T: int) -> tuple[np.ndarray, np.ndarray | None]:
    """The WM's teacher-forced surprise (N,) at the clip's real frames T.. of `codes` (T + N, h, w), with the clip's
    ego motion in an action-conditioned bundle's ego ids ("unknown" where the clip has none); and, for such a bundle on
    a clip whose ego motion is known, the same with every ego id "unknown" (else None)."""
    if not sim.bundle.action_conditioned:
        return sim.score([codes])[0][T:], None
    length = len(codes)
    speed, yaw = clip.speed_mps[:length], clip.yaw_rate_rps[:length]
    with_ego = sim.score([codes], [speed], [yaw])[0][T:]
    if not _ego_known(clip, length):
        return with_ego, None
    unknown = np.full(length, np.nan)
    return with_ego, sim.score([codes], [unknown], [unknown])[0][T:]


def _ego_information(surprise: dict[str, list[np.ndarray]]) -> dict | None:
    """What the ego ids tell the world model about the real frames: its mean teacher-forced surprise with every ego id
    "unknown" minus with the true ones, in nats per code (0: it ignores them; `metrics.ego` measures what the
    decoded rollouts show). None without an action-conditioned bundle, the transcoding rows or clips with ego motion."""
    if not surprise["with"]:
        return None
    with_ego, without = float(np.mean(surprise["with"])), float(np.mean(surprise["without"]))
    return {"surprise_with_ego": with_ego, "surprise_without_ego": without, "nats_per_code": without - with_ego,
            "clips": len(surprise["with"])}


def _adherence(probe, sim, clips: EvalClips, ego_clips: list, cache: RolloutCache, coding, T: int, N: int, k: int,
               decoder: str, fps: float, progress: bool) -> dict | None:
    """Replay and counterfactual measures (`metrics.ego`) from the probe's estimates on decoded rollouts."""
    if len(ego_clips) < 2:
        return {"note": f"{len(ego_clips)} clip(s) with known ego motion over T + N frames; adherence needs 2"}
    estimates: dict[str, list] = {name: [] for name in ("own", "swapped", *BRANCHES)}
    commands: dict[str, list] = {"own": [], "other": []}
    for clip in _progress(ego_clips, progress, "eval adherence"):
        frames = clips.frames(clip)
        seed_codes = sim.encode(frames[T - 1:T])
        done: dict[str, tuple] = {}
        for name, variant in [("own", f"k{k}"), ("swapped", "ego-swapped"), *[(b, f"ego-{b}") for b in BRANCHES]]:
            # a bundle without ego ids samples the same codes whatever it is told: its every branch is the k rollout
            key = variant if coding is not None else f"k{k}"
            if key not in done:
                generated, _ = cache.load(key, clip.clip_id)
                codes = torch.cat([seed_codes, torch.as_tensor(generated, device=seed_codes.device)])
                decoded = sim.decode_frames(codes[None], DECODERS[decoder])[0]
                speed, yaw = probe.estimate(np.concatenate([frames[T - 1:T], decoded])[None])  # (1, N) each
                done[key] = (speed[0], yaw[0])
            estimates[name].append(done[key])
        other = ego_clips[(ego_clips.index(clip) + 1) % len(ego_clips)]
        commands["own"].append((clip.speed_mps[T:T + N], clip.yaw_rate_rps[T:T + N]))
        commands["other"].append((other.speed_mps[T:T + N], other.yaw_rate_rps[T:T + N]))

    def stacked(pairs):
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    replay = replay_adherence(stacked(estimates["own"]), stacked(estimates["swapped"]), stacked(commands["own"]),
                              stacked(commands["other"]), probe.config.label_std)
    counterfactual = counterfactual_accuracy({b: stacked(estimates[b]) for b in BRANCHES})
    return {"k": k, "decoder": decoder, "action_conditioned": coding is not None, "replay": replay,
            "counterfactual": counterfactual,
            "note": None if coding is not None else "The bundle is not action-conditioned: it ignores its commands "
                                                    "(every branch is its plain rollout), so the measures sit at their "
                                                    "chance values (ratio 1, 0.5)."}


# ---- the record ---------------------------------------------------------------------------------------------------

def _settings_record(settings, bundle, clips: EvalClips, ks, decoders, nets: FeatureNetworks, probe, sim) -> dict:
    import diffusers
    import transformers

    from openvica_sim import __version__
    from openvica_sim.metrics.networks import file_sha256

    versions = {"openvica_sim": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
                "diffusers": diffusers.__version__, "numpy": np.__version__, "python": platform.python_version()}
    try:
        import torchmetrics

        versions["torchmetrics"] = torchmetrics.__version__
    except ImportError:
        pass
    device = torch.device(settings.device)
    record = {k: v for k, v in asdict(settings).items() if k != "networks"}
    record.update(
        bundle_sha256=file_sha256(settings.bundle) if Path(settings.bundle).is_dir() else "unsaved",
        clips=clips.description, num_clips=len(clips),
        clip_list_sha256=clips.list_hash(), top_k=ks, decoders=decoders, feature_networks=nets.files,
        temperature=sim.temperature, wavefront=sim.wavefront,
        ego_probe_sha256=file_sha256(settings.ego_probe) if settings.ego_probe else None,
        ego_probe_accuracy=probe.read_accuracy(settings.ego_probe) if probe is not None else None,
        action_conditioned=bundle.action_conditioned,
        actions="the clips' own ego motion" if bundle.action_conditioned else "none (not action-conditioned)",
        lookahead_frame="the clip's next frame, or the last one repeated when the clip ends there",
        versions=versions, device=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        or platform.machine(), dtype=str(next(bundle.world_model.parameters()).dtype).removeprefix("torch."),
        sampler_seeds="sha256(f'{seed}:{clip_id}')[:8], one per clip, shared by its variants")
    return record


def _progress(items, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="clip", disable=not enabled)

