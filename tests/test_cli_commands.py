"""The command line, run in-process (and once through the installed entry point)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from vistoken.cli import main
from vistoken.video import bundled_video


def run(capsys, *argv):
    code = main(list(argv))
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def assert_one_error_line(err: str) -> None:
    lines = [line for line in err.splitlines() if "vistoken: error:" in line]
    assert len(lines) == 1, err
    assert "Traceback" not in err


def test_compress_writes_summary_and_sheet(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    code, stdout, _ = run(capsys, "compress", str(bundled_video()), "--frames", "2",
                          "--retention", "0.2", "--out", str(out))
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["input_tokens"] == 2 * 196
    assert summary["output_tokens"] == math.ceil(0.2 * 2 * 196)
    assert summary["method"] == "scc" and "tau" in summary
    assert len(summary["frames_used"]) == 2
    assert set(summary["seconds"]) == {"decode", "encode", "compress", "sheet"}
    assert (out / "sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "mine.txt").read_text() == "keep me"
    assert "wrote" in stdout


def test_compress_with_tau_and_another_method(tmp_path, capsys):
    code, _, _ = run(capsys, "compress", str(bundled_video()), "--frames", "1", "--tau", "0.8",
                     "--out", str(tmp_path / "a"))
    assert code == 0
    assert json.loads((tmp_path / "a" / "summary.json").read_text())["tau"] == 0.8
    code, _, _ = run(capsys, "compress", str(bundled_video()), "--frames", "1", "--method",
                     "uniform", "--retention", "0.25", "--out", str(tmp_path / "b"))
    assert code == 0
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["output_tokens"] == 49


@pytest.mark.parametrize(
    "argv, code, words",
    [
        (["compress", "missing.mp4"], 1, "no such file"),
        (["compress", "x.mp4", "--retention", "1.5"], 2, "retention must be in (0, 1]"),
        (["compress", "x.mp4", "--retention", "nan"], 2, "retention must be in (0, 1]"),
        (["compress", "x.mp4", "--frames", "0"], 2, "at least 1"),
        (["demo", "--method", "nope"], 1, "known methods"),
        (["demo", "--method", "pool", "--tau", "0.5"], 2, "scc only"),
        (["compress", "x.mp4", "--tau", "0.5", "--retention", "0.2"], 2, "not allowed"),
    ],
)
def test_bad_input_is_one_line(capsys, argv, code, words):
    got, _, err = run(capsys, *argv)
    assert got == code
    assert_one_error_line(err)
    assert words in err


def test_not_a_video(tmp_path, capsys):
    bad = tmp_path / "t.mp4"
    bad.write_text("not a video")
    code, _, err = run(capsys, "compress", str(bad), "--out", str(tmp_path / "o"))
    assert code == 1
    assert_one_error_line(err)
    assert "not a video or image" in err
    assert not (tmp_path / "o").exists()


def test_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    code, _, err = run(capsys, "demo", "--frames", "1", "--out", str(f))
    assert code == 2 and "not a directory" in err
    assert f.read_text() == "x"


def test_methods_lists_every_method(capsys):
    import vistoken as vt

    code, out, _ = run(capsys, "methods")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == vt.methods()


@pytest.mark.parametrize("cmd, opt", [("compress", "--retention"), ("demo", "--frames"),
                                      ("methods", "usage")])
def test_help(capsys, cmd, opt):
    code, out, _ = run(capsys, cmd, "--help")
    assert code == 0 and opt in out


def test_entry_point_installed():
    exe = Path(sys.executable).with_name("vistoken")
    res = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False)
    assert res.returncode == 0
    assert "compress" in res.stdout and "demo" in res.stdout
