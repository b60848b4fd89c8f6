"""Checkpoints and pretrained weights: loaded without unpickling (``weights_only=True``), refused by name when broken.

* ``load_checkpoint``: a ``.pt``/``.pth`` file (or ``.safetensors``) as a dict of tensors and plain values;
* ``load_init``: the matching tensors of any state dict into a model (``bin/train --init``);
* ``load_pretrained``: an official torchvision checkpoint into a stream's backbone, every backbone tensor used (the
  first convolution adapted to stacked flow by TSN's cross-modality initialisation), or a run of ours
  (``bin/train --pretrained``).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import torch
from torch import nn

from preprocess import DataError


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint or state dict, loaded with ``weights_only=True``; a named one-line error when it is missing,
    truncated, or holds Python objects (which are refused, never run)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such checkpoint")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, KeyError, ValueError, OSError) as err:
        text = str(err)
        # torch refuses a pickled object by naming its GLOBAL (a class or function to import and call); garbage
        # fails with another unpickling error.
        if isinstance(err, pickle.UnpicklingError) and "global" in text.lower():
            problem = "not a weights-only checkpoint: it holds Python objects, which are never loaded"
            raise DataError(path, problem) from None
        reason = text.splitlines()[0][:120] if text else type(err).__name__
        raise DataError(path, f"truncated or not a PyTorch checkpoint ({reason})") from None
    if not isinstance(state, dict):
        raise DataError(path, f"holds a {type(state).__name__}, not a checkpoint or state dict")
    return state


def checkpoint_entry(state: dict, key: str, path: str | Path):
    """One entry of a loaded checkpoint, or a named error when the file is not one of ours."""
    if key not in state:
        raise DataError(path, f"not a checkpoint of bin/train (no {key!r})")
    return state[key]


def load_init(model: nn.Module, path: str | Path, *, option: str = "--init") -> str:
    """Copy matching tensors (same name and shape) from a state dict file; others keep their initialisation."""
    state = load_checkpoint(path)
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]  # one of our checkpoints
    own = model.state_dict()
    matched = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise DataError(path, "no tensor in this state dict matches the model (names or shapes differ)")
    model.load_state_dict(matched, strict=False)
    return f"{option} {path}: loaded {len(matched)} of {len(own)} tensors"


# Where torchvision's models keep their classifier, the one part of a checkpoint that is not for the backbone.
CLASSIFIER_PREFIXES = ("fc.", "classifier.")


def load_pretrained(model: nn.Module, path: str | Path) -> str:
    """Weights for ``model`` from ``path``; returns a line saying what was loaded and what was left new.

    ``path`` is a run of ours (its ``best.pt``, or that file: every tensor whose name and shape match is loaded, as
    when fine-tuning a synthetic-pretrained run on real data) or a state dict of the backbone's own architecture,
    as torchvision publishes them (``resnet18-*.pth``, ``r2plus1d_18-*.pth``): then every tensor of
    ``model.backbone`` must come from the file, or it is refused by name; the file's classifier is not used.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    state = load_state_dict_file(path)
    if "model" in state and isinstance(state["model"], dict):  # a checkpoint of bin/train
        return load_init(model, path, option="--pretrained")
    if not hasattr(model, "backbone"):
        raise DataError(path, f"a backbone state dict, but this {type(model).__name__} has no pretrainable backbone")
    return load_backbone(model.backbone, state, path)


def load_state_dict_file(path: Path) -> dict:
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            problem = "reading .safetensors needs the safetensors package (pip install safetensors)"
            raise DataError(path, problem) from None
        try:
            return load_file(str(path))
        except Exception as err:  # noqa: BLE001 - any failure of a foreign file is reported by name
            raise DataError(path, f"not a readable .safetensors file ({err})") from None
    return load_checkpoint(path)


def load_backbone(backbone: nn.Module, state: dict, path: Path) -> str:
    own = backbone.state_dict()
    kind = getattr(backbone, "architecture", type(backbone).__name__)
    first_conv = next(key for key, tensor in own.items() if tensor.dim() >= 4)
    loaded, adapted = {}, ""
    for key, target in own.items():
        source = state.get(key)
        if not isinstance(source, torch.Tensor):
            continue
        if source.shape == target.shape:
            loaded[key] = source
        elif key == first_conv and source.shape[:1] + source.shape[2:] == target.shape[:1] + target.shape[2:]:
            # TSN's cross-modality initialisation: an RGB filter averaged over its colour channels, replicated over
            # the 2L channels of stacked flow (or whatever the input has).
            loaded[key] = source.mean(1, keepdim=True).expand_as(target).clone()
            adapted = f"; {key} averaged over its {source.shape[1]} input channels and replicated to {target.shape[1]}"
    # BatchNorm's batch counters are bookkeeping: older official checkpoints do not carry them.
    missing = [k for k in own if k not in loaded and not k.endswith("num_batches_tracked")]
    if missing:
        example = missing[0]
        found = tuple(state[example].shape) if isinstance(state.get(example), torch.Tensor) else "absent"
        raise DataError(
            path,
            f"does not fit this {kind} backbone: {len(missing)} of {len(own)} "
            f"tensors missing or of another shape (first: {example} {tuple(own[example].shape)}, "
            f"file: {found})",
        )
    unused = [k for k in state if k not in own]
    extra = [k for k in unused if not k.startswith(CLASSIFIER_PREFIXES)]
    if extra:  # e.g. a ResNet-34 file holds every ResNet-18 tensor, and 50 more
        raise DataError(
            path,
            f"is another architecture than this {kind} backbone: {len(extra)} "
            f"of its tensors have no place here (first: {extra[0]})",
        )
    backbone.load_state_dict({**own, **loaded})
    left = f"; not used from the file: {', '.join(unused[:4])}{' ...' if len(unused) > 4 else ''}" if unused else ""
    return (
        f"--pretrained {path}: loaded {len(loaded)} of {len(own)} backbone tensors{adapted}{left}; "
        "left new: the classifier"
    )


def torchvision_weights_url(name: str) -> str:
    """The download address of one of torchvision's published weights, by its enum name
    (``ResNet18_Weights.IMAGENET1K_V1``, ``R2Plus1D_18_Weights.KINETICS400_V1`` ...)."""
    from torchvision.models import get_weight

    try:
        return get_weight(name).url
    except (ValueError, KeyError, AttributeError):
        raise ValueError(
            f"--weights {name}: not one of torchvision's weight names (e.g. ResNet18_Weights.IMAGENET1K_V1, "
            "R2Plus1D_18_Weights.KINETICS400_V1)"
        ) from None


def cached_download(url: str, cache_dir: str | Path | None = None) -> Path:
    """The file at ``url`` in the cache folder (torch's, ``$TORCH_HOME/hub/checkpoints``, unless given): downloaded
    once, then checked on every use against the SHA-256 prefix its published name carries (``resnet18-f37072fd.pth``),
    so a truncated or tampered file is refused by name. A machine without the network gets a one-line error saying
    to pass the file with ``--pretrained PATH``, the offline path."""
    import hashlib
    import re
    from urllib.parse import urlparse

    folder = Path(cache_dir) if cache_dir else Path(torch.hub.get_dir()) / "checkpoints"
    filename = Path(urlparse(url).path).name
    match = re.search(r"-([a-f0-9]{8,})\.", filename)
    if not match:
        raise ValueError(f"{url}: its file name carries no checksum (name-<sha256 prefix>.pth)")
    path = folder / filename
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(url, str(path), hash_prefix=match.group(1), progress=True)
        except RuntimeError as err:  # the hash check of the download
            raise DataError(path, f"downloaded from {url} but {err}") from None
        except OSError as err:
            raise DataError(
                path, f"cannot download {url} ({err}); offline, pass the file with --pretrained PATH"
            ) from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if not digest.startswith(match.group(1)):
        raise DataError(
            path, f"checksum {digest[:12]}… does not match the published {match.group(1)}: delete it and retry"
        )
    return path


IMAGENET_FILES = {"mobilenet_v2": ("DANCE_MOBILENET_V2", "mobilenet_v2_imagenet_features.pth")}
IMAGENET_WEIGHTS = {"mobilenet_v2": "MobileNet_V2_Weights.IMAGENET1K_V1"}


def imagenet_weights(preset: str, *, download: bool = True) -> Path:
    """The ImageNet weights of a torchvision preset (``--pretrained imagenet``): $DANCE_MOBILENET_V2 > the shared
    assets (``mobilenet_v2_imagenet_features.pth``) > torchvision's published file in torch's cache > its download
    (checksummed; online only). Offline with none of these, a one-line error says where it looked."""
    from preprocess.model_files import find_model_file

    if preset not in IMAGENET_FILES:
        raise DataError(preset, f"--pretrained imagenet: no ImageNet weights are known for preset {preset}")
    env, name = IMAGENET_FILES[preset]
    path, tried = find_model_file(None, env, name, kind=f"ImageNet {preset} weights")  # $env > shared > user cache
    if path is not None:
        return path.resolve()
    url = torchvision_weights_url(IMAGENET_WEIGHTS[preset])
    published = Path(torch.hub.get_dir()) / "checkpoints" / Path(url).name  # torchvision's own file, if downloaded
    if published.is_file():
        return published.resolve()
    tried.append(str(published))
    if download:
        try:
            return cached_download(url)
        except DataError:
            pass
    raise DataError(
        name,
        f"no ImageNet {preset} weights for --pretrained imagenet (the default of --preset {preset}): set ${env} to "
        f"the file, or pass --pretrained none to train from scratch, or --preset small (looked in: "
        f"{'; '.join(tried)}; no download)",
    )


# Input statistics that travel with the weights (torchvision's ``weights.transforms()`` say the same).
OUR_STATS = {"mean": [0.45, 0.45, 0.45], "std": [0.225, 0.225, 0.225]}  # our own backbones, trained from scratch
IMAGENET_STATS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
KINETICS_STATS = {"mean": [0.43216, 0.394666, 0.37645], "std": [0.22803, 0.22145, 0.216989]}


def input_normalization(config: dict) -> dict:
    """The RGB mean and std a run's network expects, from where its weights come: torchvision's published weights
    by name carry their own (``--weights``); a torchvision state dict (``--pretrained``) is ImageNet's for a 2D
    preset and Kinetics-400's for a video one; a run of ours passes its own on; anything else (scratch, ``--init``)
    is ours. ``{"mean", "std", "from"}``."""
    from .models.cnn2d import TORCHVISION_2D
    from .models.cnn3d import TORCHVISION_3D

    if config.get("weights"):
        from torchvision.models import get_weight

        try:
            transform = get_weight(config["weights"]).transforms()
        except (ValueError, KeyError, AttributeError):
            torchvision_weights_url(config["weights"])  # the named one-line error
            raise
        return {"mean": list(transform.mean), "std": list(transform.std), "from": config["weights"]}
    if config.get("pretrained") == "imagenet":
        return {**IMAGENET_STATS, "from": "ImageNet (torchvision state dict)"}
    if config.get("pretrained") not in (None, "none"):
        path = Path(config["pretrained"])
        run = path if path.is_dir() else path.parent
        if (run / "config.json").is_file() and (path.is_dir() or path.suffix == ".pt"):
            saved = json.loads((run / "config.json").read_text(encoding="utf-8"))
            if saved.get("normalize"):
                return {**saved["normalize"], "from": f"run {run}"}
            return {**OUR_STATS, "from": f"run {run}"}
        if config.get("preset") in TORCHVISION_2D:
            return {**IMAGENET_STATS, "from": "ImageNet (torchvision state dict)"}
        if config.get("preset") in TORCHVISION_3D:
            return {**KINETICS_STATS, "from": "Kinetics-400 (torchvision state dict)"}
    return {**OUR_STATS, "from": "ours (no pretrained weights)"}
