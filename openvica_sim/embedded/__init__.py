"""The embedded default: a tiny simulator trained on the synthetic world, shipped with the package (issue 7).

    bundle/          openvica.json, tokenizer/, world_model/, video_decoder/ (the `tiny` family, safetensors)
    seeds/<clip>/    held-out synthetic clips, 16 frames each (000000.jpg ...), never seen in training
    ego_probe/       the ego-motion probe of the synthetic world (training/probe.py) with its held-out accuracy
    RECIPE.json      how the bundle was made: the command, seeds, training time, the measured quality

`gym.make("OpenViCA-v0")` and `openvica rollout` without --bundle use it. It is made by `make embedded`
(training/embedded.sh: synthetic world -> Zarr -> training/tok.py, wm.py, vdec.py -> bundle), whose last step is
`python -m openvica_sim.embedded --bundle B --heldout STORE` (copies the bundle and exports the seed clips).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
BUNDLE = ROOT / "bundle"
SEEDS = ROOT / "seeds"
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


def seeds_path() -> Path:
    """The folder of held-out seed clips (a `FolderSeedSource` folder: one subfolder of frames per clip)."""
    if not SEEDS.is_dir():
        raise FileNotFoundError(f"the embedded seed clips are missing from {SEEDS}; rebuild them with "
                                f"`make embedded`")
    return SEEDS


def ego_probe_path() -> Path | None:
    """The shipped ego-motion probe's folder (`openvica eval video --ego-probe`), or None in a build without it."""
    return EGO_PROBE if (EGO_PROBE / "model.safetensors").is_file() else None


def ship(bundle: str | Path, heldout: str | Path, num_clips: int = 8) -> None:
    """Copy `bundle` into the package and export the first SEED_CLIP_FRAMES frames of the first `num_clips`
    clips of the held-out store `heldout` (ingested with --store-frames) as JPEG seed clips."""
    import numpy as np
    import zarr

    from openvica_sim.data.store import PARTS, TokenStore
    from openvica_sim.video_io import write_image

    store = TokenStore(heldout)
    clips = [c for c in store.clips if c["stop"] - c["start"] >= SEED_CLIP_FRAMES][:num_clips]
    if len(clips) < num_clips:
        raise ValueError(f"{heldout} has {len(clips)} clips of >= {SEED_CLIP_FRAMES} frames; need {num_clips}")
    shutil.rmtree(BUNDLE, ignore_errors=True)
    shutil.copytree(bundle, BUNDLE)
    shutil.rmtree(SEEDS, ignore_errors=True)
    attributes = {}
    for clip in clips:
        group = zarr.open_group(Path(heldout) / PARTS / clip["part"], mode="r")
        rows = slice(clip["start"], clip["start"] + SEED_CLIP_FRAMES)
        for i, frame in enumerate(np.asarray(group["frames"][rows])):
            write_image(SEEDS / clip["clip_id"] / f"{i:06d}.jpg", frame, quality=95)
        # what a scenario's seed query reads of a folder of clips (openvica_sim.scenarios.seeds)
        ego = {k: [round(float(x), 5) for x in group[k][rows]] for k in ("speed_mps", "yaw_rate_rps")}
        (SEEDS / clip["clip_id"] / "ego.json").write_text(json.dumps(ego) + "\n")
        attributes[clip["clip_id"]] = clip.get("attributes", {})
    (SEEDS / "attributes.json").write_text(json.dumps(attributes, indent=1, sort_keys=True) + "\n")
    print(f"shipped {BUNDLE} and {len(clips)} seed clips in {SEEDS}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m openvica_sim.embedded",
                                description="copy a trained bundle and held-out seed clips into the package")
    p.add_argument("--bundle", required=True, help="the bundle folder (training/embedded.sh's OUT/bundle)")
    p.add_argument("--heldout", required=True, help="held-out store with frames (OUT/tokens-val.zarr)")
    p.add_argument("--clips", type=int, default=8, help="seed clips to ship (default 8)")
    p.add_argument("--recipe", default=None, help="a JSON file of recipe facts to store as RECIPE.json")
    args = p.parse_args(argv)
    ship(args.bundle, args.heldout, args.clips)
    if args.recipe:
        RECIPE.write_text(json.dumps(json.loads(Path(args.recipe).read_text()), indent=2) + "\n")
    return 0
