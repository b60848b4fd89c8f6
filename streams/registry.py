"""The streams a run can train, one small spec per variant: the only place a stream's identity is worked out.

::

    bin/train STREAM [options] ──resolve──► StreamSpec (rgb-tsn, flow, pose-stgcn-bone, ...)
                                              │  name in fusion, preprocessing stages it reads
                                              │  options: a frozen dataclass (defaults, validation)
                                              ├─ create_dataset(work, split, config, ...) → clip dataset
                                              └─ create_model(config, num_classes)        → nn.Module

A variant is chosen by the stream and its selecting options (rgb ``--arch``; pose ``--head`` and ``--pose-input``).
An option the variant does not take is refused by name; no value is changed behind the user's back: a variant's
defaults (dropout 0.5 for CNNs, 0.3 for sequence heads, 0.1 for ST-GCN) are its own, and a value given is the value
used and recorded. ``run_config`` gives a run's whole config, typed (``RunConfig``: the spec, its
``TrainingOptions``, the variant's options dataclass, what the run sets); ``config.json`` is its serialisation
(``RunConfig.as_dict``, read back by ``RunConfig.from_saved``; ``resolve_config`` gives that dict).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from .checkpoints import IMAGENET_FILES
from .models import PRESETS_2D, PRESETS_3D, SEQUENCE_HEADS

STREAMS = ("rgb", "flow", "pose", "features", "features-pose")
POSE_HEADS = ("tcn", "lstm", "lstm_attention")


def _range(low=None, high=None, *, open_high=False, choices=None, optional=False):
    """Field metadata: the values an option takes (checked when a config is resolved)."""
    return {"low": low, "high": high, "open_high": open_high, "choices": choices, "optional": optional}


class OptionError(ValueError):
    """An option out of range, or one the stream does not take: ``--name value: problem`` in one line."""


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclass(frozen=True)
class Options:
    """Base of every options dataclass: each field's metadata says what values it takes."""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            rule, value = f.metadata, getattr(self, f.name)
            if not rule:
                continue
            if value is None and rule["optional"]:
                continue
            if rule["choices"] is not None:
                if value not in rule["choices"]:
                    raise OptionError(f"{_flag(f.name)} {value}: choose from {', '.join(map(str, rule['choices']))}")
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise OptionError(f"{_flag(f.name)} {value}: not a finite number")
            if rule["low"] is not None and value < rule["low"]:
                raise OptionError(f"{_flag(f.name)} {value}: must be at least {rule['low']}")
            high = rule["high"]
            if high is not None and (value >= high if rule["open_high"] else value > high):
                raise OptionError(
                    f"{_flag(f.name)} {value}: must be {'below' if rule['open_high'] else 'at most'} {high}"
                )


@dataclass(frozen=True)
class TrainingOptions(Options):
    """What every stream's training takes."""

    epochs: int = field(default=20, metadata=_range(1))
    batch_size: int = field(default=16, metadata=_range(1))
    lr: float | None = field(default=None, metadata=_range(1e-12, optional=True))  # None: see backbone_start
    optimizer: str = field(default="adamw", metadata=_range(choices=("adamw", "sgd")))
    schedule: str = field(default="cosine", metadata=_range(choices=("cosine", "step")))
    weight_decay: float = field(default=1e-4, metadata=_range(0))
    label_smoothing: float = field(default=0.1, metadata=_range(0, 1, open_high=True))
    patience: int = field(default=6, metadata=_range(1))
    seed: int = 0
    workers: int | None = field(default=None, metadata=_range(0, optional=True))  # None: streams.train.loader_workers
    device: str = "auto"
    views: int = field(default=3, metadata=_range(1))
    vote: bool = False
    min_epoch_clips: int = field(default=200, metadata=_range(1))
    sample_fps: float | None = field(default=None, metadata=_range(1e-3, optional=True))
    class_weights: str = field(default="balanced", metadata=_range(choices=("balanced", "none")))
    exclude: tuple = ()
    tensorboard: bool = False
    init: str | None = None


def _dropout(default: float):
    return field(default=default, metadata=_range(0, 1, open_high=True))


# The presets whose ImageNet weights are found without the network (streams.checkpoints.imagenet_weights): for
# them --pretrained defaults to "imagenet".
IMAGENET_OFFLINE = tuple(IMAGENET_FILES)
SCRATCH_LR, FINE_TUNE_LR = 1e-3, 1e-4


@dataclass(frozen=True)
class BackboneOptions(Options):
    """A 2D or 3D CNN's: its preset, input size and where its weights come from (``pretrained``: a file, a run of
    ours, ``imagenet`` or ``none``; None is the preset's default, see ``backbone_start``)."""

    preset: str = field(default="small", metadata=_range(choices=PRESETS_2D))
    size: int = field(default=112, metadata=_range(8))
    pretrained: str | None = None
    weights: str | None = None
    partial_bn: bool | None = None
    # The human-mask confusion loss (Choi et al., NeurIPS 2019): each training clip also goes through the network with
    # every tracked person hidden, and loss += λ · KL(prediction on it ‖ uniform): what is left (the venue, the
    # crowd, the camera's motion) must not name the style. 0: off. Needs WORK/pose (else off, said once).
    human_mask_confusion: float = field(default=0.0, metadata=_range(0))
    # A scene adversary (streams.adversary): a group head through gradient reversal of this weight, within classes
    # that have clips of several groups. 0: off.
    scene_adversary: float = field(default=0.0, metadata=_range(0))

    def __post_init__(self):
        super().__post_init__()
        if self.pretrained and self.pretrained != "none" and self.weights:
            raise OptionError("give --weights NAME or --pretrained PATH, not both")


@dataclass(frozen=True)
class RGBBackboneOptions(BackboneOptions):
    """An RGB backbone's: also background erasing (``streams.data.RGBSegments.erase_background``), the probability
    that a training clip gets one of its video's frames blended into all of its frames; 0: off."""

    background_erasing: float = field(default=0.0, metadata=_range(0, 1))


@dataclass(frozen=True)
class TSNOptions(RGBBackboneOptions):
    arch: str = field(default="tsn", metadata=_range(choices=("tsn",)))
    segments: int = field(default=3, metadata=_range(1))
    dropout: float = _dropout(0.5)


@dataclass(frozen=True)
class Clip3DOptions(RGBBackboneOptions):
    arch: str = field(default="3d", metadata=_range(choices=("3d",)))
    preset: str = field(default="small", metadata=_range(choices=PRESETS_3D))
    clip_len: int = field(default=8, metadata=_range(1))
    frame_stride: int = field(default=2, metadata=_range(1))
    dropout: float = _dropout(0.5)


@dataclass(frozen=True)
class CNNSequenceOptions(RGBBackboneOptions):
    arch: str = field(default="sequence", metadata=_range(choices=("sequence",)))
    frames: int = field(default=32, metadata=_range(1))
    head: str = field(default="tcn", metadata=_range(choices=SEQUENCE_HEADS))
    dropout: float = _dropout(0.3)


@dataclass(frozen=True)
class FlowOptions(BackboneOptions):
    # ImageNet's MobileNetV2 through TSN's cross-modality first layer: the measured winner on sources the network
    # never saw (street dance 45.5 -> 63.6 %, Weizmann 87.5 -> 95.8 %; BENCHMARKS.md, issue 20)
    preset: str = field(default="mobilenet_v2", metadata=_range(choices=PRESETS_2D))
    segments: int = field(default=3, metadata=_range(1))
    stack: int = field(default=5, metadata=_range(1))
    dropout: float = _dropout(0.5)


@dataclass(frozen=True)
class SkeletonOptions(Options):
    frames: int = field(default=32, metadata=_range(1))
    skeleton_augment: str = field(default="light", metadata=_range(choices=("light", "strong")))
    pose_sampling: str = field(default="window", metadata=_range(choices=("window", "uniform")))


@dataclass(frozen=True)
class PoseHeadOptions(SkeletonOptions):
    head: str = field(default="tcn", metadata=_range(choices=POSE_HEADS))
    dropout: float = _dropout(0.3)


@dataclass(frozen=True)
class STGCNOptions(SkeletonOptions):
    head: str = field(default="stgcn", metadata=_range(choices=("stgcn",)))
    pose_input: str = field(default="joint", metadata=_range(choices=("joint", "bone", "motion")))
    dropout: float = _dropout(0.1)


@dataclass(frozen=True)
class FeatureSequenceOptions(Options):
    features: str = "resnet18"
    frames: int = field(default=32, metadata=_range(1))
    head: str = field(default="tcn", metadata=_range(choices=SEQUENCE_HEADS))
    dropout: float = _dropout(0.3)


@dataclass(frozen=True)
class StreamSpec:
    """One stream variant."""

    name: str  # the variant: rgb-tsn, pose-stgcn-bone, ...
    stream: str  # bin/train's STREAM
    fusion_name: str  # what its scores are called in fusion (pose-lstm, pose-stgcn-bone, rgb, ...)
    stages: tuple[str, ...]  # the preprocessing stages of WORK it reads (features: WORK/features/<name>)
    options: type[Options]
    create_dataset: Callable
    create_model: Callable
    # a 2D RGB backbone applied frame by frame, whose embeddings bin/extract-features can take
    frame_backbone: bool = False
    saliency: str | None = None  # what bin/inspect draws: "2d" (Grad-CAM, guided backprop), "pose" (keypoints)

    def option_names(self) -> set[str]:
        return {f.name for f in dataclasses.fields(self.options)} | TRAINING_NAMES


TRAINING_NAMES = {f.name for f in dataclasses.fields(TrainingOptions)}


# ---- the builders each spec points at (datasets and models stay in their own modules) --------------------------


def _common(config: RunConfig, train: bool, views: int, seed: int, video_ids) -> dict:
    return dict(train=train, views=views, seed=seed, video_ids=video_ids, sample_fps=config.training.sample_fps)


def _rgb_normalization(config: RunConfig) -> dict:
    from .data import RGB_MEAN, RGB_STD

    norm = config.normalize or {"mean": RGB_MEAN.tolist(), "std": RGB_STD.tolist()}
    return {"mean": norm["mean"], "std": norm["std"]}


def _dataset(class_name: str, *, rgb: bool = False, fixed: dict | None = None, **from_config: str):
    """A dataset builder: ``streams.data.<class_name>`` with each keyword given the value of the variant's option
    named (``segments="frames"``: the dataset's segments are the run's --frames), ``fixed`` ones as they are, and
    for RGB the input statistics of the run's weights."""

    def create(work, split, config: RunConfig, *, train, views=1, seed=0, video_ids=None):
        from . import data

        kwargs = {name: getattr(config.options, option) for name, option in from_config.items()}
        if rgb:
            kwargs.update(_rgb_normalization(config))
        return getattr(data, class_name)(
            work, split, **kwargs, **(fixed or {}), **_common(config, train, views, seed, video_ids)
        )

    return create


def _rgb_model(config: RunConfig, num_classes: int):
    from .models import create_rgb_model

    return create_rgb_model(num_classes=num_classes, preset=config.options.preset, dropout=config.options.dropout)


def _rgb3d_model(config: RunConfig, num_classes: int):
    from .models import create_rgb3d_model

    return create_rgb3d_model(num_classes=num_classes, preset=config.options.preset, dropout=config.options.dropout)


def _cnn_sequence_model(config: RunConfig, num_classes: int):
    from .models import create_cnn_lstm_model

    return create_cnn_lstm_model(
        num_classes=num_classes, preset=config.options.preset, head=config.options.head, dropout=config.options.dropout
    )


def _flow_model(config: RunConfig, num_classes: int):
    from .models import create_flow_model

    return create_flow_model(
        num_classes=num_classes,
        stack=config.options.stack,
        preset=config.options.preset,
        dropout=config.options.dropout,
    )


def _pose_model(config: RunConfig, num_classes: int):
    from .data import POSE_FEATURES
    from .models import create_pose_model

    return create_pose_model(
        num_classes=num_classes, features=POSE_FEATURES, head=config.options.head, dropout=config.options.dropout
    )


def _stgcn_model(config: RunConfig, num_classes: int):
    from .models import create_stgcn_model

    return create_stgcn_model(num_classes=num_classes, inputs=config.options.pose_input, dropout=config.options.dropout)


def _sequence_model(config: RunConfig, num_classes: int):
    from .models import create_sequence_model

    return create_sequence_model(
        num_classes=num_classes,
        features=config.input_features,
        head=config.options.head,
        dropout=config.options.dropout,
    )


_POSE_DATASET = _dataset("PoseSequences", frames="frames", augment="skeleton_augment", sampling="pose_sampling")


_RGB_SEGMENTS = _dataset(
    "RGBSegments", rgb=True, segments="segments", size="size", background_erasing="background_erasing"
)
_RGB_CLIPS = _dataset(
    "RGBClips",
    rgb=True,
    clip_len="clip_len",
    frame_stride="frame_stride",
    size="size",
    background_erasing="background_erasing",
)
# one frame per --frames instant
_RGB_SEQUENCE = _dataset(
    "RGBSegments", rgb=True, segments="frames", size="size", background_erasing="background_erasing"
)
_FLOW_STACKS = _dataset("FlowStacks", segments="segments", stack="stack", size="size")
_FEATURES = _dataset("FeatureSequences", fixed={"pose": False}, features="features", frames="frames")
_FEATURES_POSE = _dataset("FeatureSequences", fixed={"pose": True}, features="features", frames="frames")


def _specs() -> dict[str, StreamSpec]:
    # One row per variant: name, bin/train STREAM, name in fusion, stages read, options, dataset, model, extras.
    # fmt: off
    specs = [
        StreamSpec("rgb-tsn", "rgb", "rgb", ("frames",), TSNOptions, _RGB_SEGMENTS, _rgb_model,
                   frame_backbone=True, saliency="2d"),
        StreamSpec("rgb-3d", "rgb", "rgb", ("frames",), Clip3DOptions, _RGB_CLIPS, _rgb3d_model),
        StreamSpec("rgb-sequence", "rgb", "rgb", ("frames",), CNNSequenceOptions, _RGB_SEQUENCE, _cnn_sequence_model,
                   frame_backbone=True),
        StreamSpec("flow", "flow", "flow", ("flow",), FlowOptions, _FLOW_STACKS, _flow_model, saliency="2d"),
        *(StreamSpec(f"pose-{head}", "pose", "pose" if head == "tcn" else f"pose-{head}", ("pose",),
                     PoseHeadOptions, _POSE_DATASET, _pose_model, saliency="pose") for head in POSE_HEADS),
        *(StreamSpec(f"pose-stgcn-{inputs}", "pose", "pose-stgcn" if inputs == "joint" else f"pose-stgcn-{inputs}",
                     ("pose",), STGCNOptions, _POSE_DATASET, _stgcn_model, saliency="pose")
          for inputs in ("joint", "bone", "motion")),
        StreamSpec("features", "features", "features", ("features",), FeatureSequenceOptions, _FEATURES,
                   _sequence_model),
        StreamSpec("features-pose", "features-pose", "features-pose", ("features", "pose"), FeatureSequenceOptions,
                   _FEATURES_POSE, _sequence_model),
    ]
    # fmt: on
    return {s.name: s for s in specs}


SPECS = _specs()


def variant_of(stream: str, config: dict) -> str:
    """The variant a stream and its selecting options name (rgb: --arch; pose: --head, --pose-input)."""
    if stream not in STREAMS:
        raise OptionError(f"unknown stream {stream!r}: {', '.join(STREAMS)}")
    if stream == "rgb":
        arch = config.get("arch") or "tsn"
        if arch not in ("tsn", "3d", "sequence"):
            raise OptionError(f"--arch {arch}: choose from tsn, 3d, sequence")
        return f"rgb-{arch}"
    if stream == "pose":
        head = config.get("head") or "tcn"
        pose_input = config.get("pose_input") or "joint"
        if head == "stgcn":
            return f"pose-stgcn-{pose_input}"
        if pose_input != "joint":
            raise OptionError(f"--pose-input {pose_input} needs --head stgcn")
        if head not in POSE_HEADS:
            raise OptionError(f"--head {head}: pose takes {', '.join((*POSE_HEADS, 'stgcn'))}")
        return f"pose-{head}"
    return stream


def spec_of(config: dict) -> StreamSpec:
    """The spec of a run's config (``config.json`` of any release: older ones record every option)."""
    variant = config.get("variant")
    if variant in SPECS:
        return SPECS[variant]
    return SPECS[variant_of(config["stream"], config)]


# Set by the run, not by the user: recorded in config.json beside the options.
SET_BY_RUN = ("work", "run", "input_features", "normalize")
DERIVED = ("stream", "variant", *SET_BY_RUN)


def resolve_config(config: dict, *, given=()) -> dict:
    """The whole config of a run of ``config["stream"]`` as ``config.json`` records it (``RunConfig.as_dict``)."""
    return run_config(config, given=given).as_dict()


def run_config(config: Mapping, *, given=()) -> RunConfig:
    """The typed config of a run of ``config["stream"]``: the variant's options with its defaults filled in,
    checked, and nothing else. An option the variant does not take is refused by name: always when it is among
    ``given`` (the options a user typed), else unless it is at its general default (an API caller passing every
    key of ``DEFAULTS``, as every command did before the registry)."""
    if isinstance(config, RunConfig):
        return config
    spec = SPECS[variant_of(config["stream"], config)]
    names = spec.option_names()
    for key, value in config.items():
        if key in names or key in DERIVED:
            continue
        if key not in given and key in DEFAULTS and _same(value, DEFAULTS[key]):
            continue  # a caller passing every option at its general default
        if key in DEFAULTS:
            raise OptionError(f"{_flag(key)} {value}: the {spec.name} stream does not take it")
        raise OptionError(f"unknown option {key!r} for the {spec.name} stream")
    own = {k: v for k, v in config.items() if k in names}
    for key in ("dropout", "preset"):  # None: the variant's own default
        if own.get(key) is None:
            own.pop(key, None)
    if "exclude" in own:
        own["exclude"] = tuple(own["exclude"] or ())
    variant = spec.options(**{k: v for k, v in own.items() if k not in TRAINING_NAMES})
    variant, lr = backbone_start(variant, own.get("lr"))
    training = TrainingOptions(**{**{k: v for k, v in own.items() if k in TRAINING_NAMES}, "lr": lr})
    derived = {k: config[k] for k in RunConfig.SET_BY_RUN if k in config}
    return RunConfig(spec, training, variant, **derived)


@dataclass(frozen=True)
class RunConfig(Mapping):
    """A run's configuration, typed: which variant, how it trains, the variant's own options, and what the run
    itself sets. ``config.json`` is its serialisation (``as_dict``: one flat key per option); code not yet reading
    the fields reads that view by key (it is a read-only Mapping). ::

        run_config({"stream": "flow", "work": ..., "lr": 1e-4})
          ├ spec        StreamSpec        flow: its name in fusion, the stages it reads, its builders
          ├ training    TrainingOptions   epochs, batch_size, lr, seed, workers, device, views, sample_fps ...
          ├ options     FlowOptions       preset, size, segments, stack, dropout, pretrained ... (the variant's)
          └ work, run, input_features, normalize     set by the run (paths; the data's feature size; RGB statistics)
    """

    spec: StreamSpec
    training: TrainingOptions
    options: Options
    work: str | None = None
    run: str | None = None
    input_features: int | None = None  # the features a sequence head reads (set from the data)
    normalize: dict | None = None  # {"mean", "std", "from"} of an RGB network's starting weights

    SET_BY_RUN = SET_BY_RUN

    @classmethod
    def from_saved(cls, saved: Mapping, source="config.json") -> RunConfig:
        """A trained run's config as ``config.json`` recorded it, read back without being resolved again (its
        weights' paths are the training machine's; a bundle adds its classes; a key an older release recorded
        and this one no longer has is ignored). A value this release does not accept is a named error."""
        try:
            spec = spec_of(dict(saved))
            own = {f.name for f in dataclasses.fields(spec.options)}
            training = {k: saved[k] for k in TRAINING_NAMES if k in saved}
            training["exclude"] = tuple(training.get("exclude") or ())
            options = {k: saved[k] for k in own if k in saved}
            derived = {k: saved[k] for k in cls.SET_BY_RUN if saved.get(k) is not None}
            return cls(spec, TrainingOptions(**training), spec.options(**options), **derived)
        except (KeyError, TypeError, ValueError) as error:
            from preprocess import DataError

            raise DataError(source, f"not a run config this release reads ({error})") from None

    @property
    def stream(self) -> str:
        return self.spec.stream

    @property
    def variant(self) -> str:
        return self.spec.name

    def replace(self, **changes) -> RunConfig:
        """A copy with some fields changed: training's and the variant's options by name, or what the run sets."""
        training = {k: changes.pop(k) for k in list(changes) if k in TRAINING_NAMES}
        own = {k: changes.pop(k) for k in list(changes) if k in {f.name for f in dataclasses.fields(self.options)}}
        return dataclasses.replace(
            self,
            training=dataclasses.replace(self.training, **training),
            options=dataclasses.replace(self.options, **own),
            **changes,
        )

    def as_dict(self) -> dict:
        """``config.json``: stream, variant, every training option, the variant's options, what the run set."""
        out = {
            "stream": self.stream,
            "variant": self.variant,
            **dataclasses.asdict(self.training),
            **dataclasses.asdict(self.options),
            **{k: getattr(self, k) for k in self.SET_BY_RUN if getattr(self, k) is not None},
        }
        out["exclude"] = list(out["exclude"])
        return out

    # the read-only Mapping of config.json's keys
    def __getitem__(self, key: str):
        return self.as_dict()[key]

    def __iter__(self):
        return iter(self.as_dict())

    def __len__(self) -> int:
        return len(self.as_dict())


def backbone_start(variant: Options, lr: float | None) -> tuple[Options, float]:
    """Where a backbone's weights come from when not said, and the learning rate and partial BN that go with it:
    a preset whose ImageNet weights are found offline (mobilenet_v2) starts from them (``pretrained="imagenet"``;
    ``none`` trains from scratch); a backbone that starts from ImageNet weights (``imagenet``, a torchvision file,
    ``--weights``) is fine-tuned at 1e-4 with partial BN (TSN's recipe: at 1e-3 AdamW wrecks the pretrained
    features within the first epochs), anything else trains at 1e-3 without. A value given is kept."""
    if not isinstance(variant, BackboneOptions):
        return variant, SCRATCH_LR if lr is None else lr
    pretrained = variant.pretrained
    if pretrained is None:
        pretrained = "imagenet" if variant.preset in IMAGENET_OFFLINE and not variant.weights else "none"
    if pretrained not in ("imagenet", "none") and not os.path.exists(pretrained):
        raise OptionError(f"--pretrained {pretrained}: no such file or run folder (or say imagenet, none)")
    if pretrained not in ("imagenet", "none"):
        pretrained = os.path.abspath(pretrained)  # (paths stored in a run's config are absolute)
    # a foreign state dict (a torchvision file) counts as ImageNet's; a run of ours (its folder, or its best.pt
    # beside its config.json) does not: it is fine-tuned as it was trained
    foreign_file = os.path.isfile(pretrained) and not os.path.isfile(
        os.path.join(os.path.dirname(pretrained), "config.json")
    )
    imagenet = bool(variant.weights) or pretrained == "imagenet" or foreign_file
    partial_bn = imagenet if variant.partial_bn is None else variant.partial_bn
    variant = dataclasses.replace(variant, pretrained=pretrained, partial_bn=partial_bn)
    return variant, (FINE_TUNE_LR if imagenet else SCRATCH_LR) if lr is None else lr


def _same(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return list(a) == list(b)
    return a == b


# Every option's general default (what a command shows; a variant's own default wins where it has one: dropout).
DEFAULTS: dict = {
    **{f.name: f.default for f in dataclasses.fields(TrainingOptions)},
    **{
        f.name: f.default
        for cls in (TSNOptions, Clip3DOptions, CNNSequenceOptions, FlowOptions, PoseHeadOptions, STGCNOptions)
        for f in dataclasses.fields(cls)
        if f.name not in ("arch", "head", "dropout")
    },
    "features": FeatureSequenceOptions.features,
    "preset": None,  # the variant's: mobilenet_v2 for flow, small for the others
    "arch": "tsn",
    "head": "tcn",
    "dropout": None,  # the variant's: 0.5 CNNs, 0.3 sequence heads, 0.1 ST-GCN
    "exclude": [],
}


def as_run_config(config: Mapping) -> RunConfig:
    """``config`` typed: a RunConfig as it is, a config.json dict (``resolve_config``'s) read back."""
    return config if isinstance(config, RunConfig) else RunConfig.from_saved(config)


def create_model(config: Mapping, num_classes: int):
    """The network of a run's config (a RunConfig or its config.json dict), untrained."""
    config = as_run_config(config)
    return config.spec.create_model(config, num_classes)


def create_dataset(config: Mapping, work, split: str, *, train: bool, views: int = 1, seed: int = 0, video_ids=None):
    """The clip dataset of a run's config (a RunConfig or its config.json dict) over ``work``'s ``split``."""
    config = as_run_config(config)
    return config.spec.create_dataset(work, split, config, train=train, views=views, seed=seed, video_ids=video_ids)
