"""The one exception type for bad input to the harness."""

from __future__ import annotations

import os


class EvalsInputError(ValueError):
    """Bad input (file or record); the message names the file and the 1-based line."""

    def __init__(self, message: str, path: str | os.PathLike | None = None, line: int | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.line = line
        where = ""
        if self.path is not None:
            where = self.path if line is None else f"{self.path}:{line}"
            where += ": "
        super().__init__(where + message)
