"""The paper's image protocol (Tables II and III): TOK+DEC reconstruction of single frames, `openvica eval images`.

Each image is preprocessed as the paper's (0.5 downscale of 1280x720, centre 256x256 crop), encoded by TOK and
decoded by DEC; the reconstruction is compared with the preprocessed image: PSNR, SSIM, MS-SSIM and LPIPS per image
(then averaged), FID and CMMD of the reconstructions against the originals.

    images/                  a folder of PNG/JPEG images (BDD100K's images/100k/val/*.jpg), any size, in name order
    store.zarr               or a token store ingested with --store-frames: its frames, clip after clip
"""

from __future__ import annotations

import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from .scoring import ClipScores, FeatureNetworks, FeatureSet

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class ImageEvalSettings:
    bundle: str
    images: str
    limit: int | None = None
    batch_size: int = 16
    device: str = "cpu"
    networks: FeatureNetworks = field(default_factory=FeatureNetworks)


def evaluate_images(settings: ImageEvalSettings, out: str | Path, progress: bool = True) -> dict:
    """Run the image protocol into the folder `out` (metrics.json, report.md); return metrics.json's content.

    Raises:
        FileNotFoundError / ValueError: a missing bundle, image source or feature network (named with its flag).
    """
    from tqdm.auto import tqdm

    from openvica_sim.bundle import load_bundle
    from openvica_sim.frames import model_view, postprocess, preprocess
    from openvica_sim.metrics.networks import file_sha256

    from .report import images_markdown, write_json

    started = time.perf_counter()
    out = Path(out)
    nets = settings.networks.load()
    bundle = load_bundle(settings.bundle, device=settings.device, video_decoder=False)
    chunks = list(_image_chunks(Path(settings.images), settings.limit, settings.batch_size))
    real, scores = FeatureSet(nets), ClipScores(nets)
    tokenizer = bundle.tokenizer
    count = 0
    with torch.inference_mode():
        for chunk in tqdm(chunks, desc="eval images", unit="batch", disable=not progress):
            target = model_view(chunk)  # (n, S, S, 3): what TOK reads, the reference
            x = preprocess(target).to(settings.device)
            decoded = postprocess(torch.cat([tokenizer.decode(tokenizer.encode(x[i:i + 1])) for i in range(len(x))]))
            real.add(target)
            scores.add_pair(decoded, target)
            count += len(chunk)
    row = {"system": "tok+dec", "k": None, "decoder": "dec", **scores.row(real)}
    row.pop("per_frame")
    row.pop("per_clip")
    row.pop("fvd")
    row.pop("surprise")
    row.pop("clips")  # batches here
    row["images"] = count
    record = {**{k: v for k, v in asdict(settings).items() if k != "networks"},
              "bundle_sha256": file_sha256(settings.bundle), "num_images": count, "feature_networks": nets.files,
              "device": settings.device if settings.device != "cpu" else platform.processor() or platform.machine(),
              "torch": torch.__version__, "seconds": round(time.perf_counter() - started, 1)}
    skipped = {k: v for k, v in nets.skipped.items() if k != "fvd"}
    result = {"settings": record, "results": [row], "skipped": skipped}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", result)
    (out / "report.md").write_text(images_markdown(result))
    return result


def _image_chunks(path: Path, limit: int | None, batch_size: int):
    """Batches of images uint8 (n, H, W, 3) from a folder of images or a store's frames, `limit` in all.

    FID and CMMD need one feature set of many images, so images of one folder must share a size (BDD100K's do).

    Raises:
        FileNotFoundError: no folder or store at `path`.
        ValueError: a folder without images, images of different sizes, or a store without frames.
    """
    from openvica_sim.video_io import read_image

    if not path.exists():
        raise FileNotFoundError(f"no images at {path}: pass a folder of PNG/JPEG images or a token store ingested "
                                f"with --store-frames")
    if path.suffix == ".zarr" or (path / "index.json").is_file():
        from openvica_sim.data.store import TokenStore

        store = TokenStore(path)
        if not store.has_frames:
            raise ValueError(f"token store {path} holds tokens only; ingest with --store-frames for `eval images`")
        left = limit
        for clip_id in store.clip_ids:
            frames = np.asarray(store.clip(clip_id, keys=("frames",))["frames"])[:left]
            for i in range(0, len(frames), batch_size):
                yield frames[i:i + batch_size]
            if left is not None:
                left -= len(frames)
                if left <= 0:
                    return
        return
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if not files:
        raise ValueError(f"{path} holds no {'/'.join(IMAGE_SUFFIXES)} images")
    files = files[:limit]
    shape = None
    for i in range(0, len(files), batch_size):
        batch = [read_image(f) for f in files[i:i + batch_size]]
        for f, image in zip(files[i:i + batch_size], batch):
            shape = shape or image.shape
            if image.shape != shape:
                raise ValueError(f"{f} is {image.shape[1]}x{image.shape[0]} but the first image is "
                                 f"{shape[1]}x{shape[0]}; evaluate images of one size at a time")
        yield np.stack(batch)
