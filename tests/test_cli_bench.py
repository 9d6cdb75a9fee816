"""``vistoken bench fidelity``: a real run on a small input, the defaults, errors and help."""

from __future__ import annotations

import csv
import math
import sys

import pytest
from cli_helpers import assert_one_error, run
from PIL import Image

import vistoken as vt
from vistoken import core
from vistoken.cli import main
from vistoken.video import bundled_video

CLIP = str(bundled_video())
TOKENS_PER_FRAME = 196
NAMES = ["fidelity.md", "fidelity.csv", "fidelity.png"]


def read_csv(path):
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def model_method(monkeypatch):
    """A registered method that acts inside a model (like fastv): never run by the bench."""
    spec = core.MethodSpec(
        name="fake-in-model", fn=lambda x, **k: None, kind="select", stage="llm"
    )
    monkeypatch.setitem(core._REGISTRY, "fake-in-model", spec)
    return "fake-in-model"


def test_fidelity_real_run_writes_one_row_per_method_and_ratio(tmp_path, capsys):
    out = tmp_path / "fid"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    (out / "fidelity.csv").write_text("old")  # our own file name: replaced
    code, stdout, err = run(
        capsys,
        "bench",
        "fidelity",
        "--video",
        CLIP,
        "--frames",
        2,
        "--methods",
        "scc,uniform",
        "--ratios",
        "0.5,0.1",
        "--out",
        out,
        "-q",
    )
    assert code == 0, err
    assert err == ""
    assert sorted(p.name for p in out.iterdir()) == sorted(NAMES + ["keep.txt"])
    assert (out / "keep.txt").read_text() == "mine"

    rows = read_csv(out / "fidelity.csv")
    assert [(r["method"], float(r["retention"])) for r in rows] == [
        ("scc", 0.5),
        ("scc", 0.1),
        ("uniform", 0.5),
        ("uniform", 0.1),
    ]
    n_in = 2 * TOKENS_PER_FRAME
    for r in rows:
        ratio = float(r["retention"])
        assert int(r["tokens"]) == math.ceil(ratio * n_in)  # 196 and 40
        assert 0.0 < float(r["reconstruction"]) <= 1.0 + 1e-6
        assert 0.0 <= float(r["attention_error"]) < 1.0
        if r["method"] == "uniform":  # every frame keeps its share: both frames covered
            assert float(r["coverage"]) == 1.0
        assert float(r["seconds"]) > 0.0  # the compression was timed
    by = {(r["method"], float(r["retention"])): r for r in rows}
    for m in ("scc", "uniform"):  # fewer tokens stand for the input less well
        assert float(by[(m, 0.5)]["reconstruction"]) > float(by[(m, 0.1)]["reconstruction"])
        assert float(by[(m, 0.5)]["attention_error"]) < float(by[(m, 0.1)]["attention_error"])
    # uniform keeps tokens in both frames at any ratio here
    assert float(by[("uniform", 0.1)]["coverage"]) == 1.0

    md = (out / "fidelity.md").read_text()
    assert "bigbuckbunny.mp4" in md and "2 frames x 196 tokens x 1280" in md
    assert "| scc |" in md and "| uniform |" in md and "## Attention error" in md
    with Image.open(out / "fidelity.png") as im:
        assert im.format == "PNG" and im.size[0] > im.size[1] > 100
    assert "2 methods x 2 ratios" in stdout
    for name in NAMES:
        assert str(out / name) in stdout


def test_fidelity_defaults_skip_model_methods_and_write_to_cwd(
    tmp_path, capsys, monkeypatch, model_method
):
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run(capsys, "bench", "fidelity", "--frames", 1, "--ratios", 0.25)
    assert code == 0, err
    rows = read_csv(tmp_path / "vistoken-fidelity" / "fidelity.csv")
    expected = [m for m in vt.methods() if core.get_method(m).stage == "tokens"]
    assert model_method in vt.methods() and model_method not in expected
    assert [r["method"] for r in rows] == expected
    assert {int(r["tokens"]) for r in rows} == {math.ceil(0.25 * TOKENS_PER_FRAME)}
    assert all(float(r["coverage"]) == 1.0 for r in rows)  # one frame, always covered
    assert "bigbuckbunny.mp4" in stdout


def test_fidelity_default_ratios_are_the_report_ratios(tmp_path, capsys):
    out = tmp_path / "fid"
    code, _, err = run(
        capsys, "bench", "fidelity", "--frames", 1, "--methods", "uniform", "--out", out
    )
    assert code == 0, err
    rows = read_csv(out / "fidelity.csv")
    assert [float(r["retention"]) for r in rows] == [0.5, 0.35, 0.25, 0.1, 0.05]
    assert [int(r["tokens"]) for r in rows] == [98, 69, 49, 20, 10]


def test_fidelity_progress_bar_on_a_terminal_and_quiet(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    argv = ["bench", "fidelity", "--frames", 1, "--methods", "uniform", "--ratios", "0.5,0.1"]
    code, _, err = run(capsys, *argv, "--out", tmp_path / "a")
    assert code == 0
    assert "fidelity" in err and "2/2" in err  # the tqdm bar over (method, ratio) runs
    code, _, err = run(capsys, *argv, "--out", tmp_path / "b", "-q")
    assert code == 0 and err == ""


@pytest.mark.parametrize(
    "argv, code, needle",
    [
        (["--methods", "nope"], 2, "known methods: "),
        (["--methods", "scc,{model}"], 2, "acts inside a model"),
        (["--methods", "scc,scc"], 2, "given twice"),
        (["--methods", "scc,"], 2, "--methods"),
        (["--ratios", "0.5,1.5"], 2, "(0, 1]"),
        (["--ratios", "0"], 2, "--ratios"),
        (["--ratios", "nan"], 2, "--ratios"),
        (["--ratios", "half"], 2, "--ratios"),
        (["--ratios", "0.5,0.5"], 2, "twice"),
        (["--frames", "0"], 2, "--frames"),
        (["--frames", "-3"], 2, "--frames"),
        (["--device", "warp9"], 2, "--device"),
        (["--video", "{tmp}/missing.mp4"], 1, "missing.mp4"),
        (["--video", "{tmp}"], 1, "is a folder"),
        (["--video", "{text}"], 1, "not a video or image"),
        (["--out", "{file}"], 1, "not a folder"),
        (["--bogus"], 2, "unrecognized arguments"),
        (["--frames", "40", "--max-frames", "39"], 1, "raise it with --max-frames N"),
        (["--max-bytes", "12X"], 2, "argument --max-bytes"),
    ],
)
def test_fidelity_errors_are_one_line(argv, code, needle, tmp_path, capsys, model_method):
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    out = tmp_path / "out"
    subs = {"{tmp}": str(tmp_path), "{text}": str(text), "{file}": str(a_file)}
    argv = [subs.get(a, a).replace("{tmp}", str(tmp_path)) for a in argv]
    argv = [a.replace("{model}", model_method) for a in argv]
    if "--out" not in argv:
        argv += ["--out", str(out)]
    got, stdout, err = run(capsys, "bench", "fidelity", "--frames", "1", *argv)
    assert got == code, err
    assert needle in assert_one_error(err)
    assert stdout == ""
    assert not out.exists()  # failed before writing anything
    assert a_file.read_text() == "x"


def test_fidelity_report_is_all_or_nothing(tmp_path, capsys, monkeypatch):
    out = tmp_path / "fid"
    out.mkdir()
    old = {name: f"old {name}".encode() for name in NAMES}
    for name, data in old.items():
        (out / name).write_bytes(data)
    tiny = tmp_path / "tiny.png"
    Image.new("RGB", (64, 48), (90, 160, 30)).save(tiny)
    argv = ["bench", "fidelity", "--video", tiny, "--methods", "uniform", "--ratios", 0.5, "-q"]

    def no_plot(*args, **kwargs):
        raise RuntimeError("plotting failed")

    monkeypatch.setattr("vistoken.eval.fidelity._plot", no_plot)
    code, stdout, err = run(capsys, *argv, "--out", out)
    assert code == 1 and stdout == "" and "plotting failed" in assert_one_error(err)
    # fidelity.md and .csv were written before the plot failed: not moved into place
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old

    monkeypatch.undo()
    outside = tmp_path / "outside.csv"
    outside.write_text("precious")
    (out / "fidelity.csv").unlink()
    (out / "fidelity.csv").symlink_to(outside)
    code, stdout, err = run(capsys, *argv, "--out", out)
    assert code == 1 and "fidelity.csv' is a symbolic link" in assert_one_error(err)
    assert outside.read_text() == "precious"
    assert (out / "fidelity.md").read_bytes() == old["fidelity.md"]


@pytest.mark.parametrize(
    "argv, needle",
    [(["bench"], "a benchmark is required: fidelity"), (["bench", "speed"], "invalid choice")],
)
def test_bench_without_a_benchmark(argv, needle, capsys):
    code, stdout, err = run(capsys, *argv)
    assert code == 2 and stdout == ""
    assert needle in assert_one_error(err)


def test_fidelity_debug_shows_the_exception(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["bench", "fidelity", "--video", str(tmp_path / "missing.mp4"), "--debug"])


@pytest.mark.parametrize(
    "command, needles",
    [
        ([], ["bench"]),
        (["bench"], ["fidelity", "usage: vistoken bench"]),
        (
            ["bench", "fidelity"],
            [
                "--video",
                "--frames",
                "--methods",
                "--ratios",
                "--out",
                "--device",
                "--quiet",
                "vistoken-fidelity",
                "bigbuckbunny.mp4",
                "0.5,0.35,0.25,0.1,0.05",
                "fidelity.csv",
                "nothing else there is touched",
                "--max-pixels",
                "--max-frames",
                "--max-bytes",
            ],
        ),
    ],
)
def test_help_lists_fidelity(command, needles, capsys):
    code, stdout, err = run(capsys, *command, "--help")
    assert code == 0 and err == ""
    text = " ".join(stdout.split())  # argparse wraps to the terminal width
    for needle in needles:
        assert needle in text, needle
