"""Dataset ingest: find the videos of a dataset, check them, split them, and write the manifest.

Accepted layouts (``DATA``):

* a folder per class holding video files (``.mp4 .avi .mkv .mov .webm``);
* a folder per class holding frame images, either in Let's Dance naming ``<ytid>_<clipstart>_<frame>.jpg`` (grouped
  into clips ``<ytid>_<clipstart>``, group ``<ytid>``), any ``<clip><sep><number>.<ext>`` naming, or one sub-folder
  of frames per clip;
* a CSV file ``path,label[,split][,group]`` (header optional; paths relative to the CSV's folder).

Every problem (unreadable or empty video, unknown extension, empty or single-clip class, duplicate id, unreadable
frame) is collected as a ``Problem`` naming the file; by default the item is skipped and reported, with ``strict``
the first problem is raised.
"""

from __future__ import annotations

import csv
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..batch import DataError, Progress, map_surviving_crashes
from ..video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, Source, probe
from ..video.reader import printable
from .manifest import MANIFEST_NAME, Manifest, VideoRecord, id_problem, load_manifest
from .splits import SPLITS, make_split

LETS_DANCE_FRAME = re.compile(r"^(?P<ytid>.+)_(?P<start>\d+)_(?P<frame>\d+)$")
NUMBERED_FRAME = re.compile(r"^(?P<clip>.*?)[_\-.]?(?P<frame>\d+)$")


@dataclass(frozen=True)
class Problem:
    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass
class Candidate:
    video_id: str
    label: str
    source: Source
    group: str | None = None
    split: str | None = None


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _frame_clips(folder: Path, images: list[Path]) -> dict[str, tuple[str | None, list[Path]]]:
    """Group frame images into clips: {clip id: (group, frames in order)}."""
    clips: dict[str, list[tuple[int, Path]]] = defaultdict(list)
    groups: dict[str, str | None] = {}
    for image in images:
        m = LETS_DANCE_FRAME.match(image.stem)
        if m:
            cid = f"{m.group('ytid')}_{m.group('start')}"
            groups[cid] = m.group("ytid")
            clips[cid].append((int(m.group("frame")), image))
            continue
        m = NUMBERED_FRAME.match(image.stem)
        cid = m.group("clip") if m and m.group("clip") else folder.name
        groups.setdefault(cid, None)
        clips[cid].append((int(m.group("frame")) if m else 0, image))
    return {cid: (groups[cid], [p for _, p in sorted(frames)]) for cid, frames in clips.items()}


def discover_folder(root: Path, frames_fps: float) -> tuple[list[Candidate], list[Problem], list[str]]:
    """Candidates from a folder-per-class tree; also the class names found (even empty ones)."""
    candidates: list[Candidate] = []
    problems: list[Problem] = []
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not _is_hidden(p))
    if not class_dirs:
        raise DataError(root, "no class folders (expected one sub-folder per class, or a CSV file)")
    for class_dir in class_dirs:
        label = class_dir.name
        images: list[Path] = []
        for entry in sorted(class_dir.iterdir()):
            if _is_hidden(entry):
                continue
            if entry.is_dir():
                frames = sorted(
                    p for p in entry.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not _is_hidden(p)
                )
                if frames:
                    candidates.append(
                        Candidate(entry.name, label, Source(str(entry), tuple(p.name for p in frames), frames_fps))
                    )
                else:
                    problems.append(Problem(str(entry), "clip folder holds no frame images"))
                continue
            ext = entry.suffix.lower()
            if ext in VIDEO_EXTENSIONS:
                candidates.append(Candidate(entry.stem, label, Source(str(entry))))
            elif ext in IMAGE_EXTENSIONS:
                images.append(entry)
            else:
                problems.append(
                    Problem(str(entry), f"unknown extension {entry.suffix or '(none)'!r}: not a video or frame image")
                )
        for cid, (group, frames) in _frame_clips(class_dir, images).items():
            candidates.append(
                Candidate(cid, label, Source(str(class_dir), tuple(p.name for p in frames), frames_fps), group)
            )
    return candidates, problems, [d.name for d in class_dirs]


def discover_csv(path: Path, frames_fps: float) -> tuple[list[Candidate], list[Problem], list[str]]:
    """Candidates from ``path,label[,split][,group]`` rows."""
    candidates: list[Candidate] = []
    problems: list[Problem] = []
    with open(path, newline="", encoding="utf-8-sig") as handle:  # (a spreadsheet's CSV may start with a BOM)
        rows = [row for row in csv.reader(handle) if row and any(cell.strip() for cell in row)]
    if not rows:
        raise DataError(path, "CSV file is empty")
    header = [c.strip().lower() for c in rows[0]]
    if "path" in header and "label" in header:
        columns = {name: header.index(name) for name in ("path", "label", "split", "group") if name in header}
        rows = rows[1:]
    else:
        columns = {name: i for i, name in enumerate(("path", "label", "split", "group")) if i < len(rows[0])}
    for n, row in enumerate(rows, start=2 if "path" in header else 1):
        where = f"{path}:{n}"
        try:
            raw = row[columns["path"]].strip()
            label = row[columns["label"]].strip()
        except IndexError:
            problems.append(Problem(where, "row needs at least path,label"))
            continue
        split = row[columns["split"]].strip().lower() if "split" in columns and columns["split"] < len(row) else ""
        group = row[columns["group"]].strip() if "group" in columns and columns["group"] < len(row) else ""
        if split and split not in SPLITS:
            problems.append(Problem(where, f"split {split!r} is not one of {', '.join(SPLITS)}"))
            continue
        target = Path(raw) if Path(raw).is_absolute() else path.parent / raw
        if not label:
            problems.append(Problem(where, "empty label"))
            continue
        if target.is_dir():
            frames = sorted(
                p.name for p in target.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not _is_hidden(p)
            )
            source = Source(str(target), tuple(frames), frames_fps)
        elif target.suffix.lower() in VIDEO_EXTENSIONS:
            source = Source(str(target))
        else:
            problems.append(
                Problem(str(target), f"unknown extension {target.suffix or '(none)'!r}: not a video or frame folder")
            )
            continue
        candidates.append(
            Candidate(target.name if target.is_dir() else target.stem, label, source, group or None, split or None)
        )
    return candidates, problems, sorted({c.label for c in candidates})


def _probe_crashed(candidate: Candidate):
    return candidate, None, Problem(candidate.source.path, "the decoder crashed on it (the process died): skipped")


def _probe_job(candidate: Candidate):
    try:
        return candidate, probe(candidate.source), None
    except DataError as err:
        return candidate, None, Problem(err.path, err.problem)


def ingest(
    data: str | os.PathLike,
    *,
    ratios=(0.8, 0.1, 0.1),
    seed: int = 0,
    group_regex: str | None = None,
    split_from: str | os.PathLike | None = None,
    frames_fps: float = 30.0,
    strict: bool = False,
    workers: int | None = None,
) -> Manifest:
    """Discover, probe, check and split a dataset; returns the manifest (not yet saved)."""
    try:
        pattern = re.compile(group_regex) if group_regex else None
    except re.error as err:
        raise DataError(f"--group-regex {group_regex!r}", f"not a valid regular expression ({err})") from None
    data = Path(data).resolve()
    if not data.exists():
        raise DataError(data, "no such file or folder")
    if data.is_file():
        if data.suffix.lower() != ".csv":
            raise DataError(data, "expected a folder with one sub-folder per class, or a .csv file of path,label")
        candidates, problems, class_names = discover_csv(data, frames_fps)
    else:
        candidates, problems, class_names = discover_folder(data, frames_fps)

    def fail_fast():
        if strict and problems:
            raise DataError(problems[0].path, problems[0].problem)

    fail_fast()
    unique = _unique_ids(candidates, problems)
    fail_fast()
    records = _probe_all(unique, workers or min(4, os.cpu_count() or 1), problems)
    fail_fast()
    inferred = _assign_groups(records, pattern, group_regex, problems)
    fail_fast()
    _refuse_case_clashes(data, class_names)
    records = _learnable(records, class_names, data, problems)
    fail_fast()
    if not records:
        raise DataError(data, "no usable videos")
    usable = sorted({r.label for r in records})
    if len(usable) < 2:
        raise DataError(data, f"only one usable class ({usable[0]}): a classifier needs at least two")

    _assign_splits(records, ratios, seed, split_from, problems)
    fail_fast()
    classes = sorted({r.label for r in records})
    return Manifest(
        root=str(data.resolve()),
        classes=classes,
        videos=sorted(records, key=lambda r: r.video_id),
        split={
            "ratios": list(ratios),
            "seed": seed,
            "group_regex": group_regex or inferred,
            **({"groups": f"from the clip names <source>_<start>_<duration> ({inferred})"} if inferred else {}),
            "source": "file" if split_from else ("csv" if any(r.split for r in records) else "generated"),
        },
        skipped=[{"path": p.path, "problem": p.problem} for p in problems],
    )


def _unique_ids(candidates: list[Candidate], problems: list[Problem]) -> list[Candidate]:
    """The candidates whose ids are safe file names, one per id."""
    # Duplicate ids: later outputs are keyed by id, so the first (in path order) wins and the rest are reported.
    seen: dict[str, Candidate] = {}
    unique: list[Candidate] = []
    for c in sorted(candidates, key=lambda c: (c.video_id, c.source.path)):
        unsafe = id_problem(c.video_id)
        if unsafe:
            problems.append(Problem(printable(c.source.path), f"{unsafe}: skipped (outputs are named by the id)"))
            continue
        if c.video_id in seen:
            problems.append(
                Problem(c.source.path, f"duplicate video id {c.video_id!r} (also {seen[c.video_id].source.path})")
            )
            continue
        seen[c.video_id] = c
        unique.append(c)
    return unique


def _probe_all(unique: list[Candidate], workers: int, problems: list[Problem]) -> list[VideoRecord]:
    """A record of every candidate that decodes (probed in worker processes); the others' problems listed."""
    records: list[VideoRecord] = []
    with Progress(len(unique), "videos", desc="ingest") as progress:

        def collect(results):
            for candidate, info, problem in results:
                progress.advance(frames=info.frame_count if info else 0)
                if problem:
                    problems.append(problem)
                else:
                    records.append(VideoRecord.from_probe(candidate, info))

        # In worker processes even for a few videos: a decoder that crashes on a file fails that file only.
        collect(map_surviving_crashes(_probe_job, unique, workers, crashed=_probe_crashed))
    return records


def _assign_groups(records: list[VideoRecord], pattern, group_regex, problems: list[Problem]) -> str | None:
    """Give every record its group; the clip-name regex used when the groups were inferred from the names, else
    None."""
    # Groups: a regex on the id beats the dataset's own (CSV column, Let's Dance ytid); default: each clip alone.
    if pattern is not None:
        for r in records:
            m = pattern.search(r.video_id)
            if not m:
                problems.append(Problem(r.source, f"group regex {group_regex!r} does not match id {r.video_id!r}"))
                r.group = r.video_id
            else:
                r.group = m.groupdict().get("group") or (m.group(1) if m.groups() else m.group(0))
    inferred = None
    if pattern is None and not any(r.group for r in records):
        inferred = clip_name_groups(records)
    for r in records:
        r.group = r.group or r.video_id
    return inferred


def _refuse_case_clashes(data: Path, class_names) -> None:
    # Labels that differ only in case are almost always one style typed two ways ("Ballet", "ballet"): refused by
    # name rather than made two classes without a word.
    by_folded: dict[str, set[str]] = {}
    for name in class_names:
        by_folded.setdefault(name.casefold(), set()).add(name)
    clashes = sorted(sorted(names) for names in by_folded.values() if len(names) > 1)
    if clashes:
        raise DataError(
            data,
            "labels that differ only in case: "
            + "; ".join(" and ".join(repr(n) for n in names) for names in clashes)
            + " (one style typed two ways? give them one spelling)",
        )


def _learnable(records: list[VideoRecord], class_names, data: Path, problems: list[Problem]) -> list[VideoRecord]:
    # Classes that cannot be learnt and tested: empty ones and those with a single clip.
    per_class = Counter(r.label for r in records)
    class_folder = {c: (str(data / c) if data.is_dir() else f"{data} (label {c})") for c in class_names}
    for name in class_names:
        if per_class[name] == 0:
            problems.append(Problem(class_folder[name], "class has no usable videos: skipped"))
        elif per_class[name] == 1:
            problems.append(
                Problem(class_folder[name], "class has a single clip (cannot be in both training and test): skipped")
            )
    return [r for r in records if per_class[r.label] >= 2]


def _assign_splits(records: list[VideoRecord], ratios, seed: int, split_from, problems: list[Problem]) -> None:
    """Splits from the user's file or CSV column where given; the rest generated (stratified, group-aware)."""
    if split_from:
        path = Path(split_from)
        given: dict[str, str] = {}
        with open(path, newline="", encoding="utf-8-sig") as handle:
            for n, row in enumerate(csv.reader(handle), start=1):
                if not row or row[0].strip().lower() in ("video_id", "id"):
                    continue
                if len(row) < 2 or row[1].strip().lower() not in SPLITS:
                    problems.append(Problem(f"{path}:{n}", "expected video_id,split with split train/val/test"))
                    continue
                given[row[0].strip()] = row[1].strip().lower()
        for r in records:
            r.split = given.get(r.video_id)
            if r.split is None:
                problems.append(Problem(r.source, f"video {r.video_id!r} has no split in {path}: skipped"))
        records[:] = [r for r in records if r.split]
        return
    if all(r.split for r in records):
        return
    pending = [r for r in records if not r.split]
    # A group that already has a split from the file keeps it, so a group never straddles splits.
    fixed_group = {r.group: r.split for r in records if r.split}
    for r in pending:
        if r.group in fixed_group:
            r.split = fixed_group[r.group]
    pending = [r for r in pending if not r.split]
    if pending:
        assignment = make_split(
            [r.video_id for r in pending], [r.label for r in pending], [r.group for r in pending], ratios, seed
        )
        for r in pending:
            r.split = assignment[r.video_id]


# Clips cut from longer videos are often named <source>_<start>_<duration> (our street-dance set, many collections):
# clips of one source share its camera, venue and dancers, so they must not straddle splits.
CLIP_NAME_REGEX = r"^(?P<group>.+)_\d+(?:\.\d+)?_\d+(?:\.\d+)?$"


def clip_name_groups(records) -> str | None:
    """Without groups from the dataset or ``--group-regex``: when every id reads ``<source>_<start>_<duration>`` and
    some sources give several clips, each record's group becomes its source and the regex used is returned (the
    manifest and bin/ingest say so); else nothing changes and None."""
    pattern = re.compile(CLIP_NAME_REGEX)
    matches = [pattern.match(r.video_id) for r in records]
    if not records or not all(matches):
        return None
    sources = [m.group("group") for m in matches]
    if len(set(sources)) == len(sources):
        return None  # every clip from its own source: nothing to group
    for r, source in zip(records, sources):
        r.group = source
    return CLIP_NAME_REGEX


def names_a_manifest(data: str | os.PathLike) -> bool:
    """DATA is a manifest.json or a work directory holding one (not a dataset to ingest)."""
    data = Path(data)
    return (data.is_file() and data.suffix == ".json") or (data.is_dir() and (data / MANIFEST_NAME).is_file())


def manifest_for(data: str | os.PathLike, work: str | os.PathLike, **ingest_options) -> Manifest:
    """The manifest a preprocessing command works on: DATA is a manifest.json, a work directory holding one, or a
    dataset, which is ingested into WORK (once: a WORK manifest of the same dataset root is reused). A manifest
    read from elsewhere is copied into WORK when WORK has none."""
    data = Path(data)
    if names_a_manifest(data):
        manifest = load_manifest(data)
        if not (Path(work) / MANIFEST_NAME).is_file():
            manifest.save(work)  # OUT is a work directory of its own: status, training and classify read it there
        return manifest
    existing = Path(work) / MANIFEST_NAME
    if existing.is_file():
        manifest = load_manifest(existing)
        if Path(manifest.root) == data.resolve():
            return manifest
    manifest = ingest(data, **ingest_options)
    manifest.save(work)
    return manifest
