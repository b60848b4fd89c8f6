"""Errors about user data. Each names the file and the problem in one line; commands print them without a traceback."""

from __future__ import annotations

from pathlib import Path


class DataError(Exception):
    """A problem with one input file or folder: ``str(err)`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
