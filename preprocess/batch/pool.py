"""Process pools for batch work.

Workers start from a clean forkserver, never by forking the caller: a parent that has already used OpenCV (or
torch, or MediaPipe) holds thread pools that a forked child inherits in a locked state, which deadlocks the child
at its first OpenCV call. Each worker runs OpenCV single-threaded, since the pool already uses every core.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor


def _init_worker(initializer=None, initargs=()):
    import os

    # One thread per worker for torch too (read when torch is first imported, which workers do lazily).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2

    cv2.setNumThreads(1)
    if initializer is not None:
        initializer(*initargs)


def process_pool(workers: int, initializer=None, initargs=()) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("forkserver"),
        initializer=_init_worker,
        initargs=(initializer, initargs),
    )
