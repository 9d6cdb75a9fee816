"""PVC's stateless math: pixel shuffle, the shuffle factor for a token count, time embeddings.

Pure tensor functions (no parameters, no transformers); the modules in ``encoder.py`` call
them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: DiT's sinusoidal embedding is tuned for timesteps spanning 0..1000; a normalised time
#: t / (T - 1) in [0, 1] is scaled by this before embedding (an unpublished choice, see
#: ``frame_times``).
NORMALISED_TIME_SCALE = 1000.0


def shuffle_factor(grid: int, tokens_per_frame: int) -> int:
    """The pixel-shuffle factor k that turns a ``grid`` x ``grid`` patch grid into
    ``tokens_per_frame`` = (grid / k)^2 tokens, k an integer dividing ``grid``.

    Raises ValueError naming the grid and every count it accepts.
    """
    accepted = [(grid // k) ** 2 for k in range(1, grid + 1) if grid % k == 0]
    root = math.isqrt(tokens_per_frame) if tokens_per_frame > 0 else 0
    if root * root == tokens_per_frame and root > 0 and grid % root == 0:
        return grid // root
    raise ValueError(
        f"tokens_per_frame={tokens_per_frame} cannot come from pixel shuffle of a {grid}x{grid} "
        f"patch grid (it needs (grid / k)^2 tokens for an integer k dividing {grid}); "
        f"accepted counts: {accepted}"
    )


def pixel_shuffle(x: Tensor, k: int) -> Tensor:
    """Space-to-channel shuffle of square patch grids, in InternVL's order.

    ``x``: (B, g*g, C) patch tokens, row-major over the g x g grid. Returns
    (B, (g/k)^2, k*k*C): output token (i', j') (row-major over the (g/k) x (g/k) grid) holds
    the k x k block of input patches (i'*k + di, j'*k + dj), concatenated channel-wise in the
    order (di, dj, c). This is exactly the token and channel order of transformers'
    ``InternVLModel.pixel_shuffle`` with ``scale_factor = 1 / k`` followed by its reshape to
    (B, tokens, channels), so InternVL's ``multi_modal_projector`` applies unchanged.
    """
    b, n, c = x.shape
    g = math.isqrt(n)
    if g * g != n or g % k:
        raise ValueError(f"pixel_shuffle needs a square grid divisible by k={k}; got {n} tokens")
    m = g // k
    x = x.reshape(b, m, k, m, k, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, m * m, k * k * c)


def frame_times(frames: int, mode: str, device: torch.device | None = None) -> Tensor:
    """The time variable of each frame of a clip of ``frames`` frames, (frames,) float32.

    ``mode="index"``: t = 0, 1, ..., T - 1 (the frame index). ``mode="normalised"``:
    t / (T - 1) * ``NORMALISED_TIME_SCALE`` (0 for T = 1), so clips of any length span the
    same range. The paper says "relative timestamp" without saying which; "index" is the
    default because it keeps a frame's code independent of the clip's length, which the
    causal attention needs (frame t must not depend on later frames, and T is "later").
    """
    if mode not in ("index", "normalised"):
        raise ValueError(f"time must be 'index' or 'normalised'; got {mode!r}")
    t = torch.arange(frames, dtype=torch.float32, device=device)
    if mode == "normalised":
        t = t / max(frames - 1, 1) * NORMALISED_TIME_SCALE
    return t


def timestep_embedding(t: Tensor, dim: int = 256, max_period: float = 10000.0) -> Tensor:
    """DiT's sinusoidal embedding: (T,) -> (T, dim) float32, ``[cos(t w_i), sin(t w_i)]``
    with w_i = max_period^(-i / (dim/2)), i < dim/2 (a zero column pads an odd ``dim``)."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb
