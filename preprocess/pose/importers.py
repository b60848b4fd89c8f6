"""Import skeletons made elsewhere into the stored pose format (``WORK/pose/<video_id>.npz``).

Formats:

* ``letsdance``: Let's Dance per-frame JSON ``<style>/<ytid>_<clipstart>_<frame>.json``, each a list of people,
  a person being ``[detection name, [keypoint name, [x, y]], ...]`` with COCO keypoint names (no confidences:
  present keypoints get 1);
* ``openpose``: a folder per video of OpenPose per-frame ``*_keypoints.json`` (``people[i].pose_keypoints_2d`` flat
  x, y, c; BODY_25 or the older COCO-18, told apart by length; (0, 0, 0) means missing);
* ``coco``: a COCO keypoint file, either a dataset file (``images`` + ``annotations``) or a results list with the
  images given separately; an image's ``file_name`` names its video and frame as ``<video_id>/<frame>.<ext>`` or
  Let's Dance style ``<ytid>_<clipstart>_<frame>.<ext>``.

Frames are ordered by their number and persons are tracked into slots exactly as for estimated poses. Videos are
matched to the manifest by id; frames beyond what a video's files cover stay empty (mask False).
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from ..batch import DataError, read_json, write_npz, write_sidecar
from ..records import VideoRecord, VideoSet
from .keypoints import COCO_KEYPOINTS, OPENPOSE_BODY25_TO_COCO, OPENPOSE_COCO18_TO_COCO
from .storage import assemble
from .tracking import track_sequence

IMPORT_VERSION = 2  # 2: frames placed by the manifest (names or --first-frame), not guessed
FRAME_NUMBER = re.compile(r"(\d+)(?!.*\d)")
LETS_DANCE_NAME = re.compile(r"^(?P<video>.+_\d+)_(?P<frame>\d+)$")

# video id -> {frame number: [(keypoints (17, 3), score), ...]}
Frames = dict[str, dict[int, list[tuple[np.ndarray, float]]]]


def _read_json(path: Path):
    try:
        return read_json(path)
    except DataError as err:
        raise DataError(path, f"unreadable JSON ({err.problem})") from None
    except OSError as err:
        raise DataError(path, f"unreadable JSON ({err.__class__.__name__})") from None


class ImplausiblePerson(ValueError):
    """A skeleton whose numbers cannot be a person's."""


MAX_COORDINATE = 1e5  # pixels: far beyond any frame, and far below what turns into Inf downstream


def _checked(kp: np.ndarray) -> np.ndarray:
    """A skeleton (17, 3) as it may enter the stored format, or ImplausiblePerson saying why not: NaN or Inf (JSON
    "NaN", an overflowing 1e308), a coordinate beyond MAX_COORDINATE, a negative confidence."""
    if not np.isfinite(kp).all():
        raise ImplausiblePerson("a coordinate or confidence is not finite (NaN or Inf)")
    if np.abs(kp[:, :2]).max() > MAX_COORDINATE:
        raise ImplausiblePerson(f"a coordinate beyond ±{MAX_COORDINATE:g} pixels")
    if (kp[:, 2] < 0).any():
        raise ImplausiblePerson("a negative confidence")
    kp[:, 2] = np.minimum(kp[:, 2], 1.0)  # some tools write 2 for "visible" in results files: full confidence
    return kp


def read_letsdance(root: Path, problems: list[str], skip: Path | None = None) -> Frames:
    """Every Let's Dance frame file under ``root`` (files under ``skip``, the work directory being written when it
    lies inside ``root``, are not theirs)."""
    out: Frames = defaultdict(dict)
    index = {name: i for i, name in enumerate(COCO_KEYPOINTS)}
    for path in sorted(root.rglob("*.json")):
        if skip is not None and path.resolve().is_relative_to(skip):
            continue
        m = LETS_DANCE_NAME.match(path.stem)
        if not m:
            problems.append(f"{path}: name is not <ytid>_<clipstart>_<frame>.json")
            continue
        try:
            data = _read_json(path)
            people = []
            for person in data:
                kp = np.zeros((17, 3), np.float32)
                for entry in person[1:]:
                    name, (x, y) = entry[0], entry[1]
                    if name in index:
                        kp[index[name]] = (float(x), float(y), 1.0)
                if kp[:, 2].any():
                    people.append((_checked(kp), float(kp[:, 2].mean())))
        except DataError as err:
            problems.append(str(err))
            continue
        except ImplausiblePerson as err:
            problems.append(f"{path}: {err}: skipped")
            continue
        except (TypeError, ValueError, IndexError, KeyError):
            problems.append(f"{path}: not Let's Dance pose JSON (a list of [name, [keypoint, [x, y]], ...] people)")
            continue
        out[m.group("video")][int(m.group("frame"))] = people
    return out


def openpose_to_coco(flat: list[float]) -> np.ndarray:
    values = np.asarray(flat, dtype=np.float32).reshape(-1, 3)
    if len(values) == 25:
        mapping = OPENPOSE_BODY25_TO_COCO
    elif len(values) == 18:
        mapping = OPENPOSE_COCO18_TO_COCO
    else:
        raise ValueError(f"{len(values)} keypoints: neither BODY_25 nor COCO-18")
    kp = values[list(mapping)].copy()
    kp[(kp[:, 0] == 0) & (kp[:, 1] == 0), 2] = 0  # (0, 0, c) is OpenPose's "missing"
    return kp


def read_openpose(root: Path, problems: list[str]) -> Frames:
    out: Frames = defaultdict(dict)
    for path in sorted(root.rglob("*_keypoints.json")):  # (a work directory's files never end so)
        video = path.parent.name
        m = FRAME_NUMBER.search(path.stem[: -len("_keypoints")])
        if not m:
            problems.append(f"{path}: no frame number in the name")
            continue
        try:
            data = _read_json(path)
            people = []
            for person in data.get("people", []):
                kp = _checked(openpose_to_coco(person["pose_keypoints_2d"]))
                if kp[:, 2].any():
                    people.append((kp, float(kp[:, 2].mean())))
        except DataError as err:
            problems.append(str(err))
            continue
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            problems.append(f"{path}: not usable OpenPose JSON ({err}): skipped")
            continue
        out[video][int(m.group(1))] = people
    return out


def _video_and_frame(file_name: str) -> tuple[str, int] | None:
    path = Path(file_name)
    m = LETS_DANCE_NAME.match(path.stem)
    if m:
        return m.group("video"), int(m.group("frame"))
    number = FRAME_NUMBER.search(path.stem)
    if path.parent.name and number:
        return path.parent.name, int(number.group(1))
    return None


def read_coco(path: Path, problems: list[str], images_file: Path | None = None) -> Frames:
    data = _read_json(path)
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        images, annotations = data.get("images", []), data["annotations"]
    elif isinstance(data, list):
        if images_file is None:
            raise DataError(path, "a COCO results list needs --images FILE (a COCO file with the 'images' list)")
        listing = _read_json(images_file)
        images = listing.get("images", []) if isinstance(listing, dict) else None
        annotations = data
    else:
        raise DataError(path, "not a COCO keypoint file (expected images + annotations, or a results list)")
    if not isinstance(images, list):
        raise DataError(images_file or path, "not a COCO keypoint file ('images' is not a list)")
    where, unplaced, taken = {}, set(), set()
    for n, image in enumerate(images):
        try:
            place = _video_and_frame(str(image.get("file_name", "")))
            image_id = image["id"]
        except (AttributeError, KeyError, TypeError):
            problems.append(f"{images_file or path}: image {n} is not a COCO image record (id, file_name): skipped")
            continue
        if place is None:
            problems.append(
                f"{path}: image {image.get('file_name')!r} does not name <video_id>/<frame> or "
                "<ytid>_<clipstart>_<frame>"
            )
            unplaced.add(image_id)
            continue
        if image_id in where or image_id in unplaced:
            problems.append(f"{images_file or path}: image id {image_id!r} is used twice: its second record skipped")
            continue
        if place in taken:
            problems.append(
                f"{images_file or path}: image {image_id!r} names {place[0]!r} frame {place[1]} as another does: "
                "skipped"
            )
            continue
        where[image_id] = place
        taken.add(place)
    out: Frames = defaultdict(dict)
    for video, frame in where.values():
        out[video].setdefault(frame, [])  # an image with nobody annotated is an empty frame, not a missing one
    for n, ann in enumerate(annotations):
        try:
            if ann.get("category_id", 1) != 1:
                continue
            if ann.get("image_id") not in where:
                if ann.get("image_id") not in unplaced:  # (an unplaced image was reported already)
                    what = ann.get("id", n)
                    problems.append(
                        f"{path}: annotation {what} names image {ann.get('image_id')!r}, which no image record has: "
                        "skipped"
                    )
                continue
            kp = np.asarray(ann["keypoints"], dtype=np.float32).reshape(17, 3)
            score = float(ann.get("score", 1.0))
            if "score" in ann:  # a results file: per-keypoint scores in [0, 1]
                kp = _checked(kp)
            else:  # ground truth: COCO visibility flags 0/1/2 become a confidence 0 or 1
                if not set(np.unique(kp[:, 2]).tolist()) <= {0.0, 1.0, 2.0}:
                    raise ValueError("a visibility flag other than 0, 1 or 2")
                kp[:, 2] = (kp[:, 2] > 0).astype(np.float32)
                kp = _checked(kp)
            if not np.isfinite(score):
                raise ValueError("a non-finite score")
        except (AttributeError, KeyError, TypeError, ValueError) as err:
            what = ann.get("id", n) if isinstance(ann, dict) else n
            problems.append(f"{path}: annotation {what} is not a usable COCO person ({err}): skipped")
            continue
        video, frame = where[ann["image_id"]]
        out[video][frame].append((kp, score))
    return dict(out)


def _frame_indices(video: VideoRecord, first_frame: int):
    """Frame number in an imported name → index in the video (None when the video has no such frame)."""
    if video.frames is not None:
        by_number = {}
        for index, name in enumerate(video.frames):
            m = FRAME_NUMBER.search(Path(name).stem)
            if m:
                by_number.setdefault(int(m.group(1)), index)
        return by_number.get

    def shifted(number: int) -> int | None:
        index = number - first_frame
        return index if 0 <= index < video.frame_count else None

    return shifted


def import_pose(
    fmt: str,
    source: str,
    manifest: VideoSet,
    work: str,
    *,
    max_persons: int = 20,
    min_keypoint_confidence: float = 0.2,
    images_file: str | None = None,
    first_frame: int = 0,
):
    """Import ``source`` in format ``fmt`` into WORK/pose; returns (imported video ids, problems).

    Imported frames are placed by the manifest, never by a guess: a video of frame images takes each skeleton at
    the image whose file name carries the same frame number; a video file takes frame number n at index
    n - ``first_frame`` (0 as OpenPose numbers frames; 1 for mmaction2-style ``img_00001``). Frames nobody gave stay
    empty (mask False); a number outside the video is reported and skipped.
    """
    source_path = Path(source)
    if not source_path.exists():
        raise DataError(source_path, "no such file or folder")
    problems: list[str] = []
    if fmt == "letsdance":
        frames = read_letsdance(source_path, problems, skip=Path(work).resolve())
    elif fmt == "openpose":
        frames = read_openpose(source_path, problems)
    elif fmt == "coco":
        frames = read_coco(source_path, problems, Path(images_file) if images_file else None)
    else:
        raise ValueError(f"unknown pose format {fmt!r}: letsdance, openpose or coco")
    by_id = {v.video_id: v for v in manifest.videos}
    params = {
        "version": IMPORT_VERSION,
        "backend": f"import:{fmt}",
        "source": str(source_path.resolve()),
        "max_persons": max_persons,
        "step": 1,
        "min_keypoint_confidence": min_keypoint_confidence,
        "first_frame": first_frame,
    }
    out_dir = Path(work) / "pose"
    out_dir.mkdir(parents=True, exist_ok=True)
    imported = []
    for video_id in sorted(frames):
        video = by_id.get(video_id)
        if video is None:
            problems.append(f"{source_path}: video {video_id!r} is not in the manifest: skipped")
            continue
        count = video.frame_count
        index_of = _frame_indices(video, first_frame)
        per_frame: list[list] = [[] for _ in range(count)]
        placed = 0
        for number in sorted(frames[video_id]):
            index = index_of(number)
            if index is None:
                problems.append(
                    f"{source_path}: video {video_id!r} has no frame {number} ({count} frames"
                    f"{', first numbered ' + str(first_frame) if video.frames is None else ''}): skipped"
                )
                continue
            per_frame[index] = frames[video_id][number]
            placed += 1
        if not placed:
            problems.append(f"{source_path}: video {video_id!r}: none of its frames is in the video: not imported")
            continue
        keypoints, mask = track_sequence(per_frame, max_persons)
        arrays = assemble(keypoints, mask, np.arange(count), min_keypoint_confidence)
        write_npz(out_dir / f"{video_id}.npz", **arrays)
        write_sidecar(
            out_dir,
            video,
            params,
            frames=count,
            width=video.width,
            height=video.height,
            persons_per_frame=round(float(mask.sum(1).mean()), 3),
        )
        imported.append(video_id)
    return imported, problems
