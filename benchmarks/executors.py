"""The process pool against the Ray executor on one machine: ``bin/benchmark executors``.

The tiny synthetic set (30 clips), OpenCV flow in float16, each executor twice (pool, ray, pool, ray) with the same
number of workers; Ray starts a local cluster for each batch, so its figure includes that fixed cost.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path


def executors(*, workers: int = 2, log=print) -> None:
    from preprocess.batch import run_batch
    from preprocess.dataset import ingest
    from preprocess.dataset.synthetic.dataset import generate
    from preprocess.flow import FarnebackParams, flow_params, flow_task

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root / "synth", preset="tiny", seed=7, workers=workers)
        manifest = ingest(root / "synth" / "videos")
        params = flow_params(FarnebackParams(), resize="none", storage="float16")
        for i, executor in enumerate(("pool", "ray", "pool", "ray")):
            start = time.perf_counter()
            summary = run_batch(flow_task(params), manifest, root / f"work{i}", workers=workers, executor=executor)
            wall = time.perf_counter() - start
            log(
                f"{executor}: {len(summary.done)} videos, {summary.frames} frames in {wall:.1f} s "
                f"({summary.frames / wall:.0f} frames/s), {workers} workers"
            )
