"""Errors about user data. Each names the file and the problem in one line; commands print them without a traceback."""

from __future__ import annotations

from pathlib import Path


class DataError(Exception):
    """A problem with one input file or folder: ``str(err)`` is ``"<path>: <problem>"``."""

    def __init__(self, path: str | Path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def one_line_errors(command):
    """Decorate a click callback so user-data problems exit with ``error: <path>: <problem>``, never a traceback."""
    import functools

    import click

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (DataError, ValueError, FileNotFoundError, PermissionError) as err:
            raise click.ClickException(str(err)) from None

    return wrapper


def exit_on_terminate() -> None:
    """Make SIGTERM and SIGHUP (a scheduler's stop, a closed terminal) end the command as an exception would, so
    that ``with`` blocks unwind: temporary folders are removed and atomic writes abandoned, instead of the process
    vanishing with its scratch left behind. The exit status is 128 + the signal's number, as the shell reports."""
    import signal

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)
