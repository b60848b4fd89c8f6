"""Scene reliance: how much of a pixel stream's answer survives when every person in its clips is hidden.

A network can name a dance style from where it was filmed (the floor, the walls, the crowd, the camera's motion)
instead of from the dancers. Hiding every tracked person (``streams.data`` ``persons="hide"``: their boxes from
WORK/pose, widened by the crop margin, painted with the input's mean for frames, zero motion for flow) and scoring
the clips again tells how much: a stream that reads the dance falls to chance, one that reads the venue keeps its
top-1 (Choi et al., NeurIPS 2019; Weinzaepfel & Rogez, *Mimetics*). ::

    trained run ──► score(val, test)            full top-1
              └──► same clips, persons hidden    hidden top-1 [interval], KL to uniform, agreement
                                                   └► RUN/scene_reliance.json, one line in bin/train's log

``retained`` = (hidden − chance) / (full − chance): the share of what the stream gains over chance that stays
without the dancers (0: it reads the dancers, 1: the scene alone does as well). On validation clips of the
training's own sources, a stream that generalises can retain much too (camera motion, crowds): a high figure is a
warning, not a verdict; what decides is how a stream does on groups it never saw (fusion.select uses both).

Pose reads no pixels: nothing is measured (``applies`` False). The person boxes are those of the pose stage, and
where ``bin/preprocess persons`` (MoveNet MultiPose by default) found more people in a frame, its boxes too: a pose
backend that finds one person a frame (MediaPipe) would leave the rest of a crew visible.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from preprocess import DataError
from preprocess.batch import read_json, write_json

from .stats import group_bootstrap_ci, wilson_interval

if TYPE_CHECKING:
    from .registry import RunConfig

FILE = "scene_reliance.json"


def reads_pixels(spec) -> bool:
    """Whether a stream variant reads pixels (frames, flow, or embeddings of frames), whose persons matter."""
    return any(stage in ("frames", "flow", "features") for stage in spec.stages)


def kl_to_uniform(probs: np.ndarray) -> np.ndarray:
    """KL(p ‖ uniform) per row, in nats: 0 when a prediction says nothing, log C when it is certain."""
    p = np.clip(np.asarray(probs, np.float64), 1e-12, 1.0)
    return (p * np.log(p)).sum(-1) + np.log(p.shape[-1])


def reliance_of(full: np.ndarray, hidden: np.ndarray, labels: np.ndarray, groups=None, *, seed: int = 0) -> dict:
    """The figures of one split from its full and hidden probabilities (N, C) and labels (N,): top-1 of both,
    chance (1 / classes), the hidden top-1's 95 % interval (resampling whole groups when there are two or more
    groups of several videos, else Wilson's over videos), retained share, KL to uniform, agreement."""
    labels = np.asarray(labels)
    known = labels >= 0
    full, hidden, labels = full[known], hidden[known], labels[known]
    n, classes = len(labels), full.shape[1]
    hits_full, hits_hidden = full.argmax(1) == labels, hidden.argmax(1) == labels
    chance = 1.0 / classes
    top1, top1_hidden = float(hits_full.mean()) if n else 0.0, float(hits_hidden.mean()) if n else 0.0
    interval, how = wilson_interval(int(hits_hidden.sum()), n), "videos (Wilson)"
    count = None
    if groups is not None:
        groups = np.asarray(groups)[known].astype(str)
        count = len(set(groups.tolist()))
        if 2 <= count < n:
            interval, how = group_bootstrap_ci(hits_hidden, groups, seed=seed), f"{count} groups resampled"
    gain = top1 - chance
    return {
        "videos": int(n),
        "groups": count,
        "chance": chance,
        "top1": top1,
        "hidden_top1": top1_hidden,
        "hidden_top1_ci95": [float(interval[0]), float(interval[1])],
        "interval": how,
        "retained": float(np.clip((top1_hidden - chance) / gain, 0.0, 1.0)) if gain > 1e-9 else None,
        "hidden_kl_uniform": float(kl_to_uniform(hidden).mean()) if n else None,
        "full_kl_uniform": float(kl_to_uniform(full).mean()) if n else None,
        "agreement": float((full.argmax(1) == hidden.argmax(1)).mean()) if n else None,
    }


def measure(config: RunConfig, model, device, scored: dict, *, log=print) -> dict:
    """Score ``model`` (a trained run's best weights) on each split of ``scored`` ({split: (probs, labels)}, the
    full-frame scores just made) with every person hidden; returns the record written to RUN/scene_reliance.json.
    A split without labels is skipped; a stream that reads no pixels, or a work directory without pose, records
    why nothing was measured."""
    from preprocess.records import group_of

    from .inference import evaluate
    from .registry import create_dataset

    spec = config.spec
    record = {"stream": spec.fusion_name, "variant": spec.name, "applies": reads_pixels(spec), "splits": {}}
    if not record["applies"]:
        record["status"] = f"not measured: the {spec.name} stream reads no pixels"
        return record
    if "features" in spec.stages:
        record["status"] = (
            f"not measured: the {spec.name} stream reads cached embeddings of whole frames (hiding the persons "
            "would take extracting them again)"
        )
        return record
    work = Path(config.work)
    training = config.training
    for split, (probs, labels) in scored.items():
        if not (np.asarray(labels) >= 0).any():
            continue
        dataset = create_dataset(config, work, split, train=False, views=training.views)
        why = dataset.persons_unavailable()
        if why:
            record["status"] = f"not measured: {why}"
            return record
        dataset.set_persons("hide")
        hidden, _, _ = evaluate(model, dataset, device, batch_size=training.batch_size, vote=training.vote)
        groups = [group_of(v) for v in dataset.videos]
        record["splits"][split] = reliance_of(probs, hidden, labels, groups, seed=training.seed)
        record["persons"] = _persons_found(work, dataset)  # (the last split's videos)
    record["status"] = "measured" if record["splits"] else "not measured: no labelled split"
    return record


def _persons_found(work: Path, dataset) -> dict:
    """How many persons a frame were hidden (the pose stage's, and the persons stage's where it found more), how
    many the pose stage alone found, and the models of both stages (their typed sidecars)."""
    from preprocess.pose import PersonsInfo, PoseInfo

    hidden = [np.mean([len(b) for b in dataset.hidden_boxes(i)]) for i in range(len(dataset.videos))]
    found = {}
    for info in (PoseInfo, PersonsInfo):
        sidecars = [
            info.read(work, v.video_id) for v in dataset.videos if (work / info.stage / f"{v.video_id}.json").is_file()
        ]
        counts = [s.persons_per_frame for s in sidecars if s.persons_per_frame is not None]
        found[info.stage] = (
            float(np.mean(counts)) if counts else None,
            ", ".join(sorted({str(s.params.get("backend", "imported")) for s in sidecars})) or None,
        )
    return {
        "per_frame": float(np.mean(hidden)) if hidden else None,  # hidden, every frame (held between pose steps)
        "pose_per_frame": found["pose"][0],
        "backend": found["pose"][1] or "",
        "persons_backend": found["persons"][1],  # the persons stage's model (None: not run)
    }


def summary_line(record: dict, split: str = "val") -> str:
    """One line for a log: what the stream keeps with every person hidden, on ``split`` (else the first measured)."""
    name = record.get("stream", "?")
    if record.get("status") != "measured":
        return f"{name} scene reliance: {record.get('status', 'not measured')}"
    split = split if split in record["splits"] else next(iter(record["splits"]))
    r = record["splits"][split]
    low, high = r["hidden_top1_ci95"]
    kept = "" if r["retained"] is None else f"; it keeps {100 * r['retained']:.0f} % of its gain over chance"
    return (
        f"{name} scene reliance, {split} ({r['videos']} videos): top-1 {100 * r['hidden_top1']:.1f} % "
        f"[{100 * low:.1f}, {100 * high:.1f}] with every person hidden, {100 * r['top1']:.1f} % with them, "
        f"chance {100 * r['chance']:.1f} %{kept}{_hidden_text(record.get('persons'))}"
    )


def _hidden_text(persons: dict | None) -> str:
    """How many people a frame were hidden, found by which models (records before the persons stage lack it)."""
    if not persons or persons.get("per_frame") is None:
        return ""
    found = f"pose: {persons['backend']}" if persons.get("backend") else "pose"
    if persons.get("persons_backend"):
        found += f", persons: {persons['persons_backend']}"
    return f" ({persons['per_frame']:.1f} persons hidden a frame; {found})"


def write(run: str | Path, record: dict) -> Path:
    path = Path(run) / FILE
    write_json(path, record)
    return path


def read(run: str | Path) -> dict | None:
    """A run's scene-reliance record, or None when it has none (pose streams, runs trained before it existed)."""
    path = Path(run) / FILE
    if not path.is_file():
        return None
    try:
        return read_json(path)
    except (OSError, ValueError) as error:
        raise DataError(path, f"not a readable scene-reliance record ({error})") from None


def retained(record: dict | None, split: str = "val") -> float | None:
    """The retained share of a record's ``split`` (None when not measured)."""
    if not record or record.get("status") != "measured":
        return None
    figures = record["splits"].get(split)
    return None if figures is None else figures["retained"]
