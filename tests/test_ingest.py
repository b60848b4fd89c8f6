from __future__ import annotations

import csv
import json
import os
import shutil
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from preprocess import DataError, load_manifest
from preprocess.dataset import ingest
from tests.conftest import KEEP, run_bin, shared_asset, small_dataset


def copy_videos(tiny_synth: Path, dest: Path, styles=("ballet", "tango", "waltz"), per_style=3) -> Path:
    for style in styles:
        (dest / style).mkdir(parents=True)
        for video in sorted((tiny_synth / "videos" / style).glob("*.mp4"))[:per_style]:
            shutil.copy(video, dest / style / video.name)
    return dest


def problems_by_path(manifest):
    return {Path(p["path"]).name: p["problem"] for p in manifest.skipped}


def test_weizmann_manifest_with_performer_groups(tmp_path):
    data = shared_asset("data/weizmann4")
    manifest = ingest(data, group_regex=r"^(p\d+)_", seed=0)
    manifest.save(tmp_path)
    loaded = load_manifest(tmp_path)
    assert loaded.classes == ["bend", "jack", "wave1", "wave2"]
    assert len(loaded.videos) == 48 and not loaded.skipped
    splits_of_performer = defaultdict(set)
    for v in loaded.videos:
        splits_of_performer[v.group].add(v.split)
        assert 51 <= v.frame_count <= 146 and (v.width, v.height) == (64, 64) and v.fps == 25.0
    assert set(splits_of_performer) == {f"p{i}" for i in range(6)}
    # a and b are mirrors of one performer: a performer never sits on two sides of the split
    assert all(len(s) == 1 for s in splits_of_performer.values())
    assert {s for ss in splits_of_performer.values() for s in ss} == {"train", "val", "test"}
    assert (tmp_path / "manifest.csv").read_text().startswith("video_id,label,split,group")


def test_synthetic_csv_manifest_is_grouped_by_performer(tiny_synth, tmp_path):
    manifest = ingest(tiny_synth / "dataset.csv", ratios=(0.34, 0.33, 0.33), seed=1)
    assert len(manifest.videos) == 30 and len(manifest.classes) == 10
    split_of = defaultdict(set)
    for v in manifest.videos:
        split_of[v.group].add(v.split)
        assert v.frame_count == 16 and (v.width, v.height) == (128, 96)
    assert set(split_of) == {"p00", "p01", "p02"}
    assert all(len(s) == 1 for s in split_of.values())


def test_same_seed_same_manifest(tiny_synth):
    a = ingest(tiny_synth / "videos", seed=4).to_json()
    b = ingest(tiny_synth / "videos", seed=4).to_json()
    c = ingest(tiny_synth / "videos", seed=5).to_json()
    assert a == b
    assert [v["split"] for v in a["videos"]] != [v["split"] for v in c["videos"]]


def test_lets_dance_frame_naming_and_clip_folders(tiny_synth, tmp_path):
    from preprocess.video import read_frames

    data = tmp_path / "frames"
    videos = sorted((tiny_synth / "videos" / "tango").glob("*.mp4")) + sorted(
        (tiny_synth / "videos" / "waltz").glob("*.mp4")
    )
    for n, video in enumerate(videos):
        style = video.parent.name
        (data / style).mkdir(parents=True, exist_ok=True)
        if n % 3 == 2:  # one clip per style as a sub-folder of frames
            clip_dir = data / style / f"clipdir{n}"
            clip_dir.mkdir()
            for f in read_frames(str(video)):
                cv2.imwrite(str(clip_dir / f"img_{f.index + 1:05d}.jpg"), f.image)
            continue
        ytid = f"yt{n // 2:02d}X-_a"  # YouTube ids contain _ and -; clip starts differ within a video
        for f in read_frames(str(video)):
            cv2.imwrite(str(data / style / f"{ytid}_{100 * (n % 2)}_{f.index + 1}.jpg"), f.image)
    manifest = ingest(data, frames_fps=15)
    ids = {v.video_id: v for v in manifest.videos}
    assert "yt00X-_a_0" in ids and "yt00X-_a_100" in ids and "clipdir2" in ids
    clip = ids["yt00X-_a_100"]
    assert clip.group == "yt00X-_a" and clip.frame_count == 16 and clip.fps == 15
    assert clip.frames[:3] == ["yt00X-_a_100_1.jpg", "yt00X-_a_100_2.jpg", "yt00X-_a_100_3.jpg"]
    assert clip.frames[9] == "yt00X-_a_100_10.jpg"  # numeric, not lexicographic, frame order
    assert ids["clipdir2"].frame_count == 16
    assert sum(1 for _ in read_frames(clip.to_source())) == 16


def test_csv_with_given_splits_and_split_file(tiny_synth, tmp_path):
    rows = list(csv.reader((tiny_synth / "dataset.csv").read_text().splitlines()))[1:]
    table = tmp_path / "list.csv"
    with open(table, "w", newline="") as handle:
        writer = csv.writer(handle)
        for i, (path, label, _group) in enumerate(rows):
            writer.writerow([str(tiny_synth / path), label, ("train", "val", "test")[i % 3]])
    manifest = ingest(table)
    assert manifest.split["source"] == "csv"
    assert [v.split for v in sorted(manifest.videos, key=lambda v: v.video_id)][:3]
    expected = {Path(p).stem: ("train", "val", "test")[i % 3] for i, (p, _, _) in enumerate(rows)}
    assert {v.video_id: v.split for v in manifest.videos} == expected

    split_file = tmp_path / "splits.csv"
    split_file.write_text("video_id,split\n" + "".join(f"{vid},test\n" for vid in expected))
    manifest = ingest(tiny_synth / "videos", split_from=split_file)
    assert {v.split for v in manifest.videos} == {"test"}


@pytest.fixture
def messy_dataset(tiny_synth, tmp_path):
    """Good clips plus one of each bad input."""
    data = copy_videos(tiny_synth, tmp_path / "messy")
    (data / "ballet" / "corrupt.mp4").write_bytes(np.random.default_rng(1).bytes(4000))
    (data / "ballet" / "zero.avi").write_bytes(b"")
    (data / "tango" / "notes.txt").write_text("choreography notes")
    (data / "emptyclass").mkdir()
    (data / "solo").mkdir()
    shutil.copy(next((tiny_synth / "videos" / "break").glob("*.mp4")), data / "solo" / "only_one.mp4")
    shutil.copy(next((data / "tango").glob("*.mp4")), data / "waltz" / next((data / "tango").glob("*.mp4")).name)
    seq = data / "waltz" / "brokenseq"
    seq.mkdir()
    cv2.imwrite(str(seq / "f_00001.jpg"), np.zeros((96, 128, 3), np.uint8))
    (seq / "f_00002.jpg").write_bytes(b"\xff\xd8 truncated")
    return data


def test_bad_inputs_are_skipped_and_named(messy_dataset):
    manifest = ingest(messy_dataset)
    problems = problems_by_path(manifest)
    assert "cannot be opened" in problems["corrupt.mp4"] or "no frames" in problems["corrupt.mp4"]
    assert "zero.avi" in problems
    assert "unknown extension" in problems["notes.txt"]
    assert "no usable videos" in problems["emptyclass"]
    assert "single clip" in problems["solo"]
    assert "f_00002.jpg" in problems and "unreadable" in problems["f_00002.jpg"]
    dup = [p for p in manifest.skipped if "duplicate video id" in p["problem"]]
    assert len(dup) == 1 and "tango" in dup[0]["problem"] + dup[0]["path"]
    # the good clips all made it, and the dropped classes are gone
    assert manifest.classes == ["ballet", "tango", "waltz"]
    assert len(manifest.videos) == 9
    assert all(v.frame_count == 16 for v in manifest.videos)


def test_strict_mode_raises_on_the_first_problem(messy_dataset):
    with pytest.raises(DataError) as err:
        ingest(messy_dataset, strict=True)
    assert str(messy_dataset) in str(err.value)


def test_cli_reports_skips_and_strict_fails_in_one_line(messy_dataset, tmp_path):
    ok = run_bin("ingest", messy_dataset, tmp_path / "work")
    assert ok.returncode == 0, ok.stderr
    assert "skipped" in ok.stderr and "notes.txt" in ok.stderr
    assert (tmp_path / "work" / "manifest.json").is_file()
    bad = run_bin("ingest", messy_dataset, tmp_path / "work2", "--strict")
    assert bad.returncode != 0
    errors = [line for line in bad.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "Traceback" not in bad.stderr
    missing = run_bin("ingest", tmp_path / "nowhere", tmp_path / "w3")
    assert missing.returncode != 0 and "nowhere: no such file or folder" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_load_manifest_names_a_missing_or_broken_file(tmp_path):
    with pytest.raises(DataError, match="no manifest"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match="not a valid manifest"):
        load_manifest(tmp_path)


def test_ingest_warns_when_held_out_splits_share_groups_with_training(tiny_synth, tmp_path):
    rows = list(csv.reader((tiny_synth / "dataset.csv").read_text().splitlines()))[1:]
    table = tmp_path / "given.csv"
    with open(table, "w", newline="") as handle:  # splits given per clip, blind to the performer groups
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split", "group"])
        for i, (path, label, group) in enumerate(rows):
            writer.writerow([str(tiny_synth / path), label, ("train", "train", "val")[i % 3], group])
    result = run_bin("ingest", table, tmp_path / "work")
    assert result.returncode == 0
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning: val shares")]
    assert warning == [
        "warning: val shares 3 of its 3 groups with train (10 of its 10 videos): its scores "
        "overstate accuracy on unseen groups"
    ]
    grouped = run_bin("ingest", tiny_synth / "dataset.csv", tmp_path / "work2", "--split", "0.34,0.33,0.33")
    assert grouped.returncode == 0 and "warning:" not in grouped.stderr  # whole groups per split: nothing shared


def test_a_csv_with_a_byte_order_mark_is_read(tiny_synth, tmp_path):
    from preprocess.dataset import ingest

    text = (tiny_synth / "dataset.csv").read_text(encoding="utf-8")
    rows = [line.split(",") for line in text.splitlines()]
    absolute = [",".join([str((tiny_synth / r[0]).resolve()), *r[1:]]) for r in rows if r[0] != "path"]
    csv = tmp_path / "b.csv"
    csv.write_text("\ufeffpath,label,group\n" + "\n".join(absolute) + "\n", encoding="utf-8")  # Excel's CSV
    assert len(ingest(csv, seed=0).videos) == len(absolute)


def test_labels_that_differ_only_in_case_are_refused_by_name(tiny_synth, tmp_path):
    from preprocess.dataset import ingest

    rows = [line.split(",") for line in (tiny_synth / "dataset.csv").read_text().splitlines() if line][1:]
    # ballet clips labelled "Ballet" and "ballet", half each
    lines = [f"{(tiny_synth / r[0]).resolve()},{'Ballet' if r[1] == 'ballet' and k % 2 else r[1]}" for k, r in
             enumerate(rows)]  # fmt: skip
    csv = tmp_path / "cased.csv"
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"labels that differ only in case: 'Ballet' and 'ballet'"):
        ingest(csv, seed=0)


def test_a_file_name_that_is_not_utf8_is_skipped_by_name_not_a_segfault(tiny_synth, tmp_path):
    data = small_dataset(tiny_synth, tmp_path / "data")
    shutil.copy(data / "ballet" / "ballet_0000.mp4", os.fsencode(data / "ballet") + b"/bad\xff.mp4")
    result = run_bin("ingest", data, tmp_path / "work")  # OpenCV segfaulted on this name (exit -11)
    assert result.returncode == 0, result.stderr
    named = [line for line in result.stderr.splitlines() if "bad\\udcff.mp4" in line]
    assert len(named) == 1 and "not valid UTF-8" in named[0]
    assert "6 videos, 2 classes" in result.stdout


def test_unsafe_video_ids_are_refused_at_ingest_and_at_load(tiny_synth, tmp_path):
    data = small_dataset(tiny_synth, tmp_path / "data")
    hidden = data / "tango" / ".tango_9.mp4"
    shutil.copy(data / "tango" / "tango_0000.mp4", hidden)
    rows = [f"{p.relative_to(data)},{p.parent.name}" for p in sorted(data.rglob("*.mp4")) if p != hidden]
    rows.append(f"{hidden.relative_to(data)},tango")
    (data / "list.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    manifest = ingest(data / "list.csv")
    assert ".tango_9" not in {v.video_id for v in manifest.videos}
    assert any(".tango_9" in s["problem"] and "not a safe file name" in s["problem"] for s in manifest.skipped)
    # A crafted manifest: its id would make every stage write (and the runner delete) files outside WORK.
    work = tmp_path / "work"
    manifest.save(work)
    crafted = json.loads((work / "manifest.json").read_text())
    crafted["videos"][0]["video_id"] = "../../escape"
    (work / "manifest.json").write_text(json.dumps(crafted))
    with pytest.raises(DataError, match="not a safe file name"):
        load_manifest(work)
    result = run_bin("preprocess", "frames", work, work, *KEEP)
    assert result.returncode == 1 and "not a safe file name" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "escape.npy").exists() and not (work.parent / "escape.json").exists()


def test_invalid_group_regex_and_one_class_datasets_are_named_errors(tiny_synth, tmp_path):
    data = small_dataset(tiny_synth, tmp_path / "data")
    result = run_bin("ingest", data, tmp_path / "work", "--group-regex", "(p\\d+")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "--group-regex '(p\\\\d+'" in result.stderr and "not a valid regular expression" in result.stderr
    one = small_dataset(tiny_synth, tmp_path / "one", styles=("waltz",))
    result = run_bin("ingest", one, tmp_path / "work1")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "only one usable class (waltz): a classifier needs at least two" in result.stderr


# issue 33, case 3
# 3. Clips named <source>_<start>_<duration> are grouped by their source without --group-regex, and it is said
def test_clips_cut_from_longer_videos_are_grouped_by_source(tiny_synth, tmp_path):
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
