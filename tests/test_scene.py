"""Scene reliance (streams.scene), the training that does not reward the venue (the human-mask confusion loss,
background erasing), the fallback that keeps a venue-reading stream out (fusion.select.streams_to_fuse) and the
main-source protocol's folds (streams.crossval.main_source_folds).

The scene cases are real videos made here: a coloured dancer (a rectangle its keypoints span) on a coloured
background, where either the background or the dancer tells the class; an RGB network is trained on them by
``streams.train.train`` and measured with every person hidden."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fusion.select import HIGH_RELIANCE, streams_to_fuse
from streams import scene
from streams.crossval import main_source_folds
from tests.conftest import write_lossless
from tests.test_fusion import write_run

CLASSES = ["a", "b", "c", "d"]
# far apart in RGB, so the small CNN tells them apart in a few epochs; the pool is shared by every class
CLASS_COLOURS = [(220, 40, 40), (40, 200, 40), (40, 60, 230), (230, 220, 40)]
SHARED_COLOURS = [(150, 60, 160), (60, 170, 170), (200, 120, 40), (110, 110, 110)]
SIZE, FRAMES, FPS = 64, 8, 12


def _clip(background, dancer, x, y, w=22, h=30):
    """FRAMES frames (BGR for OpenCV) of a dancer rectangle moving right a pixel a frame, and its COCO keypoints."""
    frames, keypoints = [], []
    for t in range(FRAMES):
        image = np.empty((SIZE, SIZE, 3), np.uint8)
        image[:] = background[::-1]
        x0 = x + t
        image[y : y + h, x0 : x0 + w] = dancer[::-1]
        frames.append(image)
        # 17 keypoints spread over the rectangle (a grid of its corners, edges and inside)
        xs = np.linspace(x0, x0 + w - 1, 17)
        ys = np.tile(np.linspace(y, y + h - 1, 6), 3)[:17]
        keypoints.append(np.stack([xs, ys, np.full(17, 2.0)], 1))
    return frames, keypoints


@pytest.fixture(scope="module", params=["background", "dancer"])
def scene_work(request, tmp_path_factory):
    """(how the class is told, the work directory) of both cases of ``make_scene_work``."""
    return request.param, request.getfixturevalue(f"{request.param}_work")


@pytest.fixture(scope="module")
def background_work(tmp_path_factory):
    return make_scene_work("background", tmp_path_factory.mktemp("scene_background"))


@pytest.fixture(scope="module")
def dancer_work(tmp_path_factory):
    return make_scene_work("dancer", tmp_path_factory.mktemp("scene_dancer"))


@pytest.fixture(scope="module")
def background_run(background_work, tmp_path_factory):
    """A plain RGB run on the background case (trained once for the tests that compare with it)."""
    run = tmp_path_factory.mktemp("background_run") / "run"
    return run, _train_rgb(background_work, run)


def make_scene_work(told_by: str, root):
    """A work directory whose class is told only by the ``background`` colour (dancers drawn from one shared pool)
    or only by the ``dancer``'s colour (backgrounds from the shared pool): frames kept whole, pose imported from
    the drawn keypoints."""
    from preprocess.batch import run_batch, write_json
    from preprocess.dataset import ingest
    from preprocess.pose.importers import import_pose
    from preprocess.video import frames_params, frames_task

    rng = np.random.default_rng(3)
    rows, images, annotations = ["path,label,split,group"], [], []
    for split, per_class in (("train", 8), ("val", 5), ("test", 3)):
        for c, name in enumerate(CLASSES):
            for k in range(per_class):
                shared = SHARED_COLOURS[int(rng.integers(len(SHARED_COLOURS)))]
                background, dancer = (
                    (CLASS_COLOURS[c], shared) if told_by == "background" else (shared, CLASS_COLOURS[c])
                )
                x, y = int(rng.integers(2, SIZE - 32)), int(rng.integers(2, SIZE - 32))
                frames, keypoints = _clip(background, dancer, x, y)
                vid = f"{split}_{name}_{k}"
                write_lossless(frames, root / f"{vid}.avi", FPS)
                rows.append(f"{vid}.avi,{name},{split},{split}{k % 3}")
                for t, person in enumerate(keypoints):
                    images.append({"id": len(images) + 1, "file_name": f"{vid}/{t:05d}.jpg"})
                    annotations.append(
                        {
                            "id": len(annotations) + 1,
                            "image_id": len(images),
                            "category_id": 1,
                            "keypoints": person.ravel().tolist(),
                        }
                    )
    (root / "data.csv").write_text("\n".join(rows) + "\n")
    write_json(root / "coco.json", {"images": images, "annotations": annotations})
    work = root / "work"
    manifest = ingest(root / "data.csv", seed=0)
    manifest.save(work)
    import_pose("coco", str(root / "coco.json"), manifest, str(work), max_persons=2)
    run_batch(frames_task(frames_params(resize="none", background="keep")), manifest, work, workers=1)
    return work


def _train_rgb(work, run, **options):
    from streams.train import train

    config = {
        "stream": "rgb",
        "work": str(work),
        "run": str(run),
        "epochs": 6,
        "size": 32,
        "batch_size": 16,
        "min_epoch_clips": 64,
        "patience": 6,
        "device": "cpu",
        "views": 1,
        **options,
    }
    train(config, log=lambda line: None)
    return scene.read(run)


def test_hidden_dancer_top1_tells_a_scene_reader_from_a_dancer_reader(scene_work, tmp_path, request):
    told_by, work = scene_work
    if told_by == "background":
        record = request.getfixturevalue("background_run")[1]  # (trained once: the confusion test compares with it)
    else:
        record = _train_rgb(work, tmp_path / "run")
    assert record["applies"] and record["status"] == "measured"
    val = record["splits"]["val"]
    assert val["videos"] == 20 and val["chance"] == 0.25
    # either cue is learnt (the colour of the whole frame sooner than a dancer's a quarter of its size)
    assert val["top1"] >= (0.9 if told_by == "background" else 0.6)
    if told_by == "background":
        # hiding the dancers changes nothing the network reads
        assert val["hidden_top1"] == val["top1"] and val["retained"] == 1.0
    else:
        # with the dancers hidden only the shared backgrounds are left: chance, inside its interval
        low, high = val["hidden_top1_ci95"]
        assert val["hidden_top1"] <= 0.45 and low <= 0.25 <= high
        assert val["retained"] <= 0.3
    assert "with every person hidden" in scene.summary_line(record)


def test_confusion_loss_moves_hidden_dancer_predictions_towards_uniform(background_work, background_run, tmp_path):
    # where the scene names the class
    plain = background_run[1]["splits"]["val"]
    confused = _train_rgb(background_work, tmp_path / "confused", human_mask_confusion=2.0)["splits"]["val"]
    # same seed, same clips: the loss alone makes predictions without the dancers say less
    assert confused["hidden_kl_uniform"] < 0.5 * plain["hidden_kl_uniform"]
    assert plain["hidden_kl_uniform"] > 0.05  # the plain network still answers without the dancers
    assert confused["top1"] >= 0.75  # and still classifies the full clips


def test_hidden_clips_paint_the_persons_boxes_and_nothing_else(scene_work):
    from streams.registry import create_dataset, resolve_config

    _, work = scene_work
    config = resolve_config({"stream": "rgb", "work": str(work), "size": 64, "segments": 2})
    full = create_dataset(config, work, "val", train=False)
    hidden = create_dataset(config, work, "val", train=False)
    hidden.set_persons("hide")
    x, x_hidden = full[0][0].numpy(), hidden[0][0].numpy()
    changed = np.abs(x - x_hidden).max(1) > 1e-6  # (K, S, S)
    painted = np.abs(x_hidden).max(1) < 1e-6  # the normalised mean: 0
    assert (changed <= painted).all()  # whatever changed is painted with the mean
    # the dancer (22 x 30 px, widened by 15 % of its longer side per side) is hidden, the rest of the frame is not
    assert 0.15 < changed.mean() < 0.45
    marked = create_dataset(config, work, "val", train=False)
    marked.set_persons("mark")
    clip = marked[0][0]
    assert np.array_equal(clip.hidden().numpy(), x_hidden)


def test_no_pose_means_not_measured_and_no_confusion_loss(tiny_work, tmp_path):
    from streams.registry import create_dataset, run_config
    from streams.train import human_mask_confusion

    work = tmp_path / "work"
    work.mkdir()
    for entry in tiny_work.iterdir():
        if entry.name != "pose":
            (work / entry.name).symlink_to(entry)
    config = run_config({"stream": "rgb", "work": str(work), "human_mask_confusion": 1.0})
    dataset = create_dataset(config, work, "train", train=True)
    said = []
    human_mask_confusion(config, dataset, said.append)
    assert dataset.persons == "keep" and len(said) == 1 and "no pose" in said[0]
    with pytest.raises(Exception, match="no pose"):
        dataset.set_persons("hide")


def _stream_scores(rng, labels, right_share, sure_when_wrong):
    """Probabilities right on about ``right_share`` of the videos: sure of a right answer (0.5-0.95 on it), and of
    a wrong one 0.3-0.6, or 0.8-0.95 when ``sure_when_wrong`` (a stream that reads a venue it takes for another)."""
    n, c = len(labels), 4
    right = rng.random(n) < right_share
    guess = np.where(right, labels, (labels + rng.integers(1, c, n)) % c)
    wrong = rng.uniform(0.8, 0.95, n) if sure_when_wrong else rng.uniform(0.3, 0.6, n)
    confidence = np.where(right, rng.uniform(0.5, 0.95, n), wrong)
    probs = np.repeat(((1 - confidence) / (c - 1))[:, None], c, 1)
    probs[np.arange(n), guess] = confidence
    return probs


def _mean_top1(probs, labels, streams):
    return float((np.mean([probs[s] for s in streams], 0).argmax(1) == labels).mean())


def test_the_fallback_leaves_out_the_stream_unseen_sources_show_reads_the_venue():
    # the held-out street-dance figures of issue 31: rgb 21.8 % (confidently wrong on new venues), flow 71.3 %,
    # pose 82.8 %; validation reliance rgb 46 %, flow 53 % of their gain over chance kept with the dancers hidden
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 87)
    probs = {
        "rgb": _stream_scores(rng, labels, 0.218, True),
        "flow": _stream_scores(rng, labels, 0.713, False),
        "pose": _stream_scores(rng, labels, 0.828, False),
    }
    # as there: the mean of all three below pose alone, flow+pose above it
    assert (
        _mean_top1(probs, labels, probs)
        < _mean_top1(probs, labels, ["pose"])
        < _mean_top1(probs, labels, ["flow", "pose"])
    )
    reliance = {"rgb": (0.581 - 0.25) / (0.968 - 0.25), "flow": (0.613 - 0.25) / (0.935 - 0.25), "pose": None}
    chosen = streams_to_fuse(["rgb", "flow", "pose"], {"probs": probs, "labels": labels, "reliance": reliance})
    assert chosen["streams"] == ["flow", "pose"]
    assert [g["stream"] for g in chosen["left_out"]] == ["rgb"] and "without rgb" in chosen["left_out"][0]["reason"]

    # Weizmann: every stream generalises (rgb weaker but not confidently wrong): nothing is left out
    labels = rng.integers(0, 4, 48)
    probs = {
        "rgb": _stream_scores(rng, labels, 0.58, False),
        "flow": _stream_scores(rng, labels, 0.96, False),
        "pose": _stream_scores(rng, labels, 0.98, False),
    }
    chosen = streams_to_fuse(["rgb", "flow", "pose"], {"probs": probs, "labels": labels, "reliance": {"rgb": 0.1}})
    assert chosen["streams"] == ["rgb", "flow", "pose"] and not chosen["left_out"]

    # no out-of-group scores: every stream, as before
    assert streams_to_fuse(["rgb", "pose"], {"probs": None, "reliance": {"rgb": 0.9}})["streams"] == ["rgb", "pose"]


def test_the_fallback_leaves_out_a_stream_with_high_reliance_that_adds_nothing():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 60)
    pose = _stream_scores(rng, labels, 0.8, False)
    probs = {"rgb": np.full((60, 4), 0.25), "pose": pose}  # rgb says nothing out-of-group: the mean is pose's
    high = streams_to_fuse(["rgb", "pose"], {"probs": probs, "labels": labels, "reliance": {"rgb": HIGH_RELIANCE}})
    assert high["streams"] == ["pose"] and "keeps 50 %" in high["left_out"][0]["reason"]
    low = streams_to_fuse(["rgb", "pose"], {"probs": probs, "labels": labels, "reliance": {"rgb": 0.1}})
    assert low["streams"] == ["rgb", "pose"]  # no gain and no sign of the venue: it stays


def test_the_report_and_fusion_file_say_which_stream_was_left_out(tmp_path):
    from fusion.report import run_ablation

    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, 80)
    groups = np.array([f"s{c}{k % 2}" for c, k in zip(labels, range(80))])  # a source is a style: purity 1
    ids = [f"v{i:03d}" for i in range(80)]
    test_labels = rng.integers(0, 4, 40)
    test_ids = [f"t{i:02d}" for i in range(40)]
    runs = []
    for stream, share, confidence in (("rgb", 0.2, True), ("flow", 0.7, False), ("pose", 0.8, False)):
        folder = tmp_path / stream
        write_run(folder, stream, "oof", _stream_scores(rng, labels, share, confidence), labels, ids, classes=CLASSES)
        side = json.loads((folder / "scores_oof.json").read_text())
        side["groups"] = dict(zip(ids, groups.tolist()))
        (folder / "scores_oof.json").write_text(json.dumps(side))
        test = _stream_scores(rng, test_labels, share, confidence)
        write_run(folder, stream, "test", test, test_labels, test_ids, classes=CLASSES)
        if stream != "pose":
            scene.write(folder, {"stream": stream, "applies": True, "status": "measured", "splits": {"val": {
                "videos": 20, "chance": 0.25, "top1": 0.95, "hidden_top1": 0.6, "hidden_top1_ci95": [0.4, 0.8],
                "retained": 0.5}}})  # fmt: skip
        runs.append(folder)
    report = run_ablation(runs, tmp_path / "report", resamples=100, fit_on="oof")
    assert report["default"]["rule"] == "fallback" and report["default"]["streams"] == ["flow", "pose"]
    assert report["default"]["left_out"][0]["stream"] == "rgb"
    fusion = json.loads((tmp_path / "report" / "fusion.json").read_text())
    assert sorted(fusion["runs"]) == ["flow", "pose"] and fusion["left_out"][0]["stream"] == "rgb"
    md = (tmp_path / "report" / "ablation.md").read_text()
    assert "**rgb is left out**" in md and "the mean of flow+pose" in md
    assert "against the best single stream" not in md  # validation's pick is not called best under the fallback
    defaults = [r for r in report["results"] if r.get("default")]
    assert len(defaults) == 1 and defaults[0]["streams"] == ["flow", "pose"] and defaults[0]["method"] == "mean"


def test_main_source_folds_keep_each_class_largest_group_in_every_fold():
    labels = ["break"] * 9 + ["lock"] * 10 + ["pop"] * 6 + ["shuffle"] * 12
    groups = ["b0"] * 7 + ["b1"] * 2 + ["l0"] * 2 + ["l1"] * 8 + ["p0"] * 6 + ["s0"] * 6 + ["s1"] * 4 + ["s2"] * 2
    ids = [f"{g}_{i * 10}_10" if g != "p0" else f"p0_{(i % 6) * 10 + (300 if i % 6 >= 4 else 0)}_10" for i, g in
           enumerate(groups)]  # fmt: skip
    tests, notes = main_source_folds(labels, groups, ids)
    largest = {"break": "b0", "lock": "l1", "pop": "p0", "shuffle": "s0"}
    assert len(tests) == 2  # shuffle has two other groups: they are held out in turn
    for test in tests:
        held = {groups[i] for i in test}
        assert not held & {"b0", "l1", "s0"}  # every class's largest group trains in every fold
    assert {groups[i] for i in tests[0]} == {"b1", "l0", "p0", "s1"} and {groups[i] for i in tests[1]} == {"s2"}
    # pop has one source: its second recording (the clips after the largest gap in start times) is tested
    assert sorted(int(ids[i].split("_")[1]) for i in tests[0] if groups[i] == "p0") == [340, 350]
    assert sum(len(t) for t in tests) == len(set(np.concatenate(tests).tolist()))  # each clip tested once
    assert any(line.startswith("pop: one source") for line in notes) and set(largest) == {
        n.split(":")[0] for n in notes
    }
    assert len(main_source_folds(labels, groups, ids, folds=1)[0]) == 1  # capped: every other group at once
    with pytest.raises(ValueError, match="no class has two groups"):
        main_source_folds(["a", "a", "b", "b"], ["g0", "g0", "g1", "g1"], ["x", "y", "z", "w"])


def test_scene_adversary_reverses_gradients_within_classes_of_several_groups(background_work, tmp_path):
    import torch

    from streams.adversary import GradientReversal, group_targets
    from streams.checkpoints import load_checkpoint

    x = torch.ones(3, requires_grad=True)
    (GradientReversal.apply(x, 0.5) * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.equal(x.grad, torch.tensor([-0.5, -1.0, -1.5]))
    targets, allowed, names = group_targets(np.array([0, 0, 0, 1, 1]), ["a", "b", "a", "c", "c"])
    # class 1 has one group: its group is its style, nothing to learn there
    assert names == ["a", "b", "c"] and targets.tolist() == [0, 1, 0, -1, -1]
    assert allowed.tolist() == [[True, True, False], [False, False, False]]

    work = background_work
    run = tmp_path / "adversary"
    _train_rgb(work, run, scene_adversary=0.5, epochs=1, min_epoch_clips=32)
    state = load_checkpoint(run / "last.pt")
    assert set(state["adversary"]) == {"head.weight", "head.bias"} and state["adversary"]["head.weight"].shape[0] == 3
    record = _train_rgb(work, run, scene_adversary=0.5, epochs=2, min_epoch_clips=32)  # resumes with its head
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["epoch"] == 2
    assert record["status"] == "measured"


def test_hidden_flow_stacks_have_no_motion_where_the_persons_are(tiny_work):
    from streams.registry import create_dataset, resolve_config

    config = resolve_config({"stream": "flow", "work": str(tiny_work), "preset": "small", "size": 64})
    full = create_dataset(config, tiny_work, "val", train=False)
    marked = create_dataset(config, tiny_work, "val", train=False)
    marked.set_persons("mark")
    hidden = create_dataset(config, tiny_work, "val", train=False)
    hidden.set_persons("hide")
    x, clip, x_hidden = full[0][0].numpy(), marked[0][0], hidden[0][0].numpy()
    persons = clip.persons.numpy()  # (K, 1, S, S): anybody in any of the stack's fields
    assert persons.shape == (x.shape[0], 1, 64, 64) and 0 < persons.mean() < 1
    assert np.array_equal(clip.pixels.numpy(), x) and np.array_equal(clip.hidden().numpy(), x_hidden)
    assert (x_hidden[np.broadcast_to(persons, x.shape) > 0] == 0).all()  # no motion inside the boxes
    assert np.array_equal(x_hidden[np.broadcast_to(persons, x.shape) == 0], x[np.broadcast_to(persons, x.shape) == 0])


def _one_group_clip_work(tiny_synth, tiny_work, root, *, pose_persons: int):
    """A work directory of the tiny set's clip with the most dancers: its frames and flow linked from tiny_work,
    its pose imported from the ground truth keeping ``pose_persons`` of them (a pose stage that tracks one dancer,
    as MediaPipe does, keeps 1)."""
    import dataclasses

    from preprocess.batch import read_npz
    from preprocess.dataset import load_manifest
    from preprocess.pose.importers import import_pose

    info = json.loads((tiny_synth / "synth.json").read_text())
    counts = {c["id"]: read_npz(tiny_synth / c["groundtruth"])["keypoints"].shape[1] for c in info["clips"]}
    crowded = max(sorted(counts), key=counts.get)
    manifest = load_manifest(tiny_work)
    manifest = dataclasses.replace(manifest, videos=[v for v in manifest.videos if v.video_id == crowded])
    work = root / "work"
    manifest.save(work)
    for stage in ("frames", "flow"):
        (work / stage).symlink_to(tiny_work / stage)
    import_pose("coco", str(tiny_work / "gt_coco.json"), manifest, str(work), max_persons=pose_persons)
    return work, manifest.videos[0], counts[crowded]


def test_the_persons_stage_adds_people_only_where_it_found_more(tiny_synth, tiny_work, tmp_path):
    """The merge rule on imported ground truth: a persons stage with every dancer adds the ones a one-dancer pose
    stage misses; one that found fewer than the pose stage changes nothing."""
    import shutil

    from preprocess.dataset import load_manifest
    from preprocess.pose.importers import import_pose
    from preprocess.video.crop import dancer_boxes, hidden_person_boxes

    work, video, dancers = _one_group_clip_work(tiny_synth, tiny_work, tmp_path, pose_persons=1)
    assert dancers >= 2
    pose_only = hidden_person_boxes(work, video, margin=0.15)
    every = tmp_path / "every"
    import_pose("coco", str(tiny_work / "gt_coco.json"), load_manifest(work), str(every), max_persons=4)
    shutil.move(every / "pose", work / "persons")
    merged = hidden_person_boxes(work, video, margin=0.15)
    detector = dancer_boxes(work / "persons", video, margin=0.15, mode="hide")
    for a, b, c in zip(pose_only, merged, detector):
        assert len(b) == (len(a) + len(c) if len(c) > len(a) else len(a))
        assert np.array_equal(b[: len(a)], a)  # the pose stage's boxes are always kept
    assert np.mean([len(b) for b in merged]) > np.mean([len(a) for a in pose_only])
    # swapped: the pose stage found every dancer, the persons stage one of them: the pose stage's boxes alone
    (work / "persons").rename(tmp_path / "all")
    (work / "pose").rename(work / "persons")
    (tmp_path / "all").rename(work / "pose")
    swapped = hidden_person_boxes(work, video, margin=0.15)
    assert all(np.array_equal(a, b) for a, b in zip(swapped, dancer_boxes(work / "pose", video, margin=0.15)))


def test_movenet_persons_hide_the_dancers_a_one_person_pose_stage_missed(tiny_synth, tiny_work, tmp_path):
    """bin/preprocess persons runs MoveNet MultiPose into WORK/persons; hiding then covers more of a crowded clip
    than the one-dancer pose stage's boxes, and the run's record says how many people a frame were hidden."""
    from preprocess.batch import read_npz
    from streams.registry import create_dataset, resolve_config
    from tests.conftest import run_bin, shared_asset

    model = shared_asset("models/movenet_multipose_lightning_256.onnx")
    pytest.importorskip(
        "onnxruntime", reason="onnxruntime is not installed (pip install 'dance-streams[onnx]'): MoveNet needs it"
    )
    work, video, dancers = _one_group_clip_work(tiny_synth, tiny_work, tmp_path, pose_persons=1)
    config = resolve_config({"stream": "flow", "work": str(work), "preset": "small", "size": 64})

    def hidden_area():
        dataset = create_dataset(config, work, video.split, train=False)
        dataset.set_persons("mark")
        return float(dataset[0][0].persons.mean()), dataset

    before, _ = hidden_area()
    run_bin("preprocess", "persons", work, work, "--model", model, "--workers", "1", check=True)
    found = read_npz(work / "persons" / f"{video.video_id}.npz")
    side = json.loads((work / "persons" / f"{video.video_id}.json").read_text())
    assert side["params"]["backend"] == "movenet" and side["params"]["max_persons"] == 6
    assert found["mask"].sum(1).mean() > 1.5  # MoveNet finds several of the clip's dancers
    assert read_npz(work / "pose" / f"{video.video_id}.npz")["mask"].sum(1).max() == 1  # pose left as it was
    after, dataset = hidden_area()
    assert after > before * 1.2
    persons = scene._persons_found(work, dataset)
    assert persons["persons_backend"] == "movenet" and persons["per_frame"] > 1.5 and persons["pose_per_frame"] == 1
