"""Cost of the weighted-mean fusion search as streams are added, and of a whole ``bin/fuse`` of five streams.

Scores are synthetic but shaped like real ones: each stream right on its own share of the videos (skills 0.55-0.8),
the rest of its mass spread at random. "loop" is the search as it was before issue 22 (one weight vector at a time,
scikit-learn's log-loss on each); "vectorised" is ``fusion.methods.WeightedMeanFusion`` as ``bin/fuse`` runs it."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import REPO

SKILLS = (0.55, 0.8, 0.7, 0.65, 0.6)


def synthetic_scores(streams: int, videos: int, classes: int, seed: int = 0):
    """({stream name: (N, C) probabilities}, labels): stream k right on a share SKILLS[k] of the videos."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, videos)
    scores = {}
    for k in range(streams):
        right = rng.random(videos) < SKILLS[k % len(SKILLS)]
        guess = np.where(right, labels, rng.integers(0, classes, videos))
        probs = rng.dirichlet(np.ones(classes) * 0.6, videos) * 0.5
        probs[np.arange(videos), guess] += 0.5
        scores[f"s{k}"] = probs
    return scores, labels


def grid_search_loop(stacked: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """The weighted search before it was vectorised: one weight vector at a time, the key compared as a tuple
    (accuracy, log-loss, distance to equal weights), the first best kept (the reference the tests compare to)."""
    from fusion.methods import log_loss

    s, best = stacked.shape[0], None
    for combo in itertools.product(range(n + 1), repeat=s - 1):
        if sum(combo) > n:
            continue
        w = np.array(list(combo) + [n - sum(combo)], float) / n
        fused = np.tensordot(w, stacked, 1)
        key = (
            -(fused.argmax(1) == labels).mean(),
            log_loss(fused / fused.sum(1, keepdims=True), labels),
            float(np.abs(w - 1 / s).sum()),
        )
        if best is None or key < best[0]:
            best = (key, w)
    return best[1]


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _write_runs(root: Path, streams: int, videos: int, classes: int) -> list[Path]:
    names = [f"c{i}" for i in range(classes)]
    runs = []
    for split, seed in (("val", 1), ("test", 2)):
        scores, labels = synthetic_scores(streams, videos, classes, seed)
        for stream, probs in scores.items():
            folder = root / stream
            folder.mkdir(parents=True, exist_ok=True)
            np.savez(
                folder / f"scores_{split}.npz",
                video_ids=np.array([f"{split}{i:05d}" for i in range(videos)], dtype=np.str_),
                labels=labels.astype(np.int64),
                probs=probs.astype(np.float32),
                classes=np.array(names, dtype=np.str_),
            )
            (folder / f"scores_{split}.json").write_text(json.dumps({"stream": stream, "split": split, "work": None}))
            if split == "val":
                runs.append(folder)
    return runs


def fusion_search(*, videos: int, classes: int, loop: bool, log=print) -> dict:
    from fusion.methods import WeightedMeanFusion

    rows = []
    log(f"weighted search, step 0.05, {videos} videos, {classes} classes (best of 3 fits)")
    for streams in (2, 3, 4, 5):
        scores, labels = synthetic_scores(streams, videos, classes)
        fitted = WeightedMeanFusion()
        seconds = _best_of(lambda fitted=fitted, scores=scores, labels=labels: fitted.fit(scores, labels), 3)
        row = {"streams": streams, "vectorised_s": seconds}
        if loop:
            stacked = np.stack([scores[k] for k in sorted(scores)])
            start = time.perf_counter()
            expected = grid_search_loop(stacked, labels, 20)
            row["loop_s"] = time.perf_counter() - start
            row["same_weights"] = bool(np.allclose(sorted(expected), sorted(fitted.weights_)))
        rows.append(row)
        extra = f", loop {row['loop_s']:.2f} s ({row['loop_s'] / seconds:.0f}x)" if loop else ""
        log(f"  {streams} streams: vectorised {seconds:.3f} s{extra}")
    with tempfile.TemporaryDirectory() as tmp:
        runs = _write_runs(Path(tmp) / "runs", 5, videos, classes)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, str(REPO / "bin/fuse"), *map(str, runs), "--out", str(Path(tmp) / "report")],
            capture_output=True,
            text=True,
        )
        fuse_s = time.perf_counter() - start
        if done.returncode:
            raise SystemExit(f"bin/fuse failed: {done.stderr.strip()[-500:]}")
    log(f"bin/fuse, 5 streams ({2**5 - 1} subsets), {videos} validation + {videos} test videos: {fuse_s:.1f} s")
    return {"fits": rows, "fuse_5_streams_s": fuse_s}
