"""The machinery every preprocessor runs in: the batch runner, worker pools, atomic storage, progress, named errors.

::

    runner.py    Task, run_batch: sharding, resume by sidecar, workers, summary
    pool.py      process_pool: forkserver workers, OpenCV single-threaded
    storage.py   atomic writes (temp file + rename), JSON, npz, streamed .npy
    progress.py  Progress: tqdm with frames/s, one line per 5 % in logs
    errors.py    DataError: "<path>: <problem>", shown without a traceback
"""

from .errors import DataError, one_line_errors
from .pool import process_pool
from .progress import Progress
from .runner import Summary, Task, is_done, parse_shard, run_batch, shard_videos, sidecar_path, write_sidecar
from .storage import NpyStreamWriter, atomic_path, read_json, read_npz, write_json, write_npz, write_text

__all__ = [
    "DataError",
    "NpyStreamWriter",
    "Progress",
    "Summary",
    "Task",
    "atomic_path",
    "is_done",
    "one_line_errors",
    "parse_shard",
    "process_pool",
    "read_json",
    "read_npz",
    "run_batch",
    "shard_videos",
    "sidecar_path",
    "write_json",
    "write_npz",
    "write_sidecar",
    "write_text",
]
