"""Batch work on a Ray cluster (``--executor ray``): one task per video on long-lived actors.

Each actor is a worker process of the cluster that runs the task's ``worker_init`` once (so models load once) and
then videos one at a time, exactly as a process-pool worker does: the same per-video function, the same atomic
writes and sidecars, so the outputs are byte for byte those of the process pool, and resume and failure reports
work the same. An actor that dies (a segfault in a decoder, a node lost) fails the video it held, is replaced, and
the batch goes on. Tasks that use a GPU ask for a fraction of one per actor, so several share it.

``address=None`` starts a local cluster of ``workers`` CPUs for this batch and stops it after; ``"auto"`` (or
``ray://host:10001``) joins a running cluster (``ray start --head`` on one node, ``ray start --address ...`` on
the others), where the files must be on storage every node sees.

An actor on the driver's machine exits as soon as the driver is gone (killed with -9, say): Ray itself notices a
dead driver only after a while (seconds, longer on a busy machine), and until then its actors would go on writing
outputs beside a rerun's.
"""

from __future__ import annotations

import os
import socket
import threading
import time


def _ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError("--executor ray needs Ray: pip install 'dance-streams[ray]'") from None
    return ray


def map_on_ray(function, items: list, workers: int, *, crashed, initializer=None, address=None, gpus_per_worker=0.0):
    """Yield ``function(item)`` for every item (in completion order; results name their item), computed by
    ``workers`` actors on a Ray cluster; an item whose actor dies yields ``crashed(item)``."""
    if not items:
        return
    ray = _ray()
    started_here = not ray.is_initialized()
    if started_here:
        options = dict(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
        if address is None:
            # a cluster of our own for this batch: as many CPUs as workers, a small object store (results are
            # a few hundred bytes; the data goes to files)
            options.update(num_cpus=workers, object_store_memory=128 * 1024 * 1024)
        else:
            options.update(address=address)
        # workers import our packages: the checkout on their path even when it is not installed
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        options["runtime_env"] = {
            "env_vars": {
                "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])),
                "OMP_NUM_THREADS": "1",
            }
        }
        ray.init(**options)
    try:
        yield from _schedule(ray, function, items, workers, crashed, initializer, gpus_per_worker)
    finally:
        if started_here:
            ray.shutdown()


def driver_identity() -> tuple[str, int, float]:
    """(host, pid, start time) of this process: what an actor watches to know its driver is still the same one
    (a pid alone may be reused)."""
    import psutil  # a dependency of Ray

    return socket.gethostname(), os.getpid(), psutil.Process().create_time()


def exit_with_driver(driver: tuple[str, int, float], interval: float = 0.1) -> bool:
    """In an actor: a daemon thread that ends this process the moment ``driver`` is gone; only on the driver's own
    machine (elsewhere its pid means nothing, and Ray's own detection is what there is). True if one was started."""
    import psutil

    host, pid, started = driver
    if socket.gethostname() != host:
        return False

    def alive() -> bool:
        try:
            process = psutil.Process(pid)
            return process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def watch():
        while alive():
            time.sleep(interval)
        os._exit(1)  # mid-video is fine: outputs are written to a temp file and renamed, and a rerun clears those

    threading.Thread(target=watch, name="exit-with-driver", daemon=True).start()
    return True


def _schedule(ray, function, items, workers, crashed, initializer, gpus_per_worker):
    driver = driver_identity()

    @ray.remote(num_cpus=1, num_gpus=gpus_per_worker, max_restarts=0)
    class BatchWorker:
        def __init__(self):
            import cv2

            exit_with_driver(driver)

            cv2.setNumThreads(1)  # one video per CPU, as in the process pool
            if initializer is not None:
                initializer()

        def run(self, item):
            return function(item)

    pending = list(reversed(items))
    running = {}  # future -> (actor, item)
    idle = [BatchWorker.remote() for _ in range(max(1, min(workers, len(items))))]
    while pending or running:
        while idle and pending:
            actor, item = idle.pop(), pending.pop()
            running[actor.run.remote(item)] = (actor, item)
        done, _ = ray.wait(list(running), num_returns=1)
        actor, item = running.pop(done[0])
        try:
            result = ray.get(done[0])
        except ray.exceptions.RayActorError:
            yield crashed(item)
            idle.append(BatchWorker.remote())  # a fresh actor for the rest
            continue
        idle.append(actor)
        yield result
