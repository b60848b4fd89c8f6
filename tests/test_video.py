import tracemalloc

import cv2
import numpy as np
import pytest

from preprocess.batch import DataError
from preprocess.video import Resize, Sampling, Source, probe, read_frames
from tests.conftest import shared_asset


def write_indexed_video(path, n, size=(96, 64), fps=25.0, fourcc="MJPG"):
    """A video whose frame i is flat grey 5*i, so the decoded brightness tells which frame we got."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((h, w, 3), 5 * i, np.uint8))
    writer.release()
    return path


def frame_number(image):
    return int(round(float(image.mean()) / 5))


@pytest.mark.parametrize(
    "name, frames, size",
    [
        ("clips/arm_wrestling_kinetics_340x256.mp4", 280, (340, 256)),
        ("clips/ntu_two_person_1080p.mp4", 72, (1920, 1080)),
        ("weizmann4/bend/p0_bend_a.avi", 61, (64, 64)),
    ],
)
def test_probe_and_read_real_clips(name, frames, size):
    path = shared_asset(f"data/{name}")
    info = probe(Source(str(path)))
    assert (info.frame_count, info.width, info.height) == (frames, *size)
    assert info.fps > 20
    got = list(read_frames(str(path), Sampling(), Resize.parse("short:64"), colour="rgb"))
    assert len(got) == frames
    w, h = Resize.parse("short:64").output_size(*size)
    assert got[0].image.shape == (h, w, 3) and min(h, w) == 64
    times = [f.time for f in got]
    assert all(b > a for a, b in zip(times, times[1:]))


def test_reading_1080p_keeps_memory_flat():
    path = shared_asset("data/clips/ntu_two_person_1080p.mp4")
    tracemalloc.start()
    n = 0
    for _frame in read_frames(str(path), Sampling(), Resize()):
        n += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert n == 72
    # One 1080p BGR frame is 6.2 MB; 72 of them would be 448 MB. Streaming holds a couple at most.
    assert peak < 3 * 1920 * 1080 * 3


@pytest.mark.parametrize(
    "text, src, expected",
    [
        ("none", (640, 360), (640, 360)),
        ("short:128", (640, 360), (228, 128)),
        ("128", (360, 640), (128, 228)),  # portrait keeps its orientation
        ("long:320", (1920, 1080), (320, 180)),
        ("fixed:171x128", (64, 64), (171, 128)),
        ("96x96", (1920, 1080), (96, 96)),
    ],
)
def test_resize_policies(text, src, expected):
    policy = Resize.parse(text)
    assert policy.output_size(*src) == expected
    frame = np.zeros((src[1], src[0], 3), np.uint8)
    assert policy(frame).shape[:2] == (expected[1], expected[0])
    assert Resize.parse(str(policy)) == policy


def test_resize_rejects_nonsense():
    for bad in ("short:", "fixed:10", "huge", "short:2"):
        with pytest.raises(ValueError):
            Resize.parse(bad)


def test_sampling_start_step_count(tmp_path):
    video = write_indexed_video(tmp_path / "v.avi", 30)
    got = [frame_number(f.image) for f in read_frames(str(video), Sampling(start=3, step=4, count=5))]
    assert got == [3, 7, 11, 15, 19]
    assert [f.index for f in read_frames(str(video), Sampling(start=28))] == [28, 29]
    assert Sampling(start=3, step=4, count=5).expected_count(30) == 5
    assert Sampling(step=4).expected_count(30) == 8


def test_sampling_to_a_target_frame_rate(tmp_path):
    video = write_indexed_video(tmp_path / "v.avi", 50, fps=25.0)  # 2 s
    down = list(read_frames(str(video), Sampling(fps=10)))
    assert len(down) == 20
    # tick k at 0.1k s takes the nearest frame, 2.5k, the earlier one on a tie
    assert [frame_number(f.image) for f in down[:6]] == [0, 2, 5, 7, 10, 12]
    assert all(abs(f.time - 0.1 * k) < 1e-6 for k, f in enumerate(down))
    up = list(read_frames(str(video), Sampling(fps=50, count=10)))
    assert [frame_number(f.image) for f in up] == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_portrait_video_sizes(tmp_path):
    video = write_indexed_video(tmp_path / "portrait.avi", 5, size=(72, 128))
    info = probe(Source(str(video)))
    assert (info.width, info.height) == (72, 128)
    frame = next(read_frames(str(video), resize=Resize.parse("short:36")))
    assert frame.image.shape == (64, 36, 3)


def test_grey_and_rgb_conversion(tmp_path):
    path = tmp_path / "colour.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 64))
    for _ in range(3):
        writer.write(np.dstack([np.full((64, 64), v, np.uint8) for v in (200, 100, 20)]))  # BGR
    writer.release()
    bgr = next(read_frames(str(path))).image
    rgb = next(read_frames(str(path), colour="rgb")).image
    gray = next(read_frames(str(path), colour="gray")).image
    assert np.allclose(bgr[..., 0].mean(), rgb[..., 2].mean()) and bgr[..., 0].mean() > 150
    assert gray.ndim == 2


def test_frame_sequence_source(tmp_path):
    for i in range(6):
        cv2.imwrite(str(tmp_path / f"img_{i:05d}.png"), np.full((40, 50, 3), 5 * i, np.uint8))
    src = Source(str(tmp_path), tuple(f"img_{i:05d}.png" for i in range(6)), frames_fps=30)
    info = probe(src)
    assert (info.frame_count, info.width, info.height, info.fps) == (6, 50, 40, 30)
    got = [frame_number(f.image) for f in read_frames(src, Sampling(step=2))]
    assert got == [0, 2, 4]


def test_bad_videos_raise_named_errors(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    for path in (garbage, empty, tmp_path / "missing.mp4"):
        with pytest.raises(DataError) as err:
            probe(Source(str(path)))
        assert str(path) in str(err.value)
    bad_frame = tmp_path / "seq"
    bad_frame.mkdir()
    cv2.imwrite(str(bad_frame / "f_1.png"), np.zeros((8, 8, 3), np.uint8))
    (bad_frame / "f_2.png").write_bytes(b"not a png")
    with pytest.raises(DataError) as err:
        probe(Source(str(bad_frame), ("f_1.png", "f_2.png")))
    assert "f_2.png" in str(err.value)


def test_prefetch_keeps_order_surfaces_errors_and_stops_early(tmp_path):
    import threading
    import time

    from preprocess.video import prefetch

    video = write_indexed_video(tmp_path / "v.avi", 20)
    direct = [frame_number(f.image) for f in read_frames(str(video))]
    assert [frame_number(f.image) for f in prefetch(read_frames(str(video)), depth=3)] == direct == list(range(20))

    def failing():
        yield 1
        yield 2
        raise DataError("clip.mp4", "frame 2 does not decode")

    got = []
    with pytest.raises(DataError, match="clip.mp4: frame 2"):
        for item in prefetch(failing(), depth=2):
            got.append(item)
    assert got == [1, 2]

    def endless():
        n = 0
        while True:
            n += 1
            yield n

    before = threading.active_count()
    stream = prefetch(endless(), depth=2)
    assert next(stream) == 1
    stream.close()  # the consumer stops early: the decoding thread must end, not block on a full buffer
    deadline = time.monotonic() + 2
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() == before
