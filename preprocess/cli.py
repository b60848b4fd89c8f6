"""What the bin/ commands share: one-line errors instead of tracebacks, SIGTERM unwinding like an exception, and
the batch commands' options (--workers, --shard, --executor, --force, --allow-skipped; --crop) and their ending
(summary line, failures listed, exit status). Logic stays in the packages; this is only the commands' manner."""

from __future__ import annotations

import os
import sys

import click

from .batch import DataError, parse_shard
from .dataset import manifest_for, names_a_manifest


def one_line_errors(command):
    """Decorate a click callback so user-data problems exit with ``error: <path>: <problem>``, never a traceback."""
    import functools

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (DataError, ValueError, FileNotFoundError, PermissionError) as err:
            raise click.ClickException(str(err)) from None

    return wrapper


def exit_on_terminate() -> None:
    """Make SIGTERM and SIGHUP (a scheduler's stop, a closed terminal) end the command as an exception would, so
    that ``with`` blocks unwind: temporary folders are removed and atomic writes abandoned, instead of the process
    vanishing with its scratch left behind. The exit status is 128 + the signal's number, as the shell reports."""
    import signal

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), stop)


def crop_options(command):
    """--crop, --crop-size, --crop-margin: the same on flow and frames."""
    command = click.option(
        "--crop-margin", type=float, default=0.15, show_default=True, help="--crop dancers: margin, per side."
    )(command)
    command = click.option(
        "--crop-size", type=int, default=128, show_default=True, help="--crop dancers: side of the stored square."
    )(command)
    command = click.option(
        "--crop",
        type=click.Choice(["none", "dancers"]),
        default="none",
        show_default=True,
        help="dancers: a square window around the people found by bin/preprocess pose (run it first), smoothed "
        "over time, resized to --crop-size; recorded in the sidecar.",
    )(command)
    return command


def batch_options(command):
    """--workers, --shard, --executor, --force, --allow-skipped: the same on every batch command."""
    command = click.option("--force", is_flag=True, help="Redo every video, even those already done.")(command)
    command = click.option(
        "--gpus-per-worker",
        type=float,
        default=0.25,
        show_default=True,
        help="--executor ray: the fraction of a GPU each worker of a GPU stage asks for (4 share one).",
    )(command)
    command = click.option(
        "--ray-address",
        default=None,
        help="--executor ray: a running cluster (auto, or ray://host:10001); default a local one for this batch.",
    )(command)
    command = click.option(
        "--executor",
        type=click.Choice(["pool", "ray"]),
        default="pool",
        show_default=True,
        help="pool: worker processes on this machine; ray: actors on a Ray cluster (pip install 'dance-streams[ray]').",
    )(command)
    command = allow_skipped_option(command)
    command = click.option(
        "--shard",
        default=None,
        metavar="i/N|auto",
        help="Process only shard i of N (0-based): N machines split a dataset with no coordination. auto: from "
        "SLURM_ARRAY_TASK_ID/COUNT or RANK/WORLD_SIZE.",
    )(command)
    command = click.option(
        "--workers",
        type=int,
        default=None,
        help="Worker processes (default: one per core; a GPU stage, --device cuda, 4 per GPU: with one per core, "
        "a 16-core node would hold 16 CUDA contexts on one GPU).",
    )(command)
    return command


def batch_settings(*, shard, **others) -> dict:
    """batch_options' values (but --allow-skipped) as run_batch's keywords."""
    return dict(shard=parse_shard(shard), **others)


def allow_skipped_option(command):
    return click.option(
        "--allow-skipped",
        is_flag=True,
        help="DATA a dataset: exit 0 even if ingest skipped bad inputs (they are still listed).",
    )(command)


def load_data(data, work):
    """The manifest of DATA and the inputs its ingest skipped (none when DATA is a manifest or work directory),
    listed as bin/ingest lists them: a pipeline must not lose videos silently."""
    manifest = manifest_for(data, work)
    skipped = [] if names_a_manifest(data) else manifest.skipped
    for item in skipped:
        click.echo(f"skipped {item['path']}: {item['problem']}", err=True)
    return manifest, skipped


def finish(summary, work, skipped=(), allow_skipped=False):
    click.echo(summary.line())
    for failure in summary.failed:
        click.echo(f"failed {failure['error']}", err=True)
    name = "summary.json" if summary.shard == (0, 1) else f"summary-{summary.shard[0]}-of-{summary.shard[1]}.json"
    click.echo(f"summary: {os.path.join(work, summary.task, name)}")
    exit_on_skipped(skipped, allow_skipped)
    if summary.failed:
        sys.exit(1)


def exit_on_skipped(skipped, allow_skipped):
    if skipped and not allow_skipped:
        click.echo(
            f"{len(skipped)} input(s) of DATA were skipped at ingest (listed above); --allow-skipped accepts that",
            err=True,
        )
        sys.exit(1)


def farneback_options(command):
    """--pyr-scale, --levels, --winsize, --iterations, --poly-n, --poly-sigma, --gaussian: one option per field of
    ``FarnebackParams``, its default the field's; the command receives them as one ``farneback=FarnebackParams``."""
    import dataclasses
    import functools

    from .flow.farneback import FarnebackParams

    fields = dataclasses.fields(FarnebackParams)

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        return command(*args, farneback=FarnebackParams(**{f.name: kwargs.pop(f.name) for f in fields}), **kwargs)

    for field in reversed(fields):  # (click lists options in the order they are written, the reverse of applied)
        name = "--" + field.name.replace("_", "-")
        if field.type in (bool, "bool"):
            option = click.option(
                name, is_flag=True, help="OPTFLOW_FARNEBACK_GAUSSIAN: Gaussian window instead of a box."
            )
        else:
            kind = float if field.type in (float, "float") else int
            option = click.option(name, type=kind, default=field.default, show_default=True)
        wrapper = option(wrapper)
    return wrapper


def pose_options(*, backend: str, max_persons: int, rank: bool):
    """The options of the commands that run a pose model (pose, persons), with their own defaults."""
    from .pose.task import ONNX_POSE_BATCH

    options = [
        click.argument("data", type=click.Path(exists=True)),
        click.argument("work", type=click.Path(file_okay=False)),
        click.option(
            "--backend",
            type=click.Choice(["mediapipe", "movenet", "onnx"]),
            default=backend,
            show_default=True,
            help="mediapipe: PoseLandmarker (BlazePose, finds few people in crowds); movenet: MoveNet MultiPose "
            "Lightning (ONNX, Apache-2.0, up to 6 people); onnx: a YOLO-pose layout COCO-17 model you supply.",
        ),
        click.option(
            "--model",
            type=click.Path(dir_okay=False),
            default=None,
            help="Model file. mediapipe: else $DANCE_POSE_MODEL, shared/models, the user cache, then a download; "
            "movenet: else $DANCE_MOVENET_MODEL, shared/models, the user cache; onnx: else $DANCE_ONNX_POSE_MODEL.",
        ),
        click.option(
            "--max-persons",
            type=int,
            default=max_persons,
            show_default=True,
            help="Person slots per frame, zero-padded (the Let's Dance reference uses 20).",
        ),
        click.option("--step", type=int, default=1, show_default=True, help="Every step-th frame."),
        click.option(
            "--resize",
            default="none",
            show_default=True,
            help="Resize frames before the model (keypoints are stored in the video's own pixels).",
        ),
        click.option(
            "--min-keypoint-confidence",
            type=float,
            default=0.2,
            show_default=True,
            help="Keypoints below this count as missing for boxes and normalisation.",
        ),
    ]
    if rank:
        options.append(
            click.option(
                "--rank",
                type=click.Choice(["detection", "dancing"]),
                default="detection",
                show_default=True,
                help="Slot order. detection: the order people were first found in; dancing: twice --max-persons "
                "people are tracked and those whose limbs move most against their own body (camera motion and size "
                "do not count) are kept, first (measured on street dance: no better, see BENCHMARKS.md).",
            )
        )
    options += [
        click.option(
            "--device",
            default="cpu",
            show_default=True,
            help="movenet, onnx: cpu, cuda, cuda:1 ... (onnxruntime's CUDA provider: pip install "
            "'dance-streams[onnx-gpu]').",
        ),
        click.option(
            "--batch",
            type=int,
            default=None,
            help="movenet, onnx: frames per model call, where the model's export takes batches (the shipped ones "
            f"fix 1; default {ONNX_POSE_BATCH}).",
        ),
        batch_options,
        one_line_errors,
    ]

    def apply(command):
        for option in reversed(options):
            command = option(command)
        return command

    return apply


# the options of the pose commands that are pose_params' (the others are the batch's settings)
POSE_PARAMS = ("max_persons", "step", "resize", "min_keypoint_confidence", "rank")


def run_pose_stage(stage, *, data, work, backend, model, device, batch, allow_skipped, **options):
    """A pose model over DATA into WORK/<stage> (``pose``, or ``persons``: the same task under another folder)."""
    from .batch import run_batch
    from .pose import pose_params, pose_task
    from .pose.backends import onnx_providers, resolve_pose_model

    settings = {k: options.pop(k) for k in list(options) if k not in POSE_PARAMS}
    path, digest = resolve_pose_model(backend, model)
    params = pose_params(backend=backend, model=str(path.resolve()), model_sha256=digest, **options)
    task = pose_task(params, device=device, batch=batch, name=stage)
    if backend != "mediapipe":
        onnx_providers(device)  # a device this onnxruntime cannot use fails here once, not once per video
    manifest, skipped = load_data(data, work)
    summary = run_batch(task, manifest, work, **batch_settings(**settings))
    finish(summary, work, skipped, allow_skipped)
