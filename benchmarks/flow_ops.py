"""What one call of the PyTorch Farneback engine costs in operations and host syncs: ``bin/benchmark flow-ops``.

On a GPU every aten operation that computes is a kernel launch, and every tensor made from host data (or read back)
is a blocking copy; at video sizes the port is launch-bound, so these counts, not CPU seconds, predict its GPU rate.
Counted with the torch profiler on the CPU, for one warm call on a batch of pairs of the shared Kinetics clip:

* aten events, all (nested ones too) and top-level;
* compute operations: top-level operations that are not views (view, slice, select, ...: no kernel);
* host syncs: tensors built from host data (``aten::lift_fresh``) and scalars read back (``item``);

per pair, for the ``farneback_torch(prev, next)`` call, the sequence call (each frame expanded once), the sequence
call compiled (``torch.compile``: fused kernels are not aten operations; their launches are counted on a GPU by
``bin/benchmark gpu``), and, with ``--reference FILE``, an older ``farneback_torch.py`` (e.g. ``git show
3c7d002:preprocess/flow/farneback_torch.py > old.py``) for before/after figures from one run.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import torch

from preprocess.flow.farneback_torch import FarnebackTorch, farneback_torch

from .common import kinetics_gray

VIEWS = {
    "aten::view",
    "aten::slice",
    "aten::select",
    "aten::unsqueeze",
    "aten::expand",
    "aten::reshape",
    "aten::permute",
    "aten::as_strided",
    "aten::alias",
    "aten::detach",
    "aten::detach_",
    "aten::lift_fresh",
    "aten::_unsafe_view",
    "aten::t",
    "aten::transpose",
    "aten::unbind",
    "aten::squeeze",
    "aten::empty",
    "aten::empty_like",
    "aten::empty_strided",
    "aten::resize_",
}
HOST = {"aten::lift_fresh", "aten::_local_scalar_dense", "aten::item"}


def count_operations(call) -> dict:
    """Profile one warm ``call()``: aten events (all, top-level), compute operations, host syncs, seconds."""
    from torch.profiler import ProfilerActivity, profile

    call()
    start = time.perf_counter()
    call()
    seconds = time.perf_counter() - start
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    top = [e for e in events if not (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::"))]
    return {
        "all": len(events),
        "top": len(top),
        "compute": sum(1 for e in top if e.name not in VIEWS),
        "host_syncs": sum(1 for e in prof.events() if e.name in HOST),
        "seconds": seconds,
    }


def flow_ops(*, batch: int = 8, size: str = "340x256", reference: str | None = None, compile: bool = False, log=print):
    width, height = (int(v) for v in size.split("x"))
    frames = torch.from_numpy(kinetics_gray(width, height, batch + 1))
    prev, nxt = frames[:-1], frames[1:]
    engine = FarnebackTorch()
    with torch.no_grad():
        ours = engine.sequence(frames)
        calls = {"farneback_torch(prev, next)": lambda: farneback_torch(prev, nxt)}
        calls["FarnebackTorch.sequence(frames)"] = lambda: engine.sequence(frames)
        outputs = {}
        if reference:
            spec = importlib.util.spec_from_file_location("reference_farneback", reference)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            calls = {f"reference {reference}": lambda: module.farneback_torch(prev, nxt), **calls}
            outputs["reference"] = module.farneback_torch(prev, nxt)
        if compile:
            compiled = FarnebackTorch(compile=True)
            start = time.perf_counter()
            outputs["compiled"] = compiled.sequence(frames)
            log(f"compiling: {time.perf_counter() - start:.0f} s (once per process and frame size)")
            calls["FarnebackTorch.sequence, compiled"] = lambda: compiled.sequence(frames)
        threads = torch.get_num_threads()
        log(f"{batch} pairs of {width}x{height} per call, CPU, torch {torch.__version__}, {threads} threads")
        log("| call | aten events / pair (all, top-level) | compute ops / pair | host syncs / call | ms / pair |")
        log("|---|---|---|---|---|")
        rows = {}
        for name, call in calls.items():
            c = count_operations(call)
            rows[name] = c
            log(
                f"| {name} | {c['all'] / batch:.0f}, {c['top'] / batch:.0f} | {c['compute'] / batch:.0f} "
                f"| {c['host_syncs']} | {1000 * c['seconds'] / batch:.0f} |"
            )
        import cv2

        reference_flow = np.stack(
            [
                cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
                for a, b in zip(prev.numpy(), nxt.numpy())
            ]
        )
        for name, out in {"sequence": ours, **outputs}.items():
            epe = np.linalg.norm(out.numpy() - reference_flow, axis=-1)
            log(f"{name} vs OpenCV: mean EPE {epe.mean():.5f} px, p99 {np.percentile(epe, 99):.5f} px")
        if reference:
            before, after = rows[next(iter(rows))], rows["FarnebackTorch.sequence(frames)"]
            log(
                f"sequence vs reference: {before['all'] / after['all']:.1f}x fewer aten events, "
                f"{before['compute'] / after['compute']:.1f}x fewer compute ops, "
                f"{before['seconds'] / after['seconds']:.2f}x the speed (CPU)"
            )
    return rows
