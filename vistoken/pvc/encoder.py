"""PVC's progressive encoder: a transformers vision tower made causal over time, plus the
adaptive compressor.

``ProgressiveEncoder`` wraps a vision tower **in place**: each of its conditioned layers is
replaced, in the tower's own layer list, by a ``ProgressiveLayer`` that holds the original
layer as ``.base``. So the tower object passed in is changed (its state-dict keys of a
wrapped layer gain ``base.``; ``load_tower_state_dict`` takes a plain tower's keys), and
calling that tower directly afterwards treats each image as a one-frame clip. Deep-copy
the tower first to keep the original.

Per call, the encoder tells the wrappers the clip length and the time embedding through a
plain Python holder (``_Context``), never through module attributes, so there is no module
cycle and ``state_dict``/``deepcopy``/``torch.save`` see an ordinary tree.

Choices where the paper (REFERENCE.md section 2) is silent, all options:

- ``temporal_layers``: the last round(depth / 3) layers (at least 1) of the layers that
  feed the feature layer.
- Temporal attention: pre-norm residual block x + Attn(LayerNorm(x)) placed *before* the
  base layer, multi-head with the tower's head count, fused qkv, no positional encoding of
  its own (order comes from the causal mask and the AdaLN time conditioning); every token
  of the sequence takes part, a CLS token included (it attends to the CLS of earlier
  frames). The output projection (weight and bias) starts at zero.
- AdaLN (DiT style): t -> 256-d sinusoidal embedding -> shared MLP
  (Linear(256, C), SiLU, Linear(C, C)) -> per layer SiLU + Linear(C, 4C), zero-initialised,
  giving (shift, scale) for the layer's norm before attention and (shift, scale) for its
  norm before the MLP, applied as norm(x) * (1 + scale) + shift, one value per frame.
  ``adaln="temporal"`` (default) conditions the temporal layers only, ``"all"`` every
  layer that feeds the features, ``"none"`` none. The temporal attention's own norm is not
  modulated.
- Time variable: the frame index (``time="index"``) or t / (T - 1) (``"normalised"``).
- Compressor: InternVL's pixel shuffle (factor k = g / sqrt(tokens_per_frame)), then
  LayerNorm(C k^2), Linear(C k^2, out_dim), GELU, Linear(out_dim, out_dim), with
  InternVL's ``multi_modal_projector`` parameter names, so an InternVL projector loads when
  k matches its ``downsample_ratio``. A new projector starts N(0, 0.02) with zero biases.
- ``projector="merge"`` (the paper's other reading, REFERENCE.md): the base model's own
  projector (pixel shuffle by k / 2: InternVL's 0.5, carried over by ``from_base``), then a
  learned 2 x 2 merge of its output tokens (``Merge2x2``: each 2 x 2 block of projected
  tokens, concatenated, through Linear(4 out_dim, out_dim)), initialised to the block mean,
  so at initialisation a frame's tokens are the 2 x 2 average of the base model's.
- CLS: dropped when the tower has one (the token count is g^2 + 1), like InternVL's
  "default" feature strategy. ``drop_cls=False`` keeps it as one extra leading token per
  frame (its C channels tiled k^2 times through the same projector).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import _hf
from .functional import frame_times, pixel_shuffle, shuffle_factor, timestep_embedding

ADALN_MODES = ("temporal", "all", "none")
TIME_MODES = ("index", "normalised")


class _Context:
    """Per-call state the encoder hands its layer wrappers (a plain object, not a module)."""

    __slots__ = ("frames", "time")

    def __init__(self) -> None:
        self.frames: int | None = None  # frames per clip of the current call
        self.time: Tensor | None = None  # (frames, C) time embedding after the shared MLP


class _Slot:
    """A wrapper's current modulation, read by the forward hooks on its base layer's norms.

    It keeps the last value until the next forward of its layer, so a gradient-checkpointed
    base layer that recomputes its forward during backward sees the same modulation.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value: tuple[Tensor, ...] | None = None


class _Modulate:
    """Forward hook on a norm: out * (1 + scale) + shift with the slot's (shift, 1 + scale)
    (one fused ``addcmul``)."""

    def __init__(self, slot: _Slot, which: int) -> None:
        self.slot, self.which = slot, which

    def __call__(self, module: nn.Module, args: Any, output: Tensor) -> Tensor | None:
        mod = self.slot.value
        if mod is None:
            return None
        shift, gain = mod[2 * self.which], mod[2 * self.which + 1]  # gain = 1 + scale
        return torch.addcmul(shift, output, gain)


class TemporalAttention(nn.Module):
    """Causal multi-head attention over time at each spatial position.

    ``forward(x, frames)``: x (B*T, L, C), frame-major within each clip (row b*T + t is frame
    t of clip b) -> (B*T, L, C). Token l of frame t attends to token l of frames 0..t of the
    same clip only (``scaled_dot_product_attention(is_causal=True)`` over T, batched over B
    clips, L positions and the heads; no loop over frames).
    """

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        bt, n, c = x.shape
        b, h = bt // frames, self.heads
        d = c // h
        # (B*T, L, 3C) -> (3, B*L, heads, T, d): one sequence of T per clip, position, head
        qkv = self.qkv(x).view(b, frames, n, 3, h, d).permute(3, 0, 2, 4, 1, 5)
        qkv = qkv.reshape(3, b * n, h, frames, d)  # 4-D inputs reach the fused kernels
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], is_causal=True)
        # (B*L, heads, T, d) -> (B, T, L, heads, d) -> (B*T, L, C)
        out = out.view(b, n, h, frames, d).permute(0, 3, 1, 2, 4).reshape(bt, n, c)
        return self.proj(out)


class ProgressiveLayer(nn.Module):
    """A vision layer made progressive: optional causal temporal attention before it, and
    optional AdaLN modulation of its two norms. ``base`` is the original layer, called with
    the arguments the tower passes."""

    def __init__(
        self,
        base: nn.Module,
        context: _Context,
        dim: int,
        heads: int,
        temporal: bool,
        adaln: bool,
        eps: float = 1e-6,
    ) -> None:
        super().__init__()
        self.base = base
        self.temporal_norm = nn.LayerNorm(dim, eps=eps) if temporal else None
        self.temporal_attn = TemporalAttention(dim, heads) if temporal else None
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 4 * dim)) if adaln else None
        self._context = context
        self._slot = _Slot()
        if adaln:
            for which, norm in enumerate(_hf.layer_norms(base)):
                norm.register_forward_hook(_Modulate(self._slot, which))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        x = _hf.layer_hidden(args, kwargs)
        ctx = self._context
        frames = ctx.frames or 1
        if self.temporal_attn is not None:
            x = x + self.temporal_attn(self.temporal_norm(x), frames)
            args, kwargs = _hf.with_layer_hidden(args, kwargs, x)
        if self.modulation is not None:
            if ctx.time is None:
                self._slot.value = None
            else:
                m = self.modulation(ctx.time)  # (T, 4C)
                m = m.unsqueeze(0).expand(x.shape[0] // frames, -1, -1).reshape(x.shape[0], 1, -1)
                shift1, scale1, shift2, scale2 = m.to(x.dtype).chunk(4, dim=-1)
                self._slot.value = (shift1, 1 + scale1, shift2, 1 + scale2)
        return self.base(*args, **kwargs)


class Compressor(nn.Module):
    """Pixel shuffle by ``k`` then LayerNorm + 2-layer MLP (InternVL's projector names).

    ``forward(x)``: (B, g*g, C) -> (B, (g/k)^2, out_dim).
    """

    def __init__(
        self, dim: int, out_dim: int, k: int, act: str = "gelu", eps: float = 1e-5
    ) -> None:
        super().__init__()
        from transformers.activations import ACT2FN

        self.k = k
        self.layer_norm = nn.LayerNorm(dim * k * k, eps=eps)
        self.linear_1 = nn.Linear(dim * k * k, out_dim)
        self.act = ACT2FN[act]
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def project(self, x: Tensor) -> Tensor:
        """The LayerNorm + MLP alone: (..., C k^2) -> (..., out_dim)."""
        return self.linear_2(self.act(self.linear_1(self.layer_norm(x))))

    def forward(self, x: Tensor) -> Tensor:
        return self.project(pixel_shuffle(x, self.k))


class Merge2x2(nn.Module):
    """A learned 2 x 2 token merge: (B, g*g, D) -> (B, (g/2)^2, D), each output token a
    linear map of its 2 x 2 block of input tokens (concatenated in pixel-shuffle order).
    ``reset()`` sets it to the block mean (weight [I/4, I/4, I/4, I/4], bias 0)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.linear = nn.Linear(4 * dim, dim)

    def reset(self) -> None:
        from transformers import initialization as init

        eye = torch.eye(self.dim, dtype=self.linear.weight.dtype) / 4
        init.copy_(self.linear.weight, eye.repeat(1, 4).to(self.linear.weight.device))
        init.zeros_(self.linear.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(pixel_shuffle(x, 2))


#: The projector readings ``ProgressiveEncoder(projector=...)`` accepts.
PROJECTORS = ("shuffle", "merge")


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


class ProgressiveEncoder(nn.Module):
    """PVC's vision encoder: a transformers vision tower with causal temporal attention and
    AdaLN time conditioning in its last layers, then pixel shuffle + MLP to
    ``tokens_per_frame`` tokens of ``out_dim`` per frame.

    Args:
        vision_model: a transformers vision tower (``SiglipVisionModel``,
            ``CLIPVisionModel``, ``InternVLVisionModel``, ...), **modified in place** (see
            the module docstring).
        out_dim: width of the output tokens (the LLM's hidden size).
        tokens_per_frame: tokens per frame; must be (g / k)^2 for the g x g patch grid and
            an integer k dividing g (64 for 448px InternViT: 32x32 patches, k = 4).
        temporal_layers: how many of the last layers get temporal attention (default:
            round(depth / 3), at least 1; 0 turns it off).
        image_repeats: frames of the static video ``encode_images`` makes of an image.
        time_dim: width of the sinusoidal time embedding.
        adaln: "temporal" (the temporal layers), "all" (every layer feeding the features)
            or "none".
        time: "index" (t) or "normalised" (t / (T - 1)), see ``functional.frame_times``.
        drop_cls: None drops the CLS token when the tower has one; True requires one and
            drops it; False keeps it as an extra leading token per frame.
        feature_layer: -1 takes the tower's last hidden state (after its post-norm, if
            any); another index takes ``hidden_states[feature_layer]`` (0 is the
            embeddings), and only the layers up to it count as "the last layers".
        act: the projector's activation (a transformers ``ACT2FN`` name).
        projector: "shuffle" (pixel shuffle by k straight to ``tokens_per_frame``, a new
            projector) or "merge" (the base's pixel shuffle by k / 2 and its projector,
            then a learned 2 x 2 merge; k must be even).

    ``forward(pixel_values)``: (B, T, 3, H, W) -> (B, T, frame_tokens, out_dim);
    ``encode_images(pixel_values)``: (B, 3, H, W) -> (B, image_repeats * frame_tokens,
    out_dim). ``frame_tokens`` is ``tokens_per_frame`` (+1 with a kept CLS). Frames must
    have the tower's native size (its config's ``image_size``): the compressor is built for
    that grid. Wrong rank, 0 frames, other sizes or channel counts raise ValueError.
    """

    def __init__(
        self,
        vision_model: nn.Module,
        out_dim: int,
        tokens_per_frame: int = 64,
        temporal_layers: int | None = None,
        image_repeats: int = 4,
        time_dim: int = 256,
        adaln: str = "temporal",
        time: str = "index",
        drop_cls: bool | None = None,
        feature_layer: int = -1,
        act: str = "gelu",
        projector: str = "shuffle",
    ) -> None:
        super().__init__()
        if projector not in PROJECTORS:
            raise ValueError(f"projector must be one of {list(PROJECTORS)}; got {projector!r}")
        if adaln not in ADALN_MODES:
            raise ValueError(f"adaln must be one of {list(ADALN_MODES)}; got {adaln!r}")
        if time not in TIME_MODES:
            raise ValueError(f"time must be one of {list(TIME_MODES)}; got {time!r}")
        if int(image_repeats) < 1:
            raise ValueError(f"image_repeats must be >= 1; got {image_repeats}")
        if int(time_dim) < 2:
            raise ValueError(f"time_dim must be >= 2; got {time_dim}")
        if drop_cls not in (None, True, False):
            raise ValueError(f"drop_cls must be None, True or False; got {drop_cls!r}")
        config = vision_model.config
        dim, heads = _hf.vision_width(config)
        layers = _hf.vision_layers(vision_model)
        n = len(layers)
        if not -(n + 1) <= feature_layer <= n:
            raise ValueError(f"feature_layer must lie in [{-(n + 1)}, {n}]; got {feature_layer}")
        depth = n if feature_layer == -1 else feature_layer % (n + 1)
        if depth < 1:
            raise ValueError(f"feature_layer={feature_layer} selects the embeddings: no layer")
        if temporal_layers is None:
            temporal_layers = max(1, round(depth / 3))
        if not 0 <= temporal_layers <= depth:
            raise ValueError(
                f"temporal_layers must lie in [0, {depth}] (the layers feeding the features); "
                f"got {temporal_layers}"
            )
        if any(isinstance(layer, ProgressiveLayer) for layer in layers):
            raise ValueError("this vision tower is already wrapped by a ProgressiveEncoder")
        grid = _hf.vision_patch_grid(config)
        if grid is None or grid[0] != grid[1]:
            raise ValueError(
                "pixel shuffle needs a square patch grid known from the tower's config "
                f"(image_size / patch_size); {type(config).__name__} gives {grid}"
            )
        self.grid = grid[0]
        k = shuffle_factor(self.grid, tokens_per_frame)  # fails with the accepted counts
        if projector == "merge" and k % 2:
            raise ValueError(
                f"projector='merge' needs an even pixel-shuffle factor (the base shuffles by "
                f"k / 2, the merge by 2); tokens_per_frame={tokens_per_frame} on a "
                f"{self.grid}x{self.grid} grid gives k={k}"
            )

        self.vision_model = vision_model
        self.out_dim, self.dim = int(out_dim), dim
        self.tokens_per_frame, self.image_repeats = int(tokens_per_frame), int(image_repeats)
        self.temporal_layers, self.adaln, self.time = int(temporal_layers), adaln, time
        self.time_dim, self.drop_cls, self.feature_layer = int(time_dim), drop_cls, feature_layer
        self.has_cls = _hf.vision_has_cls(vision_model)
        if drop_cls is True and not self.has_cls:
            raise ValueError(f"drop_cls=True but {type(vision_model).__name__} has no CLS token")
        self._context = _Context()

        first = depth - self.temporal_layers
        conditioned = {
            "temporal": range(first, depth),
            "all": range(depth),
            "none": range(0),
        }[adaln]
        eps = float(getattr(config, "layer_norm_eps", 1e-6))
        wrapped: list[ProgressiveLayer] = []
        for i in sorted(set(range(first, depth)) | set(conditioned)):
            layer = ProgressiveLayer(
                layers[i], self._context, dim, heads, i >= first, i in conditioned, eps
            )
            layers[i] = layer
            wrapped.append(layer)
        self._layers = tuple(wrapped)  # a tuple: not registered again as submodules
        self._layer_prefixes = tuple(
            name + "."
            for name, m in vision_model.named_modules()
            if isinstance(m, ProgressiveLayer)
        )
        self.time_mlp = (
            nn.Sequential(nn.Linear(time_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
            if conditioned
            else None
        )
        self.projector_mode = projector
        self.projector = Compressor(dim, out_dim, k if projector == "shuffle" else k // 2, act)
        self.merge = Merge2x2(out_dim) if projector == "merge" else None
        self.reset_new_parameters()

    # -- parameters --------------------------------------------------------------------------

    @property
    def frame_tokens(self) -> int:
        """Tokens per frame in the output (``tokens_per_frame``, +1 when a CLS is kept)."""
        return self.tokens_per_frame + int(self.has_cls and self.drop_cls is False)

    def new_modules(self) -> Iterator[nn.Module]:
        """The modules PVC adds to the tower (temporal attention and its norm, AdaLN),
        the shared time MLP included; not the projector."""
        for layer in self._layers:
            for m in (layer.temporal_norm, layer.temporal_attn, layer.modulation):
                if m is not None:
                    yield m
        if self.time_mlp is not None:
            yield self.time_mlp

    def new_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of ``new_modules`` (stage-1 training trains these and the projector)."""
        for m in self.new_modules():
            yield from m.parameters()

    def reset_new_parameters(self) -> None:
        """Initialise the new parts so the encoder equals its base tower exactly: temporal
        attention output projection and AdaLN modulation at zero; qkv and the time MLP
        N(0, 0.02), zero biases; norms at (1, 0). The projector gets N(0, 0.02), zero biases
        (load an InternVL projector over it with ``projector.load_state_dict``).

        Uses ``transformers.initialization``'s guarded initialisers, which leave tensors
        that transformers marked as loaded untouched (``from_pretrained``)."""
        from transformers import initialization as init

        def linear(m: nn.Linear, zero: bool = False) -> None:
            (init.zeros_ if zero else lambda w: init.normal_(w, std=0.02))(m.weight)
            init.zeros_(m.bias)

        def norm(m: nn.LayerNorm) -> None:
            init.ones_(m.weight)
            init.zeros_(m.bias)

        for layer in self._layers:
            if layer.temporal_attn is not None:
                norm(layer.temporal_norm)
                linear(layer.temporal_attn.qkv)
                linear(layer.temporal_attn.proj, zero=True)
            if layer.modulation is not None:
                linear(layer.modulation[1], zero=True)
        if self.time_mlp is not None:
            linear(self.time_mlp[0])
            linear(self.time_mlp[2])
        norm(self.projector.layer_norm)
        linear(self.projector.linear_1)
        linear(self.projector.linear_2)
        if self.merge is not None:
            self.merge.reset()

    def load_tower_state_dict(self, state_dict: dict[str, Tensor], strict: bool = True) -> Any:
        """Load a plain (unwrapped) tower's ``state_dict`` into the wrapped tower: keys of
        wrapped layers gain ``base.``; the new parts are left as they are."""
        mapped = {}
        for key, value in state_dict.items():
            for prefix in self._layer_prefixes:
                if key.startswith(prefix):
                    key = prefix + "base." + key[len(prefix) :]
                    break
            mapped[key] = value
        result = self.vision_model.load_state_dict(mapped, strict=False)
        if strict:
            missing = [k for k in result.missing_keys if not self._is_new(k)]
            if missing or result.unexpected_keys:
                raise ValueError(
                    f"the tower state dict does not fit this tower: missing {missing[:5]}, "
                    f"unexpected {list(result.unexpected_keys)[:5]}"
                )
        return result

    def _is_new(self, name: str) -> bool:
        for prefix in self._layer_prefixes:
            if name.startswith(prefix) and not name.startswith(prefix + "base."):
                return True
        return False

    # -- forward -----------------------------------------------------------------------------

    def _check_pixels(self, pixel_values: Tensor, rank: int, shape: str) -> None:
        if not isinstance(pixel_values, Tensor) or not pixel_values.is_floating_point():
            raise TypeError(f"pixel_values must be a float tensor {shape}")
        if pixel_values.dim() != rank:
            raise ValueError(
                f"pixel_values must have shape {shape} (rank {rank}); got "
                f"{tuple(pixel_values.shape)}"
            )
        config = self.vision_model.config
        channels = int(getattr(config, "num_channels", 3))
        if pixel_values.shape[-3] != channels:
            raise ValueError(
                f"pixel_values must have {channels} channels at dim -3; got "
                f"{tuple(pixel_values.shape)}"
            )
        h, w = pixel_values.shape[-2:]
        patch = _hf.vision_patch_size(config)
        if patch is not None:
            ph, pw = patch
            g = self.grid
            if h % ph or w % pw or h // ph != g or w // pw != g:
                raise ValueError(
                    f"frames of {h}x{w} pixels do not give the tower's {g}x{g} grid of "
                    f"{ph}x{pw} patches; resize them to {g * ph}x{g * pw} pixels"
                )

    def forward(self, pixel_values: Tensor) -> Tensor:
        """(B, T, 3, H, W) clips -> (B, T, frame_tokens, out_dim)."""
        self._check_pixels(pixel_values, 5, "(B, T, 3, H, W)")
        b, t = pixel_values.shape[:2]
        if t == 0:
            raise ValueError("pixel_values has 0 frames per clip; a clip needs at least 1")
        if b == 0:
            raise ValueError("pixel_values has a batch of 0 clips")
        feats = self.tower_features(pixel_values.flatten(0, 1), t)
        return self.compress(feats).view(b, t, self.frame_tokens, self.out_dim)

    def encode_images(self, pixel_values: Tensor) -> Tensor:
        """(B, 3, H, W) images -> (B, image_repeats * frame_tokens, out_dim): each image
        encoded as a static video of ``image_repeats`` identical frames."""
        self._check_pixels(pixel_values, 4, "(B, 3, H, W)")
        clips = pixel_values.unsqueeze(1).expand(-1, self.image_repeats, -1, -1, -1)
        out = self.forward(clips)
        return out.flatten(1, 2)

    def tower_features(self, frames: Tensor, clip_frames: int) -> Tensor:
        """The tower's features of (B*T, 3, H, W) frames, clips of ``clip_frames`` frames
        each, frame-major: (B*T, L, C) at the feature layer (CLS included, if any)."""
        if frames.shape[0] % clip_frames:
            raise ValueError(f"{frames.shape[0]} frames do not split into clips of {clip_frames}")
        ctx = self._context
        ctx.frames = clip_frames
        if self.time_mlp is not None:
            emb = timestep_embedding(
                frame_times(clip_frames, self.time, frames.device), self.time_dim
            )
            w = self.time_mlp[0].weight
            ctx.time = self.time_mlp(emb.to(w.dtype))
        try:
            dtype = next(self.vision_model.parameters()).dtype
            if self.feature_layer == -1:
                out = self.vision_model(pixel_values=frames.to(dtype), return_dict=True)
                return out.last_hidden_state
            out = self.vision_model(
                pixel_values=frames.to(dtype), output_hidden_states=True, return_dict=True
            )
            return out.hidden_states[self.feature_layer]
        finally:
            ctx.frames = None
            ctx.time = None

    def compress(self, feats: Tensor) -> Tensor:
        """Tower features (N, L, C) -> (N, frame_tokens, out_dim): CLS handling, pixel
        shuffle, projector."""
        n = feats.shape[1]
        has_cls = self.has_cls
        if not _is_square(n - has_cls):
            what = "a CLS token and g^2 patches" if has_cls else "g^2 patches"
            raise ValueError(f"the tower gives {n} tokens per frame; expected {what}")
        g = math.isqrt(n - has_cls)
        k = shuffle_factor(g, self.tokens_per_frame)
        if self.merge is not None:
            k //= 2  # the base projector's share; the merge does the last 2 x 2
        if k != self.projector.k:
            raise ValueError(
                f"the tower gives a {g}x{g} grid: {self.tokens_per_frame} tokens need pixel "
                f"shuffle by {k}, but the projector was built for {self.projector.k} "
                f"(grid {self.grid}x{self.grid})"
            )
        patches = feats[:, 1:] if has_cls else feats
        out = self.projector(patches)
        if self.merge is not None:
            out = self.merge(out)
        if has_cls and self.drop_cls is False:
            cls = self.projector.project(feats[:, :1].repeat(1, 1, k * k))
            out = torch.cat([cls, out], dim=1)
        return out
