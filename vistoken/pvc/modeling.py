"""``PVCForConditionalGeneration``: the progressive encoder paired with a causal LM.

Every visual input is a clip: a video keeps its frames, an image is a static video of
``image_repeats`` identical frames. ``pixel_values`` holds every frame of the batch flat,
(sum of frames, 3, H, W), clip after clip in prompt order (sample 0's clips first), and
``frames_per_clip`` the length of each clip. Clips of equal length are encoded together
(one ``ProgressiveEncoder`` call per distinct length, no loop over frames or clips), and
the (frames x tokens_per_frame) features fill the image-token positions of ``input_ids`` in
order. ``PVCProcessor`` builds such inputs.

Converting InternVL (``from_base``), as PVC's authors did from InternVL2-8B: the vision
tower's and the LLM's weights are carried over; InternVL's projector too when the
compressor's pixel-shuffle factor equals InternVL's (1 / ``downsample_ratio``, i.e.
``tokens_per_frame`` = InternVL's tokens per tile); otherwise the projector is new (PVC
itself goes from 256 to 64 tokens per frame, so its projector is new) - or, with
``projector="merge"`` (the paper's other reading), InternVL's 0.5 projector is carried and a
learned 2x2 merge, initialised to the mean, goes from 256 to 64 tokens. The new
parts start at zero, so a converted model with the base's token count and
``image_repeats=1`` gives InternVL's logits.

Loading the released PVC-InternVL2-8B weights (not implemented, and not checked here: this
project has not read that checkpoint). It is remote code (``trust_remote_code``), and as an
InternVL2-8B derivative it presumably keeps InternVL2's original layout: InternViT-300M-448px
as ``vision_model.*`` (fused ``attn.qkv``, ``ls1``/``ls2`` layer scales), an ``mlp1.*``
projector (LayerNorm, Linear, GELU, Linear) and an InternLM2.5-7B LLM (fused ``wqkv``), a
text model transformers has no native class for. Its new parts (temporal attention, AdaLN,
time MLP) are described by no publication, only by the checkpoint's own modeling file. It
would take: reading that modeling file (it also settles the unknowns REFERENCE.md lists:
which layers are temporal, where AdaLN sits, the time variable, the projector reading); an
InternLM2 text model (its remote code, or a key conversion to a Llama-style config with
``wqkv`` split into q/k/v); the InternViT key conversion transformers' InternVL converter
applies (``attn.qkv`` split into q/k/v, ``ls1``/``ls2`` to ``lambda_1``/``lambda_2``, ...);
``mlp1.*`` to ``encoder.projector.*``; a mapping of the new parts onto
``ProgressiveLayer``/``time_mlp`` (or new options where they differ); and a check that the
result reproduces one of the published scores.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import Tensor, nn
from transformers import AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel

from ..models import _hf
from .configuration import PVCConfig
from .encoder import ProgressiveEncoder


class PVCPreTrainedModel(PreTrainedModel):
    config_class = PVCConfig
    config: PVCConfig
    base_model_prefix = ""
    main_input_name = "input_ids"
    input_modalities = ("image", "video", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def _init_weights(self, module: nn.Module) -> None:
        """The tower and the LLM initialise themselves (they are PreTrainedModels); PVC's own
        modules are initialised together by ``initialize_weights``."""

    def initialize_weights(self) -> None:
        """transformers' initialisation, then the new parts and the projector
        (``ProgressiveEncoder.reset_new_parameters``): the new modules sit inside the vision
        tower, so the tower's own init has just run over them, and a module without
        parameters of its own (the encoder) is skipped for a model outside transformers.
        The initialisers skip tensors ``from_pretrained`` loaded."""
        super().initialize_weights()
        with torch.no_grad():
            self.encoder.reset_new_parameters()


class PVCForConditionalGeneration(PVCPreTrainedModel, GenerationMixin):
    """A vision-language model with PVC's progressive encoder (see the module docstring).

    ``forward(input_ids, attention_mask=None, pixel_values=None, frames_per_clip=None,
    labels=None, cache=None, ...)``: ``pixel_values`` (F, 3, H, W) are every frame of every
    clip, ``frames_per_clip`` (n_clips,) int64 their clip lengths in prompt order; the LLM's
    output (logits (B, L, vocab), loss with ``labels``, cache) is returned.

    ``generate`` passes the pixels to the first (prefill) step only. Not supported with
    pixels: ``num_beams`` or ``num_return_sequences`` > 1 (generate repeats every input
    tensor row by row, which scrambles the flat frame layout; repeat the prompt in the
    batch instead).
    """

    def __init__(self, config: PVCConfig) -> None:
        super().__init__(config)
        tower = AutoModel.from_config(config.vision_config)
        self.encoder = ProgressiveEncoder(
            tower,
            out_dim=config.text_config.hidden_size,
            tokens_per_frame=config.tokens_per_frame,
            temporal_layers=config.temporal_layers,
            image_repeats=config.image_repeats,
            time_dim=config.time_dim,
            adaln=config.adaln,
            time=config.time,
            drop_cls=config.drop_cls,
            feature_layer=config.feature_layer,
            act=config.projector_hidden_act,
            projector=config.projector,
        )
        self.language_model = AutoModelForCausalLM.from_config(config.text_config)
        self._cache_key = _hf.cache_key(self.language_model.forward, "the PVC language model")
        self.post_init()

    # -- embeddings -------------------------------------------------------------------------

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_output_embeddings(value)

    # -- vision -----------------------------------------------------------------------------

    def get_clip_features(
        self, pixel_values: Tensor, frames_per_clip: Tensor | list[int]
    ) -> Tensor:
        """Encode flat frames clip by clip: (F, 3, H, W) with clip lengths (n_clips,) ->
        (F * frame_tokens, D) in frame order. Clips of equal length go through the encoder
        together, one call per distinct length."""
        if not isinstance(pixel_values, Tensor) or pixel_values.dim() != 4:
            shape = (
                tuple(pixel_values.shape)
                if isinstance(pixel_values, Tensor)
                else type(pixel_values)
            )
            raise ValueError(f"pixel_values must be flat frames (F, 3, H, W); got {shape}")
        lengths = torch.as_tensor(frames_per_clip, dtype=torch.long).flatten().tolist()
        if not lengths or min(lengths) < 1:
            raise ValueError(f"frames_per_clip must list clip lengths >= 1; got {lengths}")
        if sum(lengths) != pixel_values.shape[0]:
            raise ValueError(
                f"frames_per_clip sums to {sum(lengths)} frames but pixel_values holds "
                f"{pixel_values.shape[0]}"
            )
        device = pixel_values.device
        starts = torch.tensor([0, *lengths], device=device).cumsum(0)[:-1]
        lens = torch.tensor(lengths, device=device)
        enc = self.encoder
        out: Tensor | None = None
        for t in sorted(set(lengths)):
            which = (lens == t).nonzero().flatten()
            rows = (starts[which, None] + torch.arange(t, device=device)).flatten()
            frames = pixel_values.index_select(0, rows).unflatten(0, (which.numel(), t))
            feats = enc(frames).flatten(0, 1)  # (n*t, frame_tokens, D)
            if out is None:
                out = feats.new_zeros(pixel_values.shape[0], *feats.shape[1:])
            out = out.index_copy(0, rows, feats)
        assert out is not None
        return out.flatten(0, 1)

    def _merge(self, input_ids: Tensor, embeds: Tensor, feats: Tensor) -> Tensor:
        mask = input_ids == self.config.image_token_id
        n_tokens, n_feats = int(mask.sum()), feats.shape[0]
        if n_tokens != n_feats:
            raise ValueError(
                f"the prompt has {n_tokens} image tokens (id {self.config.image_token_id}) but the "
                f"clips give {n_feats} visual features ({self.encoder.frame_tokens} per frame); "
                "build the prompt with PVCProcessor (or one image token per feature)"
            )
        return embeds.masked_scatter(mask.unsqueeze(-1), feats.to(embeds.dtype))

    # -- forward / generate -----------------------------------------------------------------

    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        pixel_values: Tensor | None = None,
        frames_per_clip: Tensor | None = None,
        position_ids: Tensor | None = None,
        cache: Any | None = None,
        past_key_values: Any | None = None,
        inputs_embeds: Tensor | None = None,
        labels: Tensor | None = None,
        logits_to_keep: int | Tensor = 0,
        **kwargs: Any,
    ) -> Any:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
        if pixel_values is not None:
            if frames_per_clip is None:
                raise ValueError(
                    "pixel_values needs frames_per_clip (the frame count of each clip in prompt "
                    "order; an image is a clip of image_repeats frames)"
                )
            if input_ids is None:
                raise ValueError("pixel_values needs input_ids (to find the image tokens)")
            feats = self.get_clip_features(pixel_values, frames_per_clip)
            inputs_embeds = self._merge(input_ids, inputs_embeds, feats)
        cache = cache if cache is not None else past_key_values
        kwargs[self._cache_key] = cache
        return self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            labels=labels,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def prepare_inputs_for_generation(self, *args: Any, frames_per_clip: Any = None, **kwargs: Any):
        """Pixels (and with them ``frames_per_clip``) reach only the first (prefill) step."""
        inputs = super().prepare_inputs_for_generation(*args, **kwargs)
        if inputs.get("pixel_values") is not None:
            inputs["frames_per_clip"] = frames_per_clip
        return inputs

    # -- conversion -------------------------------------------------------------------------

    @classmethod
    def from_base(
        cls, base: Any, tokens_per_frame: int = 64, **options: Any
    ) -> PVCForConditionalGeneration:
        """Convert a transformers ``InternVLForConditionalGeneration`` into PVC.

        The vision tower and the LLM (decoder, head) are copied over; InternVL's projector
        too when ``tokens_per_frame`` is InternVL's token count per tile (same pixel-shuffle
        factor), else a new one is made. The new parts start at zero. ``options`` are
        ``PVCConfig`` fields (``temporal_layers``, ``image_repeats``, ``adaln``, ``time``,
        ...). The base model is left unchanged; the result has its dtype and device and is
        in eval mode when the base is.
        """
        parts = _hf.internvl_parts(base)
        bc = base.config
        layer = bc.vision_feature_layer
        if not isinstance(layer, int):
            raise ValueError(f"from_base needs one vision_feature_layer; the base has {layer}")
        decoder, head = parts["decoder"], parts["lm_head"]
        embed = decoder.get_input_embeddings()
        tied = head.weight is embed.weight or head.weight.data_ptr() == embed.weight.data_ptr()
        text_config = copy.deepcopy(bc.text_config)
        text_config.tie_word_embeddings = bool(tied)
        fields = {
            "vision_config": copy.deepcopy(bc.vision_config),
            "text_config": text_config,
            "tokens_per_frame": tokens_per_frame,
            "image_token_id": bc.image_token_id,
            "projector_hidden_act": bc.projector_hidden_act,
            "feature_layer": layer,
            "drop_cls": bc.vision_feature_select_strategy != "full",
            "tie_word_embeddings": bool(tied),
        }
        known = {f.name for f in dataclasses.fields(PVCConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown PVC options {unknown}")
        fields.update(options)
        model = cls(PVCConfig(**fields))
        param = next(base.parameters())
        model.to(device=param.device, dtype=param.dtype)
        with torch.no_grad():
            model.encoder.load_tower_state_dict(parts["vision_tower"].state_dict())
            model.language_model.get_decoder().load_state_dict(decoder.state_dict())
            model.language_model.get_output_embeddings().load_state_dict(head.state_dict())
            base_k = round(1 / bc.downsample_ratio)
            if model.encoder.projector.k == base_k:
                model.encoder.projector.load_state_dict(parts["projector"].state_dict())
        model.train(base.training)
        return model


__all__ = ["PVCForConditionalGeneration", "PVCPreTrainedModel"]
