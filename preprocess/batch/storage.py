"""Atomic writes: every file appears whole under its final name or not at all (temp file + rename)."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``, on error removed.

    ``suffix`` sets the temporary file's extension for writers that choose a format by it (OpenCV's VideoWriter,
    ``np.savez``); by default it is the target's own suffix.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden name (leading dot) so dataset scans never pick up a half-written file left by a killed run.
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.stem}.", suffix=suffix if suffix is not None else path.suffix, dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike):
    return json.loads(Path(path).read_text())


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_npz(path: str | os.PathLike, **arrays) -> None:
    """Uncompressed .npz (members stay memory-mappable-friendly and fast); loads with allow_pickle=False."""
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


class NpyStreamWriter:
    """Write a ``.npy`` file of known shape one leading-axis slice at a time, straight to disk.

    A memory map would keep every written page resident (RSS grows with the video); appending to a file keeps memory
    flat. ``close`` checks that exactly ``shape[0]`` slices were written.
    """

    def __init__(self, path: str | os.PathLike, shape: tuple[int, ...], dtype):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.count = 0
        self.handle = open(path, "wb")  # noqa: SIM115 - held open across write() calls, closed by close()
        np.lib.format.write_array_header_1_0(
            self.handle,
            {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": self.shape},
        )

    def write(self, item: np.ndarray) -> None:
        item = np.ascontiguousarray(item, dtype=self.dtype)
        if item.shape != self.shape[1:]:
            raise ValueError(f"slice shape {item.shape} does not match {self.shape[1:]}")
        if self.count >= self.shape[0]:
            raise ValueError(f"more than {self.shape[0]} slices written")
        self.handle.write(item.tobytes())
        self.count += 1

    def close(self) -> None:
        self.handle.close()
        if self.count != self.shape[0]:
            raise ValueError(f"{self.count} slices written, the header says {self.shape[0]}")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            self.handle.close()
