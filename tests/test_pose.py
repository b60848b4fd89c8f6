from __future__ import annotations

import json

import numpy as np
import pytest

from preprocess.batch import DataError, read_npz
from preprocess.pose import (
    COCO_FLIP_PAIRS,
    flip_permutation,
    load_pose,
    normalize_to_box,
    track_sequence,
)
from preprocess.pose.backends import (
    MediaPipePose,
    MoveNetMultiPose,
    OnnxYoloPose,
    resolve_mediapipe_model,
    resolve_onnx_model,
)
from preprocess.pose.evaluate import coco_oks_matches, pck
from tests.conftest import flip_keypoints_horizontally, run_bin, shared_asset, work_copy


def random_skeletons(rng, shape=(6, 3)):
    kp = np.zeros(shape + (17, 3), np.float32)
    kp[..., 0] = rng.uniform(0, 640, shape + (17,))
    kp[..., 1] = rng.uniform(0, 360, shape + (17,))
    kp[..., 2] = rng.uniform(0, 1, shape + (17,))
    return kp


def test_normalisation_properties():
    rng = np.random.default_rng(0)
    kp = random_skeletons(rng)
    kp[0, 0, :, 2] = 0  # nobody there
    kp[0, 1, 3:, 2] = 0  # a single... three valid points
    norm, boxes = normalize_to_box(kp, min_confidence=0.2)
    assert norm.shape == (6, 3, 17, 2) and not np.isnan(norm).any()
    assert np.abs(norm).max() <= 1.0
    valid = kp[..., 2] >= 0.2
    assert (norm[~valid] == 0).all() and (norm[0, 0] == 0).all() and (boxes[0, 0] == 0).all()
    for t in range(6):
        for p in range(3):
            if valid[t, p].sum() >= 2:
                v = norm[t, p][valid[t, p]]
                # the longer side of the box spans exactly [-1, 1]; the shorter is centred
                spans = v.max(0) - v.min(0)
                assert np.isclose(spans.max(), 2.0, atol=1e-5)
                assert np.allclose(v.max(0) + v.min(0), 0, atol=1e-5)
    # shifting and scaling the image leaves the normalised skeleton unchanged
    moved = kp.copy()
    moved[..., :2] = moved[..., :2] * 2.5 + 40
    assert np.allclose(normalize_to_box(moved, 0.2)[0], norm, atol=1e-5)


def test_horizontal_flip_of_skeletons():
    rng = np.random.default_rng(1)
    kp = random_skeletons(rng)
    flipped = flip_keypoints_horizontally(kp, 640)
    assert np.allclose(flip_keypoints_horizontally(flipped, 640), kp)
    # a flipped left wrist is the right wrist of the mirrored person, mirrored in x
    assert np.allclose(flipped[..., 10, 0], 639 - kp[..., 9, 0]) and np.allclose(flipped[..., 10, 2], kp[..., 9, 2])
    # normalisation commutes with the flip: x negates, left/right swap
    norm, _ = normalize_to_box(kp, 0.2)
    norm_of_flipped, _ = normalize_to_box(flipped, 0.2)
    expected = norm[..., flip_permutation(), :] * np.array([-1, 1], np.float32)
    assert np.allclose(norm_of_flipped, expected, atol=1e-5)
    assert sorted(a for pair in COCO_FLIP_PAIRS for a in pair) == list(range(1, 17))


def _person(x, y, score=0.9, size=40):
    kp = np.zeros((17, 3), np.float32)
    kp[:, 0] = x + np.linspace(-size / 4, size / 4, 17)
    kp[:, 1] = y + np.linspace(-size / 2, size / 2, 17)
    kp[:, 2] = score
    return kp


def test_tracker_keeps_identities_across_order_gaps_and_crowds():
    rng = np.random.default_rng(3)
    frames = []
    for t in range(30):
        people = [(_person(100 + 3 * t, 100), 0.9), (_person(300 - 3 * t, 110), 0.8)]
        if 10 <= t < 13:
            people = people[:1]  # the second dancer is missed for three frames
        if t >= 20:
            people.append((_person(200, 300), 0.7))  # a third arrives
        if t == 25:
            people.append((_person(500, 300), 0.1))  # a fourth, least confident, with no slot left
        order = rng.permutation(len(people))
        frames.append([people[i] for i in order])
    keypoints, mask = track_sequence(frames, max_persons=3)
    xs = keypoints[..., 8, 0]
    first = np.argmin(np.abs(xs[0] - 100))
    second = np.argmin(np.abs(xs[0] - 300))
    assert first != second
    assert np.allclose(xs[:, first], 100 + 3 * np.arange(30))
    on = np.r_[0:10, 13:30]
    assert np.allclose(xs[on, second], 300 - 3 * on) and not mask[10:13, second].any()
    third = ({0, 1, 2} - {first, second}).pop()
    assert mask[20:, third].all() and not mask[:20, third].any()
    assert mask.sum(1).max() == 3 and np.isclose(xs[25, third], 200)  # the fourth person got no slot


def test_tracker_never_drops_the_only_person_after_a_camera_cut():
    # One slot; the dancer is on the left, then a cut shows a dancer on the right whose box overlaps nothing. The
    # old tracker kept the slot for the vanished dancer for max_age frames and left the mask empty meanwhile.
    frames = [[(_person(100, 100), 0.9)] for _ in range(10)] + [[(_person(500, 300), 0.9)] for _ in range(20)]
    keypoints, mask = track_sequence(frames, max_persons=1, max_age=15)
    assert mask[:, 0].all()
    assert np.allclose(keypoints[:10, 0, 8, 0], 100) and np.allclose(keypoints[10:, 0, 8, 0], 500)
    # With two slots and two dancers, a cut to one new dancer takes the slot unseen longest, still no gap.
    two = [[(_person(100, 100), 0.9), (_person(300, 100), 0.8)] for _ in range(5)]
    two += [[(_person(300, 100), 0.8)] for _ in range(3)] + [[(_person(600, 400), 0.9)] for _ in range(5)]
    _, mask = track_sequence(two, max_persons=2, max_age=15)
    assert (mask.sum(1) >= 1).all() and mask[8:].sum(1).tolist() == [1] * 5


def test_model_resolution_order(tmp_path, monkeypatch):
    fake = tmp_path / "mine.task"
    fake.write_bytes(b"model")
    assert resolve_mediapipe_model(fake) == fake
    with pytest.raises(DataError, match="does not exist"):
        resolve_mediapipe_model(tmp_path / "missing.task")
    monkeypatch.setenv("DANCE_POSE_MODEL", str(fake))
    assert resolve_mediapipe_model(None) == fake
    monkeypatch.delenv("DANCE_POSE_MODEL")
    monkeypatch.setenv("DANCE_SHARED", str(tmp_path / "no_shared"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="no MediaPipe pose model"):
        resolve_mediapipe_model(None, download=False)
    cached = tmp_path / "cache" / "dance-streams" / "pose_landmarker_full.task"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"model")
    assert resolve_mediapipe_model(None, download=False) == cached
    monkeypatch.delenv("DANCE_ONNX_POSE_MODEL", raising=False)
    with pytest.raises(DataError, match="needs a model file"):
        resolve_onnx_model(None)


@pytest.fixture(scope="module")
def mediapipe_run(tiny_synth, tmp_path_factory):
    model = shared_asset("models/pose_landmarker_full.task")
    pytest.importorskip("mediapipe", reason="mediapipe is not installed")
    work = tmp_path_factory.mktemp("pose_mp")
    run_bin("preprocess", "pose", tiny_synth / "dataset.csv", work, "--model", model, "--workers", "2", check=True)
    return work


def _pck_by_style(synth, work, ids=None):
    info = json.loads((synth / "synth.json").read_text())
    out = {}
    for clip in info["clips"]:
        if ids is not None and clip["id"] not in ids:
            continue
        truth = read_npz(synth / clip["groundtruth"])["keypoints"]
        pose = load_pose(work, clip["id"])
        c, t = pck(pose["keypoints"], pose["mask"], truth)
        a = out.setdefault(clip["style"], [0, 0])
        a[0] += c
        a[1] += t
    return {s: c / t for s, (c, t) in out.items()}


def test_mediapipe_pose_format_and_accuracy_on_synthetic_ground_truth(tiny_synth, mediapipe_run):
    info = json.loads((tiny_synth / "synth.json").read_text())
    for clip in info["clips"]:
        pose = load_pose(mediapipe_run, clip["id"])
        assert pose["keypoints"].shape == (16, 4, 17, 3) and pose["normalized"].shape == (16, 4, 17, 2)
        assert pose["boxes"].shape == (16, 4, 4) and pose["mask"].dtype == bool
        for name in ("keypoints", "normalized", "boxes"):
            assert np.isfinite(pose[name]).all()
        assert (pose["keypoints"][~pose["mask"]] == 0).all()
        assert np.abs(pose["normalized"]).max() <= 1
    scores = _pck_by_style(tiny_synth, mediapipe_run)
    print("MediaPipe PCK@0.2 by style", {s: round(v, 2) for s, v in scores.items()})
    solo = [scores[s] for s in ("ballet", "break", "flamenco")]
    assert np.mean(solo) >= 0.75  # one dancer: MediaPipe finds and places them well
    assert min(scores.values()) > 0.2  # couples and groups: MediaPipe finds at least one dancer


def test_onnx_pose_finds_couples_on_synthetic_ground_truth(tiny_synth, tiny_work, tmp_path):
    import dataclasses

    from preprocess.dataset import load_manifest

    model = shared_asset("models/yolo11n-pose.onnx")
    pytest.importorskip(
        "onnxruntime",
        reason="onnxruntime is not installed (pip install 'dance-streams[onnx]'): the onnx backend needs it",
    )
    info = json.loads((tiny_synth / "synth.json").read_text())
    ids = {c["id"] for c in {c["style"]: c for c in info["clips"]}.values()}  # one clip per style
    work = tmp_path / "work"
    manifest = load_manifest(tiny_work)
    dataclasses.replace(manifest, videos=[v for v in manifest.videos if v.video_id in ids]).save(work)
    run_bin("preprocess", "pose", work, work, "--backend", "onnx", "--model", model, "--workers", "2", check=True)
    scores = _pck_by_style(tiny_synth, work, ids)
    print("ONNX PCK@0.2 by style", {s: round(v, 2) for s, v in scores.items()})
    assert np.mean(list(scores.values())) >= 0.6


def test_movenet_pose_finds_couples_on_synthetic_ground_truth(tiny_synth, tiny_work, tmp_path):
    import dataclasses

    from preprocess.dataset import load_manifest

    model = shared_asset("models/movenet_multipose_lightning_256.onnx")
    pytest.importorskip(
        "onnxruntime", reason="onnxruntime is not installed (pip install 'dance-streams[onnx]'): MoveNet needs it"
    )
    info = json.loads((tiny_synth / "synth.json").read_text())
    clips = list({c["style"]: c for c in info["clips"]}.values())  # one clip per style: solo, couples, a group
    manifest = load_manifest(tiny_work)
    ids = {c["id"] for c in clips}
    work = tmp_path / "work"
    dataclasses.replace(manifest, videos=[v for v in manifest.videos if v.video_id in ids]).save(work)
    run_bin("preprocess", "pose", work, work, "--backend", "movenet", "--model", model, "--workers", "2", check=True)
    pose = load_pose(work, clips[0]["id"])
    assert pose["keypoints"].shape[1:] == (4, 17, 3) and np.abs(pose["normalized"]).max() <= 1
    sidecar = json.loads((work / "pose" / f"{clips[0]['id']}.json").read_text())
    assert sidecar["params"]["backend"] == "movenet" and "rank" not in sidecar["params"]
    scores = {}
    for clip in clips:
        truth = read_npz(tiny_synth / clip["groundtruth"])["keypoints"]
        found = load_pose(work, clip["id"])
        correct, total = pck(found["keypoints"], found["mask"], truth)
        scores[clip["style"]] = correct / total
    print("MoveNet PCK@0.2 by style", {s: round(v, 2) for s, v in scores.items()})
    assert len(scores) == 10 and np.mean(list(scores.values())) >= 0.6  # 0.73 on all 30 clips, 2026-12-02


def test_movenet_model_is_found_or_named(tmp_path, monkeypatch):
    from preprocess.pose.backends import MOVENET_MODEL_ENV, resolve_movenet_model

    monkeypatch.setenv(MOVENET_MODEL_ENV, str(tmp_path / "absent.onnx"))
    with pytest.raises(DataError, match=r"absent.onnx: pose model given by \$DANCE_MOVENET_MODEL does not exist"):
        resolve_movenet_model()
    monkeypatch.delenv(MOVENET_MODEL_ENV)
    monkeypatch.setenv("DANCE_SHARED", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="no MoveNet MultiPose ONNX model: pass --model PATH"):
        resolve_movenet_model()
    pytest.importorskip(
        "onnxruntime", reason="onnxruntime is not installed (pip install 'dance-streams[onnx]'): MoveNet needs it"
    )
    yolo = shared_asset("models/yolo11n-pose.onnx")
    with pytest.raises(DataError, match="not a MoveNet MultiPose model"):
        MoveNetMultiPose(yolo)


def _coco_images():
    import cv2

    root = shared_asset("data/coco_pose_gt")
    data = json.loads((root / "test_coco.json").read_text())
    for image in data["images"]:
        anns = [a for a in data["annotations"] if a["image_id"] == image["id"]]
        yield cv2.cvtColor(cv2.imread(str(root / image["file_name"])), cv2.COLOR_BGR2RGB), anns


def _coco_scores(model):
    scores = []
    for rgb, anns in _coco_images():
        with model.video() as detect:
            people = [kp for kp, _ in detect(rgb, 0)]
        scores += coco_oks_matches(people, anns)
    return np.array(scores)


def test_backends_on_coco_ground_truth():
    task = shared_asset("models/pose_landmarker_full.task")
    onnx = shared_asset("models/yolo11n-pose.onnx")
    pytest.importorskip("mediapipe", reason="mediapipe is not installed")
    pytest.importorskip(
        "onnxruntime", reason="onnxruntime is not installed (pip install 'dance-streams[onnx]'): MoveNet needs it"
    )
    mp_scores = _coco_scores(MediaPipePose(task, max_persons=20))
    yolo_scores = _coco_scores(OnnxYoloPose(onnx, max_persons=20))
    print(
        f"COCO: mediapipe found {(mp_scores >= 0.5).sum()}/{len(mp_scores)}, "
        f"ONNX {(yolo_scores >= 0.5).sum()}/{len(yolo_scores)}"
    )
    assert len(mp_scores) == len(yolo_scores) == 12  # people with >= 5 labelled keypoints
    assert (yolo_scores >= 0.5).sum() >= 11 and yolo_scores[yolo_scores >= 0.5].mean() > 0.65
    assert (mp_scores >= 0.5).sum() >= 3


def test_movenet_on_coco_ground_truth():
    model = shared_asset("models/movenet_multipose_lightning_256.onnx")
    pytest.importorskip(
        "onnxruntime", reason="onnxruntime is not installed (pip install 'dance-streams[onnx]'): MoveNet needs it"
    )
    scores = _coco_scores(MoveNetMultiPose(model, max_persons=6))
    print("COCO: MoveNet OKS", np.round(scores, 2))
    assert len(scores) == 12  # people with >= 5 labelled keypoints
    found = scores >= 0.5
    assert found.sum() >= 10 and scores[found].mean() > 0.7  # README: 11 of 12 at 256, OKS 0.62-0.94


def test_pose_command_errors_are_one_line(tiny_synth, tmp_path):
    result = run_bin("preprocess", "pose", tiny_synth / "dataset.csv", tmp_path, "--model", tmp_path / "none.task")
    assert result.returncode != 0 and "none.task: pose model given by --model does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_bin("preprocess", "pose", tiny_synth / "dataset.csv", tmp_path, "--backend", "onnx")
    assert result.returncode != 0 and "needs a model file" in result.stderr


def test_pose_runs_on_the_device_asked_for_or_says_why_not(tiny_synth, tmp_path):
    # MediaPipe has no device or batch to choose: given, they are refused by name
    data = tiny_synth / "dataset.csv"
    for option in (["--device", "cuda"], ["--batch", "4"]):
        result = run_bin("preprocess", "pose", data, tmp_path, *option)
        assert result.returncode != 0 and f"{option[0]}" in result.stderr and "mediapipe backend" in result.stderr
        assert "Traceback" not in result.stderr
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'dance-streams[onnx]')")
    import onnxruntime

    model = shared_asset("models/movenet_multipose_lightning_256.onnx")
    movenet = ("preprocess", "pose", data, tmp_path, "--backend", "movenet", "--model", model)
    result = run_bin(*movenet, "--device", "gpu")
    assert result.returncode != 0 and "'gpu' is neither cpu nor cuda[:N]" in result.stderr
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():  # (as on the CI machine)
        result = run_bin(*movenet, "--device", "cuda")
        assert result.returncode != 0 and "no CUDA provider" in result.stderr and "[onnx-gpu]" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "pose").exists()  # before any video
    # on a GPU the pose stage is a GPU task: Ray gives its workers a fraction of one, the pool a few per GPU
    from preprocess.pose import pose_task

    assert pose_task({"backend": "movenet"}, device="cuda").gpu and not pose_task({"backend": "movenet"}).gpu


def _yolo_layout_model(path, seed=0):
    """A small ONNX model with the YOLO-pose output layout (B × 56 × anchors) whose batch size is free, as a
    ``dynamic=True`` export makes: one strided convolution, boxes near the frame's centre, keypoints anywhere."""
    onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'dance-streams[test]')")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 0.02, (56, 3, 16, 16)).astype(np.float32)
    bias = np.zeros(56, np.float32)
    bias[:4] = 320, 320, 120, 240  # cx, cy, w, h: boxes that overlap, so that NMS has work
    weight[:4] *= 400
    bias[5:] = np.tile([320, 320, 0.5], 17)
    weight[5:] *= np.tile([400, 400, 1], 17)[:, None, None, None]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["images", "w", "b"], ["features"], strides=[16, 16]),
            helper.make_node("Reshape", ["features", "shape"], ["output0"]),
        ],
        "yolo_layout",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 640, 640])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 56, 1600])],
        [
            numpy_helper.from_array(weight, "w"),
            numpy_helper.from_array(bias, "b"),
            numpy_helper.from_array(np.array([0, 56, -1], np.int64), "shape"),
        ],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_onnx_backends_run_frames_in_batches_where_the_model_takes_them(tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'dance-streams[onnx]')")
    frames = [rgb for rgb, _ in _coco_images()][:6]
    batched = OnnxYoloPose(_yolo_layout_model(tmp_path / "batched.onnx"), max_persons=5)
    assert batched.takes_batches
    together = batched.detect_batch(frames)
    one_by_one = [batched.detect_image(rgb) for rgb in frames]
    assert sum(len(people) for people in together) >= len(frames)  # people found: the comparison means something
    assert [len(p) for p in together] == [len(p) for p in one_by_one]
    for people, alone in zip(together, one_by_one, strict=True):
        for (kp, score), (kp_alone, score_alone) in zip(people, alone, strict=True):
            np.testing.assert_allclose(kp, kp_alone, rtol=1e-4, atol=1e-2)  # (a batched convolution's rounding)
            assert abs(score - score_alone) < 1e-4
    # the shipped exports fix their batch at 1: their frames run one at a time, with the same results
    fixed = MoveNetMultiPose(shared_asset("models/movenet_multipose_lightning_256.onnx"), max_persons=6)
    assert not fixed.takes_batches
    found = fixed.detect_batch(frames[:3])
    assert [len(p) for p in found] == [len(fixed.detect_image(rgb)) for rgb in frames[:3]] and any(found)


def test_clean_detections_removes_copies_but_keeps_an_overlapping_partner():
    from preprocess.pose import clean_detections

    dancer = _person(100, 100, size=60)
    copy = dancer.copy()
    copy[:, :2] += 0.8  # MediaPipe's near-duplicate of the same dancer
    partner = _person(112, 104, size=60)  # a different dancer in closed hold: boxes overlap, joints do not match
    partner[:, 0] = 112 + np.linspace(10, -10, 17)  # facing the other way
    sparse = np.zeros((17, 3), np.float32)
    sparse[:2] = (50, 50, 0.9)  # two keypoints: not a person
    outside = _person(400, 100)  # centred off a 200-pixel-wide frame
    people = [(copy, 0.8), (dancer, 0.9), (partner, 0.7), (sparse, 0.95), (outside, 0.99)]
    kept = clean_detections(people, 200, 200, min_confidence=0.2)
    assert [score for _, score in kept] == [0.9, 0.7]


def _skeleton(person, cx, cy, height, phase):
    """Person ``person``'s COCO-17 skeleton standing at (cx, cy), arms and legs swung by ``phase`` (radians)."""
    rng = np.random.default_rng(person)
    base = rng.uniform(-0.25, 0.25, (17, 2)) * [0.5, 1.0]
    base[:, 1] = np.linspace(-0.5, 0.5, 17)
    swing = np.zeros((17, 2))
    swing[[7, 8, 9, 10, 13, 14, 15, 16], 0] = 0.3 * np.sin(phase) * np.array([1, -1, 1, -1, -1, 1, -1, 1])
    pts = (base + swing) * height + [cx, cy]
    return np.concatenate([pts, np.full((17, 1), 0.9)], 1).astype(np.float32)


def test_dancers_are_ranked_before_onlookers_whatever_the_camera_does():
    from preprocess.pose.tracking import rank_dancers, track_sequence

    frames = []
    for t in range(40):
        pan = 3.0 * t  # the camera pans: every body moves across the frame
        onlookers = [(_skeleton(1, 60 + pan, 200, 220, 0.0), 0.95), (_skeleton(2, 500 + pan, 200, 200, 0.0), 0.9)]
        dancer = (_skeleton(3, 280 + pan, 260, 120, 0.6 * t), 0.6)  # smaller, less confident, limbs moving
        frames.append(onlookers + [dancer])
    keypoints, mask = track_sequence(frames, 6)
    assert mask[:, :3].all()
    dancer_slot = int(np.argmin([abs(keypoints[0, p, :, 0].mean() - 280) for p in range(3)]))
    assert dancer_slot == 2  # tracking alone puts the dancer last (found last: least confident)
    ranked, ranked_mask, scores = rank_dancers(keypoints, mask, 2, 0.2)
    assert ranked.shape == (40, 2, 17, 3) and ranked_mask.all()
    assert abs(ranked[0, 0, :, 0].mean() - 280) < 30  # the dancer first
    assert scores[0] > 5 * scores[1]


# issue 33, case 7, 12
# 7, 12. A pose .npz that is truncated or not an archive at all: the file named, never NumPy's advice to unpickle
@pytest.mark.parametrize("damage", ["truncated", "other bytes"])
def test_a_damaged_pose_file_is_named(tiny_work, tmp_path, damage):
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
