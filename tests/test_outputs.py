"""vistoken._outputs: every output lands or none does, old files survive errors, links are
never written through."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vistoken._outputs import OutputError, check_outputs, write_outputs


def text_writer(text: str):
    def write(path: Path) -> None:
        path.write_text(text)

    return write


def failing_writer(exc: BaseException):
    def write(path: Path) -> None:
        path.write_text("half")  # a partial file, as a failing writer leaves it
        raise exc

    return write


def listing(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture
def old_outputs(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    for name in ("a.txt", "b.txt", "other.txt"):
        (out / name).write_text(f"old {name}")
    return out


def test_writes_every_output_in_order_and_leaves_the_rest(old_outputs: Path) -> None:
    seen = []

    def first(path: Path) -> None:
        assert path.parent == old_outputs and path.name.startswith(".a.txt.")
        assert path.suffix == ".txt" and path.read_text() == ""  # a fresh, empty file
        seen.append("a")
        path.write_text("new a")

    def second(path: Path) -> None:
        assert seen == ["a"] and (old_outputs / "a.txt").read_text() == "old a.txt"
        path.write_text("new b")

    paths = write_outputs(old_outputs, {"a.txt": first, "b.txt": second})
    assert paths == {"a.txt": old_outputs / "a.txt", "b.txt": old_outputs / "b.txt"}
    assert listing(old_outputs) == {
        "a.txt": "new a",
        "b.txt": "new b",
        "other.txt": "old other.txt",
    }
    assert sorted(p.name for p in old_outputs.iterdir()) == ["a.txt", "b.txt", "other.txt"]


def test_new_files_get_the_usual_permissions(tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_text("x")
    write_outputs(tmp_path / "new", {"a.txt": text_writer("a")})  # the folder is created
    mode = (tmp_path / "new" / "a.txt").stat().st_mode & 0o777
    assert mode == (tmp_path / "plain.txt").stat().st_mode & 0o777  # not mkstemp's 0o600


@pytest.mark.parametrize(
    "exc", [OSError(28, "No space left on device"), KeyboardInterrupt(), ValueError("bad")]
)
def test_a_failing_writer_keeps_every_old_output(old_outputs: Path, exc: BaseException) -> None:
    before = listing(old_outputs)
    with pytest.raises(type(exc)):
        write_outputs(old_outputs, {"a.txt": text_writer("new a"), "b.txt": failing_writer(exc)})
    assert listing(old_outputs) == before  # a.txt too, although it was written first
    assert sorted(p.name for p in old_outputs.iterdir()) == ["a.txt", "b.txt", "other.txt"]


def test_a_symlinked_output_is_refused_before_writing(tmp_path: Path, old_outputs: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    (old_outputs / "b.txt").unlink()
    (old_outputs / "b.txt").symlink_to(outside)
    called = []

    def spy(path: Path) -> None:
        called.append(path)

    with pytest.raises(OutputError, match=r"b.txt' is a symbolic link: output files are never"):
        write_outputs(old_outputs, {"a.txt": spy, "b.txt": spy})
    assert called == [] and outside.read_text() == "precious"
    assert (old_outputs / "b.txt").is_symlink() and (
        old_outputs / "a.txt"
    ).read_text() == "old a.txt"


def test_a_link_appearing_while_writing_is_refused_too(tmp_path: Path, old_outputs: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")

    def sneaky(path: Path) -> None:
        path.write_text("new b")
        (old_outputs / "b.txt").unlink()
        (old_outputs / "b.txt").symlink_to(outside)

    with pytest.raises(OutputError, match="symbolic link"):
        write_outputs(old_outputs, {"a.txt": text_writer("new a"), "b.txt": sneaky})
    assert outside.read_text() == "precious" and (old_outputs / "a.txt").read_text() == "old a.txt"
    assert sorted(p.name for p in old_outputs.iterdir()) == ["a.txt", "b.txt", "other.txt"]


def test_dangling_links_folders_and_files_as_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "gone.txt").symlink_to(tmp_path / "nowhere")
    with pytest.raises(OutputError, match="symbolic link"):
        check_outputs(out, ["gone.txt"])
    assert not (tmp_path / "nowhere").exists()
    (out / "dir.txt").mkdir()
    with pytest.raises(OutputError, match="is not a regular file"):
        write_outputs(out, {"dir.txt": text_writer("x")})
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        write_outputs(a_file, {"a.txt": text_writer("x")})
    check_outputs(tmp_path / "missing", ["a.txt"])  # a folder still to create is fine
    assert sorted(os.listdir(out)) == ["dir.txt", "gone.txt"]  # no temporary file left
