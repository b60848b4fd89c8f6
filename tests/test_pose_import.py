"""Importers on files written to each format's specification from the synthetic ground truth."""

import json

import numpy as np
import pytest

from preprocess.batch import read_npz
from preprocess.dataset import ingest
from preprocess.pose import load_pose
from preprocess.pose.keypoints import COCO_KEYPOINTS, OPENPOSE_BODY25_TO_COCO, OPENPOSE_COCO18_TO_COCO
from tests.conftest import run_bin


@pytest.fixture(scope="module")
def truth(tiny_synth, tmp_path_factory):
    work = tmp_path_factory.mktemp("import_work")
    ingest(tiny_synth / "dataset.csv").save(work)
    info = json.loads((tiny_synth / "synth.json").read_text())
    clips = [c for c in info["clips"] if c["style"] in ("ballet", "waltz", "square")]
    return work, {c["id"]: read_npz(tiny_synth / c["groundtruth"])["keypoints"] for c in clips}


def assert_imported_equals_truth(work, gt):
    for video_id, kp in gt.items():
        pose = load_pose(work, video_id)
        assert pose["keypoints"].shape[0] == kp.shape[0] == 16
        slot_of = {}
        for t in range(kp.shape[0]):
            for g in range(kp.shape[1]):
                labelled = kp[t, g, :, 2] > 0
                if labelled.sum() < 2:
                    continue
                dist = np.abs(pose["keypoints"][t][:, labelled, :2] - kp[t, g, labelled, :2]).max(axis=(1, 2))
                slot = int(np.argmin(dist))
                assert dist[slot] < 1e-3 and pose["mask"][t, slot]
                assert np.all(pose["keypoints"][t, slot, labelled, 2] > 0)
                slot_of.setdefault(g, set()).add(slot)
        assert all(len(s) == 1 for s in slot_of.values()), "a dancer changed slot"
        assert np.abs(pose["normalized"]).max() <= 1 and np.isfinite(pose["normalized"]).all()


def test_import_lets_dance_json(truth, tmp_path):
    work, gt = truth
    for video_id, kp in gt.items():
        style = video_id.split("_")[0]
        (tmp_path / style).mkdir(exist_ok=True)
        for t in range(kp.shape[0]):
            people = []
            for g in range(kp.shape[1]):
                person = [f"person {g}"]
                for k, name in enumerate(COCO_KEYPOINTS):
                    if kp[t, g, k, 2] > 0:
                        person.append([name, [float(kp[t, g, k, 0]), float(kp[t, g, k, 1])]])
                people.append(person)
            (tmp_path / style / f"{video_id}_{t + 1}.json").write_text(json.dumps(people))
    out = tmp_path / "work"
    (out).mkdir()
    result = run_bin(
        "preprocess",
        "import-pose",
        "letsdance",
        tmp_path,
        work / "manifest.json",
        out,
        "--first-frame",
        "1",
        check=True,
    )
    assert f"{len(gt)} videos imported" in result.stdout
    assert_imported_equals_truth(out, gt)


@pytest.mark.parametrize(
    "layout, mapping, n", [("BODY_25", OPENPOSE_BODY25_TO_COCO, 25), ("COCO-18", OPENPOSE_COCO18_TO_COCO, 18)]
)
def test_import_openpose_json(truth, tmp_path, layout, mapping, n):
    work, gt = truth
    for video_id, kp in gt.items():
        folder = tmp_path / "openpose" / video_id
        folder.mkdir(parents=True)
        for t in range(kp.shape[0]):
            people = []
            for g in range(kp.shape[1]):
                flat = np.zeros((n, 3), np.float32)
                flat[1] = (5.0, 5.0, 0.5)  # neck: not a COCO keypoint, must be ignored
                for k in range(17):
                    if kp[t, g, k, 2] > 0:
                        flat[mapping[k]] = (kp[t, g, k, 0], kp[t, g, k, 1], 0.9)
                people.append({"person_id": [-1], "pose_keypoints_2d": flat.ravel().tolist()})
            (folder / f"{video_id}_{t:012d}_keypoints.json").write_text(json.dumps({"version": 1.3, "people": people}))
    out = tmp_path / "work"
    run_bin("preprocess", "import-pose", "openpose", tmp_path / "openpose", work / "manifest.json", out, check=True)
    assert_imported_equals_truth(out, gt)
    assert np.isclose(load_pose(out, next(iter(gt)))["keypoints"][..., 2].max(), 0.9)


def test_import_coco_keypoint_file(truth, tmp_path):
    work, gt = truth
    images, annotations = [], []
    for video_id, kp in gt.items():
        for t in range(kp.shape[0]):
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": f"{video_id}/{t:05d}.jpg", "width": 128, "height": 96})
            for g in range(kp.shape[1]):
                flat = np.where(kp[t, g, :, 2:] > 0, kp[t, g], 0)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": 1,
                        "keypoints": flat.ravel().tolist(),
                        "num_keypoints": int((kp[t, g, :, 2] > 0).sum()),
                    }
                )
    coco = tmp_path / "coco.json"
    coco.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "person"}]})
    )
    out = tmp_path / "work"
    run_bin("preprocess", "import-pose", "coco", coco, work / "manifest.json", out, check=True)
    assert_imported_equals_truth(out, gt)
    # a results list (scores per keypoint) with the images given separately
    results = [
        {"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 0.8} for a in annotations
    ]
    listing = tmp_path / "results.json"
    listing.write_text(json.dumps(results))
    out2 = tmp_path / "work2"
    run_bin("preprocess", "import-pose", "coco", listing, work / "manifest.json", out2, "--images", coco, check=True)
    assert_imported_equals_truth(out2, gt)


def test_import_reports_bad_files_and_unknown_videos(truth, tmp_path):
    work, gt = truth
    video_id = next(iter(gt))
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / f"{video_id}_1.json").write_text("{broken")
    (tmp_path / "src" / "nosuchvideo_0_1.json").write_text("[]")
    (tmp_path / "src" / f"{video_id}_2.json").write_text("[]")
    result = run_bin("preprocess", "import-pose", "letsdance", tmp_path / "src", work / "manifest.json", tmp_path / "w")
    assert result.returncode == 1 and "Traceback" not in result.stderr  # imported what it could, listed the rest
    assert "import-pose: 1 videos imported" in result.stdout
    assert f"{video_id}_1.json: unreadable JSON" in result.stderr
    assert "'nosuchvideo_0' is not in the manifest" in result.stderr


def test_imported_frames_are_placed_by_number_never_shifted_by_a_guess(truth, tmp_path):
    # A 0-based OpenPose sequence whose first file is missing: the old importer guessed 1-based numbering from the
    # missing frame 0 and shifted every skeleton one frame early. Frame numbers far beyond the video are reported.
    work, gt = truth
    video_id, kp = next(iter(gt.items()))
    folder = tmp_path / "openpose" / video_id
    folder.mkdir(parents=True)
    for t in [*range(1, kp.shape[0]), 10**12]:
        people = []
        for g in range(kp.shape[1]):
            frame = kp[min(t, kp.shape[0] - 1), g]
            flat = np.zeros((25, 3), np.float32)
            for k in range(17):
                if frame[k, 2] > 0:
                    flat[OPENPOSE_BODY25_TO_COCO[k]] = (frame[k, 0], frame[k, 1], 0.9)
            people.append({"pose_keypoints_2d": flat.ravel().tolist()})
        (folder / f"{video_id}_{t:012d}_keypoints.json").write_text(json.dumps({"people": people}))
    out = tmp_path / "work"
    result = run_bin("preprocess", "import-pose", "openpose", tmp_path / "openpose", work / "manifest.json", out)
    assert result.returncode == 1 and "Traceback" not in result.stderr  # a frame past the end is a problem
    assert f"has no frame {10**12}" in result.stderr
    pose = load_pose(out, video_id)
    assert pose["keypoints"].shape[0] == kp.shape[0] and not pose["mask"][0].any()  # the gap stays a gap
    for t in range(1, kp.shape[0]):
        g = int(np.argmax((kp[t, :, :, 2] > 0).sum(1)))
        labelled = kp[t, g, :, 2] > 0
        dist = np.abs(pose["keypoints"][t][:, labelled, :2] - kp[t, g, labelled, :2]).max(axis=(1, 2))
        assert dist.min() < 1e-3, f"frame {t} holds another frame's skeleton"


def test_frame_image_videos_take_skeletons_by_frame_file_name(tmp_path):
    import cv2

    data = tmp_path / "frames"
    for label in ("a", "b"):
        for clip in ("c1", "c2"):
            folder = data / label / f"{label}{clip}"
            folder.mkdir(parents=True)
            for number in range(3, 8):  # numbered from 3, as a cut from a longer clip
                cv2.imwrite(str(folder / f"img_{number:05d}.jpg"), np.full((32, 32, 3), 30 * number, np.uint8))
    work = tmp_path / "work"
    ingest(data).save(work)
    folder = tmp_path / "openpose" / "ac1"
    folder.mkdir(parents=True)
    for number in (4, 6, 7):  # frames 3 and 5 have no skeleton
        flat = np.zeros((25, 3), np.float32)
        flat[:, :2] = number  # every keypoint at (number, number): tells which frame it came from
        flat[:, 2] = 0.9
        (folder / f"img_{number:05d}_keypoints.json").write_text(
            json.dumps({"people": [{"pose_keypoints_2d": flat.ravel().tolist()}]})
        )
    run_bin("preprocess", "import-pose", "openpose", tmp_path / "openpose", work / "manifest.json", work, check=True)
    pose = load_pose(work, "ac1")
    assert pose["mask"].sum(1).tolist() == [0, 1, 0, 1, 1]
    placed = [float(pose["keypoints"][t][pose["mask"][t]][0, 0, 0]) for t in (1, 3, 4)]
    assert placed == [4.0, 6.0, 7.0]


def test_coco_records_that_match_nothing_or_twice_are_problems_and_fail_the_command(truth, tmp_path):
    work, gt = truth
    video_id, kp = next(iter(gt.items()))
    person = np.where(kp[0, 0, :, 2:] > 0, kp[0, 0], 0).ravel().tolist()
    images = [
        {"id": 1, "file_name": f"{video_id}/00000.jpg"},
        {"id": 1, "file_name": f"{video_id}/00001.jpg"},  # the same id again
        {"id": 2, "file_name": f"{video_id}/00002.jpg"},
        {"id": 3, "file_name": f"{video_id}/00002.jpg"},  # the same frame again
    ]
    annotations = [
        {"id": 10, "image_id": 1, "category_id": 1, "keypoints": person},
        {"id": 11, "image_id": 99, "category_id": 1, "keypoints": person},  # no such image
    ]
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": images, "annotations": annotations}))
    result = run_bin("preprocess", "import-pose", "coco", coco, work / "manifest.json", tmp_path / "w")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "image id 1 is used twice: its second record skipped" in result.stderr
    assert f"image 3 names {video_id!r} frame 2 as another does: skipped" in result.stderr
    assert "annotation 11 names image 99, which no image record has: skipped" in result.stderr
    assert "import-pose: 1 videos imported" in result.stdout and "3 problems" in result.stdout
    pose = load_pose(tmp_path / "w", video_id)
    assert pose["mask"][0].any() and not pose["mask"][1].any()  # frame 1's record was the duplicate id

    # every frame past the video's end: not "imported" with an empty skeleton
    past = [{"id": 1, "file_name": f"{video_id}/{10**6:05d}.jpg"}]
    coco.write_text(json.dumps({"images": past, "annotations": [{**annotations[0], "image_id": 1}]}))
    result = run_bin("preprocess", "import-pose", "coco", coco, work / "manifest.json", tmp_path / "w2")
    assert result.returncode == 1 and f"video {video_id!r}: none of its frames is in the video" in result.stderr
    assert not (tmp_path / "w2" / "pose" / f"{video_id}.npz").exists()


def test_importers_refuse_non_finite_and_absurd_skeletons_by_file(tiny_synth, tmp_path):
    work = tmp_path / "work"
    ingest(tiny_synth / "dataset.csv").save(work)
    video = "ballet_0000"
    folder = tmp_path / "openpose" / video
    folder.mkdir(parents=True)

    def write(frame, x=10.0, conf=0.9, raw=None):
        flat = [x, 20.0, conf] * 25
        text = raw if raw is not None else json.dumps({"people": [{"pose_keypoints_2d": flat}]})
        (folder / f"{video}_{frame:012d}_keypoints.json").write_text(text)

    write(0)
    write(1, x=float("nan"))  # written by json.dumps as NaN, which Python's json reads back
    write(2, raw='{"people": [{"pose_keypoints_2d": [' + ", ".join(["1e308", "5", "0.5"] * 25) + "]}]}")
    write(3, conf=-0.5)
    write(4, raw='{"people": [{"pose_keypoints_2d": [' + ", ".join(['"NaN"', "5", "0.5"] * 25) + "]}]}")
    result = run_bin("preprocess", "import-pose", "openpose", tmp_path / "openpose", work / "manifest.json", work)
    assert result.returncode == 1 and "Traceback" not in result.stderr  # the good frames imported, the bad listed
    for frame, why in ((1, "not finite"), (2, "not finite"), (3, "negative confidence"), (4, "not finite")):
        line = next(x for x in result.stderr.splitlines() if f"{frame:012d}_keypoints.json" in x)
        assert why in line, line
    from preprocess.pose import load_pose

    pose = load_pose(work, video)
    assert np.isfinite(pose["keypoints"]).all() and pose["mask"][0].any() and not pose["mask"][1:5].any()


def test_coco_schema_errors_are_named_problems_not_tracebacks(tiny_synth, tmp_path):
    work = tmp_path / "work"
    ingest(tiny_synth / "dataset.csv").save(work)
    coco = {
        "images": [{"id": 1, "file_name": "ballet_0000/00000.jpg"}, {"file_name": "no id"}, "not a record"],
        "annotations": [
            {"id": 7, "image_id": 1, "category_id": 1, "keypoints": [1, 2, 2] * 17},
            {"id": 8, "image_id": 1, "category_id": 1},  # no keypoints
            {"id": 9, "image_id": 1, "category_id": 1, "keypoints": [1, 2]},  # wrong length
            {"id": 10, "image_id": 1, "category_id": 1, "keypoints": [1, 2, 5] * 17},  # visibility 5
            17,
        ],
    }
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    result = run_bin("preprocess", "import-pose", "coco", tmp_path / "coco.json", work / "manifest.json", work)
    assert result.returncode == 1 and "Traceback" not in result.stderr  # what could be imported is; problems fail it
    for what in (
        "image 1 is not a COCO image record",
        "image 2 is not",
        "annotation 8",
        "annotation 9",
        "annotation 10",
        "annotation 4",
    ):
        assert what in result.stderr, what
    (tmp_path / "bad.json").write_text(json.dumps({"images": [], "annotations": {"not": "a list"}}))
    result = run_bin("preprocess", "import-pose", "coco", tmp_path / "bad.json", work / "manifest.json", work)
    assert result.returncode == 1 and "Traceback" not in result.stderr and "not a COCO keypoint file" in result.stderr
