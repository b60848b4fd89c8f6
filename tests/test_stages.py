"""The stage registry (preprocess.stages) and the typed sidecars it reads: damaged records named."""

from __future__ import annotations

import json

import pytest

from preprocess import DataError
from tests.conftest import work_copy


# issue 33, case 8
# 8. A stage summary whose parameters are not parameters: the file and the field named
@pytest.mark.parametrize(
    "params, message",
    [("garbage", "params: 'garbage' is not the parameters of a stage"), ({"resize": 5}, "params.resize: 5 is not")],
)
def test_damaged_stage_parameters_are_named(tiny_work, tmp_path, params, message):
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


# issue 33, case 11
# 11. A sidecar whose fields have the wrong types: one check, used by the readers, verify and is-done
@pytest.mark.parametrize(
    "stage, field, value, message",
    [("frames", "shape", "bad", "shape: 'bad' is not a list of 4 whole numbers"), ("pose", "frames", "abc", "frames")],
)
def test_sidecar_fields_of_the_wrong_type_are_named_everywhere(tiny_work, tmp_path, stage, field, value, message):
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
