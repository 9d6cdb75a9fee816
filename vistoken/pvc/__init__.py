"""PVC: progressive visual token compression (arXiv 2412.09613), as transformers models.

PVC treats every input as a video: an image becomes a static video of ``image_repeats``
frames, and each frame is encoded, with causal temporal attention and AdaLN time
conditioning in the vision tower's last layers, to ``tokens_per_frame`` tokens carrying
what earlier frames did not. The paper's authors released no model or training code; this
package implements it from the paper's description (REFERENCE.md section 2), each unknown a
documented option:

- ``ProgressiveEncoder``: any transformers vision tower (SigLIP, CLIP, InternViT) made
  progressive, plus the pixel-shuffle compressor (``encoder.py`` lists the choices);
- ``PVCConfig`` / ``PVCForConditionalGeneration``: the encoder and a causal LM as one
  transformers model (``save_pretrained``/``from_pretrained``, ``generate``), and
  ``PVCForConditionalGeneration.from_base`` to convert an InternVL model
  (``modeling.py`` also says what loading the released PVC-InternVL2-8B would take);
- ``PVCProcessor``: prompts ("Frame1: <image>\\n..." for video) and pixels;
- ``register()``: make ``AutoConfig`` / ``AutoModelForImageTextToText`` know "vistoken_pvc".

Importing this package imports torch and transformers (``import vistoken`` does not import
it).
"""

from __future__ import annotations

from .configuration import PVCConfig
from .encoder import ProgressiveEncoder, ProgressiveLayer, TemporalAttention
from .functional import pixel_shuffle, shuffle_factor, timestep_embedding
from .modeling import PVCForConditionalGeneration, PVCPreTrainedModel
from .processing import PVCProcessor


def register() -> None:
    """Register ``PVCConfig`` with ``AutoConfig`` and ``PVCForConditionalGeneration`` with
    ``AutoModelForImageTextToText``, so ``Auto*.from_pretrained`` loads saved PVC models.
    Idempotent; not done at import (it changes transformers' global registries)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    AutoConfig.register(PVCConfig.model_type, PVCConfig, exist_ok=True)
    AutoModelForImageTextToText.register(PVCConfig, PVCForConditionalGeneration, exist_ok=True)


__all__ = [
    "PVCConfig",
    "PVCForConditionalGeneration",
    "PVCPreTrainedModel",
    "PVCProcessor",
    "ProgressiveEncoder",
    "ProgressiveLayer",
    "TemporalAttention",
    "pixel_shuffle",
    "register",
    "shuffle_factor",
    "timestep_embedding",
]
