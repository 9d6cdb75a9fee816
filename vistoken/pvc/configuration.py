"""``PVCConfig``: the transformers configuration of a PVC model."""

from __future__ import annotations

from typing import Any, Literal

from transformers import AutoConfig, PreTrainedConfig


def _sub_config(value: Any, default_type: str) -> PreTrainedConfig:
    """A sub-config from a config, a dict (its ``model_type`` or ``default_type``) or None."""
    if isinstance(value, PreTrainedConfig):
        return value
    if value is None:
        return AutoConfig.for_model(default_type)
    if isinstance(value, dict):
        fields = dict(value)
        return AutoConfig.for_model(fields.pop("model_type", default_type), **fields)
    raise TypeError(f"a sub-config must be a config, a dict or None; got {type(value).__name__}")


class PVCConfig(PreTrainedConfig):
    r"""Configuration of ``PVCForConditionalGeneration``: a vision tower made progressive
    (``ProgressiveEncoder``) feeding a causal language model.

    Args:
        vision_config: the vision tower's config (any ``AutoModel`` vision config with
            ``encoder.layers`` / ``encoder.layer``; default ``internvl_vision``, as
            InternVL2's InternViT-300M).
        text_config: the language model's config (any ``AutoModelForCausalLM``; default
            ``qwen2``).
        tokens_per_frame: visual tokens per frame the compressor produces (64, PVC's).
        temporal_layers: layers with causal temporal attention (None: a third of them).
        image_repeats: frames of the static video an image becomes (4, PVC's).
        adaln: "temporal" | "all" | "none" (see ``ProgressiveEncoder``).
        time: "index" | "normalised" (the time variable AdaLN embeds).
        time_dim: width of the sinusoidal time embedding (256, PVC's).
        drop_cls: None (drop a CLS token when the tower has one), True, False (keep it as an
            extra token per frame).
        feature_layer: the tower layer whose output is compressed (-1: the last hidden state).
        projector_hidden_act: the projector MLP's activation ("gelu", InternVL's).
        projector: "shuffle" (a new projector straight to ``tokens_per_frame``, the default)
            or "merge" (the base model's projector at half the shuffle, then a learned 2 x 2
            merge initialised to the mean; see ``ProgressiveEncoder``).
        image_token_id: the id of the placeholder token whose positions receive the visual
            features (InternVL's ``<IMG_CONTEXT>`` id by default).
        tie_word_embeddings: tie the LLM's output layer to its input embeddings (follows
            ``text_config`` when that ties).
    """

    model_type = "vistoken_pvc"
    # Built in __post_init__ with AutoConfig.for_model (transformers 5.19 has no
    # ``sub_configs_defaults``); ``sub_configs`` tells transformers which fields are configs.
    sub_configs = {"vision_config": AutoConfig, "text_config": AutoConfig}

    vision_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    tokens_per_frame: int = 64
    temporal_layers: int | None = None
    image_repeats: int = 4
    adaln: Literal["temporal", "all", "none"] = "temporal"
    time: Literal["index", "normalised"] = "index"
    time_dim: int = 256
    drop_cls: bool | None = None
    feature_layer: int = -1
    projector_hidden_act: str = "gelu"
    projector: Literal["shuffle", "merge"] = "shuffle"
    image_token_id: int = 151667
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        self.vision_config = _sub_config(self.vision_config, "internvl_vision")
        self.text_config = _sub_config(self.text_config, "qwen2")
        super().__post_init__(**kwargs)
        if self.adaln not in ("temporal", "all", "none"):
            raise ValueError(f"adaln must be 'temporal', 'all' or 'none'; got {self.adaln!r}")
        if self.projector not in ("shuffle", "merge"):
            raise ValueError(f"projector must be 'shuffle' or 'merge'; got {self.projector!r}")
        if self.time not in ("index", "normalised"):
            raise ValueError(f"time must be 'index' or 'normalised'; got {self.time!r}")
        if self.tokens_per_frame < 1:
            raise ValueError(f"tokens_per_frame must be >= 1; got {self.tokens_per_frame}")
        if self.image_repeats < 1:
            raise ValueError(f"image_repeats must be >= 1; got {self.image_repeats}")
        if self.temporal_layers is not None and self.temporal_layers < 0:
            raise ValueError(f"temporal_layers must be >= 0 or None; got {self.temporal_layers}")
        if not self.tie_word_embeddings and getattr(self.text_config, "tie_word_embeddings", False):
            self.tie_word_embeddings = True


__all__ = ["PVCConfig"]
