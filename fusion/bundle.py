"""A trained, fused model as one self-contained folder (or archive) that classifies on any machine: ``bin/export-model
REPORT OUT``, then ``bin/classify --model OUT``.

::

    OUT/bundle.json                        format, classes, streams, the pose model (bundled, or where to put it)
        fusion.json                        the fitted fusion (bin/fuse's), its runs named by relative path
        streams/<stream>/config.json       the run's config (no paths of the training machine), its classes
                         preprocessing.json  the data parameters of every stage it reads (streams.run)
                         members/<k>/best.pt     weights (a state dict, loaded with weights_only=True)
                         members/<k>/model.onnx  the same network for onnxruntime (--runtime onnx)
        pose/<model file>                  the pose model, where its licence lets it travel (MediaPipe, MoveNet)
        README.md                          the model card: what it was trained on, its test figures, caution
        manifest.json                      every file's SHA-256: a bundle that does not match is refused by name

Nothing in it points outside it: execution settings (device, workers, runtime) are chosen where it runs.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path

from preprocess import DataError
from preprocess.batch import read_json, write_json, write_text
from preprocess.model_files import file_sha256
from preprocess.pose.backends import recorded_model
from streams.run import ONNX_FILE, PREPROCESSING_FILE, Run

from .methods import FusionMethod
from .report import load_fusion

BUNDLE_FORMAT = 1
# pose backends whose model file may travel in a bundle (their licence lets it); any other (YOLO-pose is AGPL, an
# onnx file is the user's) is named by its SHA-256 and found on the machine that classifies
BUNDLED_POSE = {"mediapipe": "Apache-2.0 (Google MediaPipe PoseLandmarker)", "movenet": "Apache-2.0 (Google MoveNet)"}
MACHINE_KEYS = ("work", "run")  # what a run's config says of the training machine: not in a bundle


def _portable_config(run: Run, classes: list[str]) -> dict:
    config = {k: v for k, v in run.config.items() if k not in MACHINE_KEYS}
    for key in ("pretrained", "init"):  # where its first weights came from: provenance, a name, not a path
        if isinstance(config.get(key), str) and os.path.isabs(config[key]):
            config[key] = Path(config[key]).name
    return {**config, "classes": classes}


def _input_record(run: Run) -> list[dict]:
    """One item's network inputs as the run recorded them at training, else as one evaluation item of its work
    directory shows them (a run trained before runs recorded them)."""
    from streams.inference import input_record

    if run.record.get("inputs"):
        return run.record["inputs"]
    dataset = run.dataset(run.work, "test", views=1)
    if not len(dataset):
        dataset = run.dataset(run.work, "val", views=1)
    return input_record(dataset[0][0])


def export_stream(run: Run, target: Path, classes: list[str], *, log=print) -> dict:
    """One run as a bundle's stream folder ``target`` (a run without a work directory: ``Run.load(target)`` scores
    as the run does): its portable config, its preprocessing record (the pose model by name), each member's weights
    and ONNX export. Returns {variant, onnx: whether every member was exported}."""
    import torch

    from streams.inference import export_onnx, zero_inputs

    write_json(target / "config.json", _portable_config(run, classes))
    record = {k: v for k, v in run.record.items() if k != "work"}
    record["stages"] = {
        s: ({**p, "model": Path(p["model"]).name} if p.get("model") else p) for s, p in record["stages"].items()
    }
    record["inputs"] = _input_record(run)
    example = zero_inputs(record["inputs"])
    write_json(target / PREPROCESSING_FILE, record)
    onnx_failure = None
    for k, net in enumerate(run.models("cpu")):
        member = target / "members" / str(k)
        member.mkdir(parents=True)
        torch.save({"model": net.state_dict()}, member / "best.pt")
        try:
            export_onnx(net, example, member / ONNX_FILE, segments=run.run_config.training.vote)
        except DataError as err:
            onnx_failure = str(err)
    if onnx_failure:
        log(f"{run.fusion_name}: no ONNX export ({onnx_failure}); --runtime torch still works")
    return {"variant": run.spec.name, "onnx": onnx_failure is None}


def _pose_of(runs: dict[str, Run]) -> dict | None:
    """The pose stage parameters the runs share (bin/fuse made sure they agree), or None."""
    for run in runs.values():
        if "pose" in run.stages:
            return run.stages["pose"]
    return None


def export_bundle(report, out, *, archive: str | None = None, force: bool = False, log=print) -> Path:
    """Write the model bundle of ``report`` (a bin/fuse folder) to ``out`` (a folder; with ``archive`` tar or zip,
    ``out`` is that file). An existing non-empty ``out`` is refused unless ``force``, and then replaced at once
    (the new bundle is written beside it and renamed over it)."""
    out = Path(os.path.abspath(out))
    if out.exists() and (out.is_file() or any(out.iterdir())) and not force:
        raise DataError(out, "exists and is not empty (--force replaces it)")
    method, classes, runs = load_fusion(report)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if out.parent.is_dir() else None))
    try:
        folder = stage / "bundle"
        streams = {}
        for stream, run in runs.items():
            streams[stream] = export_stream(run, folder / "streams" / stream, classes, log=log)
            streams[stream]["folder"] = f"streams/{stream}"
        pose = _bundle_pose(_pose_of(runs), folder)
        fitted = read_json(Path(report) / "fusion.json")
        write_json(folder / "fusion.json", {**fitted, "runs": {s: v["folder"] for s, v in streams.items()}})
        write_json(
            folder / "bundle.json",
            {"format": BUNDLE_FORMAT, "classes": classes, "streams": streams, "pose_model": pose},
        )
        write_text(folder / "README.md", model_card(report, classes, runs, streams, pose, method))
        write_json(folder / "manifest.json", {"format": BUNDLE_FORMAT, "sha256": _digests(folder)})
        if archive:
            made = stage / f"bundle.{archive}"
            _archive(folder, made, archive)
            folder = made
        _replace(folder, out)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def _bundle_pose(params: dict | None, folder: Path) -> dict | None:
    """Copy the pose model into the bundle where its licence allows; else record its name, SHA-256 and where the
    machine that classifies must put it."""
    if not params or not params.get("model_sha256"):
        return None
    name, backend = Path(params["model"]).name, params.get("backend")
    entry = {"backend": backend, "file": name, "sha256": params["model_sha256"]}
    if backend in BUNDLED_POSE:
        found = recorded_model(params)
        (folder / "pose").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(found["model"], folder / "pose" / name)
        return {**entry, "bundled": f"pose/{name}", "licence": BUNDLED_POSE[backend]}
    from preprocess.pose.backends import MODEL_ENVS

    return {
        **entry,
        "bundled": None,
        "licence": "not bundled: its licence is the user's to honour (YOLO-pose is AGPL-3.0)",
        "put_it": f"set ${MODEL_ENVS.get(backend, 'DANCE_POSE_MODEL')} to the file, or put it in shared/models",
    }


def _digests(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): file_sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != "manifest.json"
    }


def _archive(folder: Path, target: Path, kind: str) -> None:
    if kind == "tar":
        with tarfile.open(target, "w") as tar:
            tar.add(folder, arcname=".")
    elif kind == "zip":
        with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as z:
            for p in sorted(folder.rglob("*")):
                if p.is_file():
                    z.write(p, p.relative_to(folder).as_posix())
    else:
        raise DataError(f"--archive {kind}", "choose tar or zip")


def _replace(made: Path, out: Path) -> None:
    """``made`` renamed to ``out``; an old ``out`` moved aside first and removed after (never a half bundle)."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(made, out)
    if old is not None:
        shutil.rmtree(old) if old.is_dir() else old.unlink()


def model_card(report, classes, runs, streams, pose, method: FusionMethod) -> str:
    """The bundle's README.md: what it was trained on, its test figures (with intervals and the groups behind
    them), the report's caution, and the licences of its parts."""
    summary_path = Path(report) / "ablation.json"
    summary = read_json(summary_path) if summary_path.is_file() else {}
    dataset = summary.get("dataset") or {}
    lines = [
        "# Dance-style model bundle",
        "",
        f"Classes ({len(classes)}): {', '.join(classes)}. Streams: "
        + ", ".join(f"{s} ({v['variant']})" for s, v in streams.items())
        + f"; fused by {method.name}.",
        "",
        "## Trained on",
        "",
    ]
    splits = dataset.get("splits") or {}
    if splits:
        lines.append(
            f"{sum(splits.values())} videos ({', '.join(f'{k} {v}' for k, v in splits.items())}) of "
            f"{dataset.get('groups', '?')} groups (source videos or performers), from {dataset.get('root', '?')}."
        )
    else:
        lines.append("(the report records no dataset summary)")
    lines += ["", "## Test figures", ""]
    intervals = summary.get("intervals") or {}
    groups = intervals.get("test_groups")
    basis = f"{groups} test groups resampled" if intervals.get("resample") == "groups" else "videos (Wilson)"
    groups = dataset.get("split_groups") or {}
    shared = set(groups.get("test", [])) & set(groups.get("train", []))
    if shared:
        reach = (
            f"{len(shared)} of the {len(groups['test'])} test groups are also in training: these figures say little "
            "about sources (venues, performers) the model never saw"
        )
    elif groups:
        reach = "no test group is in training: the figures are of sources the model never saw"
    else:
        reach = "the groups are unknown: whether test shares sources with training is not known"
    lines.append(f"Top-1 on {summary.get('test_videos', '?')} test videos, 95 % intervals from {basis}; {reach}.")
    lines += ["", "| streams | method | test top-1 % [95 % CI] | macro-F1 % |", "|---|---|---|---|"]
    default = summary.get("default") or {}
    for row in summary.get("results", []):
        single = row["method"] == "single"
        chosen = set(row["streams"]) == set(default.get("streams") or ()) and (
            row["method"] == default.get("method") or single
        )
        if single or chosen:
            low, high = row.get("top1_ci95") or (float("nan"), float("nan"))
            name = "+".join(row["streams"]) + (" (this bundle)" if chosen else "")
            lines.append(
                f"| {name} | {row['method']} | {100 * row['top1']:.1f} [{100 * low:.1f}, {100 * high:.1f}] | "
                f"{100 * row['macro_f1']:.1f} |"
            )
    reasons = (summary.get("fitting_support") or {}).get("reasons") or []
    left_out = default.get("left_out") or []
    if reasons or left_out:
        lines += ["", "## Caution", ""]
        lines += [f"- {r}" for r in reasons]
        lines += [f"- left out of the fusion: {item}" for item in left_out]
    lines += ["", "## Licences", "", "- the networks: trained with dance-streams (Apache-2.0)"]
    if pose:
        lines.append(f"- pose model {pose['file']} (SHA-256 {pose['sha256'][:12]}…): {pose['licence']}")
        if not pose.get("bundled"):
            lines.append(f"  - {pose['put_it']}")
    lines += [
        "",
        "## Use",
        "",
        "    bin/classify VIDEO... --model THIS_FOLDER [--runtime torch|onnx] [--device cpu|cuda]",
        "",
        "`manifest.json` holds every file's SHA-256; a bundle that does not match it is refused.",
        "",
    ]
    return "\n".join(lines)


def verify_bundle(folder: Path) -> dict:
    """The bundle's bundle.json after checking every file against manifest.json (a missing or altered file, a
    newer format: refused by name)."""
    for name in ("bundle.json", "manifest.json"):
        if not (folder / name).is_file():
            raise DataError(folder / name, "missing: not a model bundle of bin/export-model")
    info, manifest = read_json(folder / "bundle.json"), read_json(folder / "manifest.json")
    newest = max(int(info.get("format", 0)), int(manifest.get("format", 0)))
    if newest > BUNDLE_FORMAT:
        raise DataError(
            folder / "bundle.json",
            f"made by a newer release (bundle format {newest}; this one reads up to {BUNDLE_FORMAT}): update",
        )
    for relative, digest in manifest.get("sha256", {}).items():
        path = folder / relative
        if not path.is_file():
            raise DataError(path, "missing from the bundle (its manifest lists it)")
        if file_sha256(path) != digest:
            raise DataError(path, "altered: its SHA-256 differs from the bundle's manifest")
    return info


def _unpacked(path: Path) -> Path:
    """A bundle archive (.tar, .zip) unpacked into a folder of its own, removed when the process ends."""
    target = Path(tempfile.mkdtemp(prefix="bundle-"))
    atexit.register(shutil.rmtree, target, True)
    try:
        if tarfile.is_tarfile(path):
            with tarfile.open(path) as tar:
                tar.extractall(target, filter="data")  # (no links out, no absolute paths)
        elif zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                z.extractall(target)
        else:
            raise DataError(path, "not a model bundle: neither a folder nor a .tar or .zip archive")
    except (tarfile.TarError, zipfile.BadZipFile, OSError) as err:
        raise DataError(path, f"a damaged bundle archive ({err})") from None
    return target


def load_bundle(path) -> tuple[FusionMethod, list[str], dict[str, Run], tuple[Path, ...]]:
    """(method, classes, {stream: Run}, pose model files it carries) of a model bundle, checked first."""
    path = Path(os.path.abspath(path))
    folder = path if path.is_dir() else _unpacked(path)
    info = verify_bundle(folder)
    try:
        method = FusionMethod.from_json(read_json(folder / "fusion.json"))
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise DataError(folder / "fusion.json", f"not a fitted fusion ({type(err).__name__}: {err})") from None
    classes = info["classes"]
    runs = {}
    for stream, entry in info["streams"].items():
        run = Run.load(folder / entry["folder"])
        if run.classes != classes:
            raise DataError(run.path / "config.json", f"predicts {', '.join(run.classes)}, not the bundle's classes")
        runs[stream] = run
    pose = info.get("pose_model") or {}
    carried = (folder / pose["bundled"],) if pose.get("bundled") else ()
    return method, classes, runs, carried
