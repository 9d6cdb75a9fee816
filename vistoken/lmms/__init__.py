"""vistoken's lmms-eval plugin: every vistoken method on lmms-eval's own model wrappers.

Install ``vistoken[lmms]`` and lmms-eval finds the wrappers through its entry-point group
``lmms_eval.models`` (:func:`manifests`); no fork, no environment variable::

    python -m lmms_eval --model vistoken_llava_onevision \\
        --model_args pretrained=llava-hf/llava-onevision-qwen2-7b-ov-hf,max_frames_num=32,\\
vt_method=scc,vt_retention=0.1 --tasks videomme --batch_size 1 --output_path logs/

Each wrapper subclasses lmms-eval's own wrapper of the family (:data:`MODELS`), takes the
``vt_*`` model_args out before it (:mod:`.options`), applies ``vt.apply`` to the loaded model
and measures every generation (:mod:`.metrics`); ``vt_method=none`` runs the base wrapper
untouched. :mod:`.report` merges the measurements over ranks and writes them into lmms-eval's
results and a JSON file of vistoken's. :mod:`.task` is the shipped offline task.

This package imports without lmms-eval: only :mod:`.wrappers` (loaded by lmms-eval itself,
through the class paths of the manifests) needs it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MODELS", "manifests"]

#: model id -> (the wrapper's class in vistoken.lmms.wrappers, the lmms-eval wrapper it builds
#: on and whether that one is a simple or a chat wrapper)
MODELS: dict[str, tuple[str, str]] = {
    "vistoken_llava_onevision": ("VistokenLlavaOnevision", "llava_hf (simple)"),
    "vistoken_qwen2_vl": ("VistokenQwen2VL", "qwen2_vl (simple)"),
    "vistoken_qwen2_5_vl": ("VistokenQwen2_5VL", "qwen2_5_vl (simple)"),
    "vistoken_qwen3_vl": ("VistokenQwen3VL", "qwen3_vl (simple)"),
    "vistoken_qwen3_5": ("VistokenQwen3_5", "qwen3_5 (simple)"),
    "vistoken_gemma4": ("VistokenGemma4", "gemma4 (simple)"),
    "vistoken_internvl": ("VistokenInternVL", "internvl_hf (chat)"),
}


def manifests() -> list[Any]:
    """The entry point of the ``lmms_eval.models`` group: one ModelManifest per wrapper.

    Imports nothing but lmms-eval's manifest class (the wrappers load when a run asks for
    them), so it cannot fail and disable the entry points after it.
    """
    from lmms_eval.models.registry_v2 import ModelManifest

    out = []
    for name, (cls, base) in MODELS.items():
        path = f"{__name__}.wrappers.{cls}"
        if base.endswith("(chat)"):
            out.append(ModelManifest(model_id=name, chat_class_path=path))
        else:
            out.append(ModelManifest(model_id=name, simple_class_path=path))
    return out
