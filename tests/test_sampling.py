"""Sampling by time: the same dance filmed at 24 and at 30 fps gives the same instants to every stream."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from preprocess.batch import run_batch, write_json
from preprocess.dataset import ingest
from preprocess.dataset.synthetic import groundtruth_as_coco
from preprocess.dataset.synthetic.dataset import PRESETS, write_clip
from preprocess.flow import FarnebackParams, flow_params, flow_task
from preprocess.pose.importers import import_pose
from preprocess.video import frames_params, frames_task
from streams.data import FlowStacks, PoseSequences, RGBClips, RGBSegments

SECONDS = 2.0
TOLERANCE = 1 / 24 + 0.01


def _work_at(fps: int, root):
    """Two clips of each of two styles, rendered at ``fps`` for SECONDS, ingested and preprocessed (frames, flow,
    pose imported from the renderer's ground truth)."""
    preset = dataclasses.replace(PRESETS["tiny"], frames=int(SECONDS * fps), fps=fps, performers=1)
    data, work = root / f"data{fps}", root / f"work{fps}"
    clips = [write_clip(data, style, k, preset, seed=3) for style in ("break", "waltz") for k in (0, 1)]
    write_json(data / "synth.json", {"clips": clips})
    lines = ["path,label,split"] + [f"{data / c['video']},{c['style']},train" for c in clips]
    (data / "clips.csv").write_text("\n".join(lines) + "\n")
    manifest = ingest(data / "clips.csv")
    manifest.save(work)
    run_batch(flow_task(flow_params(FarnebackParams(), resize="none")), manifest, work, workers=1)
    import_pose("coco", str(groundtruth_as_coco(data, work / "gt.json")), manifest, str(work), max_persons=2)
    run_batch(frames_task(frames_params(resize="none")), manifest, work, workers=1)  # after pose: the default dims
    return work


@pytest.fixture(scope="module")
def works(tmp_path_factory):
    root = tmp_path_factory.mktemp("rates")
    return {fps: _work_at(fps, root) for fps in (24, 30)}


DATASETS = {
    "rgb": lambda work, **kw: RGBSegments(work, "train", segments=4, size=32, **kw),
    "rgb 3d": lambda work, **kw: RGBClips(work, "train", clip_len=6, frame_stride=2, size=32, **kw),
    "flow": lambda work, **kw: FlowStacks(work, "train", segments=3, stack=5, size=32, **kw),
    "pose": lambda work, **kw: PoseSequences(work, "train", frames=20, **kw),
}


@pytest.mark.parametrize("name", DATASETS)
def test_the_same_clip_at_24_and_30_fps_gives_the_same_instants(works, name):
    sets = {fps: DATASETS[name](works[fps], train=True, views=1, sample_fps=25.0) for fps in works}
    assert {v.fps for v in sets[24].videos} == {24.0} and {v.fps for v in sets[30].videos} == {30.0}
    assert [v.video_id for v in sets[24].videos] == [v.video_id for v in sets[30].videos]
    for seed in range(5):  # training draws (the same generator state on both sides) and evaluation views
        a = sets[24].sample_times(0, np.random.default_rng(seed))
        b = sets[30].sample_times(0, np.random.default_rng(seed))
        # each instant takes the item on screen then: at most one frame period (1/24 s) apart, give or take the
        # clips' lengths (a flow clip is one field shorter than its video: 47/24 s against 59/30 s)
        assert a.shape == b.shape and np.abs(a - b).max() < TOLERANCE, (a, b)
    for view in range(3):
        a = sets[24].sample_times(0, None, view)
        b = sets[30].sample_times(0, None, view)
        assert np.abs(a - b).max() < TOLERANCE
    # Sampling by frame index (each video at its own rate) is what this guards against: windows of n frames
    # span n/24 s in one video and n/30 s in the other.
    by_index = {fps: DATASETS[name](works[fps], train=False, views=1) for fps in works}
    spans = []
    for fps in (24, 30):
        window = by_index[fps].picks(0, None, 0)[0]
        spans.append(np.ptp(by_index[fps].times(0)[window]))
    if name != "rgb":  # (a window of one frame has no length)
        assert spans[0] / spans[1] == pytest.approx(30 / 24), spans


def test_flow_stacks_measure_motion_per_sample_not_per_frame(works):
    """The same motion moves 30/24 times farther between frames at 24 fps than at 30: fields rescaled to one
    sampling period agree; raw per-frame fields do not."""

    def mean_speed(work, sample_fps):
        flow = FlowStacks(work, "train", train=False, views=1, segments=3, stack=5, size=32, sample_fps=sample_fps)
        return float(np.mean([np.abs(flow[i][0].numpy()).mean() for i in range(len(flow.videos))]))

    rescaled = mean_speed(works[24], 25.0) / mean_speed(works[30], 25.0)
    per_frame = mean_speed(works[24], None) / mean_speed(works[30], None)
    assert abs(np.log(rescaled)) < abs(np.log(per_frame)), (rescaled, per_frame)
    assert 0.85 < rescaled < 1.15 and per_frame > 1.15, (rescaled, per_frame)
