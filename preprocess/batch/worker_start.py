"""Imported once by the forkserver that starts every pool worker (``pool.worker_context``): what is set here, every
worker inherits from its first instruction, before it has unpickled its job.

A command that ends while its pool starts (SIGTERM from a scheduler, Ctrl-C) unlinks the named semaphores of the
pool's queues as it leaves. A worker the forkserver had already forked for it then fails to unpickle them — nobody is
left to hand work to — and, by default, prints a ``FileNotFoundError`` traceback under the command's own last line.
Such a worker ends quietly instead; every other start-up failure is printed as before.
"""

from __future__ import annotations

import os
import sys


def _abandoned_at_start(kind, value, tb) -> bool:
    """True for a worker whose parent released the semaphores the worker was about to take over: the failure is
    ``FileNotFoundError`` raised by multiprocessing's own ``SemLock.__setstate__`` while the job is unpickled."""
    if not issubclass(kind, FileNotFoundError) or tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    code = tb.tb_frame.f_code
    return code.co_name == "__setstate__" and os.path.basename(os.path.dirname(code.co_filename)) == "multiprocessing"


def _quiet_when_abandoned(kind, value, tb, _previous=sys.excepthook):
    if not _abandoned_at_start(kind, value, tb):
        _previous(kind, value, tb)


sys.excepthook = _quiet_when_abandoned
