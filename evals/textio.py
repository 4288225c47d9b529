"""Reading text files strictly and writing outputs atomically.

Other decade packages reuse these: a hypothesis file that is silently cut short or
decoded with replacement characters gives a wrong BLEU that looks right.
"""

from __future__ import annotations

import codecs
import gzip
import os
import sys
import tempfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import NoReturn

from .errors import EvalsInputError

PathLike = str | os.PathLike


def read_lines(path: PathLike, *, allow_empty: bool = False) -> list[str]:
    """Read a UTF-8 text file (``.gz`` allowed) as a list of lines.

    Only the line terminator ("\\n" or "\\r\\n") is stripped; other whitespace is kept.
    A UTF-8 byte order mark at the start of the file is stripped (as sacrebleu and most editors
    do): left in, it would become part of the first hypothesis or reference and silently lower
    its score (100 BLEU would read 99.09). Raises EvalsInputError naming the file (and line) for
    a missing, unreadable or empty file, a directory, a truncated or fake ``.gz``, invalid UTF-8
    and a NUL byte (the sign of a binary file, never of a sentence).
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            data = fh.read()
        if path.endswith(".gz"):
            data = gzip.decompress(data)
    except FileNotFoundError:
        raise EvalsInputError("no such file", path) from None
    except IsADirectoryError:
        raise EvalsInputError("is a directory, expected a text file", path) from None
    except PermissionError:
        raise EvalsInputError("permission denied: cannot read the file", path) from None
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        what = "not a valid, complete gzip file: " if path.endswith(".gz") else ""
        raise EvalsInputError(f"cannot read file ({what}{exc})", path) from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    if not data:
        if allow_empty:
            return []
        raise EvalsInputError("file is empty", path)
    # Split the bytes on b"\n" ourselves: str.splitlines() would also break on
    # U+2028, U+0085 and form feeds, which can occur inside a sentence and would
    # shift every later line against its reference.
    raw = data.split(b"\n")
    if raw[-1] == b"":
        raw.pop()
    lines: list[str] = []
    for number, chunk in enumerate(raw, start=1):
        if chunk.endswith(b"\r"):
            chunk = chunk[:-1]
        nul = chunk.find(b"\0")
        if nul >= 0:
            raise EvalsInputError(f"NUL byte at byte {nul + 1} of the line (a binary file?)", path, number)
        try:
            lines.append(chunk.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise EvalsInputError(
                f"invalid UTF-8 (byte 0x{chunk[exc.start]:02x} at byte {exc.start + 1} of the line)",
                path,
                number,
            ) from None
    return lines


def check_same_length(named: Sequence[tuple[PathLike, Sequence[str]]]) -> None:
    """Raise EvalsInputError if the line lists differ in length, naming the first line without a partner."""
    if not named:
        return
    counts = [len(lines) for _, lines in named]
    if len(set(counts)) == 1:
        return
    shortest = min(counts)
    longest_path, longest_lines = max(named, key=lambda item: len(item[1]))
    parts = ", ".join(f"{os.fspath(p)} has {len(lines)}" for p, lines in named)
    raise EvalsInputError(
        f"line counts differ ({parts}); this is the first line with no partner in the shorter file(s)",
        longest_path,
        shortest + 1,
    )


def read_parallel(*paths: PathLike | None) -> list[list[str] | None]:
    """Read several line-aligned files (None entries pass through) and check they have equal length."""
    loaded = [read_lines(p) if p is not None else None for p in paths]
    check_same_length([(p, lines) for p, lines in zip(paths, loaded) if p is not None and lines is not None])
    return loaded


def check_output_path(path: PathLike | None, what: str = "output") -> None:
    """Raise EvalsInputError if ``path`` cannot be an output file (it is a directory), so that a command
    fails before it has done any work or written anything."""
    if path is not None and os.path.isdir(os.fspath(path)):
        raise EvalsInputError(f"is a directory; {what} needs a file name", path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write bytes so that readers see the old file or the complete new one, never a half-written one.

    A symlink is followed (its target is replaced; the link stays a link). A special file that exists
    (``/dev/stdout``, a pipe) is written as a stream: it cannot be replaced, and must not be."""
    path = os.path.realpath(os.fspath(path)) if os.path.islink(os.fspath(path)) else os.fspath(path)
    if os.path.exists(path) and not os.path.isfile(path):
        if os.path.isdir(path):
            raise IsADirectoryError(f"{path}: is a directory, not a file to write")
        with open(path, "wb") as fh:
            fh.write(data)
        return
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the mode a plain open() would have.
        try:
            mode = os.stat(path).st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o666 & ~_umask()
        os.chmod(tmp, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write UTF-8 text atomically (temporary file in the same folder, then rename)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_lines(path: PathLike, lines: Iterable[str]) -> None:
    """Write one line per item, each ending in "\\n", atomically. Items must not contain newlines."""
    out = []
    for number, line in enumerate(lines, start=1):
        if "\n" in line:
            # A newline inside a hypothesis would misalign the file against its reference.
            raise ValueError(f"item {number} contains a newline; cannot write it as one line of {os.fspath(path)}")
        out.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in out))


def run_cli(main: Callable[[], int]) -> NoReturn:
    """``sys.exit(main())``, except that a reader closing stdout early (``... | head``) ends the
    command quietly instead of with a BrokenPipeError traceback (the recipe of the Python docs,
    "Note on SIGPIPE")."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        # Python flushes stdout again at exit; point it at devnull so that flush cannot fail too.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    sys.exit(code)
