"""The manifest: one record per usable video, saved as ``WORK/manifest.json`` (and a CSV copy for people).

It is the contract between ingest and every later stage: preprocessors read sources and sizes from it, streams read
labels and splits, fusion reads the class order.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..batch import DataError, read_json, write_json, write_text
from ..records import VideoRecord

MANIFEST_VERSION = 1
MANIFEST_NAME = "manifest.json"


def id_problem(video_id) -> str | None:
    """Why ``video_id`` cannot name output files (every stage writes ``WORK/<stage>/<id>.<ext>``), or None.

    A separator, a leading dot (``..``, hidden files) or a control character would let an id write or delete
    files outside WORK, or hide them from scans.
    """
    if not isinstance(video_id, str) or not video_id:
        return "an empty video id"
    if "/" in video_id or "\\" in video_id or video_id.startswith(".") or any(ord(c) < 32 for c in video_id):
        return f"video id {video_id!r} is not a safe file name (no / or \\, no leading dot, no control characters)"
    try:
        video_id.encode("utf-8")
    except UnicodeEncodeError:
        return f"video id {video_id.encode('utf-8', 'backslashreplace').decode()!r} is not valid UTF-8"
    return None


@dataclass
class Manifest:
    root: str
    classes: list[str]
    videos: list[VideoRecord]
    split: dict = field(default_factory=dict)
    skipped: list[dict] = field(default_factory=list)

    def label_index(self, label: str) -> int:
        return self.classes.index(label)

    def by_split(self, split: str) -> list[VideoRecord]:
        return [v for v in self.videos if v.split == split]

    def get(self, video_id: str) -> VideoRecord:
        for v in self.videos:
            if v.video_id == video_id:
                return v
        raise KeyError(video_id)

    def summary(self) -> str:
        counts = {s: len(self.by_split(s)) for s in ("train", "val", "test")}
        groups = len({v.group for v in self.videos})
        return (
            f"{len(self.videos)} videos, {len(self.classes)} classes, {groups} groups; "
            f"train {counts['train']} / val {counts['val']} / test {counts['test']}; {len(self.skipped)} skipped"
        )

    def group_leaks(self) -> list[str]:
        """One line per held-out split that shares groups (source videos, performers) with training: clips of one
        group share scenes and dancers, so scores on such a split flatter what those groups have in common, and every
        choice made on them (early stopping, fusion weights, the best stream) leans that way."""
        train_groups = {v.group for v in self.by_split("train")}
        lines = []
        for split in ("val", "test"):
            videos = self.by_split(split)
            shared = {v.group for v in videos} & train_groups
            if shared:
                leaking = sum(v.group in shared for v in videos)
                lines.append(
                    f"warning: {split} shares {len(shared)} of its {len({v.group for v in videos})} groups with train "
                    f"({leaking} of its {len(videos)} videos): its scores overstate accuracy on unseen groups"
                )
        return lines

    def to_json(self) -> dict:
        return {
            "version": MANIFEST_VERSION,
            "root": self.root,
            "classes": self.classes,
            "split": self.split,
            "videos": [asdict(v) for v in self.videos],
            "skipped": self.skipped,
        }

    def save(self, work: str | os.PathLike) -> Path:
        work = Path(work)
        work.mkdir(parents=True, exist_ok=True)
        write_json(work / MANIFEST_NAME, self.to_json())
        table = io.StringIO()
        writer = csv.writer(table, lineterminator="\n")
        columns = ["video_id", "label", "split", "group", "source", "frame_count", "fps", "width", "height"]
        writer.writerow(columns)
        for v in self.videos:
            writer.writerow([getattr(v, c) for c in columns])
        write_text(work / "manifest.csv", table.getvalue())
        return work / MANIFEST_NAME


def load_manifest(work: str | os.PathLike) -> Manifest:
    """The manifest of a work directory (or a manifest.json path itself)."""
    path = Path(work)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise DataError(path, "no manifest here (run bin/ingest DATA WORK first)")
    try:
        data = read_json(path)
    except DataError as err:
        raise DataError(path, f"not a valid manifest ({err.problem})") from None
    try:
        for video in data["videos"]:
            problem = id_problem(video.get("video_id"))
            if problem:
                raise DataError(path, f"{problem}: refused (outputs are named by it)")
        return Manifest(
            root=data["root"],
            classes=list(data["classes"]),
            videos=[VideoRecord(**v) for v in data["videos"]],
            split=data.get("split", {}),
            skipped=data.get("skipped", []),
        )
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataError(path, f"not a valid manifest ({type(err).__name__}: {err})") from None
