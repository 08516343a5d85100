"""Video and image files: H.264 round trips, resampling to 4 fps, clear errors, contact sheets."""

import av
import numpy as np
import pytest
from PIL import Image

from openvica_sim.video_io import (
    PREDICTED_COLOR,
    SEED_COLOR,
    VideoDecodeError,
    contact_sheet,
    read_image,
    read_video,
    write_contact_sheet,
    write_image,
    write_video,
)


def moving_square(num_frames, size=64):
    """uint8 (T, size, size, 3): a bright square on grey, stepping in raster order over an 8 x 8 grid of
    places 7 pixels apart, so that each of the first 64 frames is unlike all the others."""
    frames = np.full((num_frames, size, size, 3), 60, np.uint8)
    for t in range(num_frames):
        y, x = 7 * (t // 8 % 8), 7 * (t % 8)
        frames[t, y:y + 10, x:x + 10] = (230, 200, 40)
    return frames


def nearest_source_frames(decoded, source):
    """For each decoded frame, the index of the source frame it is closest to (codec noise aside)."""
    errors = np.abs(decoded[:, None].astype(np.int16) - source[None].astype(np.int16)).mean(axis=(2, 3, 4))
    return errors.argmin(axis=1).tolist()


@pytest.fixture(scope="module")
def video_30fps(tmp_path_factory):
    """2 s at 30 fps: 60 frames, timestamps k / 30."""
    frames = moving_square(60)
    path = write_video(tmp_path_factory.mktemp("video") / "clip30.mp4", frames, fps=30)
    return path, frames


def test_written_video_reads_back_with_its_frame_count_shape_and_close_values(tmp_path):
    frames = moving_square(12)
    path = write_video(tmp_path / "clip.mp4", frames, fps=4)
    decoded = read_video(path)
    assert decoded.shape == (12, 64, 64, 3) and decoded.dtype == np.uint8
    # H.264 at crf 18 with 4:2:0 chroma is lossy: a few grey levels on average, most of it at the square's edges
    assert np.abs(decoded.astype(np.int16) - frames).mean() < 3
    assert nearest_source_frames(decoded, frames) == list(range(12))


def test_a_30_fps_video_read_at_4_fps_keeps_the_last_frame_at_or_before_each_quarter_second(video_30fps):
    path, frames = video_30fps
    decoded = read_video(path, fps=4)
    # output k at k / 4 s is input frame floor(7.5 k); k = 8 (2.0 s) is past the last frame (59 / 30 s)
    assert len(decoded) == 8
    assert nearest_source_frames(decoded, frames) == [0, 7, 15, 22, 30, 37, 45, 52]


def test_max_frames_stops_reading_early(video_30fps):
    path, frames = video_30fps
    assert nearest_source_frames(read_video(path, fps=4, max_frames=3), frames) == [0, 7, 15]
    assert len(read_video(path, max_frames=5)) == 5


def test_a_missing_file_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="no video file at .*missing.mp4"):
        read_video(tmp_path / "missing.mp4")


def test_a_file_of_random_bytes_raises_a_decode_error_naming_the_path(tmp_path):
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(VideoDecodeError, match=r"cannot decode video .*noise\.mp4: InvalidDataError"):
        read_video(path)


def test_a_video_cut_in_half_raises_a_decode_error_naming_the_path(tmp_path, video_30fps):
    data = video_30fps[0].read_bytes()
    path = tmp_path / "half.mp4"
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(VideoDecodeError, match=r"cannot decode video .*half\.mp4"):
        read_video(path)


def test_a_truncated_video_that_decodes_some_frames_reports_how_many_were_read(tmp_path, video_30fps):
    data = video_30fps[0].read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[:len(data) * 9 // 10])  # FFmpeg decodes what is left and stops without an error
    with pytest.raises(VideoDecodeError, match=r"cut\.mp4 after \d+ frames: truncated") as info:
        read_video(path)
    assert 0 < info.value.frames_read < 60


def test_write_video_is_atomic_and_leaves_no_temporary_file(tmp_path):
    write_video(tmp_path / "clip.mp4", moving_square(4))
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = write_video(tmp_path / "clip.mp4", moving_square(4))
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise RuntimeError("encoder failed")

    monkeypatch.setattr(av.VideoFrame, "from_ndarray", fail)  # video_io imports av where it writes
    with pytest.raises(RuntimeError, match="encoder failed"):
        write_video(path, moving_square(4))
    assert [p.name for p in tmp_path.iterdir()] == ["clip.mp4"] and path.read_bytes() == before


def test_write_video_rejects_odd_frame_sizes_with_the_crop_to_use(tmp_path):
    with pytest.raises(ValueError, match=r"even sizes.*63x64.*frames\[:, :64, :62\]"):
        write_video(tmp_path / "odd.mp4", np.zeros((2, 64, 63, 3), np.uint8))


def test_write_video_rejects_float_frames(tmp_path):
    with pytest.raises(TypeError, match="expected uint8 RGB frames"):
        write_video(tmp_path / "float.mp4", np.zeros((2, 64, 64, 3), np.float32))


def test_a_png_round_trip_is_exact_and_rgba_is_read_as_rgb(tmp_path):
    image = moving_square(1)[0]
    assert np.array_equal(read_image(write_image(tmp_path / "frame.png", image)), image)
    Image.fromarray(np.dstack([image, np.full(image.shape[:2], 128, np.uint8)])).save(tmp_path / "rgba.png")
    assert np.array_equal(read_image(tmp_path / "rgba.png"), image)


def test_read_image_rejects_a_file_that_is_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"cannot read image .*notes\.png"):
        read_image(tmp_path / "notes.png")


def test_contact_sheet_of_2_clips_of_5_frames_has_one_bordered_cell_per_frame():
    clips = np.stack([moving_square(5), moving_square(5)[::-1]])  # (R=2, T=5, 64, 64, 3)
    sheet = contact_sheet(clips, num_seed_frames=2, pad=4, border=2)
    cell = 64 + 2 * 2
    assert sheet.shape == (4 + 2 * (cell + 4), 4 + 5 * (cell + 4), 3) and sheet.dtype == np.uint8
    top_left_of_cell = lambda row, col: sheet[4 + row * (cell + 4), 4 + col * (cell + 4)].tolist()  # noqa: E731
    assert top_left_of_cell(0, 1) == list(SEED_COLOR) and top_left_of_cell(1, 2) == list(PREDICTED_COLOR)
    np.testing.assert_array_equal(sheet[4 + 2:4 + 2 + 64, 4 + 2:4 + 2 + 64], clips[0, 0])


def test_contact_sheet_labels_add_a_text_line_above_each_clip():
    clips = [moving_square(5), moving_square(3)]
    plain = contact_sheet(clips)
    labelled = contact_sheet(clips, labels=["seed 2 + 3 predicted", "clip b"])
    assert labelled.shape[1] == plain.shape[1] and labelled.shape[0] > plain.shape[0]
    assert (labelled[4:14, 4:60] < 128).any()  # dark text pixels in the first label's line


def test_contact_sheet_wraps_clips_longer_than_columns():
    sheet = contact_sheet([moving_square(7)], columns=4, pad=4)
    assert sheet.shape == (4 + 2 * (64 + 4), 4 + 4 * (64 + 4), 3)


def test_contact_sheet_rejects_a_label_count_that_does_not_match_the_clips():
    with pytest.raises(ValueError, match="got 1 labels for 2 clips"):
        contact_sheet([moving_square(2), moving_square(2)], labels=["only one"])


def test_write_contact_sheet_saves_a_png_and_no_temporary_file(tmp_path):
    path = write_contact_sheet(tmp_path / "sheet.png", [moving_square(3)], labels=["a"], num_seed_frames=1)
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]
    assert Image.open(path).format == "PNG"
