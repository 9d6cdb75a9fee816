"""Qwen3-VL (dense and MoE) and Qwen3.5: where their visual tokens sit, and what follows them.

Both families take the Qwen2-VL layout (``QwenVLFamily``: each image or video is
(t, h/m, w/m) tokens after the patch merger, on that grid, with interleaved M-RoPE
positions from the model's own ``get_rope_index``) with three differences:

- **Video blocks.** A video is written as one ``<vision_start> <video_pad>*h*w
  <vision_end>`` block per temporal patch, each preceded by its timestamp in text
  (``<1.0 seconds>``), and every block gets its own M-RoPE origin. The whole video is one
  ``Unit`` (frames are the temporal patches, so temporal methods see all of them) whose
  slots run through the blocks in order; an output token goes to the slot of its anchor,
  which lies in its anchor frame's block. Timestamps and delimiters are text and never
  move. **A block that loses every visual token is kept, empty**
  (``<t seconds><vision_start><vision_end>``): the retention contract counts visual tokens
  only, so removing text the method did not choose would change the prompt behind the
  user's back; the timestamps still tell the LLM when every sampled frame was (a frame
  that DyCoke or EVS found redundant is still a moment of the video, and the timestamps
  after it keep their meaning); and every kept token's M-RoPE position and the text's are
  exactly those of the uncompressed prompt, because each block's origin comes from the
  uncompressed layout (removing a block would renumber everything after it).
- **DeepStack (Qwen3-VL only).** The vision tower also returns one feature per visual
  token from each of a few intermediate layers; the LLM adds level ``j`` at the visual
  positions after its decoder layer ``j``. Each level is reduced with the same grouping
  as the main tokens (``Compressed.reduce``: a kept token keeps its own row, a merged one
  gets the mean over its sources) and handed to the LLM with the shortened visual mask,
  through a pre-hook on the language model (``Family.language_extras``). FastV, which
  prunes inside the LLM, gets the DeepStack layers it prunes before
  (``Family.configure_llm_part``): their outputs are put back at full length so the
  model adds each level at the right positions, and the next layer drops the same
  positions again.
- **Qwen3.5's LLM** mixes Gated DeltaNet (linear attention) layers with full attention.
  Pre-LLM methods hand it a shorter sequence, so every layer's state (KV cache or
  recurrent and convolution states) is that of the shortened sequence. FastV scores at a
  full-attention layer (:class:`~vistoken.models.fastv.FastV` moves ``layer`` to the
  first one that follows a full-attention layer and says so in ``handle.stats``).

Nothing here names a transformers internal; attribute and argument names come from
``_hf``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..core import Compressed
from . import _hf
from .base import Shortened, Unit
from .families import QwenVLFamily


@dataclass
class DeepStackUnit(Unit):
    """A ``Unit`` with the DeepStack features of its tokens: one (T*N, D) tensor per
    level, frame-major like ``slots``."""

    deepstack: list[Tensor] = field(default_factory=list)


class Qwen3VLFamily(QwenVLFamily):
    """``Qwen3VLForConditionalGeneration`` and ``Qwen3VLMoeForConditionalGeneration``."""

    name = "qwen3-vl"
    class_names = ("Qwen3VLForConditionalGeneration", "Qwen3VLMoeForConditionalGeneration")
    strip_keys = ("image_grid_thw", "video_grid_thw")

    def _item_features(
        self, out: Any, grids: Tensor | None, m: int, missing: str
    ) -> tuple[list[Tensor], list[list[Tensor]]]:
        """Per-item features and DeepStack levels (split per item by the model itself)."""
        return _hf.vision_features(out)

    def _unit(
        self, row: int, cols: Tensor, tokens: Tensor, grid: tuple[int, int], levels: list[Tensor]
    ) -> Unit:
        return DeepStackUnit(row, cols, tokens, grid, deepstack=levels)

    _positions_label = "Qwen3-VL"

    @classmethod
    def _grid_from_positions(cls, kwargs: dict[str, Any], run: Tensor) -> tuple[int, int, int]:
        """(t, h, w) of one image or video from its M-RoPE positions.

        Every temporal patch is a block with its own origin: its tokens share one temporal
        position (distinct between blocks), and its height and width positions are
        contiguous ranges from that origin, so t is the number of distinct temporal
        positions and (h, w) are read off the first block.
        """
        p = cls._run_positions(kwargs, run)
        cols = run[1]
        t = int(torch.unique(p[0]).numel())
        first = p[:, p[0] == p[0, 0]]
        h, w = (int(torch.unique(first[i]).numel()) for i in (1, 2))
        if t * h * w != cols.numel():
            raise ValueError("could not read the visual grid off the position ids")
        return t, h, w

    # -- DeepStack -------------------------------------------------------------------------

    #: the language model's keyword arguments ``language_extras`` fills
    language_keys = ("visual_pos_masks", "deepstack_visual_embeds")

    def language_extras(
        self,
        inner: Any,
        units: list[Unit],
        results: list[Compressed],
        short: Shortened,
        shape: tuple[int, int],
    ) -> dict[str, Any]:
        """The shortened sequence's visual mask and each DeepStack level reduced like the
        main tokens: ``visual_pos_masks`` (B, L') bool and ``deepstack_visual_embeds``, one
        (visual tokens kept, D) tensor per level in row-major order of the mask.

        shape: (B, L) of the uncompressed sequence.
        """
        levels = {len(getattr(u, "deepstack", [])) for u in units}
        if levels == {0}:
            return {}
        if len(levels) != 1:
            raise RuntimeError(f"units carry different numbers of DeepStack levels: {levels}")
        (n_levels,) = levels
        device = short.embeds.device
        visual = torch.zeros(shape, dtype=torch.bool, device=device)
        full: list[Tensor | None] = [None] * n_levels
        for unit, c in zip(units, results, strict=True):
            target = unit.slots[c.anchors.to(unit.slots.device)].to(device)
            visual[unit.row, target] = True
            for j, feats in enumerate(unit.deepstack):  # type: ignore[attr-defined]
                if full[j] is None:
                    full[j] = feats.new_zeros(*shape, feats.shape[-1]).to(device)
                full[j][unit.row, target] = c.reduce(feats).to(device, full[j].dtype)
        mask = visual.gather(1, short.index) & short.valid
        embeds = []
        for f in full:
            assert f is not None
            picked = f.gather(1, short.index[..., None].expand(-1, -1, f.shape[-1]))
            embeds.append(picked[mask])
        return {"visual_pos_masks": mask, "deepstack_visual_embeds": embeds}

    def configure_llm_part(self, part: Any, inner: Any) -> None:
        """FastV prunes from layer K on; DeepStack adds level j after layer j: the outputs
        of layers K .. levels - 1 go back to full length so the model adds every level at
        the positions it knows (FastV drops the same positions again at the next layer)."""
        levels = len(_hf.deepstack_layers(inner.config))
        if levels and hasattr(part, "expand_after"):
            part.expand_after(range(part.layer, levels))


class Qwen3_5Family(Qwen3VLFamily):
    """``Qwen3_5ForConditionalGeneration``: the Qwen3-VL layout without DeepStack, on a
    hybrid Gated DeltaNet / full-attention LLM."""

    name = "qwen3.5"
    class_names = ("Qwen3_5ForConditionalGeneration",)
