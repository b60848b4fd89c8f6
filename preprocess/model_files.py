"""Where a model file is found, for every model the toolkit reads (pose backends, ImageNet backbones): the file a
user named (an option), the environment variable of that model, the shared assets folder, the user cache, in that
order. Nothing here downloads; a caller that may download does so after these places."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .batch import DataError


def shared_dir() -> Path:
    """The shared assets folder: $DANCE_SHARED, else ``shared`` beside this checkout."""
    checkout = Path(__file__).resolve().parents[1]  # preprocess/model_files.py -> the repository
    return Path(os.environ.get("DANCE_SHARED", checkout.parent / "shared"))


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dance-streams"


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_places(explicit, env: str, name: str) -> list[tuple[str, Path]]:
    """(origin, path) of every place a model file called ``name`` may be, in the order they are tried."""
    places = [("--model", explicit), (f"${env}", os.environ.get(env))]
    places += [("shared assets", shared_dir() / "models" / name), ("user cache", cache_dir() / name)]
    return [(origin, Path(path)) for origin, path in places if path]


def find_model_file(explicit, env: str, name: str, *, kind: str = "pose model") -> tuple[Path | None, list[str]]:
    """The first of --model PATH > $``env`` > shared/models/``name`` > the user cache that exists, and the places
    tried; a path the user named (option or variable) that does not exist is an error, not a fall-through."""
    tried = []
    for origin, path in model_places(explicit, env, name):
        if path.is_file():
            return path, tried
        if origin in ("--model", f"${env}"):
            raise DataError(path, f"{kind} given by {origin} does not exist")
        tried.append(str(path))
    return None, tried


def find_model_by_sha256(
    sha256: str, name: str, *, first=(), env: str = ""
) -> tuple[Path | None, list[Path], list[Path]]:
    """(the first file whose SHA-256 is ``sha256``, files found there with another SHA-256, every place looked in):
    the places ``first`` (a bundle's own copy, the path recorded at training) before $``env``, the shared assets and
    the user cache, each of those by the file's ``name``."""
    candidates = [Path(p) for p in first] + [path for _, path in model_places(None, env, name)]
    candidates = list(dict.fromkeys(candidates))
    mismatched = []
    for path in candidates:
        if path.is_file():
            if file_sha256(path) == sha256:
                return path, mismatched, candidates
            mismatched.append(path)
    return None, mismatched, candidates
