"""Training throughput per stream: data-loader-only clips/s against model-only clips/s, and the two together."""

from __future__ import annotations

import itertools
import time

import torch
from torch.utils.data import DataLoader

from streams.data import collate
from streams.registry import SPECS, create_dataset, create_model, variant_of
from streams.train import autocast, forward_batch, pick_device, prepare_config


def training(
    work: str,
    *,
    device: str = "auto",
    loader_workers: int = 2,
    batch_size: int = 16,
    batches: int = 12,
    preset: str = "small",
    log=print,
) -> None:
    """Per stream: data-loader-only clips/s against model-only training clips/s (forward, backward, step on batches
    already in memory), and the two together. Goal: the loader at least 2x the model, so it never starves it."""
    for stream in ("rgb", "flow", "pose"):
        config = prepare_config(
            {
                "stream": stream,
                "work": work,
                "device": device,
                "batch_size": batch_size,
                # (a pose network has no CNN backbone: it refuses --preset)
                **({"preset": preset} if "preset" in SPECS[variant_of(stream, {})].option_names() else {}),
            }
        )
        loader_rate, model_rate, both, dev = _measure(config, loader_workers, batches)
        log(
            f"{stream}: loader {loader_rate:.0f} clips/s ({loader_workers} workers), model {model_rate:.0f} clips/s "
            f"on {dev} (loader/model {loader_rate / model_rate:.1f}x), training with both {both:.0f} clips/s"
        )


class _Trainer:
    """One optimiser step at a time on the stream's model, synchronised on CUDA so that wall time is device time."""

    def __init__(self, config: dict, num_classes: int, device: torch.device):
        self.device = device
        self.model = create_model(config, num_classes).to(device).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.criterion = torch.nn.CrossEntropyLoss()

    def step(self, x, labels) -> None:
        with autocast(self.device):
            loss = self.criterion(forward_batch(self.model, x, self.device).float(), labels.to(self.device))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def _clips_per_second(batch_size: int, batches: int, work) -> float:
    start = time.perf_counter()
    for i in range(batches):
        work(i)
    return batches * batch_size / (time.perf_counter() - start)


def _measure(config: dict, loader_workers: int, batches: int) -> tuple[float, float, float, torch.device]:
    batch_size = config["batch_size"]
    device = pick_device(config, 0)
    dataset = create_dataset(config, config["work"], "train", train=True)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=loader_workers,
        collate_fn=collate,
        persistent_workers=loader_workers > 0,
        generator=torch.Generator().manual_seed(0),
    )
    stream_batches = itertools.chain.from_iterable(itertools.repeat(loader))  # endless, one epoch after another
    kept = [next(stream_batches) for _ in range(2)]  # also warms the workers up
    loader_rate = _clips_per_second(batch_size, batches, lambda i: next(stream_batches))

    trainer = _Trainer(config, len(dataset.classes), device)
    on_device = [
        ((x[0].to(device), x[1].to(device)) if isinstance(x, tuple) else x.to(device), y.to(device))
        for x, y, _, _ in kept
    ]
    trainer.step(*on_device[0])  # warm-up (cuDNN autotune, allocator)
    trainer.sync()

    def model_only(i):
        trainer.step(*on_device[i % len(on_device)])
        if i == batches - 1:
            trainer.sync()

    def both(i):
        x, y, _, _ = next(stream_batches)
        trainer.step(x, y)
        if i == batches - 1:
            trainer.sync()

    return (
        loader_rate,
        _clips_per_second(batch_size, batches, model_only),
        _clips_per_second(batch_size, batches, both),
        device,
    )
