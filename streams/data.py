"""Per-modality clip datasets over a preprocessed work directory.

Each item is ``(tensor, label, video index, view)``. Training items are drawn with per-item randomness seeded from
(seed, epoch, index), so results do not depend on the number of loader workers or processes. Evaluation gives
``views`` deterministic views per video (temporal offsets spread over the clip) whose scores are averaged per video.

Horizontal flip, per modality:
* RGB: mirror the image;
* flow: mirror the field and negate its x component (motion to the right becomes motion to the left);
* pose: negate normalised x, swap left/right keypoints, mirror the person's position in the frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from preprocess import DataError, load_manifest, load_pose
from preprocess.batch import read_json, read_sidecar
from preprocess.flow import to_pixels
from preprocess.pose import flip_permutation
from preprocess.stages import STAGES
from preprocess.video.crop import box_mask, hidden_person_boxes

from .augment import SKELETON_AUGMENTS, random_skeleton_augment
from .sampling import clip_duration, item_times, items_at, window_starts

RGB_MEAN = np.array([0.45, 0.45, 0.45], np.float32)
RGB_STD = np.array([0.225, 0.225, 0.225], np.float32)
POSE_FEATURES = 17 * 3 + 3  # normalised x, y, confidence per keypoint; box centre x, y and size in the frame


# What a pixel dataset does with the people in its clips (``_ClipDataset.persons``):
#   keep: nothing; hide: every tracked person's widened box painted with the input's normalisation mean (0 after
#   normalisation: the grey of an average frame) for frames, zero motion for flow; mark: the clip comes with where
#   its persons are (``PixelClip``), for a loss that looks at both (streams.train's human-mask confusion).
PERSONS = ("keep", "hide", "mark")
DEFAULT_PERSON_MARGIN = 0.15  # the crop margin (preprocess.video.crop): a box widened by 15 % of its side per side


class PixelClip(NamedTuple):
    """A pixel clip and where its persons are: ``pixels`` the network's input (..., C, S, S), ``persons``
    (..., 1, S, S) 1.0 inside a tracked person's widened box, aligned with it (same crop, resize and flip)."""

    pixels: torch.Tensor
    persons: torch.Tensor

    def hidden(self) -> torch.Tensor:
        """The clip with every person painted out (the value 0 of the normalised input: mean grey, no motion)."""
        return self.pixels * (1 - self.persons)


def _require(work: Path, stage: str, video_ids: list[str]) -> dict:
    """Sidecars of one preprocessing stage for every video (typed: ``FramesInfo``, ``FlowInfo``, ``PoseInfo``), or
    a named error for the first one missing."""
    folder = work / stage
    if not folder.is_dir():
        raise DataError(folder, f"no {stage} preprocessing in this work directory (run bin/preprocess {stage} first)")
    # the typed reader of a preprocessing stage's sidecars (features: bin/extract-features' own, plain JSON)
    reader = STAGES[stage].info if stage in STAGES else None
    check = STAGES[stage].task({}) if stage in STAGES else None
    out = {}
    for vid in video_ids:
        if reader is not None:
            data, side = read_sidecar(folder, vid, reader.how)
            out[vid] = reader.from_sidecar(data, side)
            # its data file against its sidecar (shape, size; an archive's CRCs), before the first epoch, not after
            problem = check.verify(folder / f"{vid}{check.data_suffix}", data)
            if problem:
                raise DataError(folder / f"{vid}{check.data_suffix}", f"{problem} (run bin/preprocess {stage} again)")
            continue
        side = folder / f"{vid}.json"
        if not side.is_file():
            raise DataError(side, f"missing {stage} output for video {vid!r} (run bin/{stage.split('/')[0]})")
        out[vid] = read_json(side)
    return out


class _ClipDataset(Dataset):
    stage = ""

    def __init__(
        self,
        work,
        split: str,
        *,
        train: bool,
        views: int = 1,
        seed: int = 0,
        flip: bool = True,
        video_ids: list[str] | None = None,
        sample_fps: float | None = None,
    ):
        self.work = Path(work)
        self.manifest = load_manifest(self.work)
        self.classes = self.manifest.classes
        videos = self.manifest.by_split(split)
        if video_ids is not None:
            wanted = set(video_ids)
            videos = [v for v in videos if v.video_id in wanted]
        if not videos:
            raise DataError(self.work / "manifest.json", f"no videos in split {split!r}")
        self.videos = videos
        # -1 for a video whose label is not one of the classes (unknown, as for new videos to classify)
        self.labels = np.array(
            [self.classes.index(v.label) if v.label in self.classes else -1 for v in videos], np.int64
        )
        self.train, self.views, self.seed, self.flip = train, (1 if train else views), seed, flip
        self.epoch = 0
        self.repeats = 1  # a training epoch can go over the videos several times (small datasets)
        self.meta = _require(self.work, self.stage, [v.video_id for v in videos])
        # Instants are sampled at this rate (None: each video's own rate, i.e. frame by frame); see streams.sampling.
        self.sample_fps = sample_fps
        self.persons = "keep"  # see PERSONS and set_persons
        self._person_boxes: dict[int, list[np.ndarray]] = {}

    # ---- the people in a clip (pixel datasets: frames, flow) ---------------------------------------------------

    def set_persons(self, mode: str) -> None:
        """``keep``, ``hide`` or ``mark`` the tracked persons of every clip (see PERSONS). Needs WORK/pose for every
        video and a stage stored uncropped; a named DataError otherwise."""
        if mode not in PERSONS:
            raise ValueError(f"unknown persons mode {mode!r}: {', '.join(PERSONS)}")
        if mode != "keep":
            why = self.persons_unavailable()
            if why:
                raise DataError(self.work / self.stage, f"cannot hide the persons of its clips: {why}")
        self.persons = mode

    def persons_unavailable(self) -> str | None:
        """Why the persons of this dataset's clips cannot be found (None when they can)."""
        if not hasattr(self, "_source_frames"):
            return f"the {self.stage} stream reads no pixels of its own"
        if any((m.params or {}).get("crop") == "dancers" for m in self.meta.values()):
            return f"its {self.stage} are dancer-cropped (the persons fill the frame)"
        missing = [
            v.video_id
            for v in self.videos
            if not any((self.work / stage / f"{v.video_id}.npz").is_file() for stage in ("pose", "persons"))
        ]
        if missing:
            count = f"{len(missing)} of its {len(self.videos)} videos"
            return f"no pose for {count} (e.g. {missing[0]}: run bin/preprocess pose)"
        return None

    def hidden_boxes(self, i: int) -> list[np.ndarray]:
        """Per source frame of video i, the boxes of every person hiding covers (source pixels, widened by the
        margin): the pose stage's, with the persons stage's where it found more (preprocess.video.crop)."""
        if i not in self._person_boxes:
            self._person_boxes[i] = hidden_person_boxes(self.work, self.videos[i], margin=self.person_margin(i))
        return self._person_boxes[i]

    def person_margin(self, i: int) -> float:
        # the margin the stage widened boxes by (dimmed frames record it), else the crop default
        return float((self.meta[self.videos[i].video_id].params or {}).get("crop_margin", DEFAULT_PERSON_MARGIN))

    def person_masks(self, i: int, items: np.ndarray, shape: tuple[int, int], box, size: int, flip: bool):
        """(len(items), 1, size, size) float32 masks of the stored ``items`` of video i (stored at ``shape``), each
        the union of the boxes of the source frames the item shows, cropped by ``box`` (y0, x0, side), resized
        and flipped as the item's pixels were."""
        import cv2

        boxes, video = self.hidden_boxes(i), self.videos[i]
        h, w = shape
        scale = (w / video.width, h / video.height)
        y0, x0, side = box
        out = np.zeros((len(items), 1, size, size), np.float32)
        for n, item in enumerate(np.asarray(items).tolist()):
            frames = [f for f in self._source_frames(i, item) if 0 <= f < len(boxes)]
            if not frames:
                continue
            inside = box_mask(np.concatenate([boxes[f] for f in frames]), h, w, scale)[y0 : y0 + side, x0 : x0 + side]
            inside = cv2.resize(inside.astype(np.uint8), (size, size), interpolation=cv2.INTER_NEAREST)
            out[n, 0] = inside[:, ::-1] if flip else inside
        return out

    def with_persons(self, pixels: np.ndarray, i: int, items, shape, box, flip: bool, *, per_item: int = 1):
        """``pixels`` (N, C, S, S) as the persons mode asks: unchanged, hidden, or a ``PixelClip`` with the masks.
        ``items``: the stored items they show, ``per_item`` of them each (a flow stack's L fields: its mask is where
        anybody is in any of them)."""
        pixels = np.ascontiguousarray(pixels, np.float32)
        if self.persons == "keep":
            return torch.from_numpy(pixels)
        size = pixels.shape[-1]
        masks = self.person_masks(i, items, shape, box, size, flip)
        masks = masks.reshape(len(pixels), per_item, size, size).max(1, keepdims=True)
        if self.persons == "hide":
            return torch.from_numpy(pixels * (1 - masks))
        return PixelClip(torch.from_numpy(pixels), torch.from_numpy(masks))

    def fps(self, i: int) -> float:
        """Frame rate of video i (its source's, from the manifest)."""
        return float(self.videos[i].fps or 25.0)

    def step_s(self, i: int) -> float:
        """Seconds between consecutive samples of one window (one frame at the sampling rate)."""
        return 1.0 / (self.sample_fps or self.fps(i))

    def times(self, i: int) -> np.ndarray:
        """Seconds of video i's stored items (frames, flow fields, pose frames ...)."""
        raise NotImplementedError

    def sample_times(self, i: int, rng: np.random.Generator | None = None, view: int = 0) -> np.ndarray:
        """Seconds of the items a clip of video i is made of, in order (the instants actually sampled)."""
        return self.times(i)[np.concatenate([np.ravel(p) for p in self.picks(i, rng, view)])]

    def windows(self, i: int, count: int, length: int, rng, view) -> list[np.ndarray]:
        """Item indices of ``count`` windows (one per equal segment of the clip) of ``length`` instants one sample
        period apart: TSN's segments by time."""
        times = self.times(i)
        step = self.step_s(i)
        starts = window_starts(clip_duration(times, self.fps(i)), count, (length - 1) * step, rng, view, self.views)
        return [items_at(times, t + step * np.arange(length)) for t in starts]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self):
        return len(self.videos) * self.views * self.repeats

    def rng(self, index: int) -> np.random.Generator | None:
        # keyed by the index within the whole epoch, so each repeat of a video gets its own augmentation
        return np.random.default_rng([self.seed, self.epoch, index]) if self.train else None

    def __getitem__(self, index):
        """Item ``index``, or ``(epoch, index)`` (from ``streams.train.EpochSampler``: the epoch travels with the
        index to a loader worker that keeps its own copy of the dataset)."""
        if isinstance(index, tuple):
            self.epoch, index = index
        if not 0 <= index < len(self):  # (an end, so that iterating a dataset stops)
            raise IndexError(f"item {index} of a dataset of {len(self)}")
        video_index, view = divmod(index % (len(self.videos) * self.views), self.views)
        rng = self.rng(index)
        return self.load(video_index, rng, view), int(self.labels[video_index]), video_index, view


def _crop_box(h: int, w: int, size: int, rng: np.random.Generator | None, scale=(0.6, 1.0)):
    """(y0, x0, side): a random square of ``scale`` of the short side in training, the centre square otherwise."""
    short = min(h, w)
    side = int(round(short * (rng.uniform(*scale) if rng is not None else 1.0)))
    side = max(min(side, short), 8)
    if rng is not None:
        return int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1)), side
    return (h - side) // 2, (w - side) // 2, side


def _resize_stack(stack: np.ndarray, size: int) -> np.ndarray:
    """(C, s, s) → (C, size, size), bilinear: one OpenCV call for all channels (as (s, s, C); OpenCV takes up to 512
    at once; its multi-channel path agrees with resizing channel by channel to ~1e-5 of the values)."""
    import cv2

    if stack.shape[-1] == size:
        return stack
    if stack.shape[0] > 512:
        return np.concatenate([_resize_stack(part, size) for part in np.array_split(stack, -(-len(stack) // 512))])
    resized = cv2.resize(np.ascontiguousarray(stack.transpose(1, 2, 0)), (size, size), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(resized.reshape(size, size, -1).transpose(2, 0, 1))


class RGBSegments(_ClipDataset):
    """K frames, one per segment, from the frame cache → (K, 3, S, S) float32, normalised."""

    stage = "frames"

    def __init__(
        self,
        work,
        split,
        *,
        segments: int = 3,
        size: int = 112,
        mean=RGB_MEAN,
        std=RGB_STD,
        background_erasing: float = 0.0,
        **kw,
    ):
        super().__init__(work, split, **kw)
        self.segments, self.size = segments, size
        self.background_erasing = float(background_erasing)
        # the statistics of the weights the network starts from (ImageNet's for torchvision's, ours otherwise)
        self.mean = np.asarray(mean, np.float32)[:, None, None]
        self.std = np.asarray(std, np.float32)[:, None, None]

    def times(self, i):
        return item_times(self.meta[self.videos[i].video_id].frame_indices, self.fps(i))

    def picks(self, i, rng, view):
        return self.windows(i, self.segments, 1, rng, view)

    def _source_frames(self, i, item):
        # stored frame → the source frame it is
        return [int(self.meta[self.videos[i].video_id].frame_indices[item])]

    def _frame(self, frames, t, box, flip) -> np.ndarray:
        y0, x0, side = box
        image = np.asarray(frames[t, y0 : y0 + side, x0 : x0 + side], np.float32) / 255.0
        image = _resize_stack(image.transpose(2, 0, 1), self.size)
        return flip_rgb(image) if flip else image

    def load(self, i, rng, view):
        frames = np.load(self.work / "frames" / f"{self.videos[i].video_id}.npy", mmap_mode="r", allow_pickle=False)
        picks = np.concatenate(self.picks(i, rng, view))
        h, w = frames.shape[1:3]
        box = _crop_box(h, w, self.size, rng)
        flip = self.flip and rng is not None and rng.random() < 0.5
        images = np.stack([self._frame(frames, t, box, flip) for t in picks])
        images = self.erase_background(images, frames, box, flip, rng)
        return self.with_persons((images - self.mean) / self.std, i, picks, (h, w), box, flip)

    def erase_background(self, images, frames, box, flip, rng) -> np.ndarray:
        """Background erasing (Wang et al., CVPR 2021), in training with probability ``background_erasing``: one
        random frame of the video blended into every frame of the clip (weight 0 to 0.5), the label kept. What is
        still in that frame (the venue) then sits in every frame of every class's clips alike, so it stops telling
        the class; what moves (the dancer) does not."""
        if rng is None or not self.background_erasing or rng.random() >= self.background_erasing:
            return images
        static = self._frame(frames, int(rng.integers(len(frames))), box, flip)
        weight = np.float32(rng.uniform(0.0, 0.5))
        return (1 - weight) * images + weight * static[None]


class RGBClips(RGBSegments):
    """One clip of ``clip_len`` frames, ``frame_stride`` apart, for a 3D CNN → (T, 3, S, S)."""

    def __init__(self, work, split, *, clip_len: int = 8, frame_stride: int = 2, size: int = 112, **kw):
        super().__init__(work, split, segments=1, size=size, **kw)
        self.clip_len, self.frame_stride = clip_len, frame_stride

    def picks(self, i, rng, view):
        # clip_len instants frame_stride sample periods apart, in one window
        times = self.times(i)
        step = self.step_s(i) * self.frame_stride
        span = (self.clip_len - 1) * step
        start = window_starts(clip_duration(times, self.fps(i)), 1, span, rng, view, self.views)[0]
        return [items_at(times, start + step * np.arange(self.clip_len))]

    def load(self, i, rng, view):
        frames = np.load(self.work / "frames" / f"{self.videos[i].video_id}.npy", mmap_mode="r", allow_pickle=False)
        picks = self.picks(i, rng, view)[0]
        h, w = frames.shape[1:3]
        box = _crop_box(h, w, self.size, rng)
        flip = self.flip and rng is not None and rng.random() < 0.5
        images = np.stack([self._frame(frames, t, box, flip) for t in picks])
        images = self.erase_background(images, frames, box, flip, rng)
        return self.with_persons((images - self.mean) / self.std, i, picks, (h, w), box, flip)


def flip_rgb(image: np.ndarray) -> np.ndarray:
    """(..., H, W) mirrored left-right."""
    return image[..., ::-1].copy()


def flip_flow_stack(stack: np.ndarray) -> np.ndarray:
    """(..., 2L, H, W) stacks [x0, y0, x1, y1, ...] mirrored left-right with every x component negated."""
    out = stack[..., ::-1].copy()
    out[..., 0::2, :, :] *= -1
    return out


class FlowStacks(_ClipDataset):
    """K segments of L consecutive flow fields → (K, 2L, S, S) float32, in units of the storage bound."""

    stage = "flow"

    def __init__(self, work, split, *, segments: int = 3, stack: int = 5, size: int = 112, **kw):
        super().__init__(work, split, **kw)
        self.segments, self.stack, self.size = segments, stack, size
        # (FlowInfo refused flow of another format version by name, before training starts)
        self.params = {vid: info.params for vid, info in self.meta.items()}

    def times(self, i):
        # field n is the motion from source frame n to frame n + offset: it is on screen from frame n's time
        return item_times(np.arange(self.meta[self.videos[i].video_id].shape[0]), self.fps(i))

    def picks(self, i, rng, view):
        return self.windows(i, self.segments, self.stack, rng, view)

    def _source_frames(self, i, item):
        # field n is the motion from source frame n to frame n + offset: a person in either moves in it
        return [int(item), int(item) + int(self.params[self.videos[i].video_id].get("offset", 1))]

    def load(self, i, rng, view):
        vid = self.videos[i].video_id
        raw = np.load(self.work / "flow" / f"{vid}.npy", mmap_mode="r", allow_pickle=False)
        bound = self.params[vid]["bound"] or 20.0
        # A field is the displacement over one source frame period: rescaled to one sampling period, motion of a
        # given speed has the same size at 24 and at 30 fps.
        per_sample = self.fps(i) / (self.sample_fps or self.fps(i))
        picks = self.picks(i, rng, view)
        h, w = raw.shape[1:3]
        box = y0, x0, side = _crop_box(h, w, self.size, rng)
        flip = self.flip and rng is not None and rng.random() < 0.5
        # all K segments at once: one read, one conversion, one resize of the K x 2L channels
        chunk = np.asarray(raw[np.concatenate(picks), y0 : y0 + side, x0 : x0 + side])  # (K L, s, s, 2)
        # Resizing a crop scales displacements too: keep them in pixels of the network's input.
        fields = to_pixels(chunk, self.params[vid]) * (self.size / side * per_sample / bound)
        stacks = fields.reshape(len(picks), self.stack, side, side, 2).transpose(0, 1, 4, 2, 3)
        stacks = _resize_stack(stacks.reshape(-1, side, side), self.size)
        stacks = stacks.reshape(len(picks), 2 * self.stack, self.size, self.size)
        if flip:
            stacks = flip_flow_stack(stacks)
        return self.with_persons(stacks, i, np.concatenate(picks), (h, w), box, flip, per_item=self.stack)


def pose_features(pose: dict, width: int, height: int) -> np.ndarray:
    """(T, P, 54): normalised x, y and confidence of 17 keypoints, then the box centre in [-1, 1] frame
    coordinates and the box height over the frame height."""
    norm, conf, boxes = pose["normalized"], pose["keypoints"][..., 2:3], pose["boxes"]
    cx = (boxes[..., 0] + boxes[..., 2]) / width - 1.0
    cy = (boxes[..., 1] + boxes[..., 3]) / height - 1.0
    size = (boxes[..., 3] - boxes[..., 1]) / height
    place = np.stack([cx, cy, size], -1) * pose["mask"][..., None]
    joints = np.concatenate([norm, conf], -1).reshape(*norm.shape[:2], 17 * 3)
    return np.concatenate([joints, place], -1).astype(np.float32)


def flip_pose_features(features: np.ndarray) -> np.ndarray:
    """Mirror (…, 54) pose features: x negated, left/right keypoints swapped, position mirrored."""
    joints = features[..., :51].reshape(*features.shape[:-1], 17, 3)[..., flip_permutation(), :].copy()
    joints[..., 0] *= -1
    place = features[..., 51:].copy()
    place[..., 0] *= -1
    return np.concatenate([joints.reshape(*features.shape[:-1], 51), place], -1)


class PoseSequences(_ClipDataset):
    """A window of ``frames`` pose frames (whole clip, resampled, when shorter) → ((T, P, 54), mask (T, P))."""

    stage = "pose"

    def __init__(self, work, split, *, frames: int = 32, augment: str = "light", sampling: str = "window", **kw):
        super().__init__(work, split, **kw)
        if augment not in SKELETON_AUGMENTS:
            raise ValueError(f"unknown skeleton augmentation {augment!r}: {', '.join(SKELETON_AUGMENTS)}")
        if sampling not in ("window", "uniform"):
            raise ValueError(f"unknown pose sampling {sampling!r}: window or uniform")
        self.frames, self.augment, self.sampling = frames, augment, sampling
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.frame_times: dict[int, np.ndarray] = {}

    def sequence(self, i):
        if i not in self.cache:
            vid = self.videos[i].video_id
            pose = load_pose(self.work, vid)
            info = self.meta[vid]
            self.cache[i] = (pose_features(pose, info.width, info.height), pose["mask"])
            self.frame_times[i] = item_times(pose["frame_indices"], self.fps(i))
        return self.cache[i]

    def times(self, i):
        self.sequence(i)
        return self.frame_times[i]

    def picks(self, i, rng, view):
        """One window of ``frames`` instants a sampling period apart; a clip shorter than that is spread over
        ``frames`` evenly spaced instants instead (pyskl's uniform sampling)."""
        if self.sampling == "uniform":
            # pyskl's UniformSample: one instant per equal segment of the whole clip (random within it in training)
            return [np.concatenate(self.windows(i, self.frames, 1, rng, view))]
        times = self.times(i)
        duration = clip_duration(times, self.fps(i))
        if duration + 1e-9 >= self.frames * self.step_s(i):
            return self.windows(i, 1, self.frames, rng, view)
        return [items_at(times, np.linspace(0.0, duration, self.frames, endpoint=False))]

    def load(self, i, rng, view):
        features, mask = self.sequence(i)
        idx = self.picks(i, rng, view)[0]
        x, m = features[idx], mask[idx]
        if rng is not None:
            if self.augment == "light":
                x = x * np.float32(rng.uniform(0.9, 1.1))  # small scale jitter of coordinates and position
            else:
                x, m = random_skeleton_augment(x, m, rng, **SKELETON_AUGMENTS[self.augment])
            if self.flip and rng.random() < 0.5:
                x = flip_pose_features(x)
        return torch.from_numpy(np.ascontiguousarray(x, np.float32)), torch.from_numpy(np.ascontiguousarray(m))


def pooled_pose(features: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(T, P, 54) person features and (T, P) mask → (T, 55): the mean over the persons present and the number
    present over the slots (0 when nobody is seen)."""
    weights = mask[..., None].astype(np.float32)
    mean = (features * weights).sum(1) / np.maximum(weights.sum(1), 1.0)
    return np.concatenate([mean, weights.mean(1)], -1).astype(np.float32)


POOLED_POSE_FEATURES = POSE_FEATURES + 1


class FeatureSequences(_ClipDataset):
    """``frames`` instants, one per equal segment of the clip (jittered in training), of cached per-frame
    embeddings (``bin/extract-features``) → (T, D); with ``pose``, the pooled skeleton features of the same instants
    appended → (T, D + 55): the two-stream sequence input of Bendit-Shtull et al."""

    def __init__(self, work, split, *, features: str, frames: int = 32, pose: bool = False, **kw):
        self.stage = f"features/{features}"
        super().__init__(work, split, **kw)
        self.frames, self.pose = frames, pose
        dims = {tuple(m["shape"][1:]) for m in self.meta.values()}
        if len(dims) != 1:
            raise DataError(self.work / self.stage, f"features of different sizes {sorted(dims)}: extract them again")
        self.input_dim = dims.pop()[0] + (POOLED_POSE_FEATURES if pose else 0)
        if pose:
            self.pose_meta = _require(self.work, "pose", [v.video_id for v in self.videos])
        self.cache: dict[int, tuple] = {}

    def times(self, i):
        return item_times(self.meta[self.videos[i].video_id]["frame_indices"], self.fps(i))

    def picks(self, i, rng, view):
        return self.windows(i, self.frames, 1, rng, view)

    def _pose(self, i):
        if i not in self.cache:
            vid = self.videos[i].video_id
            pose = load_pose(self.work, vid)
            info = self.pose_meta[vid]
            features = pose_features(pose, info.width, info.height)
            self.cache[i] = (features, pose["mask"], item_times(pose["frame_indices"], self.fps(i)))
        return self.cache[i]

    def load(self, i, rng, view):
        vid = self.videos[i].video_id
        rows = np.load(self.work / self.stage / f"{vid}.npy", mmap_mode="r", allow_pickle=False)
        idx = np.concatenate(self.picks(i, rng, view))
        x = np.asarray(rows[idx], np.float32)
        if self.pose:
            features, mask, times = self._pose(i)
            at = items_at(times, self.times(i)[idx])
            skeleton = features[at]
            if self.flip and rng is not None and rng.random() < 0.5:
                skeleton = flip_pose_features(skeleton)
            x = np.concatenate([x, pooled_pose(skeleton, mask[at])], -1)
        return torch.from_numpy(np.ascontiguousarray(x, np.float32))


def collate(batch):
    """Stack items; pose items carry (features, mask)."""
    xs, labels, videos, views = zip(*batch)
    if isinstance(xs[0], PixelClip):
        x = PixelClip(torch.stack([a.pixels for a in xs]), torch.stack([a.persons for a in xs]))
    elif isinstance(xs[0], tuple):
        x = (torch.stack([a for a, _ in xs]), torch.stack([b for _, b in xs]))
    else:
        x = torch.stack(xs)
    return x, torch.tensor(labels), torch.tensor(videos), torch.tensor(views)
