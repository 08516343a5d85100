"""The embedded default: a tiny simulator trained on the synthetic world, shipped with the package (issue 7).

    bundle/          openvica.json, tokenizer/, world_model/, video_decoder/ (the `tiny` family, safetensors)
    clips/<clip>/    held-out synthetic clips, 16 frames each (000000.jpg ...), never seen in training, with their ego
                     motion (ego.json) and car boxes (labels.json)
    ego_probe/       the ego-motion probe of the synthetic world (training/probe.py) with its held-out accuracy
    RECIPE.json      how the bundle was made: the command, seeds, training time, the measured quality

`gym.make("OpenViCA-v0")` and `openvica rollout` without --bundle use it. It is made by `make embedded`
(training/embedded.sh: synthetic world -> Zarr -> training/tok.py, wm.py, vdec.py -> bundle), whose last step is
`python -m openvica_sim.embedded --bundle B --heldout STORE` (copies the bundle and exports the held-out clips).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
BUNDLE = ROOT / "bundle"
CLIPS = ROOT / "clips"
RECIPE = ROOT / "RECIPE.json"
EGO_PROBE = ROOT / "ego_probe"
SEED_CLIP_FRAMES = 16  # T + N = 2 + 14: the seed frames and the world's own continuation


def bundle_path() -> Path:
    """The shipped bundle's folder.

    Raises:
        FileNotFoundError: the package was built without it (run `make embedded` in a source checkout).
    """
    if not (BUNDLE / "openvica.json").is_file():
        raise FileNotFoundError(f"the embedded bundle is missing from {BUNDLE}; rebuild it with `make embedded` "
                                f"or pass a bundle folder explicitly")
    return BUNDLE


def clips_path() -> Path:
    """The folder of held-out clips (a `data.clips.FolderClips` folder: one subfolder of frames per clip)."""
    if not CLIPS.is_dir():
        raise FileNotFoundError(f"the embedded seed clips are missing from {CLIPS}; rebuild them with "
                                f"`make embedded`")
    return CLIPS


def ego_probe_path() -> Path | None:
    """The shipped ego-motion probe's folder (`openvica eval video --ego-probe`), or None in a build without it."""
    return EGO_PROBE if (EGO_PROBE / "model.safetensors").is_file() else None


def ship(bundle: str | Path, heldout: str | Path, num_clips: int = 8, root: str | Path = ROOT) -> None:
    """Copy `bundle` into the package (`root`: this package's folder) and export the first SEED_CLIP_FRAMES frames
    of the first `num_clips` clips of the held-out store `heldout` (ingested with --store-frames) as JPEG seed clips
    with their ego motion and labels."""
    from openvica_sim.data.clips import StoreClips
    from openvica_sim.video_io import write_image

    root = Path(root)
    bundle_dir, clips_dir = root / BUNDLE.name, root / CLIPS.name

    source = StoreClips(heldout)
    clips = [c for c in source.infos() if c.num_frames >= SEED_CLIP_FRAMES][:num_clips]
    if len(clips) < num_clips:
        raise ValueError(f"{heldout} has {len(clips)} clips of >= {SEED_CLIP_FRAMES} frames; need {num_clips}")
    shutil.rmtree(bundle_dir, ignore_errors=True)
    shutil.copytree(bundle, bundle_dir)
    shutil.rmtree(clips_dir, ignore_errors=True)
    attributes = {}
    for clip in clips:
        window = source.window(clip.clip_id, 0, SEED_CLIP_FRAMES)
        for i, frame in enumerate(window.frames):
            write_image(clips_dir / clip.clip_id / f"{i:06d}.jpg", frame, quality=95)
        # what a query and `--ego replay` read of a folder of clips (openvica_sim.data.clips.FolderClips)
        ego = {k: [round(float(x), 5) for x in getattr(window, k)] for k in ("speed_mps", "yaw_rate_rps")}
        (clips_dir / clip.clip_id / "ego.json").write_text(json.dumps(ego) + "\n")
        if window.labels:  # the world's ground truth (car boxes), so scenario datasets seeded here can be scored
            frames = [{"frameIndex": i, "labels": [{k: box[k] for k in ("category", "box2d", "id") if k in box}
                                                   for box in window.labels[i]]} for i in sorted(window.labels)]
            (clips_dir / clip.clip_id / "labels.json").write_text(json.dumps(frames) + "\n")
        attributes[clip.clip_id] = clip.attributes
    (clips_dir / "attributes.json").write_text(json.dumps(attributes, indent=1, sort_keys=True) + "\n")
    print(f"shipped {bundle_dir} and {len(clips)} seed clips in {clips_dir}", file=sys.stderr)


def pictures(out: str | Path, bundle: str | Path | None = None, clip: int = 0, seed: int = 0) -> list[Path]:
    """The README's two contact sheets of the embedded default, from shipped seed clip `clip`:
    `embedded-rollout.png` (the real 16 frames above a rollout replaying the clip's own ego commands) and
    `embedded-branches.png` (from the same seed frames, branches commanded straight, left, right and to brake).
    Returns their paths."""
    import numpy as np

    from openvica_sim.bundle import load_bundle
    from openvica_sim.data.clips import FolderClips
    from openvica_sim.frames import model_view
    from openvica_sim.metrics.ego import counterfactual_commands
    from openvica_sim.sampling import derive_seeds
    from openvica_sim.simulator import Simulator
    from openvica_sim.video_io import write_contact_sheet

    out = Path(out)
    bundle = load_bundle(bundle or bundle_path())
    sim = Simulator(bundle)
    clips = FolderClips(clips_path())
    clip_id = clips.clip_ids[clip]
    frames = model_view(clips.frames(clip_id, SEED_CLIP_FRAMES))
    info = clips.info(clip_id)
    speed, yaw = info.speed_mps.astype(np.float64), info.yaw_rate_rps.astype(np.float64)
    coding, T, N = bundle.action_coding, 2, SEED_CLIP_FRAMES - 2
    name = f"{clip_id}, top-k {sim.top_k}" + (f", wavefront {sim.wavefront}" if sim.wavefront else "")
    replay = sim.rollout(frames[None, :T], N, derive_seeds(seed, 1),
                         seed_actions=coding.to_normalized(speed[:T], yaw[:T])[None],
                         commands=coding.to_normalized(speed[T:], yaw[T:])[None])
    written = [write_contact_sheet(out / "embedded-rollout.png", [frames, np.concatenate([frames[:T], replay.frames[0]])],
                                   labels=[f"{clip_id}: the real drive", f"the rollout replaying its ego commands "
                                           f"({name})"], num_seed_frames=T)]
    branches = counterfactual_commands(float(speed[T - 1]), N, bundle.fps)
    names = ("straight", "left", "right", "brake")
    rows = sim.rollout(np.repeat(frames[None, :T], len(names), 0), N, derive_seeds(seed, 1) * len(names),
                       seed_actions=np.repeat(coding.to_normalized(speed[:T], yaw[:T])[None], len(names), 0),
                       commands=np.stack([coding.to_normalized(*branches[b]) for b in names]))
    written.append(write_contact_sheet(out / "embedded-branches.png",
                                       [np.concatenate([frames[:T], f]) for f in rows.frames],
                                       labels=[f"commanded {b} ({name})" for b in names], num_seed_frames=T))
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m openvica_sim.embedded",
                                description="copy a trained bundle and held-out seed clips into the package; with "
                                "--pictures, draw the README's contact sheets of the shipped one")
    p.add_argument("--bundle", default=None, help="the bundle folder (training/embedded.sh's OUT/bundle)")
    p.add_argument("--heldout", default=None, help="held-out store with frames (OUT/tokens-val.zarr)")
    p.add_argument("--clips", type=int, default=8, help="seed clips to ship (default 8)")
    p.add_argument("--probe", default=None, help="an ego-motion probe folder to ship (training/probe.py's)")
    p.add_argument("--recipe", default=None, help="a JSON file of recipe facts to store as RECIPE.json")
    p.add_argument("--pictures", default=None, metavar="DIR", help="write embedded-rollout.png and "
                   "embedded-branches.png of the shipped default into DIR (docs/)")
    args = p.parse_args(argv)
    if args.bundle and args.heldout:
        ship(args.bundle, args.heldout, args.clips)
    elif args.bundle or args.heldout:
        p.error("shipping needs both --bundle and --heldout")
    if args.probe:
        shutil.rmtree(EGO_PROBE, ignore_errors=True)
        shutil.copytree(args.probe, EGO_PROBE)
    if args.recipe:
        RECIPE.write_text(json.dumps(json.loads(Path(args.recipe).read_text()), indent=2) + "\n")
    if args.pictures:
        for path in pictures(args.pictures):
            print(f"wrote {path}", file=sys.stderr)
    return 0
