"""Atomic writes: every file appears whole under its final name or not at all (temp file + rename)."""

from __future__ import annotations

import errno
import json
import os
import re
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import DataError

PARTIAL = ".partial."  # temp-file prefix: hidden, so dataset scans skip it; named, so a rerun can clear it
FULL_DISK = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def file_mode() -> int:
    """The mode ``open()`` gives a new file under this process's umask (0644 under 022); mkstemp's is 0600."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``, on error removed.

    ``suffix`` sets the temporary file's extension for writers that choose a format by it (OpenCV's VideoWriter,
    ``np.savez``); by default it is the target's own suffix. A ``path`` that exists and is not a regular file (a
    character device, a pipe, a folder) is refused by name. A full disk (or quota, or file size limit) is a
    ``DataError`` naming ``path``. The file gets the umask's mode, so collaborators can read shared outputs.
    """
    path = Path(path)
    if path.exists() and not path.is_file():  # a device, a pipe, a folder: never replaced by a rename
        raise DataError(path, "exists and is not a regular file: refusing to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f"{PARTIAL}{path.name}.", suffix=suffix if suffix is not None else path.suffix, dir=path.parent
    )
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        if err.errno in FULL_DISK:
            raise DataError(path, f"cannot write: {os.strerror(err.errno).lower()}") from None
        raise
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_partials(folder: str | os.PathLike, names: set[str]) -> int:
    """Delete the temp files a killed run left for the files ``names`` in ``folder``; returns how many."""
    removed = 0
    for leftover in Path(folder).glob(f"{PARTIAL}*"):
        target = leftover.name[len(PARTIAL) :]
        if any(target.startswith(f"{name}.") for name in names):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed


def write_json(path: str | os.PathLike, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike):
    """The JSON in ``path``; a broken, truncated or absurdly nested file is a ``DataError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise DataError(path, f"not valid JSON ({err})") from None
    except RecursionError:
        raise DataError(path, "JSON nested too deeply to read") from None


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_npz(path: str | os.PathLike, **arrays) -> None:
    """Uncompressed .npz (members stay memory-mappable-friendly and fast); loads with allow_pickle=False."""
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Every array of an ``.npz``; a named error when it is missing, torn, or not an ``.npz`` at all (NumPy's own
    message for other bytes would advise loading them unsafely)."""
    if not os.path.isfile(path):
        raise DataError(path, "missing")
    if not zipfile.is_zipfile(path):
        raise DataError(path, "not an .npz archive (damaged or another kind of file): preprocess this video again")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError) as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise DataError(path, f"a damaged .npz archive ({reason}): preprocess this video again") from None


def check_npy(path: str | os.PathLike, shape, dtype) -> str | None:
    """None when ``path`` is a whole ``.npy`` of ``shape`` and ``dtype``; else what is wrong (header only: cheap)."""
    try:
        with open(path, "rb") as handle:
            major, _ = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            found_shape, _, found_dtype = read_header(handle)
            start = handle.tell()
    except (OSError, ValueError) as err:
        return f"not a readable .npy ({err})"
    if list(found_shape) != list(shape) or found_dtype != np.dtype(dtype):
        return f"holds {found_dtype} {tuple(found_shape)}, its sidecar says {np.dtype(dtype)} {tuple(shape)}"
    expected = start + int(np.prod(found_shape)) * found_dtype.itemsize
    size = os.path.getsize(path)
    if size != expected:
        return f"truncated or padded: {size} bytes, a whole file has {expected}"
    return None


def check_npz(path: str | os.PathLike, members: tuple[str, ...] = ()) -> str | None:
    """None when ``path`` is a whole ``.npz`` (every member's CRC checks) holding ``members``; else what is wrong."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            names = {name.removesuffix(".npy") for name in archive.namelist()}
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        return f"not a whole .npz ({err})"
    if bad is not None:
        return f"member {bad} fails its CRC check (corrupt)"
    missing = [m for m in members if m not in names]
    return f"lacks {', '.join(missing)}" if missing else None


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


@contextmanager
def folder_lock(folder: str | os.PathLike, command: str):
    """Hold ``folder``'s lock for ``command`` (bin/train, bin/crossval, bin/tune) while the block runs: a second
    command of the same kind on the same folder is refused by name at once instead of both writing it (two
    trainings of one RUN, the second's config winning). The lock is the operating system's (``flock``), so it is
    gone with the process, whatever ends it: a killed run never leaves a stale lock."""
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / (".lock-" + re.sub(r"[^A-Za-z0-9_.]+", "-", command.replace("bin/", "")))
    handle = open(path, "a+")  # noqa: SIM115 - held open for the block: the lock lives as long as the handle
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise DataError(
            folder, f"{holder} is writing this folder: wait for it to end, or give another folder"
        ) from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"{command} (pid {os.getpid()})")
        handle.flush()
        yield
    finally:
        handle.close()
