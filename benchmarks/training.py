"""Training throughput per stream through ``bin/train``'s own code: its loader (``streams.train.training_loader``)
against its optimiser step (``streams.train.train_step`` on the model ``streams.train.build`` makes), and the two
together; says whether training is loader-bound or model-bound.

    prepare_config ─► create_dataset ─► training_loader ─► batches/s        (loader only, epoch after epoch)
                                     └► build ─► train_step on kept batches (model only, already on the device)
                                                 train_step on loader batches (both: what an epoch of bin/train does)
"""

from __future__ import annotations

import itertools
import time

import torch

from streams.registry import SPECS, create_dataset, variant_of
from streams.train import (
    build,
    epoch_repeats,
    pick_device,
    prepare_config,
    set_loader_epoch,
    train_step,
    training_loader,
)


def training(
    work: str,
    *,
    device: str = "auto",
    workers: int | None = None,
    batch_size: int = 16,
    batches: int = 12,
    preset: str = "small",
    log=print,
) -> None:
    """Per stream: loader-only clips/s against model-only clips/s (forward, backward, step on batches already on the
    device), and the two together, with ``bin/train``'s defaults (``workers`` None: its ``--workers`` default for the
    device). Goal: the loader at least 2x the model, so that it never starves it. With workers, also how long an
    epoch waits for its first batch, the loader kept against one made anew (its workers respawned: before issue 22)."""
    for stream in ("rgb", "flow", "pose"):
        options = {"stream": stream, "work": work, "device": device, "batch_size": batch_size, "workers": workers}
        if "preset" in SPECS[variant_of(stream, {})].option_names():  # (a pose network has no CNN backbone)
            options["preset"] = preset
        config = prepare_config(options)
        rates = _measure(config, batches)
        ratio = rates["loader"] / rates["model"]
        bound = "model-bound" if ratio >= 1 else "loader-bound (more --workers, or a smaller --resize)"
        respawned = ""
        if "epoch_start" in rates:  # the loader made once per run against one made per epoch (before issue 22)
            respawned = (
                f"; an epoch's first batch after {rates['epoch_start']:.2f} s (loader kept), "
                f"{rates['respawned_start']:.2f} s (loader made anew each epoch, its workers started again)"
            )
        log(
            f"{stream}: loader {rates['loader']:.0f} clips/s ({config['workers']} workers), model "
            f"{rates['model']:.0f} clips/s on {rates['device']} (loader/model {ratio:.1f}x: {bound}), "
            f"training with both {rates['both']:.0f} clips/s{respawned}"
        )


def _epochs(loader, config: dict):
    """Batches without end, epoch after epoch, as ``bin/train``'s fit goes over its one loader."""
    for epoch in itertools.count():
        set_loader_epoch(loader, config, epoch)
        yield from loader


def _clips_per_second(batch_size: int, batches: int, work) -> float:
    start = time.perf_counter()
    for i in range(batches):
        work(i)
    return batches * batch_size / (time.perf_counter() - start)


def _measure(config: dict, batches: int) -> dict:
    batch_size = config["batch_size"]
    device = pick_device(config["device"])
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    train_set = create_dataset(config, config["work"], "train", train=True, seed=config["seed"])
    train_set.repeats = epoch_repeats(config, train_set)
    loader = training_loader(train_set, config, 0, 1, device)
    stream = _epochs(loader, config)
    kept = [next(stream) for _ in range(2)]  # also starts the workers
    rates = {"device": device, "loader": _clips_per_second(batch_size, batches, lambda i: next(stream))}

    run = build(config, train_set, device, log=lambda *_: None)
    run.model.train()

    def step(x, labels):
        train_step(run.model, run.optimizer, run.criterion, x, labels.to(device, non_blocking=True), device)

    on_device = [
        (tuple(part.to(device) for part in x) if isinstance(x, (tuple, list)) else x.to(device), y.to(device))
        for x, y, _, _ in kept
    ]
    step(*on_device[0])  # warm-up (cuDNN autotune, the allocator)
    sync()

    def model_only(i):
        step(*on_device[i % len(on_device)])
        if i == batches - 1:
            sync()

    def both(i):
        x, y, _, _ = next(stream)
        step(x, y)
        if i == batches - 1:
            sync()

    rates["model"] = _clips_per_second(batch_size, batches, model_only)
    rates["both"] = _clips_per_second(batch_size, batches, both)
    if config["workers"] > 0:
        del stream  # (the loader's iterator is reset by the next epoch's)
        rates["epoch_start"] = _first_batch_seconds(loader, config, 1000)
        rates["respawned_start"] = _first_batch_seconds(training_loader(train_set, config, 0, 1, device), config, 1001)
    return rates


def _first_batch_seconds(loader, config: dict, epoch: int) -> float:
    """Seconds from the start of an epoch to its first batch: what every epoch pays before its first step."""
    set_loader_epoch(loader, config, epoch)
    start = time.perf_counter()
    next(iter(loader))
    return time.perf_counter() - start
