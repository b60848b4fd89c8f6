"""Per-video scores out to mmaction2's layout, so ``tools/analysis_tools/report_accuracy.py`` (score fusion with
coefficients) and other mmaction2 tools read our streams next to theirs.

``export_mmaction_scores(run, split, out)`` writes one pickle file (their format; we never read one): a list, in the
order of the run's score file, of ``{"pred_score": tensor (C,), "gt_label": tensor (1,), "video_id": str}``, as
``tools/test.py --dump`` writes. The tensors are pickled as calls of ``torch.tensor`` on lists of numbers, so any
torch version loads them, and a reader without torch can too (``tests/test_analysis.py`` reads it with a restricted
``pickle.Unpickler``). The class order is the run's (``classes`` in its score file); mmaction2 needs the same order
in every file it fuses.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

from preprocess.batch import atomic_path


class _Tensor:
    """A list of numbers that unpickles as ``torch.FloatTensor(values)`` (or ``torch.LongTensor``): classes every torch
    version has, pickled by name."""

    def __init__(self, values, kind: str):
        self.values, self.kind = values, kind

    def __reduce__(self):
        import torch

        return getattr(torch, self.kind), (self.values,)


def export_mmaction_scores(run, split: str, out) -> int:
    """Write ``out`` (.pkl) from RUN/scores_<split>.npz; returns the number of videos."""
    from .run import Run
    from .scores import read_score_file

    scores = read_score_file(Run.load(run).path, split)  # (a named error when the run has none)
    ids, labels, probs = scores["video_ids"], scores["labels"], scores["probs"]
    samples = [
        {
            "pred_score": _Tensor([float(p) for p in row], "FloatTensor"),
            "gt_label": _Tensor([int(y)], "LongTensor"),
            "video_id": str(v),
        }
        for v, y, row in zip(ids, labels, probs)
    ]
    buffer = io.BytesIO()
    pickle.dump(samples, buffer, protocol=4)
    with atomic_path(Path(out), suffix=".pkl") as tmp:
        Path(tmp).write_bytes(buffer.getvalue())
    return len(samples)
