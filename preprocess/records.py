"""The record types every layer of ``preprocess`` passes around: a video's source (``Source``), what a probe found
(``VideoInfo``) and a manifest's row (``VideoRecord``). Plain data that imports nothing of ours, so the lowest layer
(the batch runner) and the frame cache type against them without importing the dataset package above them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Source:
    """A video file (``frames`` is None) or frame images ``frames`` (names relative to the folder ``path``)."""

    path: str
    frames: tuple[str, ...] | None = None
    frames_fps: float = 30.0  # the rate of a frame sequence, which has no container to say

    @property
    def is_sequence(self) -> bool:
        return self.frames is not None

    def frame_paths(self) -> list[Path]:
        return [Path(self.path) / name for name in self.frames or ()]


@dataclass(frozen=True)
class VideoInfo:
    frame_count: int
    fps: float
    width: int
    height: int


@dataclass
class VideoRecord:
    video_id: str
    label: str
    split: str | None
    group: str | None
    source: str  # a video file, or the folder holding the frame images
    frame_count: int
    fps: float
    width: int
    height: int
    frames: list[str] | None = None  # frame image names (frame sequences only)

    @classmethod
    def from_probe(cls, candidate, info: VideoInfo) -> VideoRecord:
        src: Source = candidate.source
        return cls(
            video_id=candidate.video_id,
            label=candidate.label,
            split=candidate.split,
            group=candidate.group,
            source=src.path,
            frame_count=info.frame_count,
            fps=round(info.fps, 6),
            width=info.width,
            height=info.height,
            frames=list(src.frames) if src.frames is not None else None,
        )

    def to_source(self) -> Source:
        if self.frames is None:
            return Source(self.source)
        return Source(self.source, tuple(self.frames), self.fps)


def group_of(video: VideoRecord) -> str:
    """The group a video is split, folded and resampled by: its group (source video, performer), or itself when it
    has none."""
    return video.group if video.group not in (None, "") else video.video_id


class VideoSet(Protocol):
    """What the lower layers need of a manifest: its videos and class names (``preprocess.dataset.Manifest`` is one;
    they type against this, not against the dataset package above them)."""

    classes: list[str]
    videos: list[VideoRecord]
