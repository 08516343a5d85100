"""Read and write videos (PyAV) and images (Pillow), and lay out clips as a contact sheet.

Dimensions: T frames, H x W pixels, 3 channels RGB. Frames here are always uint8, channels last,
(T, H, W, 3): what cameras give and `openvica_sim.frames.postprocess` returns.

PyAV 18 (FFmpeg inside its wheels) behaviours relied on:
- A missing file raises `av.error.FileNotFoundError`, unreadable data `av.error.InvalidDataError`;
  both derive from `av.error.FFmpegError`.
- A truncated file often decodes the frames it still holds and then stops *without* an error. So a
  decode that ends with fewer frames than the container announces (`stream.frames`) is reported as
  truncated.
- `add_stream("libx264", rate=fps)` numbers the frames' timestamps itself when `frame.pts` is None.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Sequence
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps

if TYPE_CHECKING:
    import av

from openvica_sim.frames import check_rgb_uint8

SEED_COLOR = (0, 114, 178)  # blue: seed (given) frames; blue/orange stay apart for colour-blind readers
PREDICTED_COLOR = (230, 159, 0)  # orange: predicted frames
BACKGROUND = (255, 255, 255)
TEXT_COLOR = (0, 0, 0)


class VideoDecodeError(ValueError):
    """A video file exists but cannot be decoded in full: not a video, corrupt, or truncated."""

    def __init__(self, path: str | os.PathLike, reason: str, frames_read: int | None = None):
        self.path = str(path)
        self.frames_read = frames_read
        read = "" if frames_read is None else f" after {frames_read} frames"
        super().__init__(f"cannot decode video {self.path}{read}: {reason}")


def read_video(path: str | os.PathLike, fps: float | None = None, max_frames: int | None = None) -> np.ndarray:
    """Decode a video file to uint8 frames (T, H, W, 3), RGB.

    With `fps`, the video is resampled: output frame k is the last decoded frame whose time is at or
    before k / fps, times counted from the first frame, for as long as k / fps does not pass the last
    frame's time. This is how BDD100K's 30 fps videos are read at the paper's 4 fps: a 40 s clip gives
    160 frames, output k being input frame floor(7.5 k).

    Args:
        path: any container and codec FFmpeg reads (.mov, .mp4, ...).
        fps: output frame rate, or None for every frame as stored.
        max_frames: stop after this many output frames (decoding stops there too).

    Raises:
        FileNotFoundError: `path` does not exist.
        VideoDecodeError: the file is not a video, is corrupt, or is truncated (it says how many
            frames were read before the problem).
        ValueError: `fps` or `max_frames` is not positive.
    """
    import av  # imported on use: the simulator and the env run without PyAV
    if fps is not None and fps <= 0:
        raise ValueError(f"fps={fps} must be positive, or None to read every frame")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames={max_frames} must be at least 1, or None to read the whole video")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no video file at {path}")
    period = None if fps is None else 1 / Fraction(fps).limit_denominator(1_000_000)
    frames: list[np.ndarray] = []
    decoded, opened = 0, False
    try:
        with av.open(str(path)) as container:
            opened = True
            if not container.streams.video:
                raise VideoDecodeError(path, "it has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # frame and slice threads; frames still come out in order
            announced = stream.frames  # 0 when the container does not say
            t0 = t = previous = None
            for frame in container.decode(stream):
                t = _frame_time(frame, decoded, stream)
                decoded += 1
                if period is None:
                    frames.append(frame.to_ndarray(format="rgb24"))
                else:
                    t0 = t if t0 is None else t0
                    # every output time before t belongs to the previous frame, the last one at or before it;
                    # frames are converted to RGB only when picked (at 4 fps from 30, 1 in 7.5 is)
                    while previous is not None and len(frames) * period < t - t0:
                        frames.append(previous.to_ndarray(format="rgb24"))
                    previous = frame
                if max_frames is not None and len(frames) >= max_frames:
                    return np.stack(frames[:max_frames])
            if previous is not None and len(frames) * period <= t - t0:  # not past the last frame's time
                frames.append(previous.to_ndarray(format="rgb24"))
            if announced and decoded < announced:
                raise VideoDecodeError(
                    path, f"truncated: the container announces {announced} frames", frames_read=decoded)
    except av.error.FFmpegError as e:
        raise VideoDecodeError(path, f"{type(e).__name__}: {e}", frames_read=decoded if opened else None) from e
    if not frames:
        raise VideoDecodeError(path, "it holds no decodable frames", frames_read=0)
    return np.stack(frames)


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 4, crf: int = 18) -> Path:
    """Write uint8 frames (T, H, W, 3) as an H.264 .mp4 (libx264, yuv420p); return the path.

    The file appears whole or not at all: it is written to a temporary file in the same folder, then
    renamed over `path` (`os.replace`). yuv420p, which every player reads, halves the colour
    resolution, so H and W must be even. crf 18 is visually lossless for x264 (0 lossless, 51 worst).

    Raises:
        TypeError: `frames` is not uint8.
        ValueError: a shape other than (T, H, W, 3), T = 0, odd H or W, fps <= 0, or crf outside 0..51.
    """
    import av  # imported on use: the simulator and the env run without PyAV
    frames = np.asarray(check_rgb_uint8(frames, ndims=(4,)))
    num_frames, height, width, _ = frames.shape
    if num_frames == 0:
        raise ValueError("write_video got 0 frames; a video needs at least one")
    if height % 2 or width % 2:
        raise ValueError(
            f"yuv420p needs even sizes, got frames of {width}x{height} (W x H); crop them to "
            f"frames[:, :{height - height % 2}, :{width - width % 2}]")
    if fps <= 0:
        raise ValueError(f"fps={fps} must be positive")
    if not 0 <= crf <= 51:
        raise ValueError(f"crf={crf} must be in 0..51 (x264: 0 lossless, 18 visually lossless, 51 worst)")
    path = Path(path)
    with _atomic_path(path) as tmp:
        # +faststart puts the index first: a player can start before the file is complete
        with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1_000_000),
                                          options={"crf": str(crf)})
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            for array in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
            container.mux(stream.encode(None))  # flush the encoder's delayed frames
    return path


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file (PNG, JPEG, ... whatever Pillow opens) as uint8 RGB (H, W, 3).

    The EXIF orientation is applied, so the array is upright as a viewer shows it. Alpha is
    dropped, and grayscale and palette images are expanded to RGB.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: Pillow cannot read the file as an image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no image file at {path}")
    try:
        with Image.open(path) as image:
            return np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
    except (Image.UnidentifiedImageError, OSError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e


def write_image(path: str | os.PathLike, image: np.ndarray, **options) -> Path:
    """Write a uint8 RGB image (H, W, 3) in the format of the path's suffix (.png, .jpg, ...); return the path.
    `options` go to Pillow's save (e.g. quality=95 for JPEG).

    Written to a temporary file in the same folder, then renamed over `path`.

    Raises:
        TypeError: `image` is not uint8.
        ValueError: a shape other than (H, W, 3), or a suffix Pillow cannot write.
    """
    image = np.asarray(check_rgb_uint8(image, ndims=(3,)))
    path = Path(path)
    image_format = Image.registered_extensions().get(path.suffix.lower())
    if image_format is None or image_format not in Image.SAVE:
        raise ValueError(f"cannot write an image as {path.name!r}: unknown suffix {path.suffix!r}; use .png or .jpg")
    with _atomic_path(path) as tmp:
        Image.fromarray(image).save(tmp, format=image_format, **options)
    return path


def contact_sheet(
    rows: Sequence[np.ndarray] | np.ndarray,
    labels: Sequence[str] | None = None,
    columns: int | None = None,
    pad: int = 4,
    num_seed_frames: int | None = None,
    border: int = 2,
) -> np.ndarray:
    """Lay out clips as one uint8 image (H', W', 3): one clip per row, its frames left to right.

    Typically each row is a rollout: its seed frames, then the predicted ones. With `num_seed_frames`,
    each frame gets a `border`-pixel frame around it, blue (SEED_COLOR) for the first
    `num_seed_frames` frames of a clip and orange (PREDICTED_COLOR) for the rest. Cells are `pad`
    pixels apart on a white background. A clip longer than `columns` wraps onto further lines.
    With `labels`, each clip's label is written above it in Pillow's built-in font.

    Args:
        rows: clips, each uint8 (T, H, W, 3) (T may differ between clips, H and W may not), or one
            array (R, T, H, W, 3) of R clips, or a single clip (T, H, W, 3).
        labels: one text per clip, or None.
        columns: frames per line; the longest clip's length when None.
        pad: pixels between cells and around the sheet.
        num_seed_frames: how many frames at the start of every clip are seed frames, or None for no borders.
        border: width of the seed/predicted border in pixels.

    Raises:
        TypeError: a clip is not uint8.
        ValueError: no clips, an empty clip, clips of different frame sizes, a label count that does
            not match the clip count, or a negative pad, border or num_seed_frames, or columns < 1.
    """
    clips = _as_clips(rows)
    height, width = clips[0].shape[1:3]
    if labels is not None and len(labels) != len(clips):
        raise ValueError(f"got {len(labels)} labels for {len(clips)} clips; pass one label per clip or None")
    if pad < 0 or border < 0 or (num_seed_frames is not None and num_seed_frames < 0):
        raise ValueError(f"pad={pad}, border={border} and num_seed_frames={num_seed_frames} must not be negative")
    columns = max(len(clip) for clip in clips) if columns is None else columns
    if columns < 1:
        raise ValueError(f"columns={columns} must be at least 1")
    ring = 0 if num_seed_frames is None else border
    cell_h, cell_w = height + 2 * ring, width + 2 * ring
    font = ImageFont.load_default()
    label_h = 0 if labels is None else _text_height(font) + pad
    lines = [-(-len(clip) // columns) for clip in clips]  # ceil: grid lines per clip

    sheet_h = pad + sum(label_h + n * (cell_h + pad) for n in lines)
    sheet_w = pad + columns * (cell_w + pad)
    sheet = np.empty((sheet_h, sheet_w, 3), np.uint8)
    sheet[:] = BACKGROUND
    label_tops, y = [], pad
    for clip, n in zip(clips, lines):
        label_tops.append(y)
        y += label_h
        for i, frame in enumerate(clip):
            top = y + (i // columns) * (cell_h + pad)
            left = pad + (i % columns) * (cell_w + pad)
            if ring:
                sheet[top:top + cell_h, left:left + cell_w] = (
                    SEED_COLOR if i < num_seed_frames else PREDICTED_COLOR)
            sheet[top + ring:top + ring + height, left + ring:left + ring + width] = frame
        y += n * (cell_h + pad)
    if labels is not None:
        image = Image.fromarray(sheet)
        draw = ImageDraw.Draw(image)
        for top, label in zip(label_tops, labels):
            draw.text((pad, top), str(label), fill=TEXT_COLOR, font=font)
        sheet = np.asarray(image).copy()
    return sheet


def write_contact_sheet(path: str | os.PathLike, rows: Sequence[np.ndarray] | np.ndarray, **kwargs) -> Path:
    """`contact_sheet(rows, **kwargs)` written as an image (PNG unless the suffix says otherwise); return the path."""
    return write_image(path, contact_sheet(rows, **kwargs))


def _frame_time(frame: av.VideoFrame, index: int, stream: av.video.stream.VideoStream) -> Fraction:
    """The frame's presentation time in seconds, exact; from its index and the stream's rate when it has no pts."""
    if frame.pts is not None and frame.time_base is not None:
        return frame.pts * Fraction(frame.time_base)
    rate = stream.average_rate or stream.guessed_rate
    if not rate:
        raise VideoDecodeError(stream.container.name, "frames carry no timestamps and the stream no frame rate",
                               frames_read=index)
    return index / Fraction(rate)


def _as_clips(rows: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    """`contact_sheet`'s rows as a list of uint8 clips (T, H, W, 3) that share H and W."""
    if isinstance(rows, np.ndarray) or hasattr(rows, "shape"):
        rows = [rows] if rows.ndim == 4 else list(rows)
    clips = [np.asarray(check_rgb_uint8(clip, ndims=(4,))) for clip in rows]
    if not clips or any(len(clip) == 0 for clip in clips):
        raise ValueError("contact_sheet needs at least one clip, each with at least one frame")
    sizes = sorted({clip.shape[1:3] for clip in clips})
    if len(sizes) > 1:
        raise ValueError(f"all clips in a contact sheet need one frame size, got (H, W) sizes {sizes}")
    return clips


def _text_height(font: ImageFont.ImageFont | ImageFont.FreeTypeFont) -> int:
    left, top, right, bottom = font.getbbox("Ag")  # a capital and a descender: the line's full height
    return bottom


@contextmanager
def _atomic_path(path: Path):
    """A temporary path beside `path`, renamed over it on success and removed on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # not tempfile.mkstemp: its files are mode 0600, and os.replace would hand that mode to the result
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
