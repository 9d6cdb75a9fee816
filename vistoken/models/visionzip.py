"""VisionZip: dominant + contextual tokens chosen from a vision tower's own attention.

VisionZip (Yang et al., CVPR 2025; REFERENCE.md section 3) keeps, per image or frame,

* **dominant** tokens: the top-k by the attention they *receive* at the vision tower's
  second-to-last layer (CLIP: from the CLS query; SigLIP has no CLS, so the attention
  received averaged over all queries), and
* **contextual** tokens: from the remaining tokens, targets at a uniform stride; every other
  remaining token is assigned to its most cosine-similar target (on that layer's keys) and
  averaged in.

Two pieces live here; the model adapter wires them together:

* :class:`AttentionProbe` records ``received`` (F, P) and ``keys`` (F, P, Dk) from one
  encoder layer while the tower runs its own normal forward (any attention backend: the
  softmax is recomputed from the layer's ``q_proj``/``k_proj``, never read from
  ``output_attentions``).
* :func:`visionzip` is the pure tensor function that picks and merges.

:func:`resize_stats` maps per-patch statistics from the tower's patch grid (27 x 27 for
LLaVA-OneVision's SigLIP) to the LLM token grid (14 x 14 after ``apply_pooling``) with the
same bilinear interpolation, so the scores line up with the pooled tokens. This is our
choice for models that pool after the projector; the paper selects before any pooling.

Typical use (LLaVA-OneVision, video)::

    with AttentionProbe(model.model.vision_tower, layer=-2) as probe:
        feats = model.model.get_video_features(pixel_values_videos)   # (T, 196, D) pooled
        received, keys = probe.pop()                                  # (T, 729), (T, 729, Dk)
    received = resize_stats(received, (27, 27), (14, 14))
    keys = resize_stats(keys, (27, 27), (14, 14))
    out = visionzip(feats, received, keys, budget=budget_for(0.1, feats.shape[0] * 196))
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import (
    Compressed,
    check_grid,
    check_int,
    check_real,
    check_tokens,
    grid_positions,
    identity,
)
from ..ops import normalize, row_block, segment_count, segment_mean, work_dtype
from ..ops.segment import finite_cast, sum_scale
from ..ops.similarity import BLOCK_ELEMENTS
from . import _hf

__all__ = ["AttentionProbe", "visionzip", "resize_stats", "frame_split"]


# --------------------------------------------------------------------------- the probe


def _encoder_layers(tower: nn.Module) -> nn.ModuleList:
    """The ``encoder.layers`` ModuleList of a SigLIP/CLIP-style vision tower."""
    for name, module in tower.named_modules():
        if isinstance(module, nn.ModuleList) and (
            name == "encoder.layers" or name.endswith(".encoder.layers")
        ):
            return module
    raise ValueError(
        f"{type(tower).__name__} has no 'encoder.layers' ModuleList; AttentionProbe needs a "
        "SigLIP- or CLIP-style vision tower (e.g. SiglipVisionModel, CLIPVisionModel)"
    )


class AttentionProbe:
    """Records one encoder layer's attention statistics during a vision tower's forward.

    A forward hook (``with_kwargs=True``) on ``vision_tower``'s ``encoder.layers[layer]
    .self_attn`` takes the hidden states that module received (B frames, P tokens, D), and
    recomputes, in float32, ``softmax(q k^T * scale)`` per head from the module's own
    ``q_proj``/``k_proj`` (plus its additive or boolean ``attention_mask``, if one is given).
    The tower's computation is untouched and any attention backend (sdpa, flash, eager)
    works. The work is done in blocks of frames, so at most about
    ``BLOCK_ELEMENTS`` (2^24) attention weights are held at once (at least one frame).

    Recorded per forward call, and concatenated over calls along frames:

    * ``received`` (F, P) float32: the attention each token receives, averaged over heads
      and over all queries (``cls=False``, SigLIP). With ``cls=True`` (CLIP-style towers)
      token 0 is the CLS token: ``received`` is the CLS query's row averaged over heads and
      both outputs cover the patch tokens only, i.e. P - 1 tokens (CLS dropped, as LLaVA's
      ``"default"`` feature strategy drops it).
    * ``keys`` (F, P, Dk) float32: the layer's keys averaged over heads (Dk = head_dim), as
      VisionZip's reference code uses for its similarity.

    Args:
        vision_tower: a module with ``encoder.layers`` whose layers have ``self_attn`` with
            ``q_proj``, ``k_proj``, ``num_heads``, ``head_dim`` and ``scale``.
        layer: index into ``encoder.layers`` (``-2``: the second-to-last layer, VisionZip's).
        cls: whether token 0 is a CLS token (see above).

    ``pop()`` returns and clears the records; ``remove()`` removes the hook; the probe is a
    context manager that removes its hook on exit. Hooks are on this tower instance only.
    """

    def __init__(self, vision_tower: nn.Module, layer: int = -2, *, cls: bool = False) -> None:
        layers = _encoder_layers(vision_tower)
        n = len(layers)
        layer = check_int(layer, "layer", -n, n - 1)
        attn = getattr(layers[layer], "self_attn", None)
        needed = ("q_proj", "k_proj", "num_heads", "head_dim")
        if attn is None or not all(hasattr(attn, a) for a in needed):
            raise ValueError(
                f"encoder layer {layer} has no self_attn with q_proj, k_proj, num_heads and "
                "head_dim; AttentionProbe supports SigLIP/CLIP-style attention"
            )
        self.attention: nn.Module = attn
        self.layer = layer
        self.cls = bool(cls)
        self._received: list[Tensor] = []
        self._keys: list[Tensor] = []
        self._handle = attn.register_forward_hook(self._hook, with_kwargs=True)

    # The hook: (module, args, kwargs, output) -> None (the output is left as it is).
    def _hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        hidden, mask = _hf.attention_inputs(args, kwargs)
        with torch.no_grad():
            received, keys = self._stats(module, hidden.detach(), mask)
        self._received.append(received)
        self._keys.append(keys)

    def _stats(
        self, module: nn.Module, hidden: Tensor, mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        b, p, _ = hidden.shape
        heads, hd = int(module.num_heads), int(module.head_dim)
        scale = float(getattr(module, "scale", hd**-0.5))
        step = row_block(b, heads * p * p, BLOCK_ELEMENTS)
        p_out = p - 1 if self.cls else p
        received = torch.empty(b, p_out, dtype=torch.float32, device=hidden.device)
        keys = torch.empty(b, p_out, hd, dtype=torch.float32, device=hidden.device)
        for b0 in range(0, b, step):  # blocks of frames, not tokens
            h = hidden[b0 : b0 + step]
            f = h.shape[0]
            q = module.q_proj(h).view(f, p, heads, hd).transpose(1, 2).float()
            k = module.k_proj(h).view(f, p, heads, hd).transpose(1, 2).float()
            if self.cls:
                q = q[:, :, :1]  # only the CLS query's row is needed
            scores = (q @ k.transpose(-1, -2)) * scale  # (f, H, q, P)
            if mask is not None:
                m = mask[b0 : b0 + step] if mask.shape[0] == b else mask
                if self.cls:
                    m = m[..., :1, :]
                if m.dtype == torch.bool:
                    scores = scores.masked_fill(~m, float("-inf"))
                else:
                    scores = scores + m.float()
            w = scores.softmax(dim=-1)
            r = w.mean(dim=(1, 2))  # (f, P): over heads and queries
            kk = k.mean(dim=1)  # (f, P, hd): over heads
            if self.cls:
                r, kk = r[:, 1:], kk[:, 1:]
            received[b0 : b0 + f] = r
            keys[b0 : b0 + f] = kk
        return received, keys

    def pop(self) -> tuple[Tensor, Tensor]:
        """(received (F, P), keys (F, P, Dk)) over every forward since the last pop; clears.

        F is the total number of images/frames the tower ran on. RuntimeError when nothing
        was captured (the tower did not run, or the probe was removed).
        """
        if not self._received:
            raise RuntimeError(
                f"AttentionProbe captured nothing: run the vision tower (layer {self.layer}) "
                "while the probe is attached before calling pop()"
            )
        received = torch.cat(self._received, dim=0)
        keys = torch.cat(self._keys, dim=0)
        self._received.clear()
        self._keys.clear()
        return received, keys

    def remove(self) -> None:
        """Remove the hook (idempotent). Records not yet popped stay available."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None

    @property
    def attached(self) -> bool:
        """Whether the hook is still registered."""
        return self._handle is not None

    def __enter__(self) -> AttentionProbe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


# ------------------------------------------------------------------------ statistics


def resize_stats(x: Tensor, src: tuple[int, int], dst: tuple[int, int]) -> Tensor:
    """Per-patch statistics (T, src_h*src_w, C) -> (T, dst_h*dst_w, C) by bilinear resize.

    The same ``F.interpolate(mode="bilinear")`` (align_corners=False) that
    LLaVA-OneVision's ``apply_pooling`` applies to the projected features (27x27 -> 14x14),
    so statistics of the tower's patches line up with the pooled LLM tokens. (Our choice:
    VisionZip itself selects before any pooling.) ``x`` may also be (T, src_h*src_w), for
    one channel; the output then has the same rank. Computed in float32 (float64 stays
    float64) and returned in x's dtype. ``src == dst`` returns a copy of x.
    """
    sh, sw = (int(v) for v in src)
    dh, dw = (int(v) for v in dst)
    if min(sh, sw, dh, dw) < 1:
        raise ValueError(f"src and dst must be pairs of positive ints, got {src!r}, {dst!r}")
    if x.dim() not in (2, 3):
        raise ValueError(f"x must be (T, P) or (T, P, C), got shape {tuple(x.shape)}")
    if x.shape[1] != sh * sw:
        raise ValueError(f"x has {x.shape[1]} patches per frame but src {src!r} has {sh * sw}")
    if (sh, sw) == (dh, dw):
        return x.clone()
    y = x.unsqueeze(-1) if x.dim() == 2 else x
    t, _, c = y.shape
    y = y.to(work_dtype(x.dtype)).view(t, sh, sw, c).permute(0, 3, 1, 2)
    y = F.interpolate(y, size=(dh, dw), mode="bilinear")
    y = y.permute(0, 2, 3, 1).reshape(t, dh * dw, c).to(x.dtype)
    return y.squeeze(-1) if x.dim() == 2 else y


# ------------------------------------------------------------------------- selection


def frame_split(budget: int, frames: int, share: float) -> tuple[Tensor, Tensor, Tensor]:
    """Per-frame (budget, dominant, contextual) counts, each (T,) int64.

    The budget is split evenly, the remainder going one each to the first frames (so
    frames t >= budget get 0 when budget < T); a frame with b tokens keeps
    d = floor(share * b) dominant tokens (exact: ``share`` is read as the decimal written)
    and c = b - d contextual tokens.
    """
    base, rem = divmod(int(budget), frames)
    b = torch.full((frames,), base, dtype=torch.int64)
    b[:rem] += 1
    s = Fraction(repr(float(share)))
    d = torch.tensor([math.floor(s * v) for v in range(base + 2)], dtype=torch.int64)[b]
    return b, d, b - d


def _check_budget(budget: Any) -> int:
    return check_int(budget, "budget", 1, 2**63 - 1)


def visionzip(
    tokens: Tensor,
    received: Tensor,
    keys: Tensor,
    budget: int,
    *,
    dominant_share: float = 54 / 64,
    grid: tuple[int, int] | None = None,
) -> Compressed:
    """VisionZip per frame: dominant tokens by attention received + merged contextual ones.

    Args:
        tokens: (T, N, D) float tokens (or (N, D) for one image).
        received: (T, N) attention each token receives (or (N,)), e.g. from
            :class:`AttentionProbe` (after :func:`resize_stats` when the model pools).
        keys: (T, N, Dk) keys on the same grid (or (N, Dk)); only their direction is used.
        budget: exact number of output tokens, >= 1. ``budget >= T*N`` returns every token
            unchanged in input order (T*N tokens, ``info["identity"]``, all counted
            dominant).
        dominant_share: fraction of each frame's budget that is dominant (VisionZip's 54 of
            64); the rest is contextual. In [0, 1].
        grid: (H, W) with H*W == N, for ``positions``; default square, else one row.

    Per frame t with budget b_t (see :func:`frame_split`: even split, remainder to the
    first frames; frames beyond ``budget`` when budget < T get 0 and all their tokens are
    dropped):

    1. dominant: the d_t tokens with the largest ``received`` (ties: lower index);
    2. contextual: of the R = N - d_t remaining tokens (ascending index), targets are those
       at remaining-rank j * step, j < c_t, step = max(1, R // c_t) (the reference's
       stride); every other remaining token goes to its most cosine-similar target on
       ``keys`` (ties: the earlier target; zero keys have cosine 0), and the output is the
       plain mean of the target and its assigned tokens. (The reference adds the target to
       the mean of its assigned tokens; we take the mean of the whole group, so every
       output is a convex combination of the tokens it covers.) With c_t = 0 the remaining
       tokens are dropped (-1).

    Output order: frame-major; within a frame by the anchor's raster index (dominant and
    contextual interleaved, in spatial order). ``sources``: a dominant token maps to
    itself, a merged token to its target's output. ``positions``: the anchor's (t, h, w)
    (the dominant token / the contextual target). ``info``: "sizes" (M,) input tokens per
    output, "dominant" (M,) bool, "frame_budgets", "dominant_counts",
    "contextual_counts" (T,) int64. Everything is batched over frames (sort, scatter,
    blocked batched cosine, segment means); the only loop is over blocks of frames.
    """
    x = check_tokens(tokens)
    if not isinstance(received, Tensor) or not isinstance(keys, Tensor):
        raise TypeError("received and keys must be torch.Tensor")
    if tokens.dim() == 2:
        received, keys = received.unsqueeze(0), keys.unsqueeze(0)
    t, n, d = x.shape
    if received.shape != (t, n):
        raise ValueError(
            f"received must have shape (T, N) = {(t, n)} to match tokens "
            f"{tuple(tokens.shape)}, got {tuple(received.shape)}"
        )
    if keys.dim() != 3 or keys.shape[:2] != (t, n):
        raise ValueError(
            f"keys must have shape (T, N, Dk) with (T, N) = {(t, n)} to match tokens "
            f"{tuple(tokens.shape)}, got {tuple(keys.shape)}"
        )
    for name, v in (("received", received), ("keys", keys)):
        if not v.is_floating_point() or not bool(torch.isfinite(v).all()):
            raise ValueError(f"{name} must be a finite floating tensor")
    budget = _check_budget(budget)
    share = check_real(dominant_share, "dominant_share", lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
    g = check_grid(grid, n)
    if budget >= t * n:  # every token kept as itself, in input order
        out = identity(x, g, "visionzip")
        per_frame = torch.full((t,), n, dtype=torch.int64, device=x.device)
        info = {
            **out.info,
            "sizes": torch.ones(t * n, dtype=torch.int64, device=x.device),
            "dominant": torch.ones(t * n, dtype=torch.bool, device=x.device),
            "frame_budgets": per_frame,
            "dominant_counts": per_frame,
            "contextual_counts": torch.zeros_like(per_frame),
            "dominant_share": float(share),
        }
        return Compressed(out.tokens, out.sources, out.positions, info)

    dev = x.device
    received = received.to(dev, work_dtype(received.dtype))
    keys = keys.to(dev)
    b_t, d_t, c_t = (v.to(dev) for v in frame_split(budget, t, float(share)))

    # 1. dominant: rank by received (stable descending sort: ties to the lower index).
    order = torch.sort(received, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(n, device=dev).expand(t, n))
    dom = rank < d_t[:, None]  # (T, N)

    # 2. contextual targets at a uniform stride over the remaining tokens.
    rest = ~dom
    rpos = torch.cumsum(rest, dim=1) - 1  # rank among the remaining (valid where rest)
    step = torch.clamp((n - d_t) // c_t.clamp_min(1), min=1)  # (T,)
    j = rpos // step[:, None]
    target = rest & (rpos % step[:, None] == 0) & (j < c_t[:, None])
    merged = rest & ~target & (c_t[:, None] > 0)

    # Output index of every anchor: frame-major, raster order within a frame.
    anchor = (dom | target).reshape(-1)
    out_of = torch.cumsum(anchor, dim=0) - 1
    m = int(anchor.sum())

    # Target flat index per (frame, j), padded to cmax; then each merged token's target.
    cmax = int(c_t.max())
    sources = torch.where(anchor, out_of, torch.full_like(out_of, -1))
    if cmax > 0:
        tgt_flat = torch.zeros(t, cmax, dtype=torch.long, device=dev)
        tf, tn = target.nonzero(as_tuple=True)
        tgt_flat[tf, j[tf, tn]] = tf * n + tn
        kn = normalize(keys)  # (T, N, Dk) unit rows (zero rows stay zero)
        tkeys = kn.reshape(t * n, -1)[tgt_flat]  # (T, cmax, Dk)
        valid = torch.arange(cmax, device=dev)[None, :] < c_t[:, None]  # (T, cmax)
        assign = torch.empty(t, n, dtype=torch.long, device=dev)
        fstep = row_block(t, n * cmax)
        for f0 in range(0, t, fstep):  # blocks of frames
            sim = kn[f0 : f0 + fstep] @ tkeys[f0 : f0 + fstep].transpose(1, 2)  # (f, N, cmax)
            sim = sim.masked_fill(~valid[f0 : f0 + fstep, None, :], float("-inf"))
            assign[f0 : f0 + fstep] = sim.argmax(dim=2)  # first max: the earlier target
        tgt_of = tgt_flat.gather(1, assign).reshape(-1)  # (T*N,) flat index of the target
        mflat = merged.reshape(-1)
        sources = torch.where(mflat, out_of[tgt_of], sources)

    keep = sources >= 0
    flat = x.reshape(t * n, d)
    seg = sources[keep]
    xw = flat[keep].to(work_dtype(x.dtype))
    scale = sum_scale(float(xw.abs().amax()), xw.shape[0], xw.dtype)  # no overflow near max
    means = segment_mean(xw * scale if scale != 1.0 else xw, seg, m)
    out_tokens = finite_cast(means / scale if scale != 1.0 else means, x.dtype)
    anchors = anchor.nonzero().squeeze(1)
    positions = grid_positions(t, g, n, dev)[anchors]
    info = {
        "method": "visionzip",
        "sizes": segment_count(seg, m),
        "dominant": dom.reshape(-1)[anchors],
        "frame_budgets": b_t,
        "dominant_counts": d_t,
        "contextual_counts": c_t,
        "dominant_share": float(share),
    }
    return Compressed(out_tokens, sources, positions, info)
