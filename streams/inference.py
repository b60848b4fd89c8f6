"""Scoring a trained network: where it runs (``pick_device``), its video-level scores (``evaluate``), and the same
network exported to ONNX and run by onnxruntime (``OnnxNetwork``).

::

    clip dataset ──► batches (views, segments) ──► network (torch nn.Module, or OnnxNetwork) ──► softmax
                                                     └─► per-video mean over views (or votes) ──► probs (N, C)

``evaluate`` takes either kind of network: an ``OnnxNetwork`` is called like a module (tensors in, tensors out) but
runs in onnxruntime (CPU, or CUDA where onnxruntime-gpu and a GPU are there); torch only carries the batches.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Sampler

from preprocess import DataError

from .data import collate


def forward_batch(model, x, device):
    if isinstance(x, (tuple, list)):
        return model(x[0].to(device, non_blocking=True), x[1].to(device, non_blocking=True))
    return model(x.to(device, non_blocking=True))


def autocast(device: torch.device):
    # bf16 autocast on CUDA (no loss scaling needed); full precision on CPU keeps CPU runs deterministic.
    return (
        torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    )


@torch.no_grad()
def evaluate(model, data, device, *, batch_size: int = 16, workers: int = 0, vote: bool = False):
    """Video-level scores: softmax averaged over each video's views. With ``vote``, the frame-by-frame protocol
    (Castro's frame baseline): every sampled frame (each segment of each view; a 2D model's segments are classified
    one by one, not averaged) votes for its top class, and a video's scores are the fraction of votes per class
    (ties go to the higher mean probability). Returns (probs (N, C) float32, labels (N,), mean loss).

    ``data``: a dataset, or a loader from ``evaluation_loader`` (made once per run; under DDP each rank's loader
    holds its share of the items, the per-video sums are added over ranks, and every rank returns the whole)."""
    model.eval()
    if isinstance(data, DataLoader):
        loader, dataset = data, data.dataset
    else:
        dataset = data
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate)
    n_videos, n_classes = len(dataset.videos), len(dataset.classes)
    sums = np.zeros((n_videos, n_classes), np.float64)
    votes = np.zeros((n_videos, n_classes), np.float64)
    counts = np.zeros(n_videos)
    loss_sum, loss_n = 0.0, 0
    criterion = nn.CrossEntropyLoss()
    per_segment = vote and hasattr(getattr(model, "module", model), "segment_logits")
    for x, labels, videos, _ in loader:
        with autocast(device):
            if per_segment:
                segments = model.segment_logits(x.to(device, non_blocking=True)).float()  # (B, K, C)
                logits = segments.mean(1)
            else:
                logits = forward_batch(model, x, device).float()
                segments = logits[:, None]
        known = labels >= 0
        if known.any():
            loss_sum += float(criterion(logits[known.to(logits.device)], labels[known].to(device))) * int(known.sum())
            loss_n += int(known.sum())
        probs = torch.softmax(segments, -1).cpu().numpy()  # (B, K, C)
        idx = np.repeat(videos.numpy(), probs.shape[1])
        flat = probs.reshape(-1, n_classes)
        np.add.at(sums, idx, flat)
        np.add.at(votes, (idx, flat.argmax(1)), 1)
        np.add.at(counts, idx, 1)
    if isinstance(loader.sampler, RankShare):  # (one rank's share: the shares are added up)
        sums, votes, counts, (loss_sum, loss_n) = _sum_over_ranks(
            sums, votes, counts, [loss_sum, loss_n], device=device
        )
    mean = sums / counts[:, None]
    if vote:
        # ties between voted classes go to the higher mean probability
        scores = votes / counts[:, None] + 1e-6 * mean
        scores = scores / scores.sum(1, keepdims=True)
    else:
        scores = mean
    return scores.astype(np.float32), dataset.labels.copy(), loss_sum / max(loss_n, 1)


def _sum_over_ranks(*arrays, device):
    """Each array summed over the DDP ranks (float64, on the backend's device: NCCL refuses CPU tensors)."""
    out = []
    for a in arrays:
        t = torch.as_tensor(np.asarray(a, np.float64), device=device)
        dist.all_reduce(t)
        out.append(t.cpu().numpy())
    return out


def pick_device(device: str = "auto", rank: int = 0) -> torch.device:
    """Where a network runs: ``device`` as named (``cuda`` without an index: the rank's GPU, under torchrun its
    LOCAL_RANK's), or for ``auto`` the rank's GPU where there is one, else the CPU."""
    if device != "auto":
        device = torch.device(device)
        if device.type == "cuda" and device.index is None and torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
        return device
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count())
    return torch.device("cpu")


class RankShare(Sampler):
    """Items rank, rank + world, ... of ``n``: one DDP rank's share of an evaluation (``evaluate`` adds the ranks'
    shares up when its loader has this sampler)."""

    def __init__(self, n: int, rank: int, world: int):
        self.indices = range(rank, n, world)

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


ONNX_OPSET = 17


def onnx_inputs(example) -> tuple[torch.Tensor, ...]:
    """A dataset item's network input as the tuple of tensors an export takes (features-pose: two inputs)."""
    return tuple(example) if isinstance(example, (tuple, list)) else (example,)


def input_record(example) -> list[dict]:
    """What one item's network inputs are (shape without the batch, dtype): recorded with a run, so that its
    network can be exported without its data (``zero_inputs``)."""
    return [{"shape": list(x.shape), "dtype": str(x.dtype).removeprefix("torch.")} for x in onnx_inputs(example)]


def zero_inputs(record: list[dict]) -> tuple[torch.Tensor, ...]:
    """A batch of one item of zeros, as ``input_record`` describes it."""
    return tuple(torch.zeros([1, *x["shape"]], dtype=getattr(torch, x["dtype"])) for x in record)


class _SegmentLogits(nn.Module):
    """A 2D network's per-segment logits (B, K, C) as its output: what ``evaluate``'s vote protocol reads."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.segment_logits(x)


def export_onnx(model: nn.Module, example, path: str | os.PathLike, *, segments: bool = False) -> Path:
    """``model`` (eval mode, CPU) as an ONNX file taking ``example``'s batch of inputs (any batch size), giving
    logits (``segments``: each segment's, for a run that votes). A network the exporter cannot take raises
    DataError naming it (``--runtime torch`` still works)."""
    import io

    from preprocess.batch import atomic_path

    inputs = onnx_inputs(example)
    names = [f"input{i}" for i in range(len(inputs))]
    buffer = io.BytesIO()
    model = model.cpu().eval()
    output = "segment_logits" if segments else "logits"
    if segments:
        model = _SegmentLogits(model)
    try:
        import warnings

        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # (the TorchScript exporter's deprecation and tracer notes)
            torch.onnx.export(
                model,
                inputs,
                buffer,
                dynamo=False,
                opset_version=ONNX_OPSET,
                input_names=names,
                output_names=[output],
                dynamic_axes={**{n: {0: "batch"} for n in names}, output: {0: "batch"}},
            )
    except Exception as err:  # the exporter fails in many ways; the model is named, the reason kept short
        raise DataError(
            path, f"{type(model).__name__} cannot be exported to ONNX ({type(err).__name__}: {err})"
        ) from None
    path = Path(path)
    with atomic_path(path, suffix=".onnx") as tmp:
        Path(tmp).write_bytes(buffer.getvalue())
    return path


class OnnxNetwork:
    """A stream network exported to ONNX, called as ``evaluate`` calls a module: tensors in, logits out. ``device``:
    cpu or cuda[:N] (``preprocess.pose.backends.onnx_session``, the one place sessions are made)."""

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        from preprocess.pose.backends import onnx_session

        self.session = onnx_session(path, device, one_thread=False)
        self.names = [i.name for i in self.session.get_inputs()]
        types = {"tensor(float)": np.float32, "tensor(bool)": np.bool_, "tensor(int64)": np.int64}
        self.types = [types.get(i.type, np.float32) for i in self.session.get_inputs()]
        self.output = self.session.get_outputs()[0].name
        if self.output == "segment_logits":  # (a voting run's export: evaluate reads each segment's logits)
            self.segment_logits = self._run

    def eval(self):
        return self

    def _run(self, *inputs: torch.Tensor) -> torch.Tensor:
        feed = {n: x.detach().cpu().numpy().astype(t) for n, t, x in zip(self.names, self.types, inputs)}
        return torch.from_numpy(self.session.run([self.output], feed)[0])

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        out = self._run(*inputs)
        return out.mean(1) if self.output == "segment_logits" else out
