"""Live preprocessing: a stream's frames, each preprocessed once as it comes, give any stretch of it exactly as the
batch stages give a video made of that stretch."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from preprocess import DataError
from preprocess.batch import read_npz, run_batch
from preprocess.dataset.manifest import Manifest, VideoRecord
from preprocess.live import LIVE_ID, LiveSource, LiveStages
from preprocess.video import Source, probe, read_frames
from tests.conftest import FAST_FLOW, run_bin, shared_asset, write_lossless


def _stages(with_pose: bool):
    from preprocess.flow import FarnebackParams, flow_params
    from preprocess.model_files import file_sha256
    from preprocess.pose import pose_params
    from preprocess.video import frames_params

    flow = flow_params(FarnebackParams(), resize="short:80", offset=2, camera_motion="median")
    if not with_pose:  # (no model needed: the frames kept as decoded)
        return {"frames": frames_params(resize="short:64", step=2, background="keep"), "flow": flow}
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'dance-streams[onnx]')")
    movenet = shared_asset("models/movenet_multipose_lightning_256.onnx")
    return {  # dependency order, as bin/classify gives them: the frames are dimmed outside the pose's boxes
        "pose": pose_params(backend="movenet", model=str(movenet), model_sha256=file_sha256(movenet), step=2),
        "frames": frames_params(resize="short:64", step=2),
        "flow": flow,
    }


@pytest.mark.parametrize("with_pose", [False, True], ids=["frames+flow", "movenet-pose+dimmed-frames+flow"])
def test_a_stretch_of_a_stream_is_preprocessed_as_a_video_of_that_stretch(tiny_synth, tmp_path, with_pose):
    from preprocess.stages import stage_task

    synth = json.loads((tiny_synth / "synth.json").read_text())
    clips = [tiny_synth / c["video"] for c in synth["clips"][:2]]
    frames = [f.image for clip in clips for f in read_frames(str(clip))]
    fps = probe(Source(str(clips[0]))).fps
    stream = write_lossless(frames, tmp_path / "stream.mkv", fps)
    stages = _stages(with_pose)
    source = LiveSource(str(stream), realtime=False)
    live = LiveStages(stages, fps=source.fps, width=source.width, height=source.height, source=str(stream), keep=64)
    try:
        for frame in source.frames():
            live.add(frame)
        assert live.count == len(frames) and source.dropped == 0 and source.ended == "ended"
        assert live.steps() == 2
        for first, end in ((0, 15), (10, 27), (len(frames) - 12, len(frames))):
            clip = tmp_path / f"live{first}"
            video = live.write_clip(clip, first, end, ["a", "b"])
            assert video.frame_count == end - first
            # the same stretch as a video of its own, through the batch stages
            stretch = write_lossless(frames[first:end], tmp_path / f"stretch{first}.mkv", fps)
            info = probe(Source(str(stretch)))
            size = (info.width, info.height)
            record = VideoRecord(LIVE_ID, "", "test", None, str(stretch), info.frame_count, fps, *size)
            offline = tmp_path / f"offline{first}"
            manifest = Manifest(str(offline), ["a", "b"], [record])
            manifest.save(offline)
            for stage, params in stages.items():
                assert run_batch(stage_task(stage, params), manifest, offline).failed == []
            if with_pose:
                pose, pose_offline = read_npz(clip / "pose" / "live.npz"), read_npz(offline / "pose" / "live.npz")
                assert pose["mask"].any()  # people found: the comparison means something
                for member in ("frame_indices", "mask", "keypoints", "normalized", "boxes"):
                    np.testing.assert_array_equal(pose[member], pose_offline[member], err_msg=f"pose {member}")
            for stage in ("frames", "flow"):
                ours = np.load(clip / stage / "live.npy", allow_pickle=False)
                theirs = np.load(offline / stage / "live.npy", allow_pickle=False)
                assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, stage
                np.testing.assert_array_equal(ours, theirs, err_msg=stage)
                side, side_offline = (json.loads((f / stage / "live.json").read_text()) for f in (clip, offline))
                assert side["params"] == side_offline["params"] and side["shape"] == side_offline["shape"]
        with pytest.raises(ValueError, match="multiples of 2"):
            live.write_clip(tmp_path / "odd", 3, 20, ["a", "b"])
    finally:
        live.close()


def test_a_live_source_behind_drops_its_oldest_frames_and_one_that_cannot_open_is_named(tiny_synth, tmp_path):
    import time

    from preprocess import DataError

    clip = tiny_synth / json.loads((tiny_synth / "synth.json").read_text())["clips"][0]["video"]
    with pytest.raises(DataError, match="no such file, camera index or stream URL"):
        LiveSource(str(tmp_path / "missing.mp4"))
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(DataError, match="cannot be opened as a video source"):
        LiveSource(str(tmp_path / "broken.mp4"))
    # played at its own rate (12 fps) to a consumer that takes 0.25 s a frame: frames are dropped, never queued up
    source = LiveSource(str(clip), realtime=True, queue_frames=2)
    seen = []
    for frame in source.frames():
        seen.append(frame.number)
        time.sleep(0.25)
    total = probe(Source(str(clip))).frame_count
    assert source.dropped > 0 and len(seen) + source.dropped == total and seen == list(range(len(seen)))
    assert source.ended == "ended"


def test_a_source_that_stalls_ends_cleanly_with_what_it_gave(tiny_synth):
    import threading

    clip = tiny_synth / json.loads((tiny_synth / "synth.json").read_text())["clips"][0]["video"]
    source = LiveSource(str(clip), realtime=False, stall_seconds=1.0)
    real, released, hang = source.cap, threading.Event(), threading.Event()

    class Stalling:  # a camera that gives three frames, then nothing (the network went away)
        given = 0

        def read(self):
            self.given += 1
            if self.given > 3:
                hang.wait(30)
                return False, None
            return real.read()

        def get(self, prop):
            return real.get(prop)

        def release(self):
            released.set()
            real.release()

    source.cap = Stalling()
    numbers = [frame.number for frame in source.frames()]
    assert numbers == [0, 1, 2, 3] and source.ended.startswith("stalled")
    # never released under the blocked reader (FFmpeg crashed so, issue 33): the reader releases it when its read
    # returns
    assert source.stuck and not released.is_set()
    hang.set()
    assert released.wait(5)


def test_a_stage_that_fails_on_its_thread_fails_the_caller_and_nothing_hangs(tiny_synth, tmp_path):
    from preprocess import DataError
    from preprocess.live import LiveFrame

    clip = tiny_synth / json.loads((tiny_synth / "synth.json").read_text())["clips"][0]["video"]
    images = [f.image for f in read_frames(str(clip))][:6]
    info = probe(Source(str(clip)))
    live = LiveStages(_stages(False), fps=info.fps, width=info.width, height=info.height, source=str(clip), keep=8)
    try:
        for n, image in enumerate(images):
            live.add(LiveFrame(n, n / info.fps, image))
        live.wait(len(images))
        assert live.done() == len(images) and len(live.results["flow"]) == len(images) - 2  # (k = 2)
        # a frame of another size: the flow thread's Farneback cannot pair it with the one before
        live.add(LiveFrame(len(images), 1.0, np.zeros((info.height // 2, info.width, 3), np.uint8)))
        failed = f"the flow stage failed at frame {len(images)}: .*size"
        with pytest.raises(DataError, match=failed):  # a named line (bin/classify prints it), not a traceback
            live.wait(len(images) + 1)
        with pytest.raises(DataError, match=failed):  # and every later call, not a hang
            live.add(LiveFrame(len(images) + 1, 1.1, images[0]))
    finally:
        live.close()


def test_a_source_faster_than_the_runs_rate_gives_the_frames_on_screen_at_the_runs_instants(tiny_synth, tmp_path):
    from streams.sampling import item_times, items_at

    clip = tiny_synth / json.loads((tiny_synth / "synth.json").read_text())["clips"][0]["video"]
    frames = [f.image for f in read_frames(str(clip))]
    fps = probe(Source(str(clip))).fps
    original = write_lossless(frames, tmp_path / "original.mkv", fps)

    def taken(path, sample_fps):
        source = LiveSource(str(path), realtime=False, sample_fps=sample_fps)
        got = [(frame.number, frame.time, frame.image) for frame in source.frames()]
        assert source.dropped == 0 and [n for n, _, _ in got] == list(range(len(got)))
        return source, got

    # at or above the source's rate: every frame
    source, every = taken(original, 2 * fps)
    assert source.rate == fps and len(every) == len(frames)
    # each frame shown twice at twice the rate, taken at the original rate: the original frames at their times
    doubled = write_lossless([f for f in frames for _ in range(2)], tmp_path / "doubled.mkv", 2 * fps)
    source, again = taken(doubled, fps)
    assert source.rate == fps and len(again) == len(frames)
    assert all(np.array_equal(a[2], b) for a, b in zip(again, frames, strict=True))
    assert max(abs(a[1] - b[1]) for a, b in zip(again, every, strict=True)) < 1e-3
    # an uneven ratio: the frames items_at takes (the last one at or before each instant), once each
    rate = fps / 2.5
    source, sampled = taken(original, rate)
    times = item_times(np.arange(len(frames)), fps)
    instants = np.arange(0.0, times[-1] + 1e-9, 1.0 / rate)
    expected = np.unique(items_at(times, instants))
    assert source.rate == rate and len(sampled) == len(expected)
    assert all(np.array_equal(image, frames[i]) for (_, _, image), i in zip(sampled, expected, strict=True))


# issue 33, case 6
# 6. --window inf / --every inf: a named error, not an OverflowError
@pytest.mark.parametrize("option", ["--window", "--every", "--sample-fps"])
def test_live_refuses_infinite_seconds(tmp_path, option):
    result = run_bin("classify", "--live", "0", "--report", tmp_path, option, "inf")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{option} inf: must be a positive, finite number" in result.stderr


# issue 33, case 15
# 15. --live given a folder or a FIFO: said as such
def test_live_names_a_folder_and_a_fifo(tmp_path):
    from preprocess.live import LiveSource

    with pytest.raises(DataError, match="a folder, not a video"):
        LiveSource(str(tmp_path))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        LiveSource(str(fifo))


# issue 33, case 17
# 17. Scratch folders of live runs killed with SIGKILL are removed by the next run
def test_stale_live_scratch_is_removed(tmp_path):
    from fusion.live import remove_stale_scratch

    gone = tmp_path / "live-999999999-abcd"
    mine = tmp_path / f"live-{os.getpid()}-efgh"
    alive = tmp_path / "live-1-ijkl"  # (pid 1 is always there)
    for folder in (gone, mine, alive):
        folder.mkdir()
    assert remove_stale_scratch(tmp_path) == [gone]
    assert not gone.exists() and mine.exists() and alive.exists()


@pytest.fixture(scope="module")
def flow_only_report(tiny_work, tmp_path_factory):
    """One small flow run fused alone: a report live classification can read."""
    from streams.train import train

    root = tmp_path_factory.mktemp("flow_only")
    train({**FAST_FLOW, "epochs": 1, "work": str(tiny_work), "run": str(root / "flow")}, log=lambda *_: None)
    assert run_bin("fuse", root / "flow", "--out", root / "report").returncode == 0
    return root / "report"


def stalling_server(data: bytes, *, whole_at_once: bool = False):
    """A local HTTP server that sends the first half of ``data`` at about real-time pace, then goes silent with the
    connection open (as a camera or relay that hangs), or (``whole_at_once``) all of it as fast as it goes (a
    recording over HTTP, a relay catching up): (its URL, a function that stops it)."""
    import http.server
    import threading
    import time

    stop = threading.Event()

    class Stalling(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "video/x-matroska")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if whole_at_once:
                self.wfile.write(data)
                return
            half, step = len(data) // 2, max(1, len(data) // 40)
            for start in range(0, half, step):
                self.wfile.write(data[start : min(start + step, half)])
                self.wfile.flush()
                time.sleep(0.1)
            stop.wait(60)  # silent, the connection open

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def close():
        stop.set()
        server.shutdown()

    return f"http://127.0.0.1:{server.server_address[1]}/stream.mkv", close


# issue 33, case 1
# 1. A network source that stalls: it ends as "stalled" with its answers and summary, never a segmentation fault
def test_a_stalled_network_source_ends_with_its_answers(flow_only_report, tiny_synth, tmp_path):
    from preprocess.video import read_frames
    from tests.conftest import write_lossless

    clips = sorted((tiny_synth / "videos").glob("*/*.mp4"))[:4]
    stream = write_lossless([f.image for c in clips for f in read_frames(str(c))], tmp_path / "stream.mkv", 12)
    url, close = stalling_server(stream.read_bytes())
    try:
        result = run_bin("classify", "--live", url, "--report", flow_only_report, "--window", "1", "--every", "0.5")
    finally:
        close()
    assert result.returncode == 0, result.stderr[-1500:]  # (it was 139: FFmpeg's capture released under its reader)
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert answers and answers[-1]["final"] and "stalled: no frame for 10 s" in result.stderr
    assert "per answer: flow stream" in result.stderr  # the summary


# issue 33, case 4
# 4. A network source that delivers faster than real time: timed by its own timestamps, not by arrival
def test_a_fast_network_source_is_timed_by_its_timestamps(flow_only_report, tiny_synth, tmp_path):
    from preprocess.video import read_frames
    from tests.conftest import write_lossless

    clips = sorted((tiny_synth / "videos").glob("*/*.mp4"))[:4]
    frames = [f.image for c in clips for f in read_frames(str(c))]
    stream = write_lossless(frames, tmp_path / "stream.mkv", 12)
    url, close = stalling_server(stream.read_bytes(), whole_at_once=True)
    try:
        result = run_bin("classify", "--live", url, "--report", flow_only_report, "--window", "1", "--every", "0.5")
    finally:
        close()
    assert result.returncode == 0, result.stderr[-1500:]
    assert "0 dropped" in result.stderr and "frames timed by container timestamps" in result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    # every frame came, at its own time: the last answer ends at the last frame's timestamp (63 / 12 s)
    assert answers[-1]["frames"][1] == len(frames) and answers[-1]["time"] == pytest.approx((len(frames) - 1) / 12)


# issue 33, case 5
# 5. Live frames taken at the runs' rate are the ones training takes at the same instants, at rates that do not divide:
# a file's frames timed as training times them (index / fps), a stream's by its millisecond timestamps
@pytest.mark.parametrize(
    "fps, rate, rounded",
    [(30.0, 25.0, False), (29.97, 25.0, False), (25.0, 23.976, False), (30.0, 12.0, False), (30.0, 25.0, True)],
)
def test_live_sampling_takes_the_frames_items_at_takes(fps, rate, rounded):
    from preprocess.live import RateSampler
    from streams.sampling import items_at

    times = np.arange(300) / fps
    stamps = np.round(times, 3) if rounded else times  # (a stream container's millisecond timestamps)
    sampler = RateSampler(rate, fps, RateSampler.SLACK if rounded else RateSampler.EXACT)
    picked = [k for k, stamp in enumerate(stamps) for _, k, _ in sampler.add(float(stamp), k)]
    picked += [k for _, k, _ in sampler.end()]
    instants = np.arange(len(picked)) / rate
    assert picked == list(items_at(times, instants)), f"{fps} → {rate}"
    assert len(picked) >= int(299 / fps * rate)  # every instant up to the last frame


# issue 33, case 5
# 5, flow: a source faster than the runs' rate: each taken frame's field is the motion to the next source frame,
# rescaled to the sampling period, as training rescales the stored fields of a video at that source rate
def test_live_flow_of_a_faster_source_is_the_field_training_sees(tiny_synth, tmp_path):
    from preprocess import Manifest, VideoRecord, load_flow
    from preprocess.batch import run_batch
    from preprocess.flow import FarnebackParams, flow_params, flow_task
    from preprocess.live import LIVE_ID, LiveFrame, LiveStages, RateSampler
    from preprocess.video import Source, probe, read_frames
    from streams.sampling import items_at
    from tests.conftest import write_lossless

    clips = sorted((tiny_synth / "videos").glob("*/*.mp4"))[:2]
    frames = [f.image for c in clips for f in read_frames(str(c))]
    fps, rate = 30.0, 25.0  # rates that do not divide
    video = write_lossless(frames, tmp_path / "source.mkv", fps)
    params = flow_params(FarnebackParams(), resize="none")
    info = probe(Source(str(video)))
    record = VideoRecord("v", "", "test", None, str(video), info.frame_count, fps, info.width, info.height)
    offline = tmp_path / "offline"
    Manifest(str(offline), ["a", "b"], [record]).save(offline)
    assert run_batch(flow_task(params), Manifest(str(offline), ["a", "b"], [record]), offline).failed == []
    stored = load_flow(offline, "v")  # field n: source frame n → n + 1, in pixels
    sampler = RateSampler(rate, fps, RateSampler.EXACT)
    taken = [item for k, image in enumerate(frames) for item in sampler.add(k / fps, (k, image))]
    taken += sampler.end()
    size = {"width": info.width, "height": info.height}
    live = LiveStages({"flow": params}, fps=rate, **size, source="s", keep=99, source_fps=fps)
    try:
        for number, (stamp, (_, image), following) in enumerate(taken):
            live.add(LiveFrame(number, stamp, image, None if following is None else following[1]))
        live.write_clip(tmp_path / "live", 0, len(taken), ["a", "b"])
    finally:
        live.close()
    fields = load_flow(tmp_path / "live", LIVE_ID)
    picked = items_at(np.arange(len(frames)) / fps, np.arange(len(taken)) / rate)
    assert [k for _, (k, _), _ in taken] == list(picked)
    expected = stored[picked[: len(fields)]] * (fps / rate)  # (streams.data rescales a stored field so)
    step = 2 * params["bound"] / 255 * fps / rate  # one quantisation step, rescaled
    assert np.abs(fields - expected).max() <= step + 1e-4
    assert np.abs(expected).max() > 5 * step  # there is motion: the comparison means something
