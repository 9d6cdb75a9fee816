"""Tests for vistoken.encoders: the EfficientNet-Lite0 stand-in vision tower (real weights)."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data as skimage_data  # a test dependency: fail, never skip, without it
import torch

from vistoken.encoders import (
    EfficientNetLite0Encoder,
    Encoder,
    default_encoder,
    efficientnet_lite0_weights_path,
)

IMAGENET_CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def enc() -> EfficientNetLite0Encoder:
    return default_encoder("cpu")


@pytest.fixture(scope="module")
def small() -> EfficientNetLite0Encoder:
    """A 224 encoder (7 x 7 grid, 4x cheaper) for checks that do not depend on the input size."""
    return EfficientNetLite0Encoder(image_size=224)


@pytest.fixture(scope="module")
def cat() -> np.ndarray:
    return skimage_data.chelsea()  # (300, 451, 3) uint8, a tabby cat


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_weights_file_is_local() -> None:
    path = efficientnet_lite0_weights_path()
    assert path.endswith(".pth")
    with open(path, "rb") as f:
        assert f.read(2)  # exists and readable, no download involved


def test_attributes(enc: EfficientNetLite0Encoder) -> None:
    assert enc.grid == (14, 14)
    assert enc.dim == 1280
    assert enc.num_tokens == 196
    assert enc.image_size == 448
    assert isinstance(enc, Encoder)
    assert not enc.model.training
    assert not any(p.requires_grad for p in enc.model.parameters())


def test_default_encoder_is_cached(enc: EfficientNetLite0Encoder) -> None:
    assert default_encoder("cpu") is enc
    assert default_encoder(torch.device("cpu")) is enc
    if not torch.cuda.is_available():
        assert default_encoder() is enc


def test_imagenet_cat(enc: EfficientNetLite0Encoder, cat: np.ndarray) -> None:
    """Pretrained weights + normalisation are right: the full classifier sees a cat."""
    probs = enc.logits(cat, image_size=224).softmax(-1)[0]
    top = int(probs.argmax())
    assert top in IMAGENET_CATS, top
    assert probs[top] > 0.5
    assert probs[list(IMAGENET_CATS)].sum() > 0.8


@pytest.mark.parametrize("hw", [(720, 1280), (300, 200)])
def test_shape_dtype_finite(enc: EfficientNetLite0Encoder, hw: tuple[int, int]) -> None:
    y = enc(_frames(2, *hw))
    assert y.shape == (2, 196, 1280)
    assert y.dtype == torch.float32
    assert y.device == torch.device("cpu")
    assert torch.isfinite(y).all()
    assert (y >= 0).all() and (y <= 6).all()  # ReLU6 head
    assert not torch.equal(y[0], y[1])


def test_single_frame_and_torch_input(small: EfficientNetLite0Encoder, cat: np.ndarray) -> None:
    y_np = small(cat)
    assert y_np.shape == (1, 49, 1280)
    y_t = small(torch.from_numpy(cat.copy())[None])
    torch.testing.assert_close(y_t, y_np)
    # non-contiguous / read-only views are fine
    ro = np.repeat(cat[None], 2, axis=0)[:, ::-1]
    ro.flags.writeable = False
    assert small(ro).shape == (2, 49, 1280)


def test_deterministic(enc: EfficientNetLite0Encoder) -> None:
    x = _frames(1, 96, 128, seed=1)
    assert torch.equal(enc(x), enc(x))


def test_batching_invariance(small: EfficientNetLite0Encoder, cat: np.ndarray) -> None:
    x = np.concatenate([_frames(2, 120, 160, seed=2), cat[None, :120, :160]])
    one = EfficientNetLite0Encoder(image_size=224, batch_size=1)
    two = EfficientNetLite0Encoder(image_size=224, batch_size=2)  # chunks of 2 + 1
    ref = small(x)  # batch_size 8: a single chunk
    torch.testing.assert_close(one(x), ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(two(x, progress=True), ref, atol=1e-4, rtol=1e-4)


def test_tokens_are_spatial_half_black(enc: EfficientNetLite0Encoder, cat: np.ndarray) -> None:
    """Left half black, right half cat: left tokens look like a black frame, right ones don't."""
    img = np.zeros((448, 448, 3), np.uint8)
    img[:, 224:] = cat[np.arange(448) * 300 // 448][:, 100:324]
    black = np.zeros_like(img)
    y = enc(np.stack([img, black])).reshape(2, 14, 14, 1280)
    d_left = (y[0, :, :7] - y[1, :, :7]).norm(dim=-1).mean()
    d_right = (y[0, :, 7:] - y[1, :, 7:]).norm(dim=-1).mean()
    assert d_left < 0.75 * d_right
    # the two halves of the same image differ
    assert (y[0, :, :7].mean((0, 1)) - y[0, :, 7:].mean((0, 1))).norm() > 0.25 * d_right


def test_tokens_are_spatial_shift(enc: EfficientNetLite0Encoder, cat: np.ndarray) -> None:
    """A patch moved right by 64 px (2 cells) moves its tokens by 2 columns (row-major order)."""
    patch = cat[50:242, 150:342]  # 192 x 192 = 6 x 6 cells
    a = np.zeros((448, 448, 3), np.uint8)
    b = a.copy()
    a[96:288, 64:256] = patch  # cells rows 3..8, cols 2..7
    b[96:288, 128:320] = patch  # cells rows 3..8, cols 4..9
    flat = enc(np.stack([a, b]))
    ya, yb = flat.reshape(2, 14, 14, 1280)
    rows = slice(3, 9)
    ref = ya[rows, 2:8]
    dists = {s: (yb[rows, 2 + s : 8 + s] - ref).norm(dim=-1).mean().item() for s in range(-2, 5)}
    assert min(dists, key=dists.get) == 2, dists
    assert dists[2] < 0.5 * min(v for s, v in dists.items() if s != 2)
    cos = torch.nn.functional.cosine_similarity(yb[rows, 4:10], ref, dim=-1)
    assert cos.mean() > 0.95
    # flat token index h * W + w
    torch.testing.assert_close(flat[0, 5 * 14 + 3], ya[5, 3])


@pytest.mark.parametrize(
    ("bad", "exc"),
    [
        (np.zeros((2, 32, 32, 3), np.float32), TypeError),
        (torch.zeros((2, 32, 32, 3)), TypeError),
        (np.zeros((2, 32, 32, 3), np.int64), TypeError),
        ([[[0, 0, 0]]], TypeError),
        (np.zeros((32, 32), np.uint8), ValueError),
        (np.zeros((1, 2, 32, 32, 3), np.uint8), ValueError),
        (np.zeros((2, 32, 32, 4), np.uint8), ValueError),
        (np.zeros((2, 3, 32, 32), np.uint8), ValueError),
        (np.zeros((0, 32, 32, 3), np.uint8), ValueError),
        (torch.zeros((0, 32, 32, 3), dtype=torch.uint8), ValueError),
        (np.zeros((1, 0, 32, 3), np.uint8), ValueError),
    ],
)
def test_bad_input(small: EfficientNetLite0Encoder, bad: object, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        small(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs", [{"image_size": 450}, {"image_size": 0}, {"batch_size": 0}, {"dtype": torch.int8}]
)
def test_bad_config(kwargs: dict) -> None:
    with pytest.raises((ValueError, TypeError)):
        EfficientNetLite0Encoder(**kwargs)


def test_other_image_size(small: EfficientNetLite0Encoder) -> None:
    assert small.grid == (7, 7)
    assert small.num_tokens == 49


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(enc: EfficientNetLite0Encoder, cat: np.ndarray) -> None:
    gpu = default_encoder("cuda")
    y = gpu(cat)
    assert y.device.type == "cuda" and y.dtype == torch.float32
    torch.testing.assert_close(y.cpu(), enc(cat), atol=2e-2, rtol=2e-2)
    half = EfficientNetLite0Encoder("cuda", dtype=torch.float16)
    yh = half(cat)
    assert yh.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(yh.cpu(), enc(cat), dim=-1)
    assert cos.min() > 0.98
