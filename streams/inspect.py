"""Diagnostics of a trained stream run: ``bin/inspect RUN [--out DIR]``.

* **Per-video loss** on the training and validation videos (the run's best model, evaluation views, no
  augmentation): the cross-entropy of each video's averaged scores, listed highest first with its true and predicted
  class (``losses.md``/``.json``), a thumbnail strip per high-loss video (``high_loss.png``), and the highest-loss
  training videos as a file for ``bin/train --exclude-list`` (Zakry et al. removed such samples and retrained);
  with ``--baseline RUN0`` (the run before the removal) a before/after table.
* **Saliency** for the RGB and flow streams (2D models): Grad-CAM on the backbone's last feature map and guided
  backpropagation (ReLU's backward passes only positive gradients where the input was positive) for one test
  segment per class, in a PNG grid: the frame (or the flow field in colour), Grad-CAM over it, guided
  backpropagation, guided Grad-CAM. For the pose stream, per-keypoint importance over time (|gradient × input|
  summed over coordinates and persons): a keypoint × time map and the skeleton with its important joints large.
* **Error gallery**: for each confused class pair on test, example videos (thumbnails).
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from preprocess.batch import DataError, atomic_path, read_json, write_json, write_text

from . import scene
from .inference import evaluate
from .run import Run
from .scores import read_score_file, score_path


def per_video_losses(model, run: Run, split: str, device, video_ids: list[str] | None = None) -> list[dict]:
    """Every video of ``split`` (or those of ``video_ids``): cross-entropy of its averaged evaluation scores, true
    and predicted class."""
    dataset = run.dataset(run.work, split, video_ids=video_ids)
    if not dataset.videos:
        return []
    probs, labels, _ = evaluate(model, dataset, device, batch_size=run.run_config.training.batch_size)
    rows = []
    for video, p, y in zip(dataset.videos, probs, labels):
        rows.append(
            {
                "video_id": video.video_id,
                "split": split,
                "label": video.label,
                "predicted": dataset.classes[int(p.argmax())],
                "p_true": float(p[y]),
                "loss": float(-np.log(max(float(p[y]), 1e-12))),
            }
        )
    return sorted(rows, key=lambda r: -r["loss"])


# ---- thumbnails -------------------------------------------------------------------------------------------------


def thumbnail_strip(work: Path, video, count: int = 4, height: int = 72) -> np.ndarray:
    """``count`` evenly spaced frames of a video side by side, (height, ·, 3) uint8 RGB: from the frame cache when
    WORK has one, else decoded from the video."""
    import cv2

    from preprocess.video import Resize, Sampling, read_frames

    frames = None
    if (Path(work) / "frames" / f"{video.video_id}.json").is_file():
        from preprocess.video import load_frames

        cached = load_frames(work, video.video_id)
        frames = [cached[int(i)] for i in np.linspace(0, len(cached) - 1, count)]
    else:
        # only the frames shown are kept (a long video is never held in memory)
        every = Sampling(step=max(1, video.frame_count // count), count=count)
        resize = Resize.parse(f"short:{height}")
        frames = [f.image for f in read_frames(video.to_source(), every, resize, colour="rgb")] or None
    if not frames:
        return np.full((height, height * count, 3), 200, np.uint8)
    width = max(1, round(frames[0].shape[1] * height / frames[0].shape[0]))
    return np.concatenate([cv2.resize(np.asarray(f), (width, height), interpolation=cv2.INTER_AREA) for f in frames], 1)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_high_loss(rows: list[dict], work: Path, videos: dict, path: Path, title: str) -> None:
    plt = _plt()
    fig, axes = plt.subplots(
        len(rows), 1, figsize=(8, 1.25 * len(rows) + 0.6), dpi=100, squeeze=False, layout="constrained"
    )
    for ax, row in zip(axes[:, 0], rows):
        ax.imshow(thumbnail_strip(work, videos[row["video_id"]]))
        ax.set_axis_off()
        ax.set_title(
            f"{row['video_id']} ({row['split']}): true {row['label']}, predicted {row['predicted']}, "
            f"loss {row['loss']:.2f} (p(true) {row['p_true']:.2f})",
            fontsize=8,
            loc="left",
        )
    fig.suptitle(title, fontsize=10)
    _save(fig, path)


# ---- saliency ---------------------------------------------------------------------------------------------------


class _GuidedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out = x.clamp(min=0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad):
        (out,) = ctx.saved_tensors
        return grad.clamp(min=0) * (out > 0)


@contextmanager
def guided_relus():
    """Every ReLU (module, functional or torch.relu, in place or not) runs as guided backpropagation's ReLU."""
    from torch.overrides import TorchFunctionMode

    relus = {torch.relu, torch.relu_, F.relu, torch.Tensor.relu, torch.Tensor.relu_}

    class Guided(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func in relus:
                return _GuidedReLU.apply(args[0])
            return func(*args, **(kwargs or {}))

    with Guided():
        yield


def _last_feature_map(backbone, image):
    """Run ``backbone`` on ``image`` recording the last 4D output with a spatial size above 1 (Grad-CAM's layer)."""
    seen = []
    hooks = [
        module.register_forward_hook(lambda m, i, o: seen.append(o) if o.dim() == 4 and o.shape[-1] > 1 else None)
        for module in backbone.children()
    ]
    try:
        features = backbone(image)
    finally:
        for hook in hooks:
            hook.remove()
    return features, seen[-1]


def saliency_2d(model, segment: torch.Tensor, target: int) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM (H, W) in [0, 1] and guided backpropagation (H, W) in [0, 1] of class ``target`` for one input
    segment (C, H, W) of a TSN model."""
    image = segment[None].clone().requires_grad_(True)
    features, fmap = _last_feature_map(model.backbone, image)
    fmap.retain_grad()
    logit = model.fc(features)[0, target]
    model.zero_grad(set_to_none=True)
    logit.backward()
    weights = fmap.grad.mean((2, 3), keepdim=True)
    cam = F.relu((weights * fmap).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0].detach()
    cam = (cam / cam.max()).numpy() if float(cam.max()) > 0 else cam.numpy()
    image = segment[None].clone().requires_grad_(True)
    with guided_relus():
        logit = model.fc(model.backbone(image))[0, target]
        logit.backward()
    guided = image.grad[0].abs().amax(0)
    guided = (guided / guided.max()).numpy() if float(guided.max()) > 0 else guided.numpy()
    return cam, guided


def _display(stream: str, segment: np.ndarray) -> np.ndarray:
    """The input segment as a picture: the frame (contrast-stretched), or the middle flow field in colour."""
    if stream == "flow":
        from preprocess.flow.visualize import flow_to_rgb

        middle = (segment.shape[0] // 2) // 2 * 2
        return flow_to_rgb(np.stack([segment[middle], segment[middle + 1]], -1))
    image = segment[:3].transpose(1, 2, 0)
    low, high = np.percentile(image, 1), np.percentile(image, 99)
    return np.clip((image - low) / max(high - low, 1e-6), 0, 1)


def plot_saliency_2d(model, run: Run, classes, device, path: Path, examples_per_class: int = 1) -> int:
    """Grid over test videos, one row per example: input, Grad-CAM, guided backpropagation, guided Grad-CAM."""
    plt = _plt()
    model = model.cpu()
    dataset = run.dataset(run.work, "test", views=1)
    modality = "flow" if "flow" in run.spec.stages else "rgb"
    rows = []
    for c in range(len(classes)):
        for i in np.flatnonzero(dataset.labels == c)[:examples_per_class]:
            x, y, _, _ = dataset[int(i)]
            segment = x[x.shape[0] // 2]  # the middle segment (K, C, H, W) → (C, H, W)
            with torch.no_grad():
                predicted = int(model(x[None]).argmax(1))
            cam, guided = saliency_2d(model, segment, predicted)
            rows.append((dataset.videos[int(i)].video_id, classes[y], classes[predicted], segment.numpy(), cam, guided))
    if not rows:
        return 0
    fig, axes = plt.subplots(
        len(rows), 4, figsize=(10, 2.5 * len(rows) + 0.4), dpi=100, squeeze=False, layout="constrained"
    )
    first = "flow (colour wheel)" if modality == "flow" else "frame"
    for r, (video_id, true, predicted, segment, cam, guided) in enumerate(rows):
        picture = _display(modality, segment)
        for a, (image, title) in enumerate(
            (
                (picture, first),
                (picture, "Grad-CAM"),
                (guided, "guided backpropagation"),
                (guided * cam, "guided Grad-CAM"),
            )
        ):
            ax = axes[r, a]
            ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
            if a == 1:
                ax.imshow(cam, cmap="jet", alpha=0.45, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
        axes[r, 0].set_ylabel(f"{video_id}\ntrue {true}\npredicted {predicted}", fontsize=8)
    fig.suptitle(f"{run.fusion_name} stream: what the network looks at (for the class it predicts)", fontsize=11)
    _save(fig, path)
    return len(rows)


def plot_hidden_dancers(model, run: Run, classes, path: Path, count: int = 4) -> int:
    """What a pixel stream answers with the dancers and without them (``streams.scene``): for a validation video
    of each of the first ``count`` classes, its middle segment as the network sees it and with every tracked person
    hidden, each titled with the class predicted and its probability. 0 when the persons cannot be found (no
    pose)."""
    plt = _plt()
    model = model.cpu().eval()
    full = run.dataset(run.work, "val", views=1)
    hidden = run.dataset(run.work, "val", views=1)
    if hidden.persons_unavailable():
        return 0
    hidden.set_persons("hide")
    modality = "flow" if "flow" in run.spec.stages else "rgb"
    picks = [int(i) for c in range(len(classes)) for i in np.flatnonzero(full.labels == c)[:1]][:count]
    if not picks:
        return 0
    fig, axes = plt.subplots(
        len(picks), 2, figsize=(6.4, 2.9 * len(picks) + 0.6), dpi=100, squeeze=False, layout="constrained"
    )
    for r, i in enumerate(picks):
        for a, (dataset, what) in enumerate(((full, "as trained"), (hidden, "every person hidden"))):
            x, y, _, _ = dataset[i]
            with torch.no_grad():
                p = torch.softmax(model(x[None]).float(), -1)[0].numpy()
            ax = axes[r, a]
            segment = x[x.shape[0] // 2].numpy()
            if modality == "rgb":  # the same scale for both: the hidden boxes show as the mean grey they are
                picture = np.clip(segment[:3] * full.std + full.mean, 0, 1).transpose(1, 2, 0)
            else:
                picture = _display(modality, segment)
            ax.imshow(picture)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{what}: {classes[int(p.argmax())]} ({100 * p.max():.0f} %)", fontsize=9)
        axes[r, 0].set_ylabel(f"{full.videos[i].video_id}\ntrue {classes[int(full.labels[i])]}", fontsize=8)
    fig.suptitle(f"{run.fusion_name} stream: its answer with and without the dancers (validation)", fontsize=11)
    _save(fig, path)
    return len(picks)


def pose_importance(model, x: torch.Tensor, m: torch.Tensor, target: int) -> np.ndarray:
    """(T, 17): |gradient × input| of class ``target`` per frame and keypoint, summed over x, y, confidence and
    persons, for one pose clip x (T, P, 54), mask (T, P)."""
    x = x[None].clone().requires_grad_(True)
    logit = model(x, m[None])[0, target]
    model.zero_grad(set_to_none=True)
    logit.backward()
    contribution = (x.grad * x).abs()[0, ..., :51].reshape(x.shape[1], x.shape[2], 17, 3)
    return contribution.sum((1, 3)).detach().numpy()


def plot_pose_importance(model, run: Run, classes, path: Path) -> int:
    from preprocess.pose import COCO_KEYPOINTS
    from preprocess.pose.keypoints import COCO_TREE

    plt = _plt()
    model = model.cpu()
    dataset = run.dataset(run.work, "test", views=1)
    picks = [int(np.flatnonzero(dataset.labels == c)[0]) for c in range(len(classes)) if (dataset.labels == c).any()]
    if not picks:
        return 0
    fig, axes = plt.subplots(
        len(picks), 2, figsize=(11, 3.0 * len(picks)), dpi=100, squeeze=False, gridspec_kw={"width_ratios": [3, 1]}
    )
    for row, i in enumerate(picks):
        (x, m), y, _, _ = dataset[i]
        with torch.no_grad():
            predicted = int(model(x[None], m[None]).argmax(1))
        importance = pose_importance(model, x, m, predicted)
        heat = axes[row, 0].imshow(importance.T, aspect="auto", cmap="magma", interpolation="nearest")
        axes[row, 0].set_yticks(range(17), [name.replace("_", " ") for name in COCO_KEYPOINTS], fontsize=6)
        if row == len(picks) - 1:
            axes[row, 0].set_xlabel("sampled instant")
        axes[row, 0].set_title(
            f"{dataset.videos[i].video_id}: true {classes[y]}, predicted {classes[predicted]}", fontsize=9, loc="left"
        )
        fig.colorbar(heat, ax=axes[row, 0], fraction=0.02, label="|grad × input|")
        # the skeleton of the most present person at the most important instant, joints sized by importance
        t = int(importance.sum(1).argmax())
        p = int(m[t].float().argmax()) if bool(m[t].any()) else 0
        joints = x[t, p, :51].reshape(17, 3).numpy()
        weight = importance.sum(0)
        ax = axes[row, 1]
        for child, parent in COCO_TREE:
            ax.plot(joints[[child, parent], 0], -joints[[child, parent], 1], color="#999999", lw=1.5)
        ax.scatter(joints[:, 0], -joints[:, 1], s=10 + 140 * weight / max(weight.max(), 1e-9), c=weight, cmap="magma")
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"instant {t}: joints sized by importance", fontsize=8)
    axes[0, 0].set_title(
        "pose stream: which keypoints, when, decide the predicted class\n" + axes[0, 0].get_title(loc="left"),
        fontsize=9,
        loc="left",
    )
    _save(fig, path)
    return len(picks)


# ---- error gallery ----------------------------------------------------------------------------------------------


def plot_error_gallery(run: Path, work: Path, videos: dict, classes, path: Path, per_pair: int = 3, pairs: int = 6):
    """Confused class pairs on test, most frequent first, with up to ``per_pair`` example videos each."""
    if not score_path(run, "test").is_file():
        return []
    scores = read_score_file(run, "test")
    probs, labels, ids = scores["probs"], scores["labels"], list(scores["video_ids"])
    predicted = probs.argmax(1)
    confusions: dict[tuple[int, int], list[str]] = {}
    for video_id, y, p in zip(ids, labels, predicted):
        if y != p:
            confusions.setdefault((int(y), int(p)), []).append(video_id)
    ranked = sorted(confusions.items(), key=lambda kv: -len(kv[1]))[:pairs]
    plt = _plt()
    if not ranked:
        fig, ax = plt.subplots(figsize=(6, 1.2))
        ax.text(0.5, 0.5, "no test errors", ha="center", va="center")
        ax.set_axis_off()
        _save(fig, path)
        return []
    rows = [(pair, vid) for pair, vids in ranked for vid in vids[:per_pair]]
    fig, axes = plt.subplots(
        len(rows), 1, figsize=(8, 1.25 * len(rows) + 0.6), dpi=100, squeeze=False, layout="constrained"
    )
    for ax, ((y, p), video_id) in zip(axes[:, 0], rows):
        ax.imshow(thumbnail_strip(work, videos[video_id]))
        ax.set_axis_off()
        ax.set_title(
            f"{classes[y]} taken for {classes[p]} ({len(confusions[(y, p)])} test videos): {video_id}",
            fontsize=8,
            loc="left",
        )
    fig.suptitle("test errors by confused class pair", fontsize=10)
    _save(fig, path)
    return [{"true": classes[y], "predicted": classes[p], "videos": vids} for (y, p), vids in ranked]


# ---- the command ------------------------------------------------------------------------------------------------


def _split_metrics(run: Path, split: str) -> dict | None:
    path = run / f"scores_{split}.json"
    if not path.is_file():
        return None
    meta = read_json(path)
    return meta.get("metrics")


def _loss_row(r: dict) -> str:
    return f"| {r['video_id']} | {r['split']} | {r['label']} | {r['predicted']} | {r['p_true']:.2f} | {r['loss']:.2f} |"


def read_exclude_list(path) -> list[str]:
    """The video ids of an exclude list (``exclude_candidates.txt``, or one a person wrote: one id per line, ``#``
    comments), for ``bin/train --exclude-list``."""
    with open(path, encoding="utf-8") as handle:
        lines = (line.split("#", 1)[0].strip() for line in handle)
        return sorted({line for line in lines if line})


def inspect_run(run, out=None, *, top: int = 12, baseline=None, device: str = "cpu", log=print) -> dict:
    if not (Path(run) / "best.pt").is_file():
        raise DataError(run, "not a finished run (no best.pt)")
    trained = Run.load(run)
    run, config = trained.path, trained.config
    out = Path(out) if out else run / "inspect"
    out.mkdir(parents=True, exist_ok=True)
    from preprocess.dataset import load_manifest

    manifest = load_manifest(trained.work)
    dev = trained.device(device)
    model = trained.models(dev)[0]
    classes, work = manifest.classes, trained.work
    videos = {v.video_id: v for v in manifest.videos}
    excluded = set(config.get("exclude") or [])
    training = [v.video_id for v in manifest.by_split("train") if v.video_id not in excluded]
    name = trained.fusion_name
    report = {"run": str(run), "stream": name}
    losses = per_video_losses(model, trained, "train", dev, training) + per_video_losses(model, trained, "val", dev)
    losses.sort(key=lambda r: -r["loss"])
    write_json(out / "losses.json", losses)
    worst = losses[:top]
    plot_high_loss(worst, work, videos, out / "high_loss.png", f"{name} stream: highest-loss videos")
    train_worst = [r["video_id"] for r in losses if r["split"] == "train"][:top]
    write_text(out / "exclude_candidates.txt", "".join(f"{v}\n" for v in train_worst))
    lines = [
        f"# Inspection of {run}",
        "",
        f"{name} stream; per-video loss = cross-entropy of the video's averaged evaluation scores "
        f"(best checkpoint, no augmentation). Highest {len(worst)} of {len(losses)} training and validation videos:",
        "",
        "| video | split | true | predicted | p(true) | loss |",
        "|---|---|---|---|---|---|",
        *[_loss_row(r) for r in worst],
        "",
        f"`exclude_candidates.txt`: the {len(train_worst)} highest-loss training videos, for `bin/train --exclude-list`"
        " (look at `high_loss.png` first: a high loss is as often a hard or mislabelled video as a useless one).",
    ]
    if config.get("exclude"):
        lines += ["", f"This run was trained without {len(config['exclude'])} excluded videos (`--exclude-list`)."]
    if baseline:
        lines += [
            "",
            "| run | val top-1 % | val macro-F1 % | test top-1 % | test macro-F1 % |",
            "|---|---|---|---|---|",
        ]
        for name, folder in (("before (baseline)", Path(baseline)), ("after (this run)", run)):
            val, test = _split_metrics(folder, "val") or {}, _split_metrics(folder, "test") or {}
            cells = [100 * m.get(k, float("nan")) for m in (val, test) for k in ("top1", "macro_f1")]
            lines.append(f"| {name}: {folder} | " + " | ".join(f"{c:.1f}" for c in cells) + " |")
    if trained.spec.saliency == "2d":
        count = plot_saliency_2d(model, trained, classes, dev, out / "saliency.png")
        report["saliency"] = count
        lines += ["", f"`saliency.png`: Grad-CAM and guided backpropagation on {count} test videos (one per class)."]
    elif trained.spec.saliency == "pose":
        count = plot_pose_importance(model, trained, classes, out / "pose_importance.png")
        report["saliency"] = count
        lines += ["", f"`pose_importance.png`: per-keypoint importance over time on {count} test videos."]
    else:
        lines += ["", f"No saliency maps for a {trained.spec.name} run yet."]
    if scene.reads_pixels(trained.spec):
        count = plot_hidden_dancers(model, trained, classes, out / "hidden_dancers.png")
        reliance = scene.read(run)
        lines += [
            "",
            f"`hidden_dancers.png`: {count} validation videos with and without their dancers."
            if count
            else "No hidden-dancer example: the persons cannot be found (no pose in WORK).",
        ]
        if reliance:
            lines.append(scene.summary_line(reliance) + ".")
    gallery = plot_error_gallery(run, work, videos, classes, out / "gallery.png")
    lines += ["", f"`gallery.png`: {len(gallery)} confused class pairs on test."]
    for pair in gallery:
        lines.append(f"- {pair['true']} → {pair['predicted']}: {len(pair['videos'])} ({', '.join(pair['videos'][:5])})")
    write_text(out / "inspect.md", "\n".join(lines) + "\n")
    report.update(losses=len(losses), gallery=gallery, out=str(out))
    log(f"inspect: {len(losses)} per-video losses, saliency and gallery in {out}")
    return report


__all__ = ["inspect_run", "per_video_losses", "saliency_2d", "pose_importance", "guided_relus"]
