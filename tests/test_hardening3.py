"""Hardening, round 3 (issue 33): each numbered case of the issue, a test that failed before its fix."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from preprocess import DataError
from tests.conftest import run_bin
from tests.test_hardening import FAST_FLOW


def work_copy(tiny_work, root, *stages):
    """tiny_work's manifest and ``stages``, copied where a test may damage them."""
    work = root / "work"
    work.mkdir()
    for name in ("manifest.json", "manifest.csv"):
        shutil.copy(tiny_work / name, work / name)
    for stage in stages:
        shutil.copytree(tiny_work / stage, work / stage)
    return work


# 2. bin/fuse without a readable manifest: the groups are unknown, so the choice is unsupported (never fitted)
def test_2_fuse_without_the_manifest_says_groups_are_unknown_and_falls_back(tiny_work, tmp_path):
    from streams.train import train

    work = work_copy(tiny_work, tmp_path, "flow", "pose")
    for stream, extra in (("flow", FAST_FLOW), ("pose", {"stream": "pose", "frames": 8, "views": 1})):
        config = {**extra, "stream": stream, "epochs": 1, "min_epoch_clips": 1, "batch_size": 8}
        train({**config, "work": str(work), "run": str(tmp_path / stream)}, log=lambda *_: None)
    (work / "manifest.json").unlink()
    result = run_bin("fuse", tmp_path / "flow", tmp_path / "pose", "--out", tmp_path / "report")
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "report" / "ablation.json").read_text())
    assert report["default"]["rule"] == "fallback" and not report["fitting_support"]["reliable"]
    assert any("groups are unknown" in r for r in report["fitting_support"]["reasons"])
    assert json.loads((tmp_path / "report" / "fusion.json").read_text())["method"] == "mean"


# 6. --window inf / --every inf: a named error, not an OverflowError
@pytest.mark.parametrize("option", ["--window", "--every", "--sample-fps"])
def test_6_live_refuses_infinite_seconds(tmp_path, option):
    result = run_bin("classify", "--live", "0", "--report", tmp_path, option, "inf")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{option} inf: must be a positive, finite number" in result.stderr


# 7, 12. A pose .npz that is truncated or not an archive at all: the file named, never NumPy's advice to unpickle
@pytest.mark.parametrize("damage", ["truncated", "other bytes"])
def test_7_12_a_damaged_pose_file_is_named(tiny_work, tmp_path, damage):
    from preprocess import load_manifest, load_pose

    work = work_copy(tiny_work, tmp_path, "pose")
    video = load_manifest(work).videos[0].video_id
    path = work / "pose" / f"{video}.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x80\x04garbage, not a zip" * 20)
    with pytest.raises(DataError, match=rf"{video}\.npz: (a damaged|not an) \.npz archive") as caught:
        load_pose(work, video)
    assert "unsafe" not in str(caught.value) and "pickle" not in str(caught.value)
    result = run_bin("train", "pose", work, tmp_path / "run", "--epochs", "1", "--frames", "8")
    assert result.returncode != 0 and "Traceback" not in result.stderr and f"{video}.npz" in result.stderr


# 8. A stage summary whose parameters are not parameters: the file and the field named
@pytest.mark.parametrize(
    "params, message",
    [("garbage", "params: 'garbage' is not the parameters of a stage"), ({"resize": 5}, "params.resize: 5 is not")],
)
def test_8_damaged_stage_parameters_are_named(tiny_work, tmp_path, params, message):
    from preprocess.stages import recorded_params

    work = work_copy(tiny_work, tmp_path, "flow")
    summary = work / "flow" / "summary.json"
    data = json.loads(summary.read_text())
    summary.write_text(
        json.dumps({**data, "params": params if isinstance(params, str) else {**data["params"], **params}})
    )
    with pytest.raises(DataError, match=message) as caught:
        recorded_params(work, "flow")
    assert str(caught.value).startswith(str(summary))


# 13. A stacking fusion.json whose coef has the wrong shape: refused when read, naming the field
def test_13_a_stacking_coef_of_the_wrong_shape_is_refused_when_read():
    from fusion.methods import FusionFileError, FusionMethod, create_method

    rng = np.random.default_rng(0)
    probs = {s: rng.dirichlet(np.ones(4), 40) for s in ("rgb", "flow")}
    labels = np.arange(40) % 4
    fitted = create_method("stacking").fit(probs, labels).to_json()
    assert FusionMethod.from_json(fitted).predict_proba(probs).shape == (40, 4)
    bad = {**fitted, "coef": np.zeros((4, 20)).tolist()}
    with pytest.raises(FusionFileError, match=r"coef: shape \(4, 20\), not \(4, 8\)"):
        FusionMethod.from_json(bad)


# 14. Two preprocessing runs of one stage folder at once: the second is refused by name
def test_14_one_writer_per_stage_folder(tiny_work, tmp_path):
    from preprocess import load_manifest
    from preprocess.batch import folder_lock, run_batch
    from preprocess.flow import FarnebackParams, flow_params, flow_task

    work = work_copy(tiny_work, tmp_path)
    task = flow_task(flow_params(FarnebackParams(), resize="none"))
    held = folder_lock(work / "flow", "preprocess flow shard 0 of 1")  # (as a first run holds it)
    with held, pytest.raises(DataError, match="is writing this folder"):
        run_batch(task, load_manifest(work), work, workers=1)
    first = [load_manifest(work).videos[0].video_id]
    summary = run_batch(task, load_manifest(work), work, workers=1, video_ids=first)
    assert len(summary.done) == 1  # once it is free


# 15. --live given a folder or a FIFO: said as such
def test_15_live_names_a_folder_and_a_fifo(tmp_path):
    from preprocess.live import LiveSource

    with pytest.raises(DataError, match="a folder, not a video"):
        LiveSource(str(tmp_path))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        LiveSource(str(fifo))


# 16. Preprocessing a manifest into another work directory: the manifest goes with it
def test_16_a_manifest_preprocessed_elsewhere_is_copied_into_work(tiny_work, tmp_path):
    work = work_copy(tiny_work, tmp_path)
    result = run_bin(
        "preprocess", "frames", work / "manifest.json", tmp_path / "out", "--resize", "short:32", "--background", "keep"
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "manifest.json").is_file()
    status = run_bin("preprocess", "status", tmp_path / "out")
    assert status.returncode == 0 and "frames: 30 done" in status.stdout, status.stdout + status.stderr


# 17. Scratch folders of live runs killed with SIGKILL are removed by the next run
def test_17_stale_live_scratch_is_removed(tmp_path):
    from fusion.live import remove_stale_scratch

    gone = tmp_path / "live-999999999-abcd"
    mine = tmp_path / f"live-{os.getpid()}-efgh"
    alive = tmp_path / "live-1-ijkl"  # (pid 1 is always there)
    for folder in (gone, mine, alive):
        folder.mkdir()
    assert remove_stale_scratch(tmp_path) == [gone]
    assert not gone.exists() and mine.exists() and alive.exists()


# 18. Too many folds for the pool: said before any training, with how many it allows
def test_18_too_many_folds_are_refused_before_training(tiny_work, tmp_path):
    result = run_bin("crossval", "pose", tiny_work, tmp_path / "run", "--folds", "2", "--pool", "all")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "is too small for 2 folds" in result.stderr and not (tmp_path / "run" / "crossval").exists()


# 19. The logged learning rate is the one the epoch trained at
def test_19_the_logged_learning_rate_is_the_epochs_own(tiny_work, tmp_path):
    from streams.train import train

    config = {**FAST_FLOW, "epochs": 2, "patience": 5, "work": str(tiny_work), "run": str(tmp_path / "run")}
    train(config, log=lambda *_: None)
    rates = [json.loads(line)["lr"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    start = json.loads((tmp_path / "run" / "config.json").read_text())["lr"]
    assert rates[0] == pytest.approx(start) and rates[-1] > 0  # cosine over 2 epochs: start, then half of it
    assert rates[1] == pytest.approx(start / 2)


# 20. The sampled sign-flip p-value is never 0
def test_20_a_sampled_sign_flip_p_is_never_zero():
    from streams.stats import group_sign_flip_p

    groups = np.repeat(np.arange(40).astype(str), 3)
    p = group_sign_flip_p(np.ones(120), np.zeros(120), groups, resamples=2000)
    assert p == pytest.approx(1 / 2001)


# 22. Singleton groups say nothing about confounding
def test_22_purity_leaves_out_singleton_groups_and_says_what_is_missing():
    from fusion.select import fitting_support

    labels = np.arange(40) % 4
    singletons = fitting_support(labels, np.arange(40).astype(str))
    assert singletons["purity"] is None and not singletons["reliable"]
    assert "is its own group: no group information" in singletons["reasons"][0]
    assert not any("purity" in r for r in singletons["reasons"])
    # performers who each do every class, plus a few singletons: the singletons do not make it look pure
    mixed = np.array([f"p{i % 5}" for i in range(36)] + ["a", "b", "c", "d"])
    support = fitting_support(labels, mixed)
    assert support["purity"] < 0.5 and support["reliable"]


# 3. Clips named <source>_<start>_<duration> are grouped by their source without --group-regex, and it is said
def test_3_clips_cut_from_longer_videos_are_grouped_by_source(tiny_synth, tmp_path):
    from preprocess import load_manifest

    data = tmp_path / "clips"
    for style in ("tango", "waltz"):
        (data / style).mkdir(parents=True)
        for k, video in enumerate(sorted((tiny_synth / "videos" / style).glob("*.mp4"))[:3]):
            for source in ("1001", "2002"):  # each style from two source videos, clips at 10 s and 20 s
                shutil.copy(video, data / style / f"{style}{source}_{10 * (k + 1)}_5.mp4")
    result = run_bin("ingest", data, tmp_path / "work", "--split", "0.5,0.25,0.25")
    assert result.returncode == 0, result.stderr
    assert "grouped from the clip names <source>_<start>_<duration>" in result.stderr
    manifest = load_manifest(tmp_path / "work")
    assert {v.group for v in manifest.videos} == {f"{s}{n}" for s in ("tango", "waltz") for n in ("1001", "2002")}
    by_group = {}
    for v in manifest.videos:
        by_group.setdefault(v.group, set()).add(v.split)
    assert all(len(splits) == 1 for splits in by_group.values())  # no source in two splits


# 10. A truncated flow file: named before the first epoch, not after the whole training
def test_10_a_truncated_input_is_named_before_training(tiny_work, tmp_path):
    from preprocess import load_manifest

    work = work_copy(tiny_work, tmp_path, "flow")
    video = load_manifest(work).by_split("train")[0].video_id
    path = work / "flow" / f"{video}.npy"
    path.write_bytes(path.read_bytes()[:-100])
    args = ["--preset", "small", "--size", "48", "--stack", "3", "--epochs", "1", "--min-epoch-clips", "1"]
    result = run_bin("train", "flow", work, tmp_path / "run", *args)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"{video}.npy: truncated or padded" in result.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()  # no epoch ran


# 11. A sidecar whose fields have the wrong types: one check, used by the readers, verify and is-done
@pytest.mark.parametrize(
    "stage, field, value, message",
    [("frames", "shape", "bad", "shape: 'bad' is not a list of 4 whole numbers"), ("pose", "frames", "abc", "frames")],
)
def test_11_sidecar_fields_of_the_wrong_type_are_named_everywhere(tiny_work, tmp_path, stage, field, value, message):
    from preprocess import load_manifest
    from preprocess.batch import is_done, verify_outputs
    from preprocess.stages import STAGES, recorded_params, stage_task

    work = work_copy(tiny_work, tmp_path, stage)
    video = load_manifest(work).videos[0].video_id
    side = work / stage / f"{video}.json"
    side.write_text(json.dumps({**json.loads(side.read_text()), field: value}))
    with pytest.raises(DataError, match=message):
        STAGES[stage].info.read(work, video)  # the typed reader the datasets use
    task = stage_task(stage, recorded_params(work, stage))
    checked, problems = verify_outputs(task, load_manifest(work), work)  # bin/preprocess verify
    assert checked == 30 and len(problems) == 1 and message.split(":")[0] in problems[0] and video in problems[0]
    assert not is_done(task, work / stage, video)  # a rerun redoes it


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


# 1. A network source that stalls: it ends as "stalled" with its answers and summary, never a segmentation fault
def test_1_a_stalled_network_source_ends_with_its_answers(flow_only_report, tiny_synth, tmp_path):
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


# 4. A network source that delivers faster than real time: timed by its own timestamps, not by arrival
def test_4_a_fast_network_source_is_timed_by_its_timestamps(flow_only_report, tiny_synth, tmp_path):
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


# 5. Live frames taken at the runs' rate are the ones training takes at the same instants, at rates that do not divide:
# a file's frames timed as training times them (index / fps), a stream's by its millisecond timestamps
@pytest.mark.parametrize(
    "fps, rate, rounded",
    [(30.0, 25.0, False), (29.97, 25.0, False), (25.0, 23.976, False), (30.0, 12.0, False), (30.0, 25.0, True)],
)
def test_5_live_sampling_takes_the_frames_items_at_takes(fps, rate, rounded):
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


# 5, flow: a source faster than the runs' rate: each taken frame's field is the motion to the next source frame,
# rescaled to the sampling period, as training rescales the stored fields of a video at that source rate
def test_5_live_flow_of_a_faster_source_is_the_field_training_sees(tiny_synth, tmp_path):
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


ORPHANED_WORKER = """
import sys
import time

if __name__ == "__mp_main__":
    time.sleep(1.0)  # a worker importing its command's modules, as every pool worker does before it unpickles its job

from preprocess.batch.pool import worker_context


def refuse():
    raise ValueError("a job that cannot be unpickled")


class Unpicklable:
    def __reduce__(self):
        return refuse, ()


if __name__ == "__main__":
    context = worker_context()
    lock = context.Lock()
    context.Process(target=print, args=(lock,)).start()
    context.Process(target=print, args=(Unpicklable(),)).start()  # any other start-up failure is still printed
    # The command ends (SIGTERM while its pool starts): leaving, it unlinks the lock the worker has yet to unpickle.
    sys.exit(143)
"""


def test_9_a_worker_whose_command_ended_before_it_started_prints_no_traceback(tmp_path):
    script = tmp_path / "orphan.py"
    script.write_text(ORPHANED_WORKER)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 143
    assert result.stderr.count("Traceback") == 1, result.stderr
    assert "ValueError: a job that cannot be unpickled" in result.stderr
    assert "FileNotFoundError" not in result.stderr
