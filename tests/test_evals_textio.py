"""Strict reading and atomic writing."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from evals.errors import EvalsInputError
from evals.textio import atomic_write_lines, atomic_write_text, check_same_length, read_lines


@pytest.mark.parametrize("data, expected", [
    (b"a\nb\n", ["a", "b"]),
    (b"a\nb", ["a", "b"]),
    (b"a\r\nb\r\n", ["a", "b"]),
    (b" a \n\n", [" a ", ""]),
    ("x\u2028y\x0cz\n".encode(), ["x\u2028y\x0cz"]),  # only "\n" ends a line
])
def test_read_lines(tmp_path, data, expected):
    path = tmp_path / "f.txt"
    path.write_bytes(data)
    assert read_lines(path) == expected
    gz = tmp_path / "f.txt.gz"
    gz.write_bytes(gzip.compress(data))
    assert read_lines(gz) == expected


@pytest.mark.parametrize("data, message", [
    (b"", r"f\.txt: file is empty"),
    (b"ok\nok\nbad \xff byte\n", r"f\.txt:3: invalid UTF-8 \(byte 0xff"),
])
def test_read_lines_errors(tmp_path, data, message):
    path = tmp_path / "f.txt"
    path.write_bytes(data)
    with pytest.raises(EvalsInputError, match=message):
        read_lines(path)


def test_missing_file_and_bad_gzip(tmp_path):
    with pytest.raises(EvalsInputError, match="no such file"):
        read_lines(tmp_path / "nope.txt")
    (tmp_path / "x.gz").write_bytes(b"not gzip")
    with pytest.raises(EvalsInputError, match=r"x\.gz: cannot read"):
        read_lines(tmp_path / "x.gz")


def test_check_same_length_names_first_unpartnered_line():
    with pytest.raises(EvalsInputError, match=r"^ref:4: line counts differ \(hyp has 3, ref has 5\)"):
        check_same_length([("hyp", ["a"] * 3), ("ref", ["a"] * 5)])


def test_atomic_write_leaves_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "out.txt"
    atomic_write_text(path, "old\n")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(path, "new\n")
    monkeypatch.undo()
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["out.txt"]  # no temporary file left behind


def test_atomic_write_lines(tmp_path):
    path = tmp_path / "sub" / "hyps.txt"
    atomic_write_lines(path, ["a", "ä b"])
    assert read_lines(path) == ["a", "ä b"]
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # not mkstemp's private mode
    with pytest.raises(ValueError, match="item 2 contains a newline"):
        atomic_write_lines(path, ["a", "b\nc"])
    assert read_lines(path) == ["a", "ä b"]


@pytest.mark.parametrize("wrapped", [True, False])
def test_run_cli_ends_quietly_when_the_reader_closes_the_pipe(wrapped):
    # `python -m agents explain T | head`: the reader goes away while the command still prints.
    import subprocess
    import sys

    body = "def main():\n    for i in range(200000):\n        print('line', i)\n    return 0\n"
    call = "from evals.textio import run_cli\nrun_cli(main)\n" if wrapped else "main()\n"
    proc = subprocess.Popen([sys.executable, "-c", body + call], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=Path(__file__).resolve().parents[1])
    proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read()
    proc.wait()
    assert (b"BrokenPipeError" in err) is not wrapped  # the unwrapped control shows the problem is real
    if wrapped:
        assert err == b"" and proc.returncode == 1


def test_atomic_write_follows_a_symlink_and_streams_into_a_fifo(tmp_path):
    import threading

    # A symlink stays a link: its target gets the new text.
    target, link = tmp_path / "target.txt", tmp_path / "link.txt"
    target.write_text("old\n")
    link.symlink_to(target)
    atomic_write_lines(link, ["new"])
    assert link.is_symlink() and target.read_text() == "new\n"
    # A special file (a named pipe, like /dev/stdout) is written as a stream, never replaced by a file.
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    atomic_write_lines(fifo, ["a", "b"])
    reader.join(timeout=10)
    assert got == [b"a\nb\n"] and fifo.is_fifo()
    assert sorted(os.listdir(tmp_path)) == ["link.txt", "pipe", "target.txt"]  # no temporary file left behind
    # A directory is not a file to write.
    with pytest.raises(IsADirectoryError):
        atomic_write_text(tmp_path, "x\n")


@pytest.mark.parametrize("data, message", [
    (b"ok\nbad\x00byte\n", r"f\.txt:2: NUL byte"),
    (b"\xef\xbb\xbf", r"f\.txt: file is empty"),  # a byte order mark alone is no line
])
def test_read_lines_rejects_nul_bytes_and_strips_a_bom(tmp_path, data, message):
    path = tmp_path / "f.txt"
    path.write_bytes(data)
    with pytest.raises(EvalsInputError, match=message):
        read_lines(path)
    path.write_bytes(b"\xef\xbb\xbfEin Hund .\r\nZwei\n")
    assert read_lines(path) == ["Ein Hund .", "Zwei"]
