"""Run lmms-eval's command line and keep every ``generate`` call's inputs and output.

``python lmms_capture.py OUT.pt <lmms-eval arguments>`` (under lmms-eval's Python) runs
``python -m lmms_eval <arguments>`` in this process after wrapping transformers'
``GenerationMixin.generate``: each call's keywords (the tensors lmms-eval's wrapper built,
moved to the CPU) and its output sequences are appended to a list that is saved to
``OUT.pt`` after every call. The tests feed the same keywords to the same checkpoint with
``vt.apply`` outside lmms-eval and compare the outputs, whatever preprocessing (chat
template, frame sampling, resizing) the family's wrapper did. Where torchcodec cannot decode
video (no FFmpeg libraries), every video processor decodes video files with PyAV, as
vistoken's ``vistoken_gemma4`` / ``vistoken_internvl`` do there, so lmms-eval's own
wrappers of those families run too. Test support only.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path


def _cpu(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value.detach().cpu().clone()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu(v) for v in value)
    return value


def main() -> None:
    import torch
    from transformers import GenerationMixin

    out_path, args = Path(sys.argv[1]), sys.argv[2:]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    calls: list[dict] = []
    original = GenerationMixin.generate

    def generate(self, *a, **kw):
        if a:
            raise TypeError("lmms_capture: generate called with positional arguments")
        out = original(self, **kw)
        seq = out.sequences if hasattr(out, "sequences") else out
        calls.append({"kwargs": _cpu(dict(kw)), "sequences": _cpu(seq)})
        torch.save(calls, out_path)
        return out

    GenerationMixin.generate = generate
    from vistoken.models._hf import pyav_fetch_videos, torchcodec_usable

    if not torchcodec_usable():  # lmms-eval's own gemma4 / internvl_hf could not read a video
        from transformers.video_processing_utils import BaseVideoProcessor

        def fetch_videos(self, urls, sample_indices_fn=None):
            return pyav_fetch_videos(urls, sample_indices_fn)

        BaseVideoProcessor.fetch_videos = fetch_videos
    sys.argv = ["lmms_eval", *args]
    runpy.run_module("lmms_eval", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
