"""lmms-eval model wrappers with a vistoken compressor (imported by lmms-eval, needs it).

Each class is lmms-eval's own wrapper of a family with :class:`VistokenMixin` in front:

- ``__init__`` takes the ``vt_*`` model_args out and checks them (:func:`split_model_args`)
  *before* the base wrapper loads anything; a bad one ends the run at once with one line
  (``SystemExit``: lmms-eval's command line turns exceptions into a logged traceback and
  exit status 0). Then the base wrapper loads the model as it always does, and
  ``vt.apply`` goes on the loaded instance (``vt_method=none``: no compressor; the outputs
  are the base wrapper's);
- every ``generate`` is measured (:class:`~vistoken.lmms.metrics.Recorder`); lmms-eval's
  HF wrappers answer ``""`` when ``generate`` raises, so an error recorded there fails the
  run instead of scoring as a wrong answer;
- the rank-padding requests lmms-eval adds to even out ranks are answered but not measured;
- ``clean()``, which lmms-eval calls on every rank once all requests are answered, merges the
  measurements over ranks and hands them to :mod:`vistoken.lmms.report`.
"""

from __future__ import annotations

import logging
from typing import Any

from lmms_eval.models.chat.internvl_hf import InternVLHf
from lmms_eval.models.simple.gemma4 import Gemma4
from lmms_eval.models.simple.llava_hf import LlavaHf
from lmms_eval.models.simple.qwen2_5_vl import Qwen2_5_VL
from lmms_eval.models.simple.qwen2_vl import Qwen2_VL
from lmms_eval.models.simple.qwen3_5 import Qwen3_5
from lmms_eval.models.simple.qwen3_vl import Qwen3_VL

from .metrics import Recorder
from .options import VtArgError, split_model_args
from .report import publish

__all__ = [
    "VistokenGemma4",
    "VistokenInternVL",
    "VistokenLlavaOnevision",
    "VistokenMixin",
    "VistokenQwen2VL",
    "VistokenQwen2_5VL",
    "VistokenQwen3VL",
    "VistokenQwen3_5",
]

log = logging.getLogger(__name__)


class VistokenMixin:
    """vistoken's part of every wrapper (put it before lmms-eval's class)."""

    _vt_family = ""
    #: the base wrapper hands its processor video paths: decode them with PyAV when
    #: torchcodec cannot (transformers 5.x has no other decoder for them)
    _vt_pyav_videos = False

    def __init__(self, **kwargs: Any) -> None:
        try:
            vt_args, rest = split_model_args(kwargs)
        except VtArgError as exc:
            raise SystemExit(str(exc)) from None
        self.vt_args = vt_args
        self.vt_model_args = dict(rest)
        super().__init__(**rest)
        import vistoken as vt
        from vistoken.models._hf import decode_videos_with_pyav

        if self._vt_pyav_videos and decode_videos_with_pyav(getattr(self, "processor", None)):
            log.warning("vistoken: torchcodec cannot decode videos here: %s's processor "
                        "decodes video files with PyAV", type(self).__name__)

        model = self.model  # the unwrapped transformers model
        self.vt_handle = None
        if vt_args.active:
            try:
                self.vt_handle = vt.apply(model, vt_args.method, retention=vt_args.retention,
                                          **vt_args.options)
            except (TypeError, ValueError) as exc:
                raise SystemExit(f"vistoken: cannot apply {vt_args.method!r} to "
                                 f"{type(model).__name__}: {exc}") from None
            self.vt_handle.sync_timing = True  # device time on CUDA; no effect on the CPU
        layer = vt_args.options.get("layer") if vt_args.method == "fastv" else None
        self.vt_recorder = Recorder(model, self.vt_handle, method=vt_args.method,
                                    retention=self.vt_handle.retention if self.vt_handle else None,
                                    layer=layer)
        self._vt_published = False

    def generate_until(self, requests: list[Any]) -> list[str]:
        real = [r for r in requests if not (r.metadata or {}).get("__padding_only__")]
        pad = [r for r in requests if (r.metadata or {}).get("__padding_only__")]
        errors = len(self.vt_recorder.errors)
        out = list(super().generate_until(real)) if real else []
        if len(self.vt_recorder.errors) > errors:
            raise RuntimeError(
                f"vistoken: generate failed {len(self.vt_recorder.errors) - errors} time(s) "
                f"(lmms-eval would have scored an empty answer); first: "
                f"{self.vt_recorder.errors[errors]}"
            )
        if pad:
            self.vt_recorder.paused = True
            try:
                out += list(super().generate_until(pad))
            finally:
                self.vt_recorder.paused = False
        return out

    def clean(self) -> None:
        if not self._vt_published:
            self._vt_published = True
            publish(self)
        super().clean()


class VistokenLlavaOnevision(VistokenMixin, LlavaHf):
    """``vistoken_llava_onevision``: lmms-eval's simple ``llava_hf`` (LLaVA-OneVision and
    LLaVA-Video checkpoints) with a vistoken compressor."""

    _vt_family = "llava_onevision"


class VistokenQwen2VL(VistokenMixin, Qwen2_VL):
    """``vistoken_qwen2_vl``: lmms-eval's simple ``qwen2_vl`` with a vistoken compressor."""

    _vt_family = "qwen2_vl"


class VistokenQwen2_5VL(VistokenMixin, Qwen2_5_VL):
    """``vistoken_qwen2_5_vl``: lmms-eval's simple ``qwen2_5_vl`` with a vistoken compressor."""

    _vt_family = "qwen2_5_vl"


class VistokenQwen3VL(VistokenMixin, Qwen3_VL):
    """``vistoken_qwen3_vl``: lmms-eval's simple ``qwen3_vl`` (Qwen3-VL, dense and MoE) with a
    vistoken compressor."""

    _vt_family = "qwen3_vl"


class VistokenQwen3_5(VistokenMixin, Qwen3_5):
    """``vistoken_qwen3_5``: lmms-eval's simple ``qwen3_5`` (Qwen3.5) with a vistoken
    compressor. lmms-eval's ``enable_thinking`` defaults to true there: it keeps only what
    follows ``</think>``, an empty answer for a model that does not think first."""

    _vt_family = "qwen3_5"


class VistokenGemma4(VistokenMixin, Gemma4):
    """``vistoken_gemma4``: lmms-eval's simple ``gemma4`` (Gemma 4) with a vistoken
    compressor."""

    _vt_family = "gemma4"
    _vt_pyav_videos = True


class VistokenInternVL(VistokenMixin, InternVLHf):
    """``vistoken_internvl``: lmms-eval's ``internvl_hf``, its one wrapper of transformers'
    ``InternVLForConditionalGeneration`` (``OpenGVLab/InternVL3_5-8B-HF`` and the other
    ``-HF`` checkpoints), with a vistoken compressor. A chat wrapper (lmms-eval builds the
    messages from the task's ``doc_to_visual`` and ``doc_to_text``); its ``internvl2`` /
    ``internvl3`` wrappers run the remote-code models instead."""

    _vt_family = "internvl"
    _vt_pyav_videos = True
