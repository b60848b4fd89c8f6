"""Process pools for batch work.

Workers start from a clean forkserver, never by forking the caller: a parent that has already used OpenCV (or
torch, or MediaPipe) holds thread pools that a forked child inherits in a locked state, which deadlocks the child
at its first OpenCV call. Each worker runs OpenCV single-threaded, since the pool already uses every core.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool


def available_cores() -> int:
    """The cores this process may run on (a job scheduler's CPU set, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _die_with_parent() -> None:
    """End this worker as soon as the process that made the pool ends. A batch killed with SIGKILL must leave no
    orphan finishing videos behind it (racing a rerun) or idling forever: a thread waits on the parent's
    sentinel, which multiprocessing closes when the parent dies, whatever killed it."""
    import multiprocessing.connection
    import threading

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch():
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _init_worker(initializer=None, initargs=()):
    _die_with_parent()
    # One thread per worker for torch too (read when torch is first imported, which workers do lazily).
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import cv2

    cv2.setNumThreads(1)
    if initializer is not None:
        initializer(*initargs)


def worker_context():
    """The multiprocessing context every pool worker starts from: a forkserver that has imported ``worker_start``
    (which keeps a worker abandoned by its ending command from printing a traceback)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", "preprocess.batch.worker_start"])
    return context


def process_pool(workers: int, initializer=None, initargs=()) -> ProcessPoolExecutor:
    return ProcessPoolExecutor(
        max_workers=workers,
        mp_context=worker_context(),
        initializer=_init_worker,
        initargs=(initializer, initargs),
    )


def map_surviving_crashes(function, items: list, workers: int, *, crashed, initializer=None):
    """Yield ``function(item)`` for every item, computed in ``workers`` worker processes (in input order while no
    worker dies; results name their item).

    A worker that dies (a segfault in a decoder, an out-of-memory kill) breaks a ``ProcessPoolExecutor`` and every
    unfinished item with it. Then the unfinished items run again in a one-worker pool, where items run one at a
    time in order, so the first one that breaks it is the one that killed the worker: it yields ``crashed(item)``
    and the rest go on at full width in a fresh pool. One bad video costs itself, not the batch.
    """
    pending, width = list(items), workers
    while pending:
        unfinished = []
        with process_pool(max(1, min(width, len(pending))), initializer) as pool:
            futures = [pool.submit(function, item) for item in pending]
            for item, future in zip(pending, futures):
                try:
                    result = future.result()
                except BrokenProcessPool:
                    unfinished.append(item)
                    continue
                yield result
        if not unfinished:
            return
        if width == 1:
            yield crashed(unfinished[0])
            pending, width = unfinished[1:], workers
        else:
            pending, width = unfinished, 1
