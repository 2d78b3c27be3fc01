"""The one atomic writer: a crash keeps the previous file and leaves no temporary file."""

import pytest

from suite.common.files import write_atomic


def test_a_crash_while_writing_keeps_the_old_file(tmp_path):
    path = tmp_path / "report.md"
    path.write_text("good")

    def crash(file):
        file.write(b"half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError):
        write_atomic(path, crash)
    assert path.read_text() == "good" and [p.name for p in tmp_path.iterdir()] == ["report.md"]


def test_text_bytes_and_writers_replace_the_file_in_new_folders(tmp_path):
    path = tmp_path / "a" / "b" / "out.txt"
    write_atomic(path, "één\n")
    assert path.read_text(encoding="utf-8") == "één\n"
    write_atomic(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    write_atomic(path, lambda file: file.write(b"written"))
    assert path.read_bytes() == b"written"
    assert [p.name for p in path.parent.iterdir()] == ["out.txt"]
