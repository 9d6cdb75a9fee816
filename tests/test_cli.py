"""The ``vistoken`` command line, run in-process through ``main``."""

from __future__ import annotations

import builtins
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import assert_one_error, run
from media_helpers import forged_png, gif_with_screen
from PIL import Image

import vistoken as vt
from vistoken import core
from vistoken.cli import UsageError, main
from vistoken.video import bundled_video
from vistoken.viz import sheet_layout

CLIP = str(bundled_video())
TOKENS_PER_FRAME = 196


def test_compress_writes_consistent_summary_and_sheet(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    keep = out / "keep.txt"
    keep.write_text("mine")
    (out / "summary.json").write_text("old")  # our own file: replaced
    code, stdout, err = run(
        capsys, "compress", CLIP, "--frames", 2, "--retention", 0.1, "--out", out
    )
    assert code == 0, err
    assert keep.read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "sheet.png", "summary.json"]

    s = json.loads((out / "summary.json").read_text())
    assert s["input"] == str(Path(CLIP).resolve())
    assert s["method"] == "scc"
    assert len(s["frames_used"]) == len(s["timestamps"]) == 2
    assert s["frames_used"] == sorted(s["frames_used"]) and s["frames_used"][0] >= 0
    assert s["input_tokens"] == 2 * TOKENS_PER_FRAME
    assert s["output_tokens"] == math.ceil(0.1 * 2 * TOKENS_PER_FRAME) == 40
    assert s["retention"] == pytest.approx(40 / 392)
    assert s["retention_requested"] == 0.1
    assert isinstance(s["tau"], float) and s["info"]["tau"] == s["tau"]
    assert "sizes" not in s["info"]  # tensors are left out
    assert sum(s["output_tokens_per_frame"]) == 40
    assert s["dropped_per_frame"] == [0, 0]
    assert set(s["seconds"]) >= {"decode", "encode", "compress", "sheet"}
    assert s["seconds"]["decode"] > 0 and s["seconds"]["encode"] > 0  # really measured
    assert s["notes"] == []
    assert s["encoder"] == "efficientnet-lite0 448px 14x14x1280"
    assert s["vistoken_version"] == vt.__version__

    lay = sheet_layout(2, (720, 1280))
    assert Image.open(out / "sheet.png").size == (lay.width, lay.height)
    assert "392 -> 40" in stdout
    assert str(out / "summary.json") in stdout and str(out / "sheet.png") in stdout


def test_compress_with_tau(tmp_path, capsys):
    out = tmp_path / "tau"
    code, stdout, err = run(capsys, "compress", CLIP, "--frames", 2, "--tau", 0.9, "--out", out)
    assert code == 0, err
    s = json.loads((out / "summary.json").read_text())
    assert s["tau"] == 0.9 and s["options"] == {"tau": 0.9}
    assert s["retention_requested"] is None
    assert 1 <= s["output_tokens"] <= 392
    assert s["output_tokens"] == s["info"]["temporal_tokens"]
    assert s["retention"] == pytest.approx(s["output_tokens"] / 392)


def test_demo_needs_no_arguments_and_defaults_to_cwd(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run(capsys, "demo", "--frames", 1, "--method", "scc")
    assert code == 0, err
    s = json.loads((tmp_path / "vistoken-demo" / "summary.json").read_text())
    assert Path(s["input"]).name == "bigbuckbunny.mp4"
    assert s["output_tokens"] == math.ceil(0.1 * TOKENS_PER_FRAME)
    assert (tmp_path / "vistoken-demo" / "sheet.png").is_file()
    assert "bigbuckbunny.mp4" in stdout


def test_methods_lists_every_method_with_its_description(capsys):
    code, stdout, _ = run(capsys, "methods")
    assert code == 0
    heads = [ln for ln in stdout.splitlines() if not ln.startswith(" ")]
    assert len(heads) == len(vt.methods())
    for name, line in zip(vt.methods(), heads, strict=True):
        spec = core.get_method(name)
        assert line.split()[0] == name
        assert spec.description in line and spec.kind in line
    # every option with its default (or "required") under its method
    block = stdout.split("\nscc ")[1].split("\ntome ")[0]
    assert "tau (default None)" in block and "mode (default 'exact')" in block
    assert "received (required)" in stdout and "layer (default 2)" in stdout


@pytest.fixture
def fake_method(monkeypatch):
    """A registered method without a tau option (whatever else is registered)."""
    spec = core.MethodSpec(name="fake-select", fn=lambda x, **k: None, kind="select")
    monkeypatch.setitem(core._REGISTRY, "fake-select", spec)
    return "fake-select"


@pytest.mark.parametrize(
    "argv, code, needle",
    [
        (["compress", "{tmp}/missing.mp4"], 1, "missing.mp4"),
        (["compress", "{text}"], 1, "not a video or image"),
        (["compress", "{tmp}"], 1, "is a folder"),
        (["compress", CLIP, "--retention", "1.5"], 2, "--retention"),
        (["compress", CLIP, "--retention", "nan"], 2, "--retention"),
        (["compress", CLIP, "--retention", "0"], 2, "--retention"),
        (["compress", CLIP, "--method", "nope"], 2, "known methods: "),
        (["compress", CLIP, "--frames", "0"], 2, "--frames"),
        (["compress", CLIP, "--frames", "two"], 2, "--frames"),
        (["compress", CLIP, "--tau", "0.5", "--retention", "0.2"], 2, "not allowed"),
        (["compress", CLIP, "--tau", "0.5", "--method", "{fake}"], 2, "no tau option"),
        (["compress", CLIP, "--option", "bogus=1"], 2, "accepted: tau"),
        (["compress", CLIP, "--option", "noequals"], 2, "KEY=VALUE"),
        (["compress", CLIP, "--start", "3", "--end", "1"], 2, "--end"),
        (["compress", CLIP, "--sampling", "random"], 2, "--sampling"),
        (["compress", CLIP, "--out", "{file}"], 1, "not a folder"),
        (["compress"], 2, "PATH"),
        (["frobnicate"], 2, "invalid choice"),
        ([], 2, "command is required"),
        (["demo", "--start", "100", "--frames", "1"], 1, "beyond the end"),
    ],
)
def test_errors_are_one_line_without_traceback(
    argv, code, needle, tmp_path, capsys, monkeypatch, fake_method
):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    out = tmp_path / "out"
    subs = {"{tmp}": str(tmp_path), "{text}": str(text), "{fake}": fake_method}
    subs["{file}"] = str(a_file)
    argv = [subs.get(a, a).replace("{tmp}", str(tmp_path)) for a in argv]
    if argv and argv[0] in ("compress", "demo") and "--out" not in argv:
        argv += ["--out", str(out)]
    got, stdout, err = run(capsys, *argv)
    assert got == code, err
    line = assert_one_error(err)
    assert needle in line
    assert stdout == ""
    assert not out.exists()  # failed before writing anything
    assert a_file.read_text() == "x"


OVER_LIMITS = [
    ("bomb.png", forged_png(20000, 20000), [], "an image of 400,000,000 pixels, more than "),
    ("big.png", forged_png(10000, 10000), [], "a frame of 10000x10000 = 100,000,000 pixels"),
    ("screen.gif", gif_with_screen(9000, 9000), [], "a frame of 9000x9000 = 81,000,000 "),
    ("pixels", None, ["--max-pixels", "1000"], "the limit --max-pixels=1,000; raise it with "),
    ("frames", None, ["--frames", "40", "--max-frames", "39"], "40 frames to decode, more "),
    ("bytes", None, ["--frames", "2", "--max-bytes", "1M"], "the limit --max-bytes=1,048,576"),
]


@pytest.mark.parametrize(
    ("name", "data", "flags", "needle"), OVER_LIMITS, ids=[c[0] for c in OVER_LIMITS]
)
def test_inputs_over_the_limits_are_one_line_errors(tmp_path, capsys, name, data, flags, needle):
    if data is None:
        path = CLIP
    else:
        path = tmp_path / name
        path.write_bytes(data)
    out = tmp_path / "out"
    code, stdout, err = run(capsys, "compress", path, *flags, "--out", out)
    assert code == 1 and stdout == ""
    line = assert_one_error(err)
    assert needle in line
    assert line.endswith(" N") or line.endswith(" SIZE")  # how to raise the limit
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--max-bytes", "12X"], "argument --max-bytes: must be a size in bytes"),
        (["--max-bytes", "0"], "argument --max-bytes"),
        (["--max-pixels", "0"], "argument --max-pixels"),
        (["--max-frames", "many"], "argument --max-frames"),
    ],
)
def test_bad_limit_values_are_usage_errors(tmp_path, capsys, flags, needle):
    code, _, err = run(capsys, "compress", CLIP, *flags, "--out", tmp_path / "out")
    assert code == 2 and needle in assert_one_error(err)


def test_byte_sizes():
    from vistoken.cli.common import byte_size as _byte_size
    from vistoken.cli.common import size_text as _size_text

    assert _byte_size("1000000") == 1_000_000
    assert _byte_size("512M") == _byte_size("512mib") == 512 * 2**20
    assert _byte_size("1.5G") == 3 * 2**29 and _byte_size("2 GB") == 2**31
    assert _size_text(2**31) == "2G" and _size_text(1000) == "1000"


def test_one_integer_rule_for_every_count_flag():
    import argparse

    from vistoken.cli.common import ANY_INT, COUNT, POSITIVE

    assert (POSITIVE("3"), COUNT("0"), ANY_INT("-2")) == (3, 0, -2)
    cases = [
        (POSITIVE, "0", "must be >= 1, got '0'"),
        (POSITIVE, "1.5", "must be an integer >= 1, got '1.5'"),
        (COUNT, "-1", "must be >= 0, got '-1'"),
        (ANY_INT, "x", "must be an integer, got 'x'"),
    ]
    for parse, text, message in cases:
        with pytest.raises(argparse.ArgumentTypeError) as info:
            parse(text)
        assert str(info.value) == message


def test_summary_statistics_are_the_library_ones(tmp_path, capsys):
    from vistoken.pipeline import encode
    from vistoken.stats import frame_stats

    out = tmp_path / "out"
    code, _, err = run(
        capsys, "compress", CLIP, "--frames", 2, "--method", "uniform", "--out", out, "-q"
    )
    assert code == 0, err
    s = json.loads((out / "summary.json").read_text())
    enc = encode(CLIP, 2)
    result = vt.compress(enc.tokens, "uniform", retention=0.1, grid=enc.grid)
    expected = frame_stats(result, frames=2, tokens_per_frame=TOKENS_PER_FRAME)
    assert {k: s[k] for k in expected} == expected
    assert sum(s["dropped_per_frame"]) == 2 * TOKENS_PER_FRAME - 40  # a selection drops


@pytest.fixture
def tiny_png(tmp_path):
    """A 1-frame input that decodes and encodes fast."""
    path = tmp_path / "tiny.png"
    Image.new("RGB", (64, 48), (90, 160, 30)).save(path)
    return path


@pytest.fixture
def old_run(tmp_path):
    """An output folder holding the outputs of an earlier run, and a file of the user's."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text('{"old": true}')
    Image.new("RGB", (8, 8), (1, 2, 3)).save(out / "sheet.png")
    (out / "keep.txt").write_text("mine")
    return out


def files_of(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_failing_summary_keeps_the_old_sheet(tiny_png, old_run, capsys, monkeypatch):
    before = files_of(old_run)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device", "summary.json")

    monkeypatch.setattr("vistoken.cli.compress.dumps", disk_full)
    code, stdout, err = run(capsys, "compress", tiny_png, "--frames", 1, "--out", old_run, "-q")
    assert code == 1 and stdout == ""
    assert "No space left on device" in assert_one_error(err)
    assert files_of(old_run) == before  # the new sheet was made but never moved into place


@pytest.mark.parametrize("name", ["sheet.png", "summary.json"])
def test_a_symlinked_output_is_refused_before_any_work(
    tiny_png, old_run, tmp_path, capsys, monkeypatch, name
):
    outside = tmp_path / "outside.dat"
    outside.write_bytes(b"precious")
    (old_run / name).unlink()
    (old_run / name).symlink_to(outside)
    before = files_of(old_run)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the input was decoded")

    monkeypatch.setattr("vistoken.video.load_frames", no_decoding)
    code, stdout, err = run(capsys, "compress", tiny_png, "--out", old_run)
    assert code == 1 and stdout == ""
    line = assert_one_error(err)
    assert f"{old_run / name}' is a symbolic link" in line and "never written through" in line
    assert outside.read_bytes() == b"precious"
    assert (old_run / name).is_symlink() and files_of(old_run) == before


def test_an_output_name_that_is_a_folder_is_refused(tiny_png, old_run, capsys):
    (old_run / "summary.json").unlink()
    (old_run / "summary.json").mkdir()
    sheet = (old_run / "sheet.png").read_bytes()
    code, _, err = run(capsys, "compress", tiny_png, "--out", old_run)
    assert code == 1 and "summary.json' exists and is not a regular file" in assert_one_error(err)
    assert (old_run / "sheet.png").read_bytes() == sheet


def test_compress_replaces_the_old_outputs(tiny_png, old_run, capsys):
    code, _, err = run(capsys, "compress", tiny_png, "--frames", 1, "--out", old_run, "-q")
    assert code == 0, err
    assert sorted(p.name for p in old_run.iterdir()) == ["keep.txt", "sheet.png", "summary.json"]
    assert json.loads((old_run / "summary.json").read_text())["input_tokens"] == TOKENS_PER_FRAME
    assert (
        Image.open(old_run / "sheet.png").size == Image.open(old_run / "sheet.png").size != (8, 8)
    )


def test_out_of_memory_is_one_line(tmp_path, capsys, monkeypatch):
    def exhausted(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr("vistoken.video.load_frames", exhausted)
    code, stdout, err = run(capsys, "compress", CLIP, "--out", tmp_path / "out")
    assert code == 1 and stdout == ""
    assert "out of memory: use fewer --frames" in assert_one_error(err)
    with pytest.raises(MemoryError):
        main(["compress", CLIP, "--out", str(tmp_path / "out"), "--debug"])


def test_bad_option_value_is_a_usage_error_before_any_work(tmp_path, capsys):
    """The registry's option check runs before decoding (it used to surface from the method,
    exit 1, after the video was decoded and encoded)."""
    out = tmp_path / "out"
    code, stdout, err = run(
        capsys, "demo", "--frames", 1, "--option", "mode=bogus", "--out", out, "--quiet"
    )
    assert code == 2
    assert "mode must be one of ('exact', 'official')" in assert_one_error(err)
    code, _, err = run(capsys, "demo", "--option", "window=0", "--method", "dycoke", "--quiet")
    assert code == 2 and "window must be an int in [1, " in assert_one_error(err)
    assert not (out / "summary.json").exists()


def test_debug_shows_the_exception(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["compress", str(tmp_path / "missing.mp4"), "--debug", "--out", str(tmp_path)])
    with pytest.raises(UsageError, match="known methods"):
        main(["compress", CLIP, "--method", "nope", "--debug", "--out", str(tmp_path)])


@pytest.mark.parametrize(
    "command, needles",
    [
        ([], ["compress", "demo", "methods", "--version"]),
        (
            ["compress"],
            [
                "PATH",
                "--method",
                "--retention",
                "--tau",
                "--frames",
                "--sampling",
                "--start",
                "--end",
                "--out",
                "--seed",
                "--debug",
                "summary.json",
                "nothing else there is touched",
                "--max-pixels",
                "--max-frames",
                "--max-bytes",
            ],
        ),
        (
            ["demo"],
            ["bigbuckbunny.mp4", "--out", "--frames", "--method", "--retention", "vistoken-demo"],
        ),
        (["methods"], ["usage: vistoken methods"]),
    ],
)
def test_help(command, needles, capsys):
    code, stdout, err = run(capsys, *command, "--help")
    assert code == 0 and err == ""
    for needle in needles:
        assert needle in stdout, needle


def test_version(capsys):
    code, stdout, _ = run(capsys, "--version")
    assert code == 0 and stdout.strip() == f"vistoken {vt.__version__}"


def test_installed_entry_point(tmp_path):
    exe = Path(sys.executable).with_name("vistoken")
    if not exe.is_file():
        pytest.skip("the vistoken console script is not installed next to this Python")
    ok = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "compress" in ok.stdout and "demo" in ok.stdout


# ------------------------------------------------------------------------------------------
# Ctrl-C: exit 130 with one line at any point, the start-up imports included

# what the installed console script runs (pip's generated wrapper)
ENTRY = "import sys; from vistoken.cli import main; sys.exit(main())"


def run_interrupted(capsys, *argv):
    """run(), failing the test (not the session) if KeyboardInterrupt escapes main()."""
    try:
        return run(capsys, *argv)
    except KeyboardInterrupt:
        pytest.fail("KeyboardInterrupt escaped main()")


def test_interrupt_while_importing_torch_in_process(tmp_path, capsys, monkeypatch):
    real_import = builtins.__import__

    def interrupted(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise KeyboardInterrupt
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", interrupted)
    code, stdout, err = run_interrupted(capsys, "compress", CLIP, "--out", tmp_path / "out")
    assert code == 130 and stdout == ""
    assert assert_one_error(err) == "vistoken: error: interrupted"
    assert not (tmp_path / "out").exists()
    with pytest.raises(KeyboardInterrupt):  # --debug shows the traceback
        main(["compress", CLIP, "--out", str(tmp_path / "out"), "--debug"])


def test_interrupt_while_building_the_parser(capsys, monkeypatch):
    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr("vistoken.cli.app.build_parser", interrupted)
    code, _, err = run_interrupted(capsys, "methods")
    assert code == 130 and assert_one_error(err) == "vistoken: error: interrupted"


def test_console_entry_imports_no_torch_before_main(tmp_path):
    # Ctrl-C during "import torch", simulated: an import hook raising KeyboardInterrupt. The
    # entry imports vistoken.cli (and vistoken) before main() runs; neither may import torch.
    hook = (
        "import builtins\n"
        "real = builtins.__import__\n"
        "def hook(name, *a, **k):\n"
        "    if name.split('.')[0] == 'torch':\n"
        "        raise KeyboardInterrupt\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = hook\n"
    )
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-c", hook + ENTRY, "compress", CLIP, "--out", out],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr == "vistoken: error: interrupted\n" and done.stdout == ""
    assert not out.exists()


def test_sigint_during_startup_exits_130_with_one_line(tmp_path):
    # a real SIGINT, sent as soon as the entry has imported vistoken.cli: main() is then
    # importing torch and the rest (import times are streamed to stderr to know when)
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "compress", CLIP, "--out", out],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},
        # a suite started in the background by a non-interactive shell (`make test &`) runs
        # with SIGINT ignored, and a child inherits that (Python then installs no
        # KeyboardInterrupt handler): give the child the default disposition a terminal has
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        lines: list[str] = []
        seen_cli = False
        for line in proc.stderr:
            lines.append(line)
            if seen_cli:
                break  # an import finished after vistoken.cli's: main() is running
            seen_cli = line.rstrip().rsplit("|", 1)[-1].strip() == "vistoken.cli"
        assert seen_cli, "".join(lines[-20:])
        assert not any("torch" in ln for ln in lines[:-1])  # not imported before main()
        proc.send_signal(signal.SIGINT)
        stdout, rest = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proc.wait()
    err = [ln for ln in (lines + rest.splitlines(True)) if not ln.startswith("import time:")]
    assert proc.returncode == 130, "".join(err)
    assert err == ["vistoken: error: interrupted\n"] and stdout == ""
    assert not out.exists()
