"""Generate a rare-scenario dataset from a spec (docs/design.md "Scenarios"; the folder layout is in dataset.py).

    openvica scenarios generate --spec night-rain --clips STORE --out DIR [--bundle B] [key=value ...] [--dry-run]
    python -m openvica_sim.scenarios.generate --spec night-rain --clips /shared/store.zarr --out /shared/night-rain \
        scaling.num_workers=8 scaling.use_gpu=true          # through `ray job submit` on a cluster

One sample = (spec, seed clip, fork frame, branch). Its sampler seed comes from the spec's content hash and those
three (`spec.sample_seed`), and the engine's draws depend on that seed alone, so a sample's tokens do not depend
on its batch, its worker or the order of work. Branches of a seed clip in one batch share its prefill
(`Simulator.branch`). Each clip is written under clips/.tmp-*, then renamed to clips/<clip_id>/: the clip folder
is the unit of commit, so a run killed at any point loses at most the clips in flight, a rerun resumes by skipping
committed clips, and a clip written twice (a retried sample) is kept once. clips.parquet, the labels and the review
page are rebuilt from the committed folders at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import dataset as ds
from .ego import commands
from openvica_sim.data.clips import open_clips

from .query import Match, select, slice_counts
from .spec import Spec, load_spec, sample_seed, spec_from_dict

JPEG_QUALITY = 95


@dataclass(frozen=True)
class Sample:
    clip_id: str
    parent: str
    fork_frame: int
    branch: int
    seed: int  # the engine's int64 sampler seed


@dataclass(frozen=True)
class Job:
    """What a worker needs to generate and commit samples: plain data, so it crosses to Ray actors."""

    out: str
    spec: dict  # Spec.to_dict()
    clips: str  # the clip source's path
    attributes: dict  # parent clip id -> attributes (read once on the driver)


def plan(spec: Spec, matches: list[Match]) -> list[Sample]:
    """Every sample of the spec, seed clip by seed clip, branches in order."""
    return [Sample(clip_id=f"{m.clip_id}-f{m.fork_frame:04d}-b{b:02d}", parent=m.clip_id, fork_frame=m.fork_frame,
                   branch=b, seed=sample_seed(spec.hash, m.clip_id, m.fork_frame, b))
            for m in matches for b in range(spec.fork.branches)]


# ---- the work: on this process or on a Ray actor ------------------------------------------------------------------

def run_samples(simulator, job: Job, samples: list[Sample]) -> list[dict]:
    """Generate the samples not yet committed under `job.out`, commit each clip folder, return every sample's row.

    Samples are grouped by seed clip: each seed window is prefilled once and branched into its samples' rows.
    """
    import torch

    spec = spec_from_dict(job.spec, origin="job")
    rows: dict[str, dict] = {}
    todo = []
    for s in samples:
        row = _committed_row(job.out, s.clip_id)
        if row is not None:
            rows[s.clip_id] = row
        else:
            todo.append(s)
    if todo:
        source = _open_clips_cached(job.clips)
        parents = list(OrderedDict.fromkeys((s.parent, s.fork_frame) for s in todo))
        windows = [source.window(p, at, spec.fork.seed_frames) for p, at in parents]
        started = time.perf_counter()
        with torch.inference_mode():
            result = _roll_out(simulator, spec, todo, parents, windows)
        seconds = (time.perf_counter() - started) / len(todo)
        with simulator.timed("write"):
            for i, s in enumerate(todo):
                window = windows[parents.index((s.parent, s.fork_frame))]
                rows[s.clip_id] = _commit(job, spec, simulator, s, window, result, i, seconds)
    return [rows[s.clip_id] for s in samples]


def _roll_out(simulator, spec: Spec, todo: list[Sample], parents: list[tuple], windows: list) -> dict:
    """Prefill each seed window once, branch it into its samples, step the horizon; numpy results per sample."""
    N = spec.horizon
    bundle = simulator.bundle
    if all(w.tokens is not None for w in windows):
        seed_tokens = np.stack([w.tokens for w in windows])  # (P, T, h, w)
    else:
        seed_tokens = np.stack([simulator.encode(w.frames).cpu().numpy() for w in windows])
    seed_actions = None
    if bundle.action_conditioned:  # the seed frames' own ego motion (NaN: unknown ids)
        seed_actions = np.stack([bundle.action_coding.to_normalized(w.speed_mps, w.yaw_rate_rps) for w in windows])
    state = simulator.start(tokens=seed_tokens, seeds=[0] * len(parents), actions=seed_actions)
    rows = [parents.index((s.parent, s.fork_frame)) for s in todo]
    state = simulator.branch(state, rows=rows, seeds=[s.seed for s in todo])
    ego = np.stack([commands(spec.ego.program, spec.ego.params, N, _last_finite(windows[r].speed_mps),
                             _last_finite(windows[r].yaw_rate_rps)) for r in rows])  # (B, N, 2) m/s, rad/s
    actions = bundle.action_coding.to_normalized(ego[..., 0], ego[..., 1])  # (B, N, 2) in [-1, 1]
    steps = [simulator.step(state, actions[:, k] if bundle.action_conditioned else None) for k in range(N)]
    return {"seed_tokens": seed_tokens, "rows": rows, "ego": ego, "actions": actions,
            "frames": np.stack([o.frames for o in steps], 1), "tokens": np.stack([o.tokens for o in steps], 1),
            "surprise": np.stack([o.surprise for o in steps], 1)}


def _commit(job: Job, spec: Spec, simulator, s: Sample, window, result: dict, i: int, seconds: float) -> dict:
    """Write sample i's clip folder under a temporary name and rename it into place; return its row."""
    from openvica_sim.frames import model_view, postprocess
    from openvica_sim.video_io import write_image, write_video

    parent_row = result["rows"][i]
    seed_tokens = result["seed_tokens"][parent_row]  # (T, h, w)
    if window.frames is not None:
        seed_frames = model_view(window.frames)
    else:  # a store without frames: show what the model saw, the seed codes through DEC
        import torch

        with torch.inference_mode():
            codes = torch.as_tensor(seed_tokens, device=next(simulator.bundle.tokenizer.parameters()).device)
            seed_frames = postprocess(simulator.bundle.tokenizer.decode(codes))
    frames = np.concatenate([seed_frames, result["frames"][i]])  # (T + N, S, S, 3)
    tokens = np.concatenate([seed_tokens, result["tokens"][i]]).astype(np.uint16)
    T = len(seed_tokens)
    row = {"clip_id": s.clip_id, "parent_clip_id": s.parent, "fork_frame": s.fork_frame, "branch": s.branch,
           "sample_seed": s.seed, **_slice_fields(job.attributes.get(s.parent, {})),
           "attributes": json.dumps(job.attributes.get(s.parent, {}), sort_keys=True),
           "num_seed_frames": T, "num_frames": len(frames), "ego_program": spec.ego.program,
           "ego_params": json.dumps(spec.ego.params, sort_keys=True),
           "ego_applied": bool(simulator.bundle.action_conditioned),
           "surprise": [float(x) for x in result["surprise"][i]],
           "surprise_mean": float(np.mean(result["surprise"][i])),
           **gates(frames, T, spec.gates), "seconds": round(seconds, 3),
           "seed_frames_from": "frames" if window.frames is not None else "decoded tokens",
           "camera_view": json.dumps(window.camera_view, sort_keys=True) if window.camera_view else ""}
    final = ds.clip_dir(job.out, s.clip_id)
    tmp = final.parent / f"{ds.TMP_PREFIX}{s.clip_id}-{os.getpid()}-{time.monotonic_ns()}"
    try:
        for k, frame in enumerate(frames):
            write_image(tmp / "frames" / ds.frame_name(k), frame, quality=JPEG_QUALITY)
        if spec.export.video:
            write_video(tmp / "video.mp4", frames, fps=simulator.bundle.fps)
        np.save(tmp / "tokens.npy", tokens)
        actions = {"program": spec.ego.program, "params": spec.ego.params, "applied": row["ego_applied"],
                   "dt_s": 1.0 / simulator.bundle.fps,
                   "speed_mps": result["ego"][i, :, 0].round(4).tolist(),
                   "yaw_rate_rps": result["ego"][i, :, 1].round(5).tolist(),
                   "normalized": result["actions"][i].round(5).tolist(),
                   "note": "one command per generated frame" + ("" if row["ego_applied"] else
                           "; not applied: the bundle is not action-conditioned")}
        (tmp / "actions.json").write_text(json.dumps(actions, indent=1))
        if window.labels:
            ds.write_frame_labels(tmp / ds.SEED_LABELS_FILE, {
                k: [ds.box(b["category"], *(b["box2d"][c] for c in ("x1", "y1", "x2", "y2")), ds.GROUND_TRUTH,
                           ignored=bool(b.get("ignored")))
                    for b in boxes] for k, boxes in window.labels.items()})
        (tmp / ds.CLIP_FILE).write_text(json.dumps(row))
        try:
            os.replace(tmp, final)
        except OSError:  # committed meanwhile by another worker (a retried sample): keep that one
            if not (final / ds.CLIP_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return json.loads((final / ds.CLIP_FILE).read_text())


def gates(frames: np.ndarray, num_seed_frames: int, g) -> dict:
    """Per-clip quality gates on uint8 frames (T + N, S, S, 3): flicker (frame-to-frame change of the generated
    frames over the seed frames', the seed's floored at 1 level so static seeds do not divide by ~0) and frozen
    (the generated frames stop changing)."""
    change = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))  # (T + N - 1,)
    seed_change = max(float(change[:num_seed_frames - 1].mean()) if num_seed_frames > 1 else 0.0, 1.0)
    generated = change[num_seed_frames - 1:]
    flicker = float(generated.mean() / seed_change)
    return {"flicker": round(flicker, 4), "flicker_flag": bool(flicker > g.flicker_ratio),
            "frozen_flag": bool(len(generated) > 1 and generated[1:].max() < g.frozen_change)}


def _committed_row(out: str, clip_id: str) -> dict | None:
    path = ds.clip_dir(out, clip_id) / ds.CLIP_FILE
    return json.loads(path.read_text()) if path.is_file() else None


_CLIPS_CACHE: dict[str, object] = {}


def _open_clips_cached(path: str):
    if path not in _CLIPS_CACHE:  # a worker reads many batches of one source
        _CLIPS_CACHE.clear()
        _CLIPS_CACHE[path] = open_clips(path)
    return _CLIPS_CACHE[path]


def _last_finite(values: np.ndarray) -> float:
    finite = np.asarray(values, np.float64)[np.isfinite(values)]
    return float(finite[-1]) if len(finite) else math.nan


def _slice_fields(attributes: dict) -> dict:
    return {k: str(attributes.get(k, "")) for k in ds.SLICE_KEYS}


# ---- the driver ---------------------------------------------------------------------------------------------------

def generate(spec: Spec, out: str | os.PathLike, bundle: str | os.PathLike | None = None,
             clips: str | os.PathLike | None = None, device: str = "cpu", dry_run: bool = False,
             progress: bool = True) -> dict:
    """Generate (or resume) the dataset of `spec` in `out`; with `dry_run`, only count what it would generate.

    Returns a summary (counts, seconds, frames per second), also written into manifest.json.
    Raises:
        ValueError: the query selects no clip; `out` holds a dataset of another spec or bundle.
        FileNotFoundError: no clip source or bundle.
    """
    from openvica_sim import embedded

    started = time.time()
    if not (clips or spec.clips.source):  # loudly: the toy world's 8 clips are no one's test data
        print(f"scenarios: no --clips and no clips.source in spec {spec.name!r}: using the embedded default's "
              f"{len([p for p in embedded.clips_path().iterdir() if p.is_dir()])} synthetic clips (a "
              f"demonstration, not your data); pass --clips STORE_OR_FOLDER", file=sys.stderr)
    clips_path = str(Path(clips or spec.clips.source or embedded.clips_path()).resolve())
    bundle_path = str(Path(bundle or embedded.bundle_path()).resolve())
    infos = open_clips(clips_path).infos()
    matches = select(infos, spec)
    samples = plan(spec, matches)
    summary = {"spec": spec.name, "spec_hash": spec.hash, "clips": clips_path, "seed_clips_available": len(infos),
               "seed_clips": len(matches), "samples": len(samples), "frames_to_generate": len(samples) * spec.horizon,
               "slices": slice_counts(matches)}
    if dry_run:
        return summary
    if not matches:
        raise ValueError(f"the clip query of spec {spec.name!r} selects none of the {len(infos)} clips of "
                         f"{clips_path}; loosen clips.where / the ranges, or run with --dry-run to see the slices")
    out = Path(out)
    manifest = _start(out, spec, bundle_path, clips_path)
    job = Job(out=str(out), spec=spec.to_dict(), clips=clips_path,
              attributes={m.clip_id: m.info.attributes for m in matches})
    todo = [s for s in samples if _committed_row(str(out), s.clip_id) is None]
    summary["samples_resumed"] = len(samples) - len(todo)
    gen_started = time.perf_counter()
    if todo:
        if spec.scaling.num_workers > 0:
            _run_distributed(spec, job, todo, bundle_path, progress)
        else:
            _run_local(spec, job, todo, bundle_path, device, progress)
    _drop_temporary_clips(out)  # every sample is committed; what is left was an actor's killed in mid-write
    summary["generate_seconds"] = round(time.perf_counter() - gen_started, 2)
    summary["frames_per_s"] = round(len(todo) * spec.horizon / max(summary["generate_seconds"], 1e-9), 3)
    rows = [json.loads((ds.clip_dir(out, s.clip_id) / ds.CLIP_FILE).read_text()) for s in samples]
    finish_started = time.perf_counter()
    try:
        summary.update(finalize(out, spec, rows, manifest["frame_size"]))
    except Exception as e:  # every clip is committed: say so in the manifest, and a rerun only finalizes again
        manifest.update(status="finalize_failed", error=f"{type(e).__name__}: {e}",
                        hint="all samples are generated and committed; fix the cause and rerun the same command: it "
                             "skips them and only redoes the dataset tables, label exports and review")
        ds.atomic_write_text(out / ds.MANIFEST, json.dumps(manifest, indent=2))
        raise
    summary["finalize_seconds"] = round(time.perf_counter() - finish_started, 2)
    summary["seconds"] = round(time.time() - started, 2)
    manifest.update(status="complete", counts={k: summary[k] for k in (
        "seed_clips", "samples", "samples_resumed", "selected", "flagged")},
        times={"started": manifest["times"]["started"], "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
               "seconds": summary["seconds"], "generate_seconds": summary["generate_seconds"],
               "frames_per_s": summary["frames_per_s"]})
    ds.atomic_write_text(out / ds.MANIFEST, json.dumps(manifest, indent=2))
    return summary


def _run_local(spec: Spec, job: Job, todo: list[Sample], bundle_path: str, device: str, progress: bool) -> None:
    from tqdm.auto import tqdm

    simulator = open_simulator(bundle_path, spec, device)
    with tqdm(total=len(todo), desc=f"scenario {spec.name}", unit="clip", disable=not progress) as bar:
        for start in range(0, len(todo), spec.batch_size):
            batch = todo[start:start + spec.batch_size]
            run_samples(simulator, job, batch)
            bar.update(len(batch))


def _run_distributed(spec: Spec, job: Job, todo: list[Sample], bundle_path: str, progress: bool) -> None:
    import functools

    from openvica_sim.distributed import SimulatorPool

    kwargs = simulator_kwargs(spec)
    with SimulatorPool(bundle_path, num_workers=spec.scaling.num_workers, use_gpu=spec.scaling.use_gpu,
                       simulator_kwargs=kwargs) as pool:
        for _ in pool.map(functools.partial(_pool_batch, job=job), todo, batch_size=spec.batch_size,
                          progress=progress):
            pass


def _pool_batch(simulator, samples: list[Sample], *, job: Job) -> list[dict]:
    """`run_samples` in the shape `SimulatorPool.map` calls: fn(simulator, items)."""
    return run_samples(simulator, job, samples)


def simulator_kwargs(spec: Spec) -> dict:
    return {"top_k": spec.sampling.top_k, "temperature": spec.sampling.temperature}


def open_simulator(bundle_path: str, spec: Spec, device: str = "cpu"):
    from openvica_sim.bundle import load_bundle
    from openvica_sim.simulator import Simulator

    return Simulator(load_bundle(bundle_path, device=device), **simulator_kwargs(spec))


def manifest_clips(manifest: dict) -> str | None:
    """The clip source path a dataset was generated from (manifests before the clips/seeds rename say "seeds")."""
    return (manifest.get("clips") or manifest.get("seeds") or {}).get("path")


def _start(out: Path, spec: Spec, bundle_path: str, clips_path: str) -> dict:
    """Create or reopen `out`: refuse another spec's or bundle's dataset, write spec.yaml and the manifest, drop
    temporary folders a killed run left."""
    from omegaconf import OmegaConf

    from openvica_sim import __version__
    from openvica_sim.bundle import read_meta

    meta = read_meta(bundle_path)
    hashes = bundle_hashes(bundle_path)
    manifest_path = out / ds.MANIFEST
    if manifest_path.is_file():
        old = json.loads(manifest_path.read_text())
        if old.get("spec_hash") != spec.hash:
            raise ValueError(f"{out} holds a dataset of another spec (hash {old.get('spec_hash')}, this one "
                             f"{spec.hash}); choose a new --out, or the same spec to resume")
        old_clips = manifest_clips(old)
        if old_clips not in (None, clips_path):
            raise ValueError(f"{out} was generated from the clips of {old_clips}, not {clips_path}; "
                             f"resume with --clips {old_clips} or choose a new --out")
        if old.get("bundle", {}).get("hashes") != hashes:
            raise ValueError(f"{out} was generated with another bundle ({old.get('bundle', {}).get('path')}); "
                             f"resume with that bundle or choose a new --out")
    elif out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists, is not empty and is not a scenario dataset; choose a new --out")
    out.mkdir(parents=True, exist_ok=True)
    _drop_temporary_clips(out)  # clips in flight when a run was killed
    ds.atomic_write_text(out / ds.SPEC_FILE, OmegaConf.to_yaml(OmegaConf.create(spec.to_dict())))
    manifest = {"format": "openvica-scenario-dataset", "version": 1, "status": "running",
                "spec": spec.name, "spec_hash": spec.hash, "project_version": __version__,
                "bundle": {"path": bundle_path, "hashes": hashes, "action_conditioned": meta.get("action_conditioned")},
                "clips": {"path": clips_path}, "frame_size": meta.get("frame_size", 256), "fps": meta.get("fps", 4.0),
                "sampler": {"top_k": spec.sampling.top_k or meta.get("sampling", {}).get("top_k"),
                            "temperature": spec.sampling.temperature,
                            "seed": "sha256(spec_hash:clip_id:fork:branch)[:8], little-endian, as int64"},
                "times": {"started": time.strftime("%Y-%m-%dT%H:%M:%S")}}
    ds.atomic_write_text(manifest_path, json.dumps(manifest, indent=2))
    return manifest


def _drop_temporary_clips(out: Path) -> None:
    for tmp in (out / ds.CLIPS_DIR).glob(f"{ds.TMP_PREFIX}*") if (out / ds.CLIPS_DIR).is_dir() else []:
        shutil.rmtree(tmp, ignore_errors=True)


def bundle_hashes(path: str | os.PathLike) -> dict[str, str]:
    """sha256 of each bundle part (every file, in name order, with its relative path): which weights made a dataset.
    Streams the files; a 7B world model (13 GB) takes a few seconds per GB."""
    import hashlib

    path = Path(path)
    hashes = {}
    for part in sorted(p for p in path.iterdir() if p.is_dir()):
        h = hashlib.sha256()
        for f in sorted(x for x in part.rglob("*") if x.is_file()):
            h.update(str(f.relative_to(part)).encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 24), b""):
                    h.update(block)
        hashes[part.name] = h.hexdigest()[:16]
    return hashes


def finalize(out: Path, spec: Spec, rows: list[dict], frame_size: int) -> dict:
    """Dataset-level fields (surprise deciles and outliers, diversity, selection, status), clips.parquet, the
    label exports and the review page, from the committed clips' rows."""
    from .review import write_review
    from .select import dataset_fields

    rows = dataset_fields(rows, spec, out)
    write_clips_table(out, rows)
    selected = [r for r in rows if r["selected"]]
    label_counts = ds.write_label_exports(out, rows, frame_size) if spec.export.labels else {}
    write_review(out, rows, spec)
    return {"selected": len(selected), "flagged": sum(r["status"] != "ok" for r in rows), "labels": label_counts}


def write_clips_table(out: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(rows)
    tmp = out / f".{ds.CLIPS_TABLE}.{os.getpid()}.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, out / ds.CLIPS_TABLE)


# ---- replay -------------------------------------------------------------------------------------------------------

def replay(root: str | os.PathLike, clip_id: str, bundle: str | os.PathLike | None = None,
           clips: str | os.PathLike | None = None, device: str = "cpu") -> dict:
    """Regenerate one clip of a dataset from its frozen spec and manifest, and compare its tokens with the stored
    ones: {"clip_id", "identical", "frames_differing"}.

    Raises:
        FileNotFoundError / KeyError: not a dataset, or no such clip.
        ValueError: the given bundle is not the one that made the dataset.
    """
    import tempfile

    from omegaconf import OmegaConf

    root = Path(root)
    data = ds.ScenarioDataset(root)
    try:
        row = data.clip(clip_id)
    except KeyError as e:
        raise ValueError(e.args[0]) from e
    spec = spec_from_dict(OmegaConf.to_container(OmegaConf.load(root / ds.SPEC_FILE)), origin=str(root / ds.SPEC_FILE))
    bundle_path = str(bundle or data.manifest["bundle"]["path"])
    if bundle_hashes(bundle_path) != data.manifest["bundle"]["hashes"]:
        raise ValueError(f"bundle {bundle_path} is not the one that generated {root} "
                         f"({data.manifest['bundle']['path']}); pass that bundle with --bundle")
    sample = Sample(clip_id=clip_id, parent=row["parent_clip_id"], fork_frame=row["fork_frame"], branch=row["branch"],
                    seed=sample_seed(spec.hash, row["parent_clip_id"], row["fork_frame"], row["branch"]))
    if sample.seed != row["sample_seed"]:
        raise ValueError(f"clip {clip_id}: its stored seed {row['sample_seed']} is not the spec's {sample.seed}")
    with tempfile.TemporaryDirectory(prefix="openvica-replay-") as tmp:
        job = Job(out=tmp, spec=spec.to_dict(), clips=str(clips or manifest_clips(data.manifest)),
                  attributes={row["parent_clip_id"]: json.loads(row["attributes"])})
        run_samples(open_simulator(bundle_path, spec, device), job, [sample])
        again = np.load(ds.clip_dir(tmp, clip_id) / "tokens.npy")
    stored = data.tokens(clip_id)
    differing = [int(i) for i in np.flatnonzero((again != stored).reshape(len(stored), -1).any(axis=1))]
    return {"clip_id": clip_id, "identical": not differing and again.shape == stored.shape,
            "frames_differing": differing}


def add_replay_parser(subparsers) -> argparse.ArgumentParser:
    r = subparsers.add_parser("replay", help="regenerate one clip of a dataset and check its tokens are identical",
                              description="Read the dataset's frozen spec.yaml and manifest, regenerate CLIP_ID with "
                                          "the same bundle and sampler seed, and compare its tokens with tokens.npy. "
                                          "Exit status 0 when identical, 1 otherwise.")
    r.add_argument("dataset", help="the dataset folder")
    r.add_argument("clip_id", help="a clip id of clips.parquet")
    r.add_argument("--bundle", default=None, help="default: the bundle path in the manifest")
    r.add_argument("--clips", default=None, help="default: the clip source path in the manifest")
    r.add_argument("--device", default="cpu")
    r.set_defaults(run=replay_command)
    return r


def replay_command(args) -> int:
    result = replay(args.dataset, args.clip_id, bundle=args.bundle, clips=args.clips, device=args.device)
    print(json.dumps(result))
    return 0 if result["identical"] else 1


# ---- command line -------------------------------------------------------------------------------------------------

def add_parser(subparsers) -> argparse.ArgumentParser:
    from .spec import packaged_specs

    g = subparsers.add_parser(
        "generate", help="generate a rare-scenario dataset from a spec (resumable)",
        description="Select seed clips by the spec's query, branch futures from each with the world model, and write "
                    "a dataset folder: frames, mp4s, tokens, clips.parquet, BDD100K and COCO labels, a review page. "
                    "Rerunning the same command resumes. Every spec field can be overridden as key=value "
                    f"(Hydra). Packaged specs: {', '.join(packaged_specs())}.")
    g.add_argument("--spec", required=True, help="a packaged spec name or a .yaml path")
    g.add_argument("--out", required=True, help="the dataset folder")
    g.add_argument("--bundle", default=None, help="simulator bundle (default: the embedded tiny simulator)")
    g.add_argument("--clips", default=None, help="the clips to start from: a token store (openvica data ingest) or "
                   "a folder of clips (default: the spec's clips.source, else the embedded default's held-out clips)")
    g.add_argument("--device", default="cpu", help="torch device (cuda for the 7B bundle)")
    g.add_argument("--dry-run", action="store_true", help="print how many seed clips match per slice and the frames "
                   "to generate, and stop")
    g.add_argument("overrides", nargs="*", metavar="key=value", help="spec overrides, e.g. fork.branches=4")
    g.set_defaults(run=command)
    return g


def command(args) -> int:
    spec = load_spec(args.spec, args.overrides)
    summary = generate(spec, args.out, bundle=args.bundle, clips=args.clips, device=args.device, dry_run=args.dry_run)
    if args.dry_run:
        print(f"spec {spec.name} ({spec.hash}): {summary['seed_clips']} of {summary['seed_clips_available']} seed "
              f"clips match; {summary['samples']} clips, {summary['frames_to_generate']} frames to generate",
              file=sys.stderr)
        for s in summary["slices"]:
            print(f"  {s['clips']:6d}  {s['weather'] or '-'} / {s['timeofday'] or '-'} / {s['scene'] or '-'}",
                  file=sys.stderr)
    print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m openvica_sim.scenarios.generate ...`: the same command, for `ray job submit`."""
    parser = argparse.ArgumentParser(prog="python -m openvica_sim.scenarios.generate")
    add_parser(parser.add_subparsers()).prog = parser.prog
    args = parser.parse_args(["generate", *(sys.argv[1:] if argv is None else argv)])
    try:
        return args.run(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"openvica scenarios generate: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
