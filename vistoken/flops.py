"""Analytic prefill cost of a video VLM's language model, with and without compression.

Conventions (the same for both formulas, so their figures can be compared):

- One multiply-add is counted as **one** FLOP. This is the convention of FastV's printed
  formula and of every paper that reuses it: a (n x d) @ (d x d) projection costs n*d^2, so
  q, k, v and o make the 4*n*d^2 term. Hardware FLOPs (one multiply + one add = 2) are
  twice every figure here.
- Only matrix products are counted: norms, RoPE, softmax, activations, residual adds and
  the embedding lookup are O(n*d) and left out. The compressor's own cost (and FastV's
  one-row attention re-computation) is left out too.
- A layer sees ``n`` tokens: text + visual. Pre-LLM compression (``method=None`` or any
  method that acts before the LLM) gives n = text + ceil(retention * visual) at every layer.
  FastV (``method="fastv"``) prunes inside the LLM: layers < ``layer`` (K, default 2) see
  all text + visual tokens, layers >= K see text + ceil(retention * visual).
  ``ceil(retention * visual)`` is the library's budget rule (``vistoken.core.budget_for``:
  at least one token, product taken on the decimal written).

``formula="fastv"`` -- exactly what papers print, per layer::

    4*n*d^2 + 2*n^2*d + 2*n*d*m

(q/k/v/o as four d x d projections, the full n x n square for scores and for the weighted
sum, and a two-matrix MLP). It ignores grouped-query attention, the gated MLP's third
matrix and the causal mask.

``formula="exact"`` -- what a grouped-query, gated-MLP decoder layer computes, per layer,
with H heads, G key/value heads, head size h (``head_dim``, default d/H)::

    q, o projections     2 * n*d*(H*h)              (3 *: a gated q_proj, Qwen3.5)
    k, v projections     2 * n*d*(G*h)
    scores, weighted sum 2 * (n*(n+1)/2) * H*h     causal: query i meets i keys
    gated MLP            3 * n*d*m                  gate, up, down
    plus once: lm_head for the last token only: d*V (vocabulary size V)

Layers of different attention shapes (Gemma 4: full-attention layers with their own head_dim
and KV heads, ``LLM.layer_heads``) are counted each with its own H, G, h; the last
``LLM.kv_shared_layers`` layers (Gemma 4's ``num_kv_shared_layers``) reuse earlier layers'
keys and values and count no k, v projections; Per-Layer Embeddings of width p
(``LLM.per_layer_input``, Gemma's ``hidden_size_per_layer_input``) add 2*n*d*p per layer.
A sliding-attention layer (window w: ``LLM.sliding_window``) counts min(i + 1, w) keys for
query i under "exact" (the "fastv" formula, as printed, knows no windows). Not modelled:
mixture-of-experts MLPs (counted as dense) and the model-level projection that makes the
Per-Layer Embeddings.

The causal attention counts the lower triangle (n*(n+1)/2 query-key pairs), as causal
kernels (FlashAttention, SDPA) skip the masked half; fastv counts the full square.

``vision=True`` adds the vision tower and projector, run on every frame (pre-LLM compression
does not reduce them): per frame ``L_v * (4*p*e^2 + 2*p^2*e + 2*p*e*f)`` for p patches of
width e and MLP width f (bidirectional attention: the full square, and a two-matrix MLP,
so both formulas agree there), plus the projector's linear layers on its tokens.

Hybrid LLMs (Qwen3.5: Gated DeltaNet linear-attention layers between full-attention
ones, ``LLM.layer_types``): a linear-attention layer has no n x n term. Under both formulas
it counts its own projections and its recurrence, with the MLP of the formula (two matrices
for "fastv", three for "exact")::

    q, k, v projection   n*d*(2*Hk*dk + Hv*dv)      Hk key heads of dk, Hv value heads of dv
    output gate z, out   2 * n*d*(Hv*dv)
    a, b (decay, beta)   2 * n*d*Hv
    recurrence           3 * n*Hv*dk*dv             per token and value head: S^T k, the
                                                    rank-1 state update, q^T S
    MLP                  2 (fastv) or 3 (exact) * n*d*m

The depthwise causal convolution (kernel 4) and the gating are O(n*d) and left out like the
norms. FastV's K counts decoder layers of any kind; ``vt.apply`` may move it to follow a
full-attention layer (``handle.stats["layer"]``): pass that layer here.

Check against the published figures (REFERENCE.md section 4): LLaVA-OneVision-7B, 32 x 196
= 6272 visual + 100 text tokens, formula "fastv": 41.54 / 3.92 / 2.20 TFLOPs at retention
1.0 / 0.1 / 0.05, against 41.4 / 4.0 / 2.2 printed (+0.3%, -2.0%, +0.2%).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "FORMULAS",
    "PRESETS",
    "LLM",
    "LinearAttention",
    "Preset",
    "VisionTower",
    "check_method",
    "kept_tokens",
    "prefill_flops",
    "resolve",
    "vision_flops",
]

FORMULAS = ("fastv", "exact")


@dataclass(frozen=True)
class LinearAttention:
    """A Gated DeltaNet token mixer (Qwen3.5's linear-attention layers)."""

    num_key_heads: int  # Hk
    num_value_heads: int  # Hv
    key_head_dim: int  # dk
    value_head_dim: int  # dv


@dataclass(frozen=True)
class LLM:
    """The shape of a decoder-only language model, as its transformers config gives it.

    layer_types: each layer's kind ("full_attention", "linear_attention"), empty when
    every layer is full attention; linear: the linear-attention layers' shape;
    gated_attention: the query projection is twice as wide ("exact" formula only).
    """

    name: str
    hidden_size: int  # d
    intermediate_size: int  # m (MLP width)
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    layer_types: tuple[str, ...] = ()
    linear: LinearAttention | None = None
    gated_attention: bool = False  # q_proj also gives a per-head output gate (Qwen3.5)
    #: (query heads, key/value heads, head_dim) per layer where layers differ (Gemma 4's
    #: full-attention layers are wider); empty: every layer has the global shape
    layer_heads: tuple[tuple[int, int, int], ...] = ()
    #: the last this-many layers reuse earlier layers' keys and values (no k/v projections)
    kv_shared_layers: int = 0
    #: keys a query of a sliding-attention layer meets at most (itself included)
    sliding_window: int = 0
    #: width p of Gemma's Per-Layer Embeddings: each layer gates them in (d x p, p x d)
    per_layer_input: int = 0

    def __post_init__(self) -> None:
        if self.layer_types:
            if len(self.layer_types) != self.num_hidden_layers:
                raise ValueError(
                    f"{self.name}: {len(self.layer_types)} layer_types for "
                    f"{self.num_hidden_layers} layers"
                )
            unknown = set(self.layer_types) - {"full_attention", SLIDING, LINEAR}
            if unknown:
                raise ValueError(
                    f"{self.name}: unknown layer types {sorted(unknown)}; the cost model knows "
                    f"'full_attention', '{SLIDING}' and '{LINEAR}'"
                )
            if SLIDING in self.layer_types and not self.sliding_window:
                raise ValueError(f"{self.name}: sliding-attention layers need sliding_window=")
            if LINEAR in self.layer_types and self.linear is None:
                raise ValueError(f"{self.name}: linear-attention layers need linear=")
        if self.layer_heads and len(self.layer_heads) != self.num_hidden_layers:
            raise ValueError(
                f"{self.name}: {len(self.layer_heads)} layer_heads for "
                f"{self.num_hidden_layers} layers"
            )
        if not 0 <= self.kv_shared_layers <= self.num_hidden_layers:
            raise ValueError(f"{self.name}: kv_shared_layers must be in [0, "
                             f"{self.num_hidden_layers}], got {self.kv_shared_layers}")

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def heads(self, i: int) -> tuple[int, int, int]:
        """(query heads, key/value heads, head_dim) of layer ``i``."""
        if self.layer_heads:
            return self.layer_heads[i]
        return self.num_attention_heads, self.num_key_value_heads, self.head_dim

    def kinds(self) -> tuple[str, ...]:
        """Each layer's kind ("full_attention" for all when ``layer_types`` is empty)."""
        return self.layer_types or ("full_attention",) * self.num_hidden_layers


LINEAR = "linear_attention"
SLIDING = "sliding_attention"


@dataclass(frozen=True)
class VisionTower:
    """A ViT run once per frame, then a projector (linear layers on ``projector_tokens``)."""

    name: str
    num_layers: int
    hidden_size: int  # e
    intermediate_size: int  # f (two-matrix GELU MLP)
    patches: int  # tokens per frame inside the tower (p)
    projector_tokens: int  # tokens per frame the projector runs on
    projector: tuple[tuple[int, int], ...]  # (in, out) of each projector linear layer


@dataclass(frozen=True)
class Preset:
    """A published video VLM: its LLM, default visual tokens per frame, vision tower."""

    name: str
    llm: LLM
    tokens_per_frame: int
    tokens_per_frame_note: str
    vision: VisionTower | None = None


# Qwen2-7B, the LLM of LLaVA-OneVision-7B, LLaVA-Video-7B and Qwen2-VL-7B.
# Source: huggingface.co/Qwen/Qwen2-7B/blob/main/config.json (hidden_size 3584,
# intermediate_size 18944, num_hidden_layers 28, num_attention_heads 28,
# num_key_value_heads 4; head_dim 3584/28 = 128); LLaVA-OneVision-7B's and Qwen2-VL-7B's
# config.json text part: vocab_size 152064. REFERENCE.md section 4 uses the same sizes.
_QWEN2_7B = LLM("Qwen2-7B", 3584, 18944, 28, 28, 4, 128, 152064)
# Qwen2.5-VL-7B's LLM: huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct/blob/main/config.json
# (hidden_size 3584, intermediate_size 18944, 28 layers, 28 heads, 4 key/value heads,
# vocab_size 152064): the same shape as Qwen2-7B.
_QWEN25_7B = LLM("Qwen2.5-7B", 3584, 18944, 28, 28, 4, 128, 152064)
# Qwen2-0.5B, the LLM of LLaVA-OneVision-0.5B: huggingface.co/Qwen/Qwen2-0.5B config.json
# (hidden_size 896, intermediate_size 4864, 24 layers, 14 heads, 2 key/value heads,
# head_dim 64, vocab_size 151936).
_QWEN2_05B = LLM("Qwen2-0.5B", 896, 4864, 24, 14, 2, 64, 151936)
# InternVL2-8B = InternViT-300M-448px + MLP + internlm2_5-7b-chat (its model card,
# huggingface.co/OpenGVLab/InternVL2-8B). InternLM2(.5)-7B: hidden_size 4096,
# intermediate_size 14336, 32 layers, 32 heads, 8 key/value heads, head_dim 128;
# InternVL2-8B's llm_config vocab_size 92553.
_INTERNLM2_7B = LLM("InternLM2.5-7B", 4096, 14336, 32, 32, 8, 128, 92553)

# SigLIP-so400m-patch14-384 (huggingface.co/google/siglip-so400m-patch14-384 config.json:
# hidden_size 1152, intermediate_size 4304, 27 layers, patch 14 at 384 px -> 27 x 27 = 729
# patches, no CLS token). LLaVA-OneVision/LLaVA-Video drop the last layer (LLaVA-NeXT's
# siglip_encoder.py deletes ``encoder.layers[-1:]``; transformers' LlavaOnevisionConfig
# uses num_hidden_layers=26 with vision_feature_layer=-1), so 26 layers run. Projector:
# mlp2x_gelu, 1152 -> d -> d, on all 729 tokens, before the 2x2 pooling to 196.
_SIGLIP_7B = VisionTower(
    "SigLIP-so400m (26 of 27 layers)", 26, 1152, 4304, 729, 729, ((1152, 3584), (3584, 3584))
)
_SIGLIP_05B = VisionTower(
    "SigLIP-so400m (26 of 27 layers)", 26, 1152, 4304, 729, 729, ((1152, 896), (896, 896))
)
# InternViT-300M-448px (huggingface.co/OpenGVLab/InternViT-300M-448px: 24 layers,
# hidden_size 1024, intermediate_size 4096, patch 14 at 448 px -> 1024 patches + CLS).
# Pixel shuffle (0.5) turns 1024 x 1024 into 256 x 4096; the projector (mlp1) is
# 4096 -> 4096 -> 4096 on those 256 tokens. One 448 px tile per video frame.
_INTERNVIT_300M = VisionTower(
    "InternViT-300M-448px", 24, 1024, 4096, 1025, 256, ((4096, 4096), (4096, 4096))
)

# Qwen3-VL-8B-Instruct: huggingface.co/Qwen/Qwen3-VL-8B-Instruct/blob/main/config.json,
# text_config: hidden_size 4096, intermediate_size 12288, num_hidden_layers 36,
# num_attention_heads 32, num_key_value_heads 8, head_dim 128, vocab_size 151936 (its
# vision tower, 27 blocks of width 1152 with 16 px patches and 2x2 merge plus DeepStack
# mergers, attends across a whole temporal patch and is not modelled).
_QWEN3_VL_8B = LLM("Qwen3-VL-8B", 4096, 12288, 36, 32, 8, 128, 151936)
# Qwen3.5-27B: huggingface.co/Qwen/Qwen3.5-27B/blob/main/config.json, text_config:
# hidden_size 5120, intermediate_size 17408, num_hidden_layers 64, full_attention_interval
# 4 (layers 3, 7, ..., 63 full attention: 16 of 64), num_attention_heads 24 (gated),
# num_key_value_heads 4, head_dim 256, linear_num_key_heads 16, linear_num_value_heads 48,
# linear_key_head_dim 128, linear_value_head_dim 128, vocab_size 248320; attn_output_gate
# true (q_proj also gives an output gate as wide as the queries).
_QWEN3_5_27B = LLM(
    "Qwen3.5-27B",
    5120,
    17408,
    64,
    24,
    4,
    256,
    248320,
    layer_types=tuple(LINEAR if (i + 1) % 4 else "full_attention" for i in range(64)),
    linear=LinearAttention(16, 48, 128, 128),
    gated_attention=True,
)
# Gemma 4 31B (google/gemma-4-31B-it config.json, text_config): hidden_size 5376,
# intermediate_size 21504, 60 layers, 32 heads, vocab_size 262144; layer_types: 5
# sliding-window layers (sliding_window 1024, head_dim 256, num_key_value_heads 16) then 1
# full-attention layer (global_head_dim 512, num_global_key_value_heads 4, keys = values),
# ten times. The cost model has one layer shape: all 60 layers are counted with the
# sliding layers' widths (32 x 256 queries, 16 x 256 keys/values), and the window is
# ignored (every layer attends over the whole prefix), so for prompts longer than 1024
# tokens the attention terms of the 50 sliding layers are over-counted.
_GEMMA4_31B = LLM("Gemma-4-31B", 5376, 21504, 60, 32, 16, 256, 262144)
# Its vision tower (the same config.json, vision_config): 27 layers, hidden_size 1152,
# intermediate_size 4304 (a gated MLP: three matrices, counted as two like every tower
# here), patch 16 px, pooling 3x3. A square video frame at the video processor's default
# budget (max_soft_tokens 70) is resized to 384 x 384: 24 x 24 = 576 patches, pooled to
# 8 x 8 = 64 soft tokens; embed_vision projects them 1152 -> 5376 (one linear layer).
_GEMMA4_VISION = VisionTower("Gemma 4 vision (27 layers)", 27, 1152, 4304, 576, 64, ((1152, 5376),))

PRESETS: dict[str, Preset] = {
    "llava-onevision-7b": Preset(
        "llava-onevision-7b",
        _QWEN2_7B,
        196,
        "729 SigLIP patches (27x27) bilinearly pooled 2x2 to 14x14",
        _SIGLIP_7B,
    ),
    "llava-onevision-0.5b": Preset(
        "llava-onevision-0.5b",
        _QWEN2_05B,
        196,
        "729 SigLIP patches (27x27) bilinearly pooled 2x2 to 14x14",
        _SIGLIP_05B,
    ),
    "llava-video-7b": Preset(
        "llava-video-7b",
        _QWEN2_7B,
        196,
        "27x27 SigLIP patches pooled 2x2 to 14x14 (with floor pooling, 13x13 = 169: pass "
        "tokens_per_frame=169 for that)",
        _SIGLIP_7B,
    ),
    "qwen2-vl-7b": Preset(
        "qwen2-vl-7b",
        _QWEN2_7B,
        128,
        "448x448 frames: 32x32 patches of 14 px, 2 frames per temporal patch, 2x2 merge -> "
        "256 tokens per 2 frames; the processor resizes dynamically, so set it for others",
    ),
    "qwen2.5-vl-7b": Preset(
        "qwen2.5-vl-7b",
        _QWEN25_7B,
        128,
        "448x448 frames: 32x32 patches of 14 px, 2 frames per temporal patch, 2x2 merge -> "
        "256 tokens per 2 frames; the processor resizes dynamically, so set it for others",
    ),
    "internvl2-8b": Preset(
        "internvl2-8b",
        _INTERNLM2_7B,
        256,
        "one 448x448 tile per frame: 1024 InternViT patches, pixel shuffle 0.5 -> 256",
        _INTERNVIT_300M,
    ),
    "qwen3-vl-8b": Preset(
        "qwen3-vl-8b",
        _QWEN3_VL_8B,
        98,
        "448x448 frames: 28x28 patches of 16 px, 2 frames per temporal patch, 2x2 merge -> "
        "196 tokens per 2 frames (plus a few timestamp tokens per 2 frames, count them as "
        "text); the processor resizes dynamically, so set it for others",
    ),
    "qwen3.5-27b": Preset(
        "qwen3.5-27b",
        _QWEN3_5_27B,
        98,
        "Qwen3-VL's vision layout: 448x448 frames, 16 px patches, 2 frames per temporal "
        "patch, 2x2 merge -> 196 tokens per 2 frames; set it for other sizes",
    ),
    "gemma-4-31b": Preset(
        "gemma-4-31b",
        _GEMMA4_31B,
        64,
        "a square frame at the video processor's default 70-token budget: 384x384 px, 24x24 "
        "patches of 16 px pooled 3x3 to 8x8 (other aspect ratios give up to 70; images "
        "default to 280)",
        _GEMMA4_VISION,
    ),
}


def resolve(model: Any) -> Preset:
    """A :class:`Preset` for a preset name, a :class:`Preset`, an :class:`LLM`, or a
    transformers config (a VLM config with ``.text_config`` or a plain LLM config).

    For a config, ``tokens_per_frame`` is 0 (unknown) and the vision tower is read from
    ``.vision_config`` when it has hidden_size, intermediate_size, num_hidden_layers,
    image_size and patch_size (no projector counted).
    """
    if isinstance(model, Preset):
        return model
    if isinstance(model, LLM):
        return Preset(model.name, model, 0, "unknown: give the visual token count")
    if isinstance(model, str):
        if model not in PRESETS:
            raise ValueError(f"unknown model preset {model!r}; known presets: {', '.join(PRESETS)}")
        return PRESETS[model]
    text = getattr(model, "text_config", None) or getattr(model, "llm_config", None) or model
    llm = _llm_from_config(text, type(model).__name__)
    return Preset(
        getattr(model, "model_type", None) or type(model).__name__,
        llm,
        0,
        "unknown: give the visual token count",
        _vision_from_config(getattr(model, "vision_config", None)),
    )


def _llm_from_config(cfg: Any, what: str) -> LLM:
    def get(name: str, default: Any = None) -> Any:
        value = getattr(cfg, name, None)
        if value is None:
            value = default
        if value is None:
            raise ValueError(
                f"model must be a preset name ({', '.join(PRESETS)}) or a transformers config "
                f"with hidden_size, intermediate_size, num_hidden_layers, num_attention_heads; "
                f"{what} has no {name}"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{what}.{name} must be an integer >= 1, got {value!r}")
        return value

    from .models._hf import kv_shared_layers, per_layer_attention

    d = get("hidden_size")
    heads = get("num_attention_heads")
    layers = get("num_hidden_layers")
    per_layer = per_layer_attention(cfg)
    if per_layer:
        # a heterogeneous config refuses its global head_dim / num_key_value_heads: layer 0's
        heads, kv_heads, head_dim = per_layer[0]
    else:
        kv_heads, head_dim = get("num_key_value_heads", heads), get("head_dim", d // heads)
    kinds = tuple(str(k) for k in (getattr(cfg, "layer_types", None) or ()))
    window = getattr(cfg, "sliding_window", None) or 0
    if not isinstance(window, int) or isinstance(window, bool) or window < 0:
        raise ValueError(f"{what}.sliding_window must be an integer >= 0, got {window!r}")
    linear = None
    if LINEAR in kinds:
        linear = LinearAttention(
            get("linear_num_key_heads"),
            get("linear_num_value_heads"),
            get("linear_key_head_dim"),
            get("linear_value_head_dim"),
        )
    return LLM(
        name=getattr(cfg, "model_type", None) or type(cfg).__name__,
        hidden_size=d,
        intermediate_size=get("intermediate_size"),
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        vocab_size=get("vocab_size", 1),
        layer_types=kinds if (LINEAR in kinds or (SLIDING in kinds and window)) else (),
        sliding_window=window if SLIDING in kinds else 0,
        per_layer_input=int(getattr(cfg, "hidden_size_per_layer_input", 0) or 0),
        linear=linear,
        gated_attention=bool(getattr(cfg, "attn_output_gate", False))
        or "qwen3_5" in str(getattr(cfg, "model_type", "")),
        layer_heads=tuple(per_layer) if per_layer and len(set(per_layer)) > 1 else (),
        kv_shared_layers=kv_shared_layers(cfg),
    )


def _vision_from_config(cfg: Any) -> VisionTower | None:
    names = ("hidden_size", "intermediate_size", "num_hidden_layers", "image_size", "patch_size")
    values = [getattr(cfg, n, None) for n in names]
    if cfg is None or not all(isinstance(v, int) and v > 0 for v in values):
        return None
    e, f, layers, image, patch = values
    p = (image // patch) ** 2
    return VisionTower(type(cfg).__name__, layers, e, f, p, p, ())


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value


def _layer_flops(llm: LLM, n: int, formula: str, kind: str = "full_attention",
                 i: int = 0) -> int:
    """Matmul FLOPs (multiply-adds) of decoder layer ``i`` (of ``kind``) on ``n`` tokens."""
    d, m = llm.hidden_size, llm.intermediate_size
    if kind == LINEAR:
        la = llm.linear
        assert la is not None
        kd, vd = la.num_key_heads * la.key_head_dim, la.num_value_heads * la.value_head_dim
        mixer = n * d * (2 * kd + vd) + 2 * n * d * vd + 2 * n * d * la.num_value_heads
        recurrence = 3 * n * la.num_value_heads * la.key_head_dim * la.value_head_dim
        mlp = (2 if formula == "fastv" else 3) * n * d * m
        return mixer + recurrence + mlp
    if formula == "fastv":
        return 4 * n * d * d + 2 * n * n * d + 2 * n * d * m
    h, g, hd = llm.heads(i)
    attn = h * hd
    shared = i >= llm.num_hidden_layers - llm.kv_shared_layers  # keys/values reused
    proj = (3 if llm.gated_attention else 2) * n * d * attn + (0 if shared else 2 * n * d * g * hd)
    w = llm.sliding_window if kind == SLIDING else 0
    if w and n > w:  # query i attends to keys max(0, i - w + 1)..i
        pairs = w * (w + 1) // 2 + (n - w) * w
    else:
        pairs = n * (n + 1) // 2  # causal: query i attends to keys 0..i
    return proj + 2 * pairs * attn + 3 * n * d * m + 2 * n * d * llm.per_layer_input


def vision_flops(tower: VisionTower, frames: int) -> int:
    """Vision tower + projector FLOPs (multiply-adds) for ``frames`` frames."""
    p, e, f = tower.patches, tower.hidden_size, tower.intermediate_size
    per_layer = 4 * p * e * e + 2 * p * p * e + 2 * p * e * f
    projector = sum(tower.projector_tokens * a * b for a, b in tower.projector)
    return frames * (tower.num_layers * per_layer + projector)


def kept_tokens(visual_tokens: int, retention: float) -> int:
    """Visual tokens kept at ``retention``: max(1, ceil(retention * visual)), 0 for 0."""
    from .core import budget_for

    return budget_for(retention, visual_tokens) if visual_tokens else 0


def prefill_flops(
    model: Any,
    visual_tokens: int,
    text_tokens: int,
    retention: float = 1.0,
    formula: str = "fastv",
    method: str | None = None,
    *,
    layer: int | None = None,
    vision: bool = False,
    frames: int | None = None,
) -> float:
    """Prefill FLOPs (one multiply-add = 1 FLOP) of ``model`` on one prompt.

    Args:
        model: a preset name (see ``PRESETS``), a :class:`Preset`/:class:`LLM`, or a
            transformers config (VLM config with ``.text_config``, or an LLM config).
        visual_tokens: visual tokens before compression (e.g. 32 frames x 196 = 6272).
        text_tokens: text tokens of the prompt (system prompt, question, template).
        retention: fraction of visual tokens kept, in (0, 1].
        formula: ``"fastv"`` (what papers print) or ``"exact"`` (GQA, gated MLP, causal
            attention, lm_head on the last token); see the module docstring.
        method: ``None`` or a method acting before the LLM: compressed count at every
            layer; ``"fastv"``: full count for layers < ``layer``, compressed after.
        layer: FastV's K (default 2), in [0, num_hidden_layers]; only with method="fastv".
        vision: add the vision tower and projector for ``frames`` frames.
        frames: frames the vision tower encodes (required with ``vision=True``).

    Returns:
        FLOPs as a float (divide by 1e12 for TFLOPs).
    """
    preset = resolve(model)
    llm = preset.llm
    visual = _count(visual_tokens, "visual_tokens")
    text = _count(text_tokens, "text_tokens")
    from .core import check_retention

    retention = check_retention(retention)  # the library's scalar rule and range
    if formula not in FORMULAS:
        raise ValueError(f"unknown formula {formula!r}; known formulas: {', '.join(FORMULAS)}")

    full = text + visual
    kept = text + kept_tokens(visual, retention)
    layers = llm.num_hidden_layers
    if method == "fastv":
        k = fastv_default_layer() if layer is None else layer
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= layers:
            raise ValueError(
                f"layer must be an integer in [0, {layers}] (the LLM's layer count), got {k!r}"
            )
        total = sum(
            _layer_flops(llm, full if i < k else kept, formula, kind, i)
            for i, kind in enumerate(llm.kinds())
        )
    else:
        check_method(method)
        if layer is not None:
            raise ValueError(
                f"layer is FastV's pruning layer: give it with method='fastv', "
                f"not method={method!r}"
            )
        total = sum(_layer_flops(llm, kept, formula, kind, i)
                    for i, kind in enumerate(llm.kinds()))
    if formula == "exact" and full > 0:
        total += llm.hidden_size * llm.vocab_size  # lm_head, last token only

    if vision:
        if preset.vision is None:
            raise ValueError(
                f"no vision tower is modelled for {preset.name!r} (Qwen2/2.5-VL attend across "
                f"frames and windows); vision=True needs one of: "
                f"{', '.join(n for n, p in PRESETS.items() if p.vision is not None)}"
            )
        if frames is None:
            raise ValueError("vision=True needs frames (the frames the vision tower encodes)")
        total += vision_flops(preset.vision, _count(frames, "frames"))
    elif frames is not None:
        _count(frames, "frames")
    return float(total)


def fastv_default_layer() -> int:
    """FastV's K from the method registry (its one home; imports the registry)."""
    from .core import get_method

    return int(get_method("fastv").defaults()["layer"])


def check_method(method: Any) -> None:
    """``method`` must be None, ``"fastv"`` or a registered method acting before the LLM."""
    if method is None or method == "fastv":
        return
    from .core import get_method

    if not isinstance(method, str):
        raise ValueError(f"method must be a method name or None, got {method!r}")
    try:
        spec = get_method(method)
    except ValueError as exc:
        raise ValueError(f"{exc} (or 'fastv', pruning inside the LLM)") from None
    if spec.stage == "llm":  # stages "tokens"/"vision" compress before the LLM: one cost
        raise ValueError(
            f"method {method!r} acts inside the LLM; the cost model knows only 'fastv' "
            "among those"
        )
