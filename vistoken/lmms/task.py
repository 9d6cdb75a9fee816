"""The shipped lmms-eval task ``vistoken_synthetic``: synthetic-benchmark samples as local media.

``vistoken/lmms/tasks/vistoken_synthetic/`` is a task folder in lmms-eval's own YAML format
(``--include_path`` it): ``data/test.jsonl`` names the first :data:`SAMPLES` samples of the
test split of :mod:`vistoken.eval.synthetic` at the reference model's shape (16 frames of
112 px), the same samples and order as ``vistoken eval --limit N`` (every question type in
turn). A ``generate_until`` task; the answer is the first word generated, scored by exact
match.

The media are local files: videos as lossless FFV1 in AVI (decoded back to the exact
pixels the benchmark rendered, so lmms-eval's decord reader gives the model what ``vistoken
eval`` gives it), the ``image_detail`` stills as PIL images (lmms-eval's image convention).
AVI, not Matroska: lmms-eval 0.7.3's ``qwen2_vl`` and ``qwen2_5_vl`` take a path for a video
only when it ends in ``.mp4``, ``.avi`` or ``.mov`` (any other path is silently dropped, and
the model answers the question without the video); every other wrapper takes ``.avi`` too.
:func:`media_path` renders a sample's video on first use (atomically: several ranks may ask at
once) into ``media/`` beside the task's YAML, or ``$XDG_CACHE_HOME/vistoken/lmms`` when that
folder is read-only. No lmms-eval import here.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "SAMPLES",
    "TASK",
    "TASK_DIR",
    "answer_of",
    "doc_text",
    "doc_rows",
    "load_doc_media",
    "media_path",
    "PLAIN_TEMPLATE",
    "save_reference_checkpoint",
    "sample_of",
    "write_docs",
    "write_video",
]

#: The task's name (lmms-eval's built-in names win a clash: this one is vistoken's own).
TASK = "vistoken_synthetic"
#: The folder to give lmms-eval's ``--include_path``.
TASK_DIR = Path(__file__).resolve().parent / "tasks"
#: How many samples the shipped task holds (the first of the test split).
SAMPLES = 12

_FPS = 8


def doc_rows(n: int = SAMPLES, *, split: str = "test", seed: int = 0) -> list[dict[str, Any]]:
    """The task's documents: ``dataset(split, n)`` of the reference shape, one dict each."""
    from ..eval import reference as ref
    from ..eval import synthetic as syn

    rows = []
    for i, s in enumerate(syn.dataset(split, n, seed=seed, frames=ref.FRAMES, size=ref.SIZE)):
        rows.append({
            "doc_id": i,
            "split": split,
            "seed": seed,
            "qtype": s.qtype,
            "index": s.index,
            "frames": int(s.frames.shape[0]),
            "size": int(s.frames.shape[1]),
            "question": s.question,
            "answer": s.answer,
        })
    return rows


def sample_of(doc: dict[str, Any]) -> Any:
    """The :class:`~vistoken.eval.synthetic.Sample` a document stands for."""
    from ..eval import synthetic as syn

    return syn.sample(doc["split"], int(doc["index"]), doc["qtype"], seed=int(doc["seed"]),
                      frames=int(doc["frames"]), size=int(doc["size"]))


def write_video(frames: Any, path: str | Path) -> Path:
    """Write (T, H, W, 3) uint8 ``frames`` to ``path`` losslessly (FFV1 in AVI), atomically."""
    import av
    import numpy as np

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = np.ascontiguousarray(frames)
    fd, tmp = tempfile.mkstemp(suffix=".avi", dir=path.parent)
    os.close(fd)
    try:
        with av.open(tmp, "w", format="avi") as out:
            stream = out.add_stream("ffv1", rate=_FPS)
            stream.width, stream.height = int(frames.shape[2]), int(frames.shape[1])
            stream.pix_fmt = "bgr0"
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    out.mux(packet)
            for packet in stream.encode():
                out.mux(packet)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _media_dir(task_dir: Path) -> Path:
    here = task_dir / "media"
    try:
        here.mkdir(exist_ok=True)
        if os.access(here, os.W_OK):
            return here
    except OSError:
        pass
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "vistoken" / "lmms"


def media_path(doc: dict[str, Any], task_dir: str | Path) -> Path:
    """The local video file of a video document, rendered on first use."""
    from ..eval.synthetic import VERSION

    # the benchmark's version in the name: a cache of an older one is never reused
    name = (f"v{VERSION}-{doc['split']}-s{doc['seed']}-{doc['qtype']}-{doc['index']}"
            f"-{doc['frames']}x{doc['size']}.avi")
    path = _media_dir(Path(task_dir)) / name
    if not path.is_file():
        write_video(sample_of(doc).frames, path)
    return path


def load_doc_media(doc: dict[str, Any], task_dir: str | Path) -> list[Any]:
    """lmms-eval's ``doc_to_visual``: [video path] for a video, [PIL image] for a still."""
    if doc["qtype"] == "image_detail":
        from PIL import Image

        return [Image.fromarray(sample_of(doc).frames[0]).convert("RGB")]
    return [str(media_path(doc, task_dir))]


def doc_text(doc: dict[str, Any]) -> str:
    """The prompt after the visual placeholder: the reference model's question and cue."""
    from ..eval.reference import CUE

    return f"{doc['question']} {CUE}"


def answer_of(text: str) -> str:
    """The answer in a generated text: its first word (``vistoken eval`` reads one token)."""
    words = text.split()
    return words[0] if words else ""


def write_docs(path: str | Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write the documents as JSON lines (how the shipped ``data/test.jsonl`` was made)."""
    Path(path).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in rows))


#: The chat template the local reference checkpoint carries: lmms-eval's HF wrappers format
#: every prompt with the tokenizer's chat template; the reference model was trained on the
#: bare prompt (``"<video> {question} Answer:"``), so its template is the user text itself.
PLAIN_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"


def save_reference_checkpoint(out: str | Path, source: str | Path | None = None) -> Path:
    """Save the reference model (the shipped one, or ``source``) as a local checkpoint for
    lmms-eval: its weights and processor unchanged, plus :data:`PLAIN_TEMPLATE`."""
    from ..eval.reference import load_reference

    out = Path(out)
    model, processor = load_reference(source)
    processor.tokenizer.chat_template = PLAIN_TEMPLATE
    processor.chat_template = PLAIN_TEMPLATE
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out
