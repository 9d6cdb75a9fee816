"""AttentionProbe: a vision tower's attention statistics, recorded during its own forward.

VisionZip (``vistoken.compressors.visionzip``) ranks tokens by the attention they receive
at one encoder layer and merges the rest by that layer's keys. The probe records both
while the tower runs unchanged; ``vt.apply`` builds it as the "visionzip" method's
``model_part``.

* :class:`AttentionProbe` records ``received`` (F, P) and ``keys`` (F, P, Dk) from one
  encoder layer while the tower runs its own normal forward (any attention backend: the
  softmax is recomputed from the layer's ``q_proj``/``k_proj``, never read from
  ``output_attentions``).
* :func:`resize_stats` maps per-patch statistics from the tower's patch grid (27 x 27 for
  LLaVA-OneVision's SigLIP) to the LLM token grid (14 x 14 after ``apply_pooling``) with
  the same bilinear interpolation, so the scores line up with the pooled tokens. This is
  our choice for models that pool after the projector; the paper selects before pooling.

Typical use (LLaVA-OneVision, video)::

    with AttentionProbe(model.model.vision_tower, layer=-2) as probe:
        feats = model.model.get_video_features(pixel_values_videos)   # (T, 196, D) pooled
        received, keys = probe.pop()                                  # (T, 729), (T, 729, Dk)
    received = resize_stats(received, (27, 27), (14, 14))
    keys = resize_stats(keys, (27, 27), (14, 14))
    out = vt.compress(feats, "visionzip", retention=0.1, received=received, keys=keys)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core import check_int
from ..ops import row_block, work_dtype
from ..ops.similarity import BLOCK_ELEMENTS
from . import _hf

__all__ = ["AttentionProbe", "resize_stats"]



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

    def pop_stats(self) -> dict[str, Tensor]:
        """:meth:`pop` as named per-patch statistics, the "vision" stage's protocol:
        {"received": (F, P), "keys": (F, P, Dk)}."""
        received, keys = self.pop()
        return {"received": received, "keys": keys}

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
