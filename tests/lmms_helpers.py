"""Tiny random checkpoints of each family for lmms-eval's own wrappers, saved to a folder.

Each checkpoint is a ``vistoken.testing`` tiny model saved with its real, tiny processor
(the image and video processors, the character-level tokenizer with the family's special
tokens at the model's ids, a chat template for lmms-eval's messages), so lmms-eval's
wrapper loads it with ``from_pretrained`` exactly as it loads a hub checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


def _until_cut_strip(text: str) -> str:
    """qwen2_vl / qwen2_5_vl: the answer up to the task's ``until`` ("\\n\\n"), stripped."""
    return text.split("\n\n")[0].strip()


def _as_is(text: str) -> str:
    """qwen3_vl / qwen3_5 / gemma4 drop a "\\n\\n" stop string and keep the text."""
    return text


def _stripped(text: str) -> str:
    """internvl_hf (chat): its logged answer is the text without surrounding whitespace (seen
    on the tiny checkpoint, which answers "\\n" x 4, logged as "")."""
    return text.strip()


@dataclass(frozen=True)
class Family:
    """One family: its vistoken and lmms-eval wrappers, tiny checkpoint and model_args."""

    name: str  # vistoken's wrapper is vistoken_<name>
    base: str  # lmms-eval's wrapper
    model: str  # vistoken.testing builder
    processor: tuple[str, ...]  # vistoken.testing processor builder and its arguments
    dtype: torch.dtype  # the dtype lmms-eval's wrapper loads the checkpoint in
    model_args: str  # lmms-eval model_args keeping the prompts small
    answer: Any = _as_is  # the wrapper's answer from the decoded new tokens
    extra: tuple[str, ...] = field(default_factory=tuple)  # more lmms-eval arguments

    @property
    def wrapper(self) -> str:
        return f"vistoken_{self.name}"


#: qwen_vl_utils resizes to multiples of 28 (Qwen2/2.5) or 32 (Qwen3): max_pixels=1024 gives
#: 28x28 (then 32x32 in the processor) or 32x32 frames and images: 16 tokens each, or per
#: two frames of a video (4 frames: the video's 2 s at qwen_vl_utils' 2 fps, or nframes)
_QWEN2 = "device_map=cpu,max_pixels=1024,min_pixels=256"
_QWEN3 = "device_map=cpu,max_pixels=1024,min_pixels=256,max_num_frames=4"

FAMILIES = {
    f.name: f
    for f in [
        Family("qwen2_vl", "qwen2_vl", "tiny_qwen2_vl", ("tiny_processor", "qwen2-vl"),
               torch.float32, _QWEN2, _until_cut_strip),
        Family("qwen2_5_vl", "qwen2_5_vl", "tiny_qwen2_5_vl", ("tiny_processor", "qwen2.5-vl"),
               torch.bfloat16, _QWEN2, _until_cut_strip),
        Family("qwen3_vl", "qwen3_vl", "tiny_qwen3_vl", ("tiny_qwen3_processor",),
               torch.bfloat16, _QWEN3),
        # total_pixels: Qwen3.5's default budget would resize the 112-px frames up to 128 px
        Family("qwen3_5", "qwen3_5", "tiny_qwen3_5", ("tiny_qwen3_processor",),
               torch.bfloat16, _QWEN3 + ",total_pixels=2048,enable_thinking=false"),
        Family("gemma4", "gemma4", "tiny_gemma4", ("tiny_gemma4_processor",),
               torch.bfloat16, "device_map=cpu,max_soft_tokens=70,max_num_frames=4"),
        # a chat wrapper: lmms-eval builds its messages from the task's visual and text
        Family("internvl", "internvl_hf", "tiny_internvl", ("tiny_processor", "internvl"),
               torch.bfloat16, "device_map=cpu,num_frames=4", _stripped),
    ]
}


def save_checkpoint(family: Family, out: Path) -> Path:
    """Save ``family``'s tiny model (seed 0) and processor to ``out``."""
    from vistoken import testing

    model = getattr(testing, family.model)()
    builder, *args = family.processor
    processor = getattr(testing, builder)(*args)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def load_checkpoint(family: Family, path: Path) -> tuple[Any, Any]:
    """(model, tokenizer) of a saved checkpoint, loaded as lmms-eval's wrapper loads it."""
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(path, dtype=family.dtype).eval()
    return model, AutoTokenizer.from_pretrained(path)
