"""Shared helpers for the command-line tests: run ``vistoken`` in-process."""

from __future__ import annotations

from vistoken.cli import main


def run(capsys, *argv):
    """(exit code, stdout, stderr) of ``vistoken argv...``."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error(err: str) -> str:
    """stderr holds exactly one ``vistoken: error: ...`` line and nothing else."""
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("vistoken: error: "), err
    return lines[0]
