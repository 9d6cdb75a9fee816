"""vistoken.pipeline.encode: one path from a file to tokens (decode, then encode)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from PIL import Image

from vistoken.encoders import default_encoder
from vistoken.pipeline import Encoded, encode
from vistoken.video import LimitError, bundled_video, load_frames

CLIP = bundled_video()


def test_encode_is_load_frames_then_the_default_encoder():
    enc = encode(CLIP, 2, sampling="linspace", start=1.0, end=3.0)
    frames = load_frames(CLIP, 2, sampling="linspace", start=1.0, end=3.0)
    assert isinstance(enc, Encoded)
    assert enc.frames.indices == frames.indices and enc.frames.timestamps == frames.timestamps
    assert enc.frames.indices != load_frames(CLIP, 2).indices  # the arguments reached it
    assert enc.tokens.shape == (2, 196, 1280) and enc.tokens.dtype == torch.float32
    assert enc.grid == (14, 14)
    assert torch.equal(enc.tokens, default_encoder()(frames.array))
    assert enc.encoder == "efficientnet-lite0 448px 14x14x1280"
    assert set(enc.seconds) == {"decode", "encoder_load", "encode"}
    assert enc.seconds["decode"] > 0 and enc.seconds["encode"] > 0  # really measured


def test_an_image_is_one_frame(tmp_path):
    path = tmp_path / "tiny.png"
    Image.new("RGB", (64, 48), (90, 160, 30)).save(path)
    enc = encode(path, 4)
    assert enc.tokens.shape == (1, 196, 1280)
    assert enc.frames.array.shape == (1, 48, 64, 3)


def test_check_sees_the_frames_and_stops_before_the_encoder(monkeypatch):
    seen = []

    def refuse(frames):
        seen.append(frames.num_frames)
        raise ValueError("too many frames for the sheet")

    def no_encoder(*args, **kwargs):
        raise AssertionError("the encoder was loaded")

    monkeypatch.setattr("vistoken.encoders.default_encoder", no_encoder)
    with pytest.raises(ValueError, match="too many frames for the sheet"):
        encode(CLIP, 3, check=refuse)
    assert seen == [3]


def test_limits_reach_the_decoder():
    with pytest.raises(LimitError) as info:
        encode(CLIP, 3, max_frames=2)
    assert info.value.option == "max_frames"
    with pytest.raises(LimitError) as info:
        encode(CLIP, 1, max_pixels=1000)
    assert info.value.option == "max_pixels"


def test_missing_file():
    with pytest.raises(FileNotFoundError):
        encode("/nonexistent/clip.mp4", 1)


def test_eval_video_features_is_the_pipeline():
    from vistoken.eval import video_features

    x, grid, indices = video_features(CLIP, frames=1)
    enc = encode(CLIP, 1)
    assert torch.equal(x, enc.tokens) and grid == enc.grid
    assert indices == list(enc.frames.indices)


def test_the_metrics_import_no_media_stack():
    code = (
        "import sys, vistoken.eval, vistoken.eval.fidelity\n"
        "loaded = sorted(m for m in ('av', 'PIL', 'vistoken.video', 'vistoken.encoders',\n"
        "                           'vistoken.pipeline') if m in sys.modules)\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
