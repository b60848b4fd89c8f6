"""Training and evaluation of one stream, as plain functions (``train_one_epoch``, ``evaluate``, ``train``).

Runs unchanged under ``torchrun`` (DDP: gloo on CPU, nccl on CUDA, a distributed sampler; rank 0 alone evaluates and
writes). Resumes exactly: ``RUN/last.pt`` holds model, optimiser, schedule, epoch, early-stopping state and the RNG
state, written atomically after every epoch, and the data order and augmentation of an epoch depend only on
(seed, epoch). Outputs in RUN: ``config.json``, ``last.pt``, ``best.pt``, ``metrics.jsonl`` (one line per epoch),
``training_curves.png``, ``scores_val.npz`` / ``scores_test.npz`` with JSON sidecars, ``preprocessing.json``
(``streams.run``: the data parameters of the stages it read). Scoring (``evaluate``) is ``streams.inference``'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, Sampler
from torch.utils.data.distributed import DistributedSampler

from preprocess import DataError, load_manifest
from preprocess.batch import atomic_path, available_cores, folder_lock, write_json, write_text

from . import scene
from .checkpoints import (
    cached_download,
    checkpoint_entry,
    imagenet_weights,
    input_normalization,
    load_checkpoint,
    load_init,
    load_pretrained,
    torchvision_weights_url,
)
from .data import PixelClip, collate
from .inference import RankShare, autocast, evaluate, forward_batch, pick_device
from .metrics import classification_metrics
from .models import freeze_batchnorm_but_first
from .registry import BackboneOptions, RunConfig, create_dataset, create_model, run_config
from .run import record_preprocessing
from .sampling import reference_fps
from .scores import write_score_file


def class_weights(labels: np.ndarray, num_classes: int, mode: str) -> torch.Tensor:
    """Loss weight per class. ``balanced``: inverse frequency in the training videos (n / (classes x count)), so a
    style with few training clips (a fold that holds out most of its source videos) still counts as much as the
    others; equal to 1 on a balanced set. ``none``: all 1."""
    if mode == "none":
        return torch.ones(num_classes)
    if mode != "balanced":
        raise ValueError(f"unknown class weighting {mode!r}: balanced or none")
    counts = np.bincount(labels[labels >= 0], minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(weights, dtype=torch.float32)


def confusion_loss(logits: torch.Tensor) -> torch.Tensor:
    """Mean KL(softmax(logits) ‖ uniform) of a batch: log C minus the entropy, 0 when a prediction says nothing."""
    log_p = torch.log_softmax(logits.float(), -1)
    return (log_p.exp() * log_p).sum(-1).mean() + float(np.log(logits.shape[-1]))


def train_step(model, optimizer, criterion, x, labels, device, *, confusion: float = 0.0, adversary=None, videos=None):
    """One optimiser step on one batch (``labels`` already on ``device``): (loss, logits). A loss that is not finite
    takes no step: the caller names the batch.

    ``x`` a ``PixelClip`` (pixels and where the persons are) and ``confusion`` λ > 0: the human-mask confusion loss.
    The clips with their persons hidden go through the network in the same batch, and λ · KL(their prediction ‖
    uniform) is added for the clips where somebody was hidden (a clip with nobody found would be pushed to say
    nothing about its own full frames). ``adversary`` (a ``streams.adversary.SceneAdversary`` hooked on the model,
    with the batch's ``videos``): its group loss through gradient reversal is added."""
    with autocast(device):
        if isinstance(x, PixelClip):
            clip = PixelClip(x.pixels.to(device, non_blocking=True), x.persons.to(device, non_blocking=True))
            hidden = clip.persons.flatten(1).amax(1) > 0
            both = model(torch.cat([clip.pixels, clip.hidden()[hidden]]))
            logits = both[: len(labels)]
            loss = criterion(logits.float(), labels)
            if confusion and bool(hidden.any()):
                loss = loss + confusion * confusion_loss(both[len(labels) :])
        else:
            both = logits = forward_batch(model, x, device)
            loss = criterion(logits.float(), labels)
        if adversary is not None:
            loss = loss + adversary.loss(labels, videos, len(both))
    if not torch.isfinite(loss):
        return loss, logits
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, logits


def train_one_epoch(model, loader, optimizer, criterion, device, *, confusion: float = 0.0, adversary=None) -> dict:
    """One pass over ``loader``. Loss and top-1 are over every process's clips under torchrun (summed across
    ranks), not rank 0's share. A non-finite loss stops training with a named error: the batch's videos.
    ``confusion``: the human-mask confusion loss's λ (``train_step``; the loader gives ``PixelClip`` batches);
    ``adversary``: a scene adversary (``streams.adversary``), trained alongside."""
    model.train()
    if adversary is not None:
        adversary.train()
    if getattr(getattr(model, "module", model), "partial_bn", False):  # (DDP wraps the model as .module)
        freeze_batchnorm_but_first(model)
    total_loss, correct, seen = 0.0, 0, 0
    start = time.perf_counter()
    for x, labels, videos, _ in loader:
        labels = labels.to(device, non_blocking=True)
        loss, logits = train_step(
            model, optimizer, criterion, x, labels, device, confusion=confusion, adversary=adversary, videos=videos
        )
        if not torch.isfinite(loss):
            dataset = loader.dataset
            names = sorted({dataset.videos[int(i)].video_id for i in videos})
            raise DataError(
                dataset.work,
                f"training loss is {float(loss)} on a batch of videos {', '.join(names)}: "
                "an input holds NaN or Inf (bin/preprocess verify; check these videos)",
            )
        total_loss += float(loss.detach()) * len(labels)
        correct += int((logits.argmax(1) == labels).sum())
        seen += len(labels)
    seconds = time.perf_counter() - start
    if dist.is_initialized():
        totals = torch.tensor([total_loss, correct, seen], dtype=torch.float64, device=device)
        dist.all_reduce(totals)
        total_loss, correct, seen = float(totals[0]), int(totals[1]), int(totals[2])
    return {
        "train_loss": total_loss / max(seen, 1),
        "train_top1": correct / max(seen, 1),
        "train_clips": seen,
        "train_clips_per_s": seen / seconds if seconds else None,
    }


def _distributed(config: RunConfig) -> tuple[int, int, torch.device]:
    """(rank, world size, device) under torchrun or alone. Each process takes its LOCAL_RANK's GPU as its current
    device before the process group starts; the backend follows the device (NCCL for CUDA, which refuses CPU
    tensors, gloo for the CPU), so every collective below runs on tensors of the backend's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = pick_device(config.training.device, rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return (dist.get_rank(), world, device) if world > 1 else (0, 1, device)


def rng_states() -> dict:
    """Every generator a run draws from: torch (CPU and each CUDA device), NumPy's and Python's global ones."""
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        # as JSON: a weights-only checkpoint holds tensors and plain values, not NumPy arrays or tuples
        "numpy": json.dumps([numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]]),
        "python": json.dumps(random.getstate()),
    }


def restore_rng_states(states) -> None:
    if isinstance(states, torch.Tensor):  # a checkpoint of an earlier release saved the CPU generator alone
        torch.set_rng_state(states)
        return
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
    kind, keys, *rest = json.loads(states["numpy"])
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), *rest))
    version, internal, gauss = json.loads(states["python"])
    random.setstate((version, tuple(internal), gauss))


# Settings that may change between a run and its resumption: how long, how fast, and where things are.
RESUMABLE_CHANGES = ("epochs", "workers", "device", "run", "work", "tensorboard")


def manifest_digest(work: str | Path) -> str:
    """What identifies the data a run trains on, wherever its work directory has moved: its manifest's bytes."""
    return hashlib.sha256((Path(work) / "manifest.json").read_bytes()).hexdigest()


def save_checkpoint(path: Path, **state) -> None:
    # Serialised in memory, then written as plain bytes: torch.save writing to a full disk fails deep in its zip
    # writer ("unexpected pos"), naming neither the file nor the cause; a plain write raises ENOSPC, which
    # atomic_path reports as "RUN/last.pt: cannot write: no space left on device" (nothing of the old file lost).
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with atomic_path(path, suffix=".pt") as tmp:
        tmp.write_bytes(buffer.getbuffer())


def _make_optimizer(config, params):
    if config.training.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.training.lr, weight_decay=config.training.weight_decay)
    if config.training.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.training.lr, momentum=0.9, nesterov=True, weight_decay=config.training.weight_decay
        )
    raise ValueError(f"unknown optimizer {config.training.optimizer!r}: adamw or sgd")


def _make_schedule(config, optimizer):
    if config.training.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(config.training.epochs, 1))
    if config.training.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(config.training.epochs // 3, 1), gamma=0.1)
    raise ValueError(f"unknown schedule {config.training.schedule!r}: cosine or step")


def schedule_after(config: RunConfig, optimizer, epochs_done: int):
    """The learning-rate schedule of a run of ``config.training.epochs`` epochs, as it stands after ``epochs_done`` of
    them: rebuilt for the length asked now and stepped from the base rate, so that a run resumed with more epochs
    continues the schedule the new length implies (a restored cosine would keep the old length and climb back)."""
    for group in optimizer.param_groups:
        group["lr"] = group.get("initial_lr", config.training.lr)
    schedule = _make_schedule(config, optimizer)
    with warnings.catch_warnings():  # stepping the schedule alone, with no optimiser step, is the point here
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(epochs_done):
            schedule.step()
    return schedule


def plot_curves(
    history: list[dict], path: Path, title: str, *, best_epoch: int | None = None, stopped_early: bool = False
) -> None:
    """Loss and accuracy per epoch (integer ticks, percent), the best epoch (the checkpoint kept) and an early stop
    marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [h["epoch"] for h in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.9))
    ax1.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    ax1.plot(epochs, [h["val_loss"] for h in history], "s-", label="validation")
    ax1.set_ylabel("cross-entropy loss")
    ax1.set_title("loss", fontsize=10)
    ax2.plot(epochs, [100 * h["train_top1"] for h in history], "o-", label="train top-1")
    ax2.plot(epochs, [100 * h["val_top1"] for h in history], "s-", label="validation top-1")
    ax2.plot(epochs, [100 * h["val_macro_f1"] for h in history], "^-", label="validation macro-F1")
    ax2.set_ylim(0, 102)
    ax2.set_ylabel("%")
    ax2.set_title("accuracy", fontsize=10)
    for ax in (ax1, ax2):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        if best_epoch:
            ax.axvline(
                best_epoch, color="#2a9d8f", linestyle="--", linewidth=1.2, label=f"best epoch {best_epoch} (kept)"
            )
        if stopped_early and epochs:
            ax.axvline(
                epochs[-1], color="#e76f51", linestyle=":", linewidth=1.2, label=f"early stop after {epochs[-1]}"
            )
    ax1.legend(fontsize=8)
    ax2.legend(loc="lower right", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_scores(
    run: Path,
    split: str,
    dataset,
    probs: np.ndarray,
    labels: np.ndarray,
    config: RunConfig,
    checkpoint: str,
    metrics: dict,
) -> Path:
    """``RUN/scores_<split>.npz`` (the score-file contract) and its JSON sidecar."""
    return write_score_file(
        run,
        split,
        video_ids=[v.video_id for v in dataset.videos],
        labels=labels,
        probs=probs,
        classes=dataset.classes,
        sidecar={
            "stream": config.spec.fusion_name,
            "variant": config.spec.name,
            "checkpoint": checkpoint,
            "config": config.as_dict(),
            "metrics": metrics,
            "work": config.work,
        },
    )


def _tensorboard(run: Path):
    """A TensorBoard writer for RUN/tensorboard (``--tensorboard``; the optional ``tensorboard`` package)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DataError(run, "--tensorboard needs TensorBoard: pip install 'dance-streams[tensorboard]'") from None
    return SummaryWriter(str(run / "tensorboard"))


def epoch_repeats(config: RunConfig, train_set) -> int:
    """How many times an epoch goes over the training videos. A small training set is gone over several times, so
    that an epoch is enough optimiser steps for the schedule and early stopping to mean something (24 videos at
    batch 16 would be one step)."""
    return max(1, -(-config.training.min_epoch_clips // len(train_set.videos)))


def loader_workers(device: str) -> int:
    """The default ``--workers``: feeding a GPU takes workers decoding ahead (the cores per GPU, at most 8); on CPU
    the model's own threads use every core, and workers would only take cores from it."""
    gpus = torch.cuda.device_count() if device != "cpu" else 0
    if gpus == 0:
        return 0
    return max(1, min(8, available_cores() // gpus))


def prepare_config(config: Mapping, *, given=()) -> RunConfig:
    """A run's whole config from the options given (``streams.registry.run_config``), with what the data and the
    machine decide: loader workers, the sampling rate (the training videos' median, so that a window spans the same
    time in every video; streams.sampling) and the RGB input statistics of the weights the network starts from."""
    config = run_config(config, given=given)
    if config.training.workers is None:
        config = config.replace(workers=loader_workers(config.training.device))
    if config.training.sample_fps is None:
        config = config.replace(sample_fps=reference_fps(v.fps for v in load_manifest(config.work).by_split("train")))
    if "frames" in config.spec.stages:  # a network on RGB frames: the statistics of its starting weights
        config = config.replace(normalize=input_normalization(config))
    return config


def training_ids(config: RunConfig, log=print) -> list[str] | None:
    """The training videos left after ``config.training.exclude`` (``--exclude-list``), or None for all of them."""
    if not config.training.exclude:
        return None
    work = Path(config.work)
    known, excluded = [v.video_id for v in load_manifest(work).by_split("train")], set(config.training.exclude)
    unknown = sorted(excluded - set(known))
    if unknown:
        raise DataError(
            "--exclude-list", f"{len(unknown)} excluded ids are not training videos of {work}: {', '.join(unknown[:5])}"
        )
    kept = [v for v in known if v not in excluded]
    log(f"training without {len(known) - len(kept)} excluded videos ({len(kept)} left)")
    return kept


@dataclass
class Training:
    """What one run trains with, and how far it has come (``state``: epoch, best macro-F1 and epoch, stale epochs;
    ``history``: one row of metrics per epoch)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: object
    criterion: nn.Module
    adversary: nn.Module | None = None  # a scene adversary (--scene-adversary), trained with the model
    state: dict = field(default_factory=lambda: {"epoch": 0, "best_f1": -1.0, "best_epoch": 0, "stale": 0})
    history: list = field(default_factory=list)


def build(config: RunConfig, train_set, device: torch.device, log=print) -> Training:
    """A fresh run's model on ``device``, optimiser, schedule and loss; the model's starting weights as asked
    (``--init``, ``--weights``, ``--pretrained``)."""
    num_classes = len(train_set.classes)
    model = create_model(config, num_classes).to(device)
    if config.training.init:
        log(load_init(model, config.training.init))
    backbone = config.options if isinstance(config.options, BackboneOptions) else None
    if backbone and backbone.weights:
        # an online convenience: torchvision's published file, downloaded once into torch's cache and checksummed
        log(load_pretrained(model, cached_download(torchvision_weights_url(backbone.weights))))
    if backbone and backbone.pretrained == "imagenet":
        log(load_pretrained(model, imagenet_weights(backbone.preset)))
    elif backbone and backbone.pretrained not in (None, "none"):
        log(load_pretrained(model, backbone.pretrained))
    model.partial_bn = bool(backbone and backbone.partial_bn)
    criterion = nn.CrossEntropyLoss(
        weight=class_weights(train_set.labels, num_classes, config.training.class_weights).to(device),
        label_smoothing=config.training.label_smoothing,
    )
    adversary = scene_adversary(config, model, train_set, device, log)
    params = list(model.parameters()) + ([] if adversary is None else list(adversary.parameters()))
    optimizer = _make_optimizer(config, params)
    return Training(model, optimizer, _make_schedule(config, optimizer), criterion, adversary)


def scene_adversary(config: RunConfig, model, train_set, device, log=print):
    """The run's scene adversary (``--scene-adversary λ``), or None: off, or no class with clips of several groups
    (said once: reversing the gradient of a group that is a style would remove the style)."""
    weight = venue_loss_weight(config, "scene_adversary")
    if not weight:
        return None
    from preprocess.records import group_of

    from .adversary import SceneAdversary

    groups = [group_of(v) for v in train_set.videos]
    adversary = SceneAdversary(model, train_set.labels, groups, weight).to(device)
    if not adversary.active:
        log("scene adversary off: no class has training clips of several groups (a group would be its style)")
        return None
    return adversary


def resume(last: Path, config: RunConfig, run: Training, data_digest: str, log=print) -> None:
    """Continue ``run`` from ``last`` (RUN/last.pt) when there is one. It must have been made with the same settings
    and data (its path may have moved); the epochs may grow."""
    if not last.is_file():
        return
    checkpoint = load_checkpoint(last)
    saved = json.loads(checkpoint_entry(checkpoint, "config", last))
    now = config.as_dict()  # (compared as config.json records both)
    # an option newer than the run is not a difference: the run goes on with its default
    newer = sorted(k for k in now if k not in saved and k not in RESUMABLE_CHANGES and k not in ("variant",))
    if newer:
        log(f"{last}: made before options {', '.join(newer)} existed; going on with their defaults")
    differs = {k for k in now if k not in RESUMABLE_CHANGES and k in saved and saved[k] != now[k]}
    # The data must be the same, not its path: a moved work directory (or run folder) resumes.
    same_data = (
        (checkpoint["manifest_sha256"] == data_digest)
        if "manifest_sha256" in checkpoint
        else (saved.get("work") == config.work)
    )
    if not same_data:
        differs.add("work (another manifest)")
    if differs:
        raise DataError(last, f"was made with other settings ({', '.join(sorted(differs))}): use a new RUN folder")
    run.model.load_state_dict(checkpoint_entry(checkpoint, "model", last))
    if run.adversary is not None:
        run.adversary.load_state_dict(checkpoint_entry(checkpoint, "adversary", last))
    run.optimizer.load_state_dict(checkpoint_entry(checkpoint, "optimizer", last))
    run.state = json.loads(checkpoint_entry(checkpoint, "state", last))
    run.history = json.loads(checkpoint_entry(checkpoint, "history", last))
    restore_rng_states(checkpoint_entry(checkpoint, "rng", last))
    run.schedule = schedule_after(config, run.optimizer, run.state["epoch"])
    log(f"resuming {last.parent} after epoch {run.state['epoch']}")


class EpochSampler(Sampler):
    """A sampler whose items carry the epoch: ``(epoch, index)``. A persistent loader worker keeps the copy of the
    dataset it was started with, so an epoch set on the main process's dataset would never reach it; the
    augmentation of an item must depend on (seed, epoch, index) all the same."""

    def __init__(self, sampler):
        self.sampler, self.epoch = sampler, 0

    def __iter__(self):
        return ((self.epoch, i) for i in self.sampler)

    def __len__(self):
        return len(self.sampler)


def _loader(dataset, config: RunConfig, device: torch.device, **kw) -> DataLoader:
    """A DataLoader as every loader of a run is made: workers that live for the run (their datasets' caches with
    them), pinned memory when batches go to a GPU (the copies are ``non_blocking``)."""
    workers = config.training.workers
    device = device or torch.device("cpu")
    return DataLoader(
        dataset,
        batch_size=config.training.batch_size,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
        collate_fn=collate,
        **kw,
    )


def training_loader(train_set, config: RunConfig, rank: int, world: int, device: torch.device | None = None):
    """The training loader, made once per run; ``set_loader_epoch`` before each epoch gives that epoch's order and
    augmentation, which depend only on (seed, epoch)."""
    if world > 1:
        base = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=config.training.seed)
        drop_last = len(train_set) > config.training.batch_size * world
    else:
        base = RandomSampler(train_set, generator=torch.Generator())
        drop_last = len(train_set) > config.training.batch_size
    # the loader's own generator draws its workers' base seed, which would otherwise come from torch's global RNG (and
    # a resumed run, starting its workers once more, would drift from an uninterrupted one)
    generator = torch.Generator().manual_seed(config.training.seed)
    return _loader(train_set, config, device, sampler=EpochSampler(base), drop_last=drop_last, generator=generator)


def evaluation_loader(dataset, config: RunConfig, rank: int, world: int, device: torch.device | None = None):
    """An evaluation loader, made once per run and dataset: under DDP rank r scores items r, r + world, ... (every
    rank its share of the videos and views, ``RankShare``)."""
    return _loader(dataset, config, device, sampler=RankShare(len(dataset), rank, world) if world > 1 else None)


def set_loader_epoch(loader, config: RunConfig, epoch: int) -> None:
    loader.dataset.set_epoch(epoch)
    loader.sampler.epoch = epoch
    base = loader.sampler.sampler
    if isinstance(base, DistributedSampler):
        base.set_epoch(epoch)
    else:
        base.generator.manual_seed(config.training.seed * 100_003 + epoch)
        # the draw a loader made from this generator before issue 22 (its workers' base seed): epochs keep their order
        torch.empty((), dtype=torch.int64).random_(generator=base.generator)


def _log_epoch(board, run: Path, row: dict, epoch: int):
    """TensorBoard scalars of one epoch (``--tensorboard``); returns the writer, opened at the first epoch."""
    board = board or _tensorboard(run)
    for name, key in (
        ("train/loss", "train_loss"),
        ("train/top1", "train_top1"),
        ("val/loss", "val_loss"),
        ("val/top1", "val_top1"),
        ("val/macro_f1", "val_macro_f1"),
        ("lr", "lr"),
    ):
        board.add_scalar(name, row[key], epoch)
    board.flush()
    return board


def fit(
    config: RunConfig, run: Training, loader, val_loader, device, *, rank, world, data_digest, log=print, on_epoch=None
):
    """Epochs until ``config.training.epochs`` or early stopping (``patience`` epochs without a better validation
    macro-F1): ``train_one_epoch``, ``evaluate`` on validation (``val_loader``: from ``evaluation_loader``, sharded
    over the ranks), the best checkpoint and ``last.pt`` after each."""
    folder = Path(config.run)
    last = folder / "last.pt"
    model, optimizer, state, history = run.model, run.optimizer, run.state, run.history
    board = None
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    while state["epoch"] < config.training.epochs and state["stale"] < config.training.patience:
        epoch = state["epoch"]
        set_loader_epoch(loader, config, epoch)
        confusion = venue_loss_weight(config) if loader.dataset.persons == "mark" else 0.0
        lr = optimizer.param_groups[0]["lr"]  # the rate this epoch trained at (the schedule steps after it)
        stats = train_one_epoch(
            net, loader, optimizer, run.criterion, device, confusion=confusion, adversary=run.adversary
        )
        run.schedule.step()
        state["epoch"] = epoch + 1
        # every rank scores its share of the validation items; each gets the whole, rank 0 writes
        probs, labels, val_loss = evaluate(model, val_loader, device, vote=config.training.vote)
        if rank == 0:
            metrics = classification_metrics(labels, probs)
            row = {
                "epoch": epoch + 1,
                **stats,
                "val_loss": val_loss,
                **{f"val_{k}": v for k, v in metrics.items()},
                "lr": lr,
            }
            history.append(row)
            improved = metrics["macro_f1"] > state["best_f1"] + 1e-9
            if improved:
                state.update(best_f1=metrics["macro_f1"], best_epoch=epoch + 1, stale=0)
                save_checkpoint(
                    folder / "best.pt", model=model.state_dict(), config=json.dumps(config.as_dict()), epoch=epoch + 1
                )
            else:
                state["stale"] += 1
            write_text(folder / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))
            log(
                f"{config.stream} epoch {epoch + 1}/{config.training.epochs}: loss {stats['train_loss']:.3f}, "
                f"val top-1 {metrics['top1']:.3f}, val macro-F1 {metrics['macro_f1']:.3f}"
                f"{' (best)' if improved else ''}, {stats['train_clips_per_s']:.1f} clips/s"
            )
            if config.training.tensorboard:
                board = _log_epoch(board, folder, row, epoch + 1)
            if on_epoch is not None:
                on_epoch(epoch + 1, metrics)
            save_checkpoint(
                last,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                schedule=run.schedule.state_dict(),
                state=json.dumps(state),
                history=json.dumps(history),
                rng=rng_states(),
                config=json.dumps(config.as_dict()),
                manifest_sha256=data_digest,
                **({"adversary": run.adversary.state_dict()} if run.adversary is not None else {}),
            )
        if world > 1:
            # every rank follows rank 0's early-stopping decision (on the backend's device: NCCL refuses CPU tensors)
            flag = torch.tensor([state["stale"], state["best_epoch"]], dtype=torch.float64, device=device)
            dist.broadcast(flag, 0)
            state["stale"], state["best_epoch"] = int(flag[0]), int(flag[1])
    if board is not None:
        board.close()


def write_best_scores(
    config: RunConfig, model, val_loader, device, splits, *, rank: int = 0, world: int = 1, scored=None
) -> dict:
    """The best checkpoint's scores of each of ``splits`` (every rank scores its share), written by rank 0 as the
    run's score files; {split: metrics}. ``scored``: a dict that receives {split: (probs, labels)}."""
    run, work = Path(config.run), Path(config.work)
    model.load_state_dict(checkpoint_entry(load_checkpoint(run / "best.pt"), "model", run / "best.pt"))
    result = {}
    scored = {} if scored is None else scored
    for split in splits:
        if split == "val":
            loader = val_loader
        else:
            dataset = create_dataset(config, work, split, train=False, views=config.training.views)
            loader = evaluation_loader(dataset, config, rank, world, device)
        probs, labels, _ = evaluate(model, loader, device, vote=config.training.vote)
        metrics = classification_metrics(labels, probs)
        if rank == 0:
            write_scores(run, split, loader.dataset, probs, labels, config, str(run / "best.pt"), metrics)
        result[split] = metrics
        scored[split] = (probs, labels)
    return result


def venue_loss_weight(config: RunConfig, option: str = "human_mask_confusion") -> float:
    """λ of a venue-blind loss (``human_mask_confusion``, ``scene_adversary``): the backbone variants' (rgb, flow)
    option, 0 for the others."""
    return float(getattr(config.options, option)) if isinstance(config.options, BackboneOptions) else 0.0


def human_mask_confusion(config: RunConfig, train_set, log=print) -> None:
    """Put ``train_set`` in the mode the human-mask confusion loss needs (clips with their persons' masks), or say
    once why the loss is off (a work directory without pose, dancer-cropped frames)."""
    if not venue_loss_weight(config):
        return
    why = train_set.persons_unavailable()
    if why:
        log(f"human-mask confusion loss off: {why}")
        return
    train_set.set_persons("mark")


def train(config: Mapping, log=print, *, on_epoch=None, splits=("val", "test"), given=()) -> dict:
    """Train one stream per ``config`` (stream, work, run and any options; ``given``: the ones a user typed, refused
    by name if the stream does not take them); returns {split: metrics} on rank 0 for ``splits`` (scored with the
    best checkpoint at the end). ``on_epoch(epoch, validation metrics)`` is called after each epoch's validation (a
    hyperparameter search reports to its pruner there; an exception stops training). ``config.training.exclude``:
    training videos left out (``--exclude-list``).

    build (model, optimiser, schedule) → resume (RUN/last.pt) → fit (epochs, early stopping) → score (best.pt)"""
    config = prepare_config(config, given=given)
    rank, world, device = _distributed(config)
    run, work = Path(config.run), Path(config.work)
    # one training per RUN at a time (rank 0 holds the lock: the other ranks of a DDP job write nothing there)
    with folder_lock(run, "bin/train") if rank == 0 else contextlib.nullcontext():
        torch.manual_seed(config.training.seed)
        np.random.seed(config.training.seed)
        train_set = create_dataset(
            config, work, "train", train=True, seed=config.training.seed, video_ids=training_ids(config, log)
        )
        train_set.repeats = epoch_repeats(config, train_set)
        human_mask_confusion(config, train_set, log if rank == 0 else lambda line: None)
        val_set = create_dataset(config, work, "val", train=False, views=config.training.views)
        if hasattr(train_set, "input_dim"):  # feature sequences: the width of the cached features (+ pose)
            config = config.replace(input_features=train_set.input_dim)
        training = build(config, train_set, device, log)
        if rank == 0:
            run.mkdir(parents=True, exist_ok=True)
        data_digest = manifest_digest(work)
        resume(run / "last.pt", config, training, data_digest, log)
        if rank == 0:
            write_json(run / "config.json", config.as_dict())
            # what new videos must be prepared as, whatever becomes of WORK, and what the network takes
            record_preprocessing(run, config, val_set[0][0] if len(val_set) else None)
        # the loaders are made once per run: their workers (and the datasets' caches in them) live for the run
        loader = training_loader(train_set, config, rank, world, device)
        val_loader = evaluation_loader(val_set, config, rank, world, device)
        fit(
            config,
            training,
            loader,
            val_loader,
            device,
            rank=rank,
            world=world,
            data_digest=data_digest,
            log=log,
            on_epoch=on_epoch,
        )
        if rank == 0:
            name = config.spec.fusion_name
            plot_curves(
                training.history,
                run / "training_curves.png",
                f"{name} stream, run {run.name}: training and validation by epoch",
                best_epoch=training.state["best_epoch"],
                stopped_early=training.state["epoch"] < config.training.epochs,
            )
        scored = {}
        result = write_best_scores(
            config, training.model, val_loader, device, splits, rank=rank, world=world, scored=scored
        )
        if rank == 0:
            shown, best = splits[-1], training.state["best_epoch"]
            log(
                f"{config.stream}: best epoch {best}, {shown} top-1 {result[shown]['top1']:.3f}, "
                f"macro-F1 {result[shown]['macro_f1']:.3f} (chance {1 / len(train_set.classes):.3f}); scores in {run}"
            )
            # what the stream names the style from: the same clips with every person hidden
            reliance = scene.measure(config, training.model, device, scored, log=log)
            scene.write(run, reliance)
            if reliance["applies"]:
                log(scene.summary_line(reliance))
        if world > 1:
            dist.barrier()
            dist.destroy_process_group()
        return result
