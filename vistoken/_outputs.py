"""Writing a command's output files into a folder: all of them or none, never through a link.

The rule shared by every writer of the ``vistoken`` command line (``summary.json`` and
``sheet.png`` of ``compress``/``demo``, ``fidelity.md/.csv/.png`` of ``bench fidelity``, via
:func:`vistoken.eval.write_report`):

* The folder is created if missing; other files in it are never touched.
* Each output is written to a new hidden temporary file in the same folder
  (``.NAME.<random>.tmp.<suffix>``) and renamed over ``NAME`` (an atomic replace) only after
  *every* output was written successfully. If any writer fails (or the run is interrupted),
  the temporary files are removed and the old outputs are left exactly as they were.
* An output name that is a symbolic link (even a dangling one), a folder or anything else but
  a regular file is refused with :class:`OutputError` before anything is written: links are
  never followed out of the folder, nor replaced.

The renames themselves are one ``os.replace`` per file; the window between the first and the
last is a few system calls long, and in it a crash can leave a mix of old and new files.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

__all__ = ["OutputError", "check_outputs", "write_outputs"]


class OutputError(OSError):
    """An output file name in the output folder that cannot be replaced safely."""


def check_outputs(out_dir: Path, names: Iterable[str]) -> None:
    """Refuse an output folder, or output names in it, that cannot be replaced safely.

    Cheap and side-effect free, so commands call it before doing any work (and
    :func:`write_outputs` calls it again right before renaming).

    Raises:
        NotADirectoryError: ``out_dir`` exists and is not a folder.
        OutputError: ``out_dir / name`` is a symbolic link, a folder or another non-file.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"output folder {str(out_dir)!r} exists and is not a folder")
    for name in names:
        target = out_dir / name
        if target.is_symlink():
            raise OutputError(
                f"{str(target)!r} is a symbolic link: output files are never written through "
                "links; remove it or choose another output folder"
            )
        if target.exists() and not target.is_file():
            raise OutputError(
                f"{str(target)!r} exists and is not a regular file; remove it or choose another "
                "output folder"
            )


def _temp_path(out_dir: Path, name: str) -> Path:
    """A new empty file next to ``out_dir / name``, created exclusively (so never a link)
    with the usual permissions (0o666 minus the umask)."""
    suffix = Path(name).suffix  # kept last: writers may pick the format from it
    while True:
        path = out_dir / f".{name}.{secrets.token_hex(4)}.tmp{suffix}"
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return path


def write_outputs(
    out_dir: Path, writers: Mapping[str, Callable[[Path], object]]
) -> dict[str, Path]:
    """Write every output of ``writers`` into ``out_dir``, all or none (see the module
    docstring).

    Args:
        out_dir: the output folder, created if missing.
        writers: output file name -> a function that writes that file's content to the path
            it is given (a temporary file in ``out_dir``). They run in order, so one may use
            what an earlier one computed (e.g. its timing).

    Returns:
        output file name -> its final path, in the order of ``writers``.

    Raises:
        NotADirectoryError / OutputError: see :func:`check_outputs`; nothing is written.
        Whatever a writer raises, after removing the temporary files; the old outputs are
        untouched.
    """
    out_dir = Path(out_dir)
    names = list(writers)
    check_outputs(out_dir, names)
    out_dir.mkdir(parents=True, exist_ok=True)
    temps: dict[str, Path] = {}
    renamed: set[str] = set()
    try:
        for name, write in writers.items():
            temps[name] = _temp_path(out_dir, name)
            write(temps[name])
            with open(temps[name], "rb") as f:
                os.fsync(f.fileno())  # the content is on disk before the rename
        check_outputs(out_dir, names)  # again: a link may have appeared meanwhile
        for name in names:
            os.replace(temps[name], out_dir / name)
            renamed.add(name)
    finally:
        for name, path in temps.items():
            if name not in renamed:
                path.unlink(missing_ok=True)
    return {name: out_dir / name for name in names}
