"""``PVCProcessor``: text with ``<image>`` / ``<video>`` placeholders + pixels -> PVC inputs.

Prompt layout (PVC's, REFERENCE.md section 2):

- a video placeholder becomes one line per frame, ``"Frame1: <image>\\nFrame2: <image>\\n..."``,
  each ``<image>`` there standing for ``tokens_per_frame`` image tokens;
- an image placeholder becomes one static-video block: ``image_repeats * tokens_per_frame``
  image tokens in one run (no frame labels), and its pixels enter as ``image_repeats``
  identical frames.

Each run of image tokens is wrapped in ``image_start`` / ``image_end`` (empty by default;
InternVL's tokenizer has ``"<img>"`` / ``"</img>"``). The processor is a plain class (not a
transformers ``ProcessorMixin``): it does not save itself; rebuild it from its parts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor


def _is_video(x: Any) -> bool:
    if isinstance(x, (str, os.PathLike)) or (hasattr(x, "array") and hasattr(x, "timestamps")):
        return True
    return (isinstance(x, (Tensor, np.ndarray)) and x.ndim == 4) or (
        isinstance(x, (list, tuple)) and len(x) > 0 and not isinstance(x[0], (list, tuple))
    )


class PVCProcessor:
    """Builds ``input_ids``, ``attention_mask``, ``pixel_values`` and ``frames_per_clip`` for
    ``PVCForConditionalGeneration``.

    Args:
        image_processor: a transformers image processor that maps one picture to one
            (3, H, W) row of ``pixel_values`` (no tiling), e.g. ``SiglipImageProcessor`` or
            ``GotOcr2ImageProcessor`` (``crop_to_patches=False``, its default).
        tokenizer: the LLM's tokenizer; ``image_token`` must be one token of it.
        tokens_per_frame: image tokens per frame (the model's ``encoder.frame_tokens``).
        image_repeats: frames of an image's static video (the model's ``image_repeats``).
        image_token: the placeholder token the model fills (default: the tokenizer's
            ``context_image_token`` or ``image_token`` attribute, else ``"<image>"``).
        image_start, image_end: text around each run of image tokens.
        image_placeholder, video_placeholder: what marks an image / a video in ``text``.
        video_frames: frames decoded (``vistoken.video.load_frames``, uniform sampling) of a
            video given as a path.
    """

    def __init__(
        self,
        image_processor: Any,
        tokenizer: Any,
        tokens_per_frame: int = 64,
        image_repeats: int = 4,
        image_token: str | None = None,
        image_start: str = "",
        image_end: str = "",
        image_placeholder: str = "<image>",
        video_placeholder: str = "<video>",
        video_frames: int = 16,
    ) -> None:
        if tokens_per_frame < 1 or image_repeats < 1:
            raise ValueError(
                f"tokens_per_frame and image_repeats must be >= 1; got {tokens_per_frame}, "
                f"{image_repeats}"
            )
        self.image_processor, self.tokenizer = image_processor, tokenizer
        self.tokens_per_frame, self.image_repeats = int(tokens_per_frame), int(image_repeats)
        self.image_token = image_token or (
            getattr(tokenizer, "context_image_token", None)
            or getattr(tokenizer, "image_token", None)
            or "<image>"
        )
        ids = tokenizer(self.image_token, add_special_tokens=False)["input_ids"]
        if len(ids) != 1:
            raise ValueError(
                f"image_token {self.image_token!r} is {len(ids)} tokens for this tokenizer; "
                "it must be exactly one (add it as a special token)"
            )
        self.image_token_id = int(ids[0])
        self.image_start, self.image_end = image_start, image_end
        self.video_frames = int(video_frames)
        self.image_placeholder, self.video_placeholder = image_placeholder, video_placeholder
        self._split = re.compile(f"({re.escape(image_placeholder)}|{re.escape(video_placeholder)})")

    # -- prompt text ------------------------------------------------------------------------

    def _block(self, n: int) -> str:
        return self.image_start + self.image_token * n + self.image_end

    def image_text(self) -> str:
        """What one image placeholder becomes."""
        return self._block(self.image_repeats * self.tokens_per_frame)

    def video_text(self, frames: int) -> str:
        """What one video placeholder of ``frames`` frames becomes."""
        block = self._block(self.tokens_per_frame)
        return "".join(f"Frame{i + 1}: {block}\n" for i in range(frames))

    # -- pixels -----------------------------------------------------------------------------

    def _pixels(self, pictures: list[Any]) -> Tensor:
        out = self.image_processor(images=pictures, return_tensors="pt")["pixel_values"]
        if out.dim() != 4 or out.shape[0] != len(pictures):
            raise ValueError(
                f"the image processor made {tuple(out.shape)} pixel values of {len(pictures)} "
                "pictures; PVC needs one (3, H, W) row per picture (turn off tiling / cropping "
                "to patches)"
            )
        return out

    def _frames(self, video: Any) -> list[Any]:
        if isinstance(video, (str, os.PathLike)):
            from ..video import load_frames

            video = load_frames(video, self.video_frames)
        if hasattr(video, "array") and hasattr(video, "timestamps"):  # vistoken.video.Frames
            video = video.array
        if isinstance(video, (Tensor, np.ndarray)):
            if video.ndim != 4:
                raise ValueError(f"a video must be (T, C, H, W) or (T, H, W, C); got {video.shape}")
            return list(video)
        return list(video)

    # -- call -------------------------------------------------------------------------------

    def __call__(
        self,
        text: str | Sequence[str],
        images: Any = None,
        videos: Any = None,
        return_tensors: str = "pt",
        **tokenizer_kwargs: Any,
    ) -> Any:
        """Expand the placeholders of ``text`` (a prompt or a batch) and build the pixels.

        ``images``: the images of every image placeholder in prompt order (sample 0's
        first), flat or one list per sample. ``videos``: likewise, each video a (T, C, H, W)
        / (T, H, W, C) array or tensor, a list of T pictures, a ``vistoken.video.Frames`` or
        a path (decoded to ``video_frames`` frames). Returns a ``BatchFeature``
        with ``input_ids``, ``attention_mask`` and, when there are visual inputs,
        ``pixel_values`` (frames, 3, H, W) and ``frames_per_clip`` (clips,) int64.
        Tokenizer keywords (``padding``, ``padding_side``, ...) pass through; padding is on
        for a batch of several prompts.
        """
        from transformers import BatchFeature

        texts = [text] if isinstance(text, str) else list(text)
        if not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError("text must be a string or a list of strings")
        imgs = self._flat(images, "images", image=True)
        vids = self._flat(videos, "videos", image=False)
        pictures: list[Any] = []  # each image once, each video frame once
        rows: list[int] = []  # row of pixel_values -> index into pictures
        clips: list[int] = []
        expanded = []
        used_i = used_v = 0
        for t in texts:
            parts = []
            for piece in self._split.split(t):
                if piece == self.image_placeholder:
                    if used_i >= len(imgs):
                        raise ValueError(
                            f"the text has more {self.image_placeholder} placeholders than the "
                            f"{len(imgs)} images given"
                        )
                    pictures.append(imgs[used_i])
                    rows += [len(pictures) - 1] * self.image_repeats
                    clips.append(self.image_repeats)
                    parts.append(self.image_text())
                    used_i += 1
                elif piece == self.video_placeholder:
                    if used_v >= len(vids):
                        raise ValueError(
                            f"the text has more {self.video_placeholder} placeholders than the "
                            f"{len(vids)} videos given"
                        )
                    frames = self._frames(vids[used_v])
                    if not frames:
                        raise ValueError(f"video {used_v} has 0 frames")
                    rows += range(len(pictures), len(pictures) + len(frames))
                    pictures += frames
                    clips.append(len(frames))
                    parts.append(self.video_text(len(frames)))
                    used_v += 1
                else:
                    parts.append(piece)
            expanded.append("".join(parts))
        if used_i != len(imgs) or used_v != len(vids):
            raise ValueError(
                f"{len(imgs)} images and {len(vids)} videos given but the text has {used_i} "
                f"{self.image_placeholder} and {used_v} {self.video_placeholder} placeholders"
            )
        if len(texts) > 1:
            tokenizer_kwargs.setdefault("padding", True)
        data = dict(self.tokenizer(expanded, return_tensors=return_tensors, **tokenizer_kwargs))
        if pictures:
            pixels = self._pixels(pictures)
            data["pixel_values"] = pixels[torch.tensor(rows)]
            data["frames_per_clip"] = torch.tensor(clips, dtype=torch.long)
        return BatchFeature(data=data)

    @staticmethod
    def _flat(items: Any, what: str, image: bool) -> list[Any]:
        if items is None:
            return []
        if image:
            if not isinstance(items, (list, tuple)):
                return [items]
            if all(isinstance(x, (list, tuple)) for x in items):
                return [x for sample in items for x in sample]
            return list(items)
        if _is_video(items) and not (
            isinstance(items, (list, tuple)) and all(_is_video(x) for x in items)
        ):
            return [items]
        if not isinstance(items, (list, tuple)):
            raise TypeError(f"{what} must be a list")
        flat: list[Any] = []
        for x in items:
            if isinstance(x, (list, tuple)) and x and all(_is_video(v) for v in x):
                flat += list(x)  # one list of videos per sample
            else:
                flat.append(x)
        return flat

    # -- decoding ---------------------------------------------------------------------------

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)


__all__ = ["PVCProcessor"]
