"""The machinery every preprocessor runs in: the batch runner, worker pools, atomic storage, progress, named errors.

::

    runner.py    Task, run_batch: sharding, resume by sidecar, workers, summary
    pool.py      process_pool: forkserver workers, OpenCV single-threaded
    ray_pool.py  map_on_ray: the same per-video work on Ray actors (--executor ray; imports ray only when used)
    status.py    stage_status: done / failed / missing of a stage folder, merged over shard summaries
    storage.py   atomic writes (temp file + rename), JSON, npz, streamed .npy
    progress.py  Progress: tqdm with frames/s, one line per 5 % in logs
    errors.py    DataError: "<path>: <problem>", shown without a traceback (preprocess.cli.one_line_errors)
"""

from .errors import DataError
from .pool import available_cores, map_surviving_crashes, process_pool
from .progress import Progress
from .runner import (
    StageOutput,
    Summary,
    Task,
    default_workers,
    is_done,
    output_problem,
    parse_shard,
    read_sidecar,
    run_batch,
    shard_videos,
    sidecar_path,
    sidecar_whole_number,
    sidecar_whole_numbers,
    verify_outputs,
    write_sidecar,
)
from .storage import (
    NpyStreamWriter,
    atomic_path,
    check_npy,
    check_npz,
    folder_lock,
    read_json,
    read_npz,
    remove_partials,
    write_json,
    write_npz,
    write_text,
)

__all__ = [
    "available_cores",
    "default_workers",
    "folder_lock",
    "DataError",
    "NpyStreamWriter",
    "Progress",
    "StageOutput",
    "Summary",
    "Task",
    "atomic_path",
    "check_npy",
    "check_npz",
    "is_done",
    "map_surviving_crashes",
    "output_problem",
    "parse_shard",
    "read_sidecar",
    "process_pool",
    "read_json",
    "read_npz",
    "remove_partials",
    "run_batch",
    "shard_videos",
    "sidecar_path",
    "sidecar_whole_number",
    "sidecar_whole_numbers",
    "verify_outputs",
    "write_json",
    "write_npz",
    "write_sidecar",
    "write_text",
]
