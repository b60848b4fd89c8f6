"""Analysis as researchers do it: hyperparameter search (Optuna), per-video losses and high-loss removal, saliency
maps, the error gallery."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from fusion.report import run_ablation
from streams.inspect import guided_relus, saliency_2d
from streams.train import train
from tests.conftest import run_bin

FAST = ["--epochs", "3", "--min-epoch-clips", "1", "--views", "1"]  # (pose: --size, --stack are refused)


def test_tune_runs_three_trials_then_resumes_and_never_scores_test(tiny_work, tmp_path):
    pytest.importorskip("optuna", reason="optuna is not installed (pip install 'dance-streams[tune]')")
    out = tmp_path / "tune"
    first = run_bin("tune", "pose", tiny_work, out, "--trials", "3", *FAST)
    assert first.returncode == 0, first.stderr
    best = json.loads((out / "best.json").read_text())
    assert best["trials"]["complete"] + best["trials"]["pruned"] == 3
    assert best["command"].startswith(f"bin/train pose {tiny_work} ")
    assert set(best["params"]) >= {"lr", "weight_decay", "dropout", "optimizer", "batch_size", "head", "frames"}
    assert (out / "study.png").stat().st_size > 10_000
    values = {line.split(":")[0]: line for line in first.stdout.splitlines() if line.startswith("trial ")}
    assert len(values) == 3
    # a process killed mid-trial leaves it "running" (here: a trial asked for and never told)
    import optuna

    from streams.tune import suggest

    study = optuna.load_study(study_name="pose", storage=f"sqlite:///{out / 'study.db'}")
    killed = study.ask()
    suggest(killed, "pose")
    # rerunning continues the same study: three trials kept, the killed one's parameters first, then one more
    second = run_bin("tune", "pose", tiny_work, out, "--trials", "5", *FAST)
    assert second.returncode == 0, second.stderr
    assert "3 trials finished, running up to 5" in second.stdout
    assert "trial 3 was left running by a killed process: marked failed, its parameters retried" in second.stdout
    again = json.loads((out / "best.json").read_text())
    assert again["trials"]["complete"] + again["trials"]["pruned"] == 5 and again["trials"].get("running", 0) == 0
    assert [line for line in second.stdout.splitlines() if line.startswith("trial ")][1].startswith("trial 4:")
    trials = {t.number: t for t in optuna.load_study(study_name="pose", storage=f"sqlite:///{out / 'study.db'}").trials}
    assert trials[4].params == killed.params  # retried as an uninterrupted study would have finished it
    assert trials[5].params != trials[0].params  # the sampler goes on; it does not restart at trial 0's draw
    ran = sorted((out / "trials").iterdir())
    assert len(ran) == 5 and all((t / "scores_val.npz").is_file() for t in ran)
    assert not list((out / "trials").glob("*/scores_test.*"))  # test is never scored


def test_guided_relu_passes_only_positive_gradients_where_the_input_was_positive():
    x = torch.tensor([-1.0, 0.5, 2.0, 3.0], requires_grad=True)
    w = torch.tensor([1.0, -2.0, 3.0, 0.5])
    with guided_relus():
        (w * torch.relu(x)).sum().backward()
    assert torch.equal(x.grad, torch.tensor([0.0, 0.0, 3.0, 0.5]))  # clamp(w, 0) · (x > 0)
    x.grad = None
    (w * torch.relu(x)).sum().backward()  # outside the block: the ordinary gradient
    assert torch.equal(x.grad, torch.tensor([0.0, -2.0, 3.0, 0.5]))


class LeftHalfOnly(nn.Module):
    """A TSN-shaped model that looks only at the left half of its image."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(8, 8, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Linear(8, 3)

    def forward_backbone(self, x):
        return self.backbone(x)


def test_saliency_finds_what_the_model_looks_at():
    model = LeftHalfOnly()
    inner = model.backbone
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., :16] = 1
    model.backbone = nn.Sequential(_Mask(mask), *inner)
    image = torch.rand(3, 32, 32)
    target = int(model.fc(model.backbone(image[None])).argmax())
    cam, guided = saliency_2d(model, image, target)
    assert cam.shape == guided.shape == (32, 32)
    assert guided[:, 16:].max() == 0 and guided[:, :16].max() == 1.0  # normalised, and nothing from the right half
    assert cam.min() >= 0 and cam.max() <= 1


class _Mask(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, x):
        return x * self.mask


@pytest.mark.parametrize("stream", ["flow", "pose"])
def test_inspect_lists_losses_draws_saliency_and_gallery_and_high_loss_removal_retrains(tiny_work, tmp_path, stream):
    run = tmp_path / "run"
    own = {"flow": {"size": 48, "segments": 2, "stack": 3}, "pose": {"frames": 12}}[stream]
    options = {"epochs": 1, "batch_size": 8, "views": 1, **own}
    train({"stream": stream, "work": str(tiny_work), "run": str(run), "min_epoch_clips": 1, **options}, log=print)
    result = run_bin("inspect", run)
    assert result.returncode == 0, result.stderr
    out = run / "inspect"
    losses = json.loads((out / "losses.json").read_text())
    assert [r["loss"] for r in losses] == sorted((r["loss"] for r in losses), reverse=True)
    with np.load(run / "scores_val.npz", allow_pickle=False) as scores:  # the same model and views as training's
        expected = {str(v): -np.log(p[y]) for v, y, p in zip(scores["video_ids"], scores["labels"], scores["probs"])}
    val = {r["video_id"]: r["loss"] for r in losses if r["split"] == "val"}
    assert val.keys() == expected.keys()
    assert all(abs(val[v] - expected[v]) < 1e-4 for v in val)
    assert {r["split"] for r in losses} == {"train", "val"}
    picture = "saliency.png" if stream == "flow" else "pose_importance.png"
    for name in ("high_loss.png", picture, "gallery.png"):
        assert (out / name).stat().st_size > 10_000, name
    report = (out / "inspect.md").read_text()
    assert "| video | split | true | predicted |" in report
    if stream == "pose":
        return
    candidates = (out / "exclude_candidates.txt").read_text().split()
    train_losses = [r for r in losses if r["split"] == "train"]
    assert candidates == [r["video_id"] for r in train_losses][: len(candidates)] and len(candidates) >= 2
    exclude = tmp_path / "exclude.txt"
    exclude.write_text("# the two highest-loss training videos\n" + "\n".join(candidates[:2]) + "\n")
    retrained = tmp_path / "retrained"
    args = [str(a) for kv in options.items() for a in (f"--{kv[0].replace('_', '-')}", kv[1])]
    result = run_bin("train", stream, tiny_work, retrained, *args, "--min-epoch-clips", "1", "--exclude-list", exclude)
    assert result.returncode == 0, result.stderr
    assert "training without 2 excluded videos" in result.stdout
    assert json.loads((retrained / "config.json").read_text())["exclude"] == sorted(candidates[:2])
    after = run_bin("inspect", retrained, "--baseline", run)
    assert after.returncode == 0, after.stderr
    report = (retrained / "inspect" / "inspect.md").read_text()
    assert "before (baseline)" in report and "trained without 2 excluded videos" in report
    retrained_losses = json.loads((retrained / "inspect" / "losses.json").read_text())
    assert not {r["video_id"] for r in retrained_losses if r["split"] == "train"} & set(candidates[:2])
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("no_such_video\n")
    refused = run_bin("train", stream, tiny_work, tmp_path / "r2", *args, "--exclude-list", wrong)
    assert refused.returncode != 0 and "Traceback" not in refused.stderr and "no_such_video" in refused.stderr


def test_seeds_train_one_run_each_and_the_report_shows_their_spread(tiny_work, tmp_path):
    from streams.seeds import train_seeds

    options = {"epochs": 2, "batch_size": 8, "frames": 12, "views": 1, "min_epoch_clips": 1}
    config = {"stream": "pose", "work": str(tiny_work), "run": str(tmp_path / "pose"), **options}
    result = train_seeds(config, [0, 1, 2], log=lambda *_: None)
    seed_probs = []
    for seed in (0, 1, 2):
        with np.load(tmp_path / "pose" / f"seed-{seed}" / "scores_test.npz", allow_pickle=False) as f:
            seed_probs.append(f["probs"])
    assert not np.array_equal(seed_probs[0], seed_probs[1])  # the seeds differ
    with np.load(tmp_path / "pose" / "scores_test.npz", allow_pickle=False) as f:
        assert np.allclose(f["probs"], np.mean(seed_probs, axis=0), atol=1e-6)  # RUN holds their mean
    side = json.loads((tmp_path / "pose" / "scores_test.json").read_text())
    assert side["seeds"] == [0, 1, 2] and set(side["per_seed"]) == {"0", "1", "2"}
    top1 = [result["per_seed"][s]["test"]["top1"] for s in ("0", "1", "2")]
    md = (tmp_path / "pose" / "seeds.md").read_text()
    assert f"{100 * np.mean(top1):.1f} ± {100 * np.std(top1, ddof=1):.1f}" in md
    train(
        {**{k: v for k, v in config.items() if k != "frames"}, "stream": "flow", "run": str(tmp_path / "flow")}
        | {"preset": "small", "size": 48, "stack": 3, "segments": 2},
        log=lambda *_: None,
    )
    report = run_ablation([tmp_path / "pose", tmp_path / "flow"], tmp_path / "report", resamples=200)
    row = next(r for r in report["results"] if r["method"] == "single" and r["streams"] == ["pose"])
    assert row["seeds"]["n"] == 3 and abs(row["seeds"]["top1_mean"] - np.mean(top1)) < 1e-9
    assert "pose trained with 3 seeds" in (tmp_path / "report" / "ablation.md").read_text()


def test_mmaction2_score_export_reads_back_with_the_standard_library(tiny_work, tmp_path):
    import pickle

    run = tmp_path / "pose"
    options = {"epochs": 1, "batch_size": 8, "frames": 12, "views": 1, "min_epoch_clips": 1}
    train({"stream": "pose", "work": str(tiny_work), "run": str(run), **options}, log=lambda *_: None)
    result = run_bin("export-scores", run, tmp_path / "pose_test.pkl")
    assert result.returncode == 0, result.stderr

    class Reader(pickle.Unpickler):  # a torch tensor class called on values gives the values; nothing else allowed
        def find_class(self, module, name):
            if module == "torch" and name in ("FloatTensor", "LongTensor"):
                return lambda values: list(values)
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed")

    with open(tmp_path / "pose_test.pkl", "rb") as f:
        samples = Reader(f).load()
    with np.load(run / "scores_test.npz", allow_pickle=False) as scores:
        assert [s["video_id"] for s in samples] == [str(v) for v in scores["video_ids"]]
        assert np.allclose([s["pred_score"] for s in samples], scores["probs"], atol=1e-7)
        assert [s["gt_label"] for s in samples] == [[int(y)] for y in scores["labels"]]
    with open(tmp_path / "pose_test.pkl", "rb") as f:  # and in mmaction2's hands, tensors as its tool expects

        class TorchOnly(pickle.Unpickler):
            def find_class(self, module, name):
                if module == "torch" and name in ("FloatTensor", "LongTensor"):
                    return getattr(torch, name)
                raise pickle.UnpicklingError(f"{module}.{name} is not allowed")

        first = TorchOnly(f).load()[0]
    assert first["pred_score"].numpy().shape == (10,) and isinstance(first["gt_label"].item(), int)


def test_tensorboard_logging_writes_every_epoch(tiny_work, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'dance-streams[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "pose"
    options = {"epochs": 3, "batch_size": 8, "frames": 12, "views": 1, "min_epoch_clips": 1, "tensorboard": True}
    train({"stream": "pose", "work": str(tiny_work), "run": str(run), **options}, log=lambda *_: None)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    history = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [1, 2, 3]
    assert [round(e.value, 5) for e in loss] == [round(h["train_loss"], 5) for h in history]
    assert [e.step for e in events.Scalars("val/macro_f1")] == [1, 2, 3]


def test_classify_uses_every_seed_of_a_seeds_run(tiny_synth, tiny_work, tmp_path):
    from streams.seeds import train_seeds

    options = {"epochs": 1, "batch_size": 8, "size": 48, "stack": 3, "segments": 2, "views": 1, "min_epoch_clips": 1}
    options["preset"] = "small"
    run = tmp_path / "flow"
    train_seeds({"stream": "flow", "work": str(tiny_work), "run": str(run), **options}, [0, 1], log=lambda *_: None)
    assert run_bin("fuse", run, "--out", tmp_path / "report").returncode == 0
    video = next((tiny_synth / "videos" / "waltz").glob("*.mp4"))
    answer = run_bin("classify", video, "--report", tmp_path / "report", "--json")
    assert answer.returncode == 0, answer.stderr
    ensemble = json.loads(answer.stdout)[0]["streams"]["flow"]
    singles = []
    for seed in (0, 1):
        assert run_bin("fuse", run / f"seed-{seed}", "--out", tmp_path / f"report{seed}").returncode == 0
        one = run_bin("classify", video, "--report", tmp_path / f"report{seed}", "--json")
        singles.append(json.loads(one.stdout)[0]["streams"]["flow"])
    assert ensemble == pytest.approx({c: (singles[0][c] + singles[1][c]) / 2 for c in ensemble}, abs=1e-6)


def test_the_best_command_line_keeps_every_digit():
    from streams.tune import command_line

    line = command_line("pose", "W", "R", {"lr": 0.0027895123456789, "head": "lstm"})
    assert "--lr 0.0027895123456789" in line and "--head lstm" in line
