"""The one exception type for bad input to the agent (files, traces): it names the file and line."""

from __future__ import annotations

import os


class AgentInputError(ValueError):
    def __init__(self, message: str, path: str | os.PathLike | None = None, line: int | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.line = line
        where = "" if self.path is None else (self.path if line is None else f"{self.path}:{line}") + ": "
        super().__init__(where + message)
