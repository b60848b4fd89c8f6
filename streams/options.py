"""The options of one stream's training, shared by ``bin/train`` and ``bin/crossval`` (one name, one default)."""

from __future__ import annotations

import click

from .models import PRESETS_2D, PRESETS_3D
from .registry import DEFAULTS

D = DEFAULTS


def train_options(command):
    """Decorate a click command with every training option (keyword names as in ``streams.train.DEFAULTS``)."""
    for option in reversed(OPTIONS):
        command = option(command)
    return command


def typed_options(options: dict) -> tuple[dict, set[str]]:
    """(the options the user typed, their names): what a command passes on, so that every other option takes the
    stream's own default and a typed option the stream does not take is refused by name (streams.registry)."""
    from click.core import ParameterSource

    context = click.get_current_context()
    given = {k for k in options if context.get_parameter_source(k) not in (None, ParameterSource.DEFAULT)}
    return {k: v for k, v in options.items() if k in given}, given


def _choice(name: str, choices, help: str | None) -> click.option:
    """An option of fixed choices whose default is DEFAULTS' (its name without the dashes, dashes as underscores)."""
    return click.option(
        name, type=click.Choice(choices), default=D[name[2:].replace("-", "_")], show_default=True, help=help
    )


OPTIONS = [
    click.option("--epochs", type=int, default=D["epochs"], show_default=True),
    click.option("--batch-size", type=int, default=D["batch_size"], show_default=True),
    click.option(
        "--lr",
        type=float,
        default=D["lr"],
        help="Default: 1e-4 for a backbone that starts from ImageNet weights (flow's default), else 1e-3.",
    ),
    _choice(
        "--optimizer",
        ["adamw", "sgd"],
        "AdamW, or SGD with Nesterov momentum 0.9.",
    ),
    _choice("--schedule", ["cosine", "step"], None),
    click.option("--weight-decay", type=float, default=D["weight_decay"], show_default=True),
    click.option(
        "--dropout",
        type=float,
        default=D["dropout"],
        help="Dropout before the classifier. Default: the stream's own (0.5 for CNNs, 0.3 for sequence heads: pose, "
        "rgb --arch sequence, features; 0.1 for ST-GCN).",
    ),
    _choice(
        "--class-weights",
        ["balanced", "none"],
        "Loss weight per class: balanced = inverse frequency in the training videos (1 on a balanced set).",
    ),
    click.option("--label-smoothing", type=float, default=D["label_smoothing"], show_default=True),
    click.option(
        "--patience",
        type=int,
        default=D["patience"],
        show_default=True,
        help="Stop after this many epochs without a better validation macro-F1.",
    ),
    click.option(
        "--min-epoch-clips",
        type=int,
        default=D["min_epoch_clips"],
        show_default=True,
        help="A smaller training set is repeated (with fresh augmentation) to at least this many clips an epoch.",
    ),
    click.option("--seed", type=int, default=D["seed"], show_default=True),
    click.option(
        "--tensorboard",
        is_flag=True,
        help="Also log each epoch's metrics to RUN/tensorboard (pip install tensorboard).",
    ),
    click.option(
        "--workers",
        type=click.IntRange(min=0),
        default=D["workers"],
        help="Data-loader worker processes (default: on CUDA, the cores per GPU up to 8; on CPU 0, the model's "
        "threads use every core and the preprocessed arrays load cheaply).",
    ),
    click.option(
        "--device", default=D["device"], show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:1 ..."
    ),
    click.option(
        "--views",
        type=int,
        default=D["views"],
        show_default=True,
        help="Views per video at evaluation, averaged (multi-view testing).",
    ),
    click.option("--vote", is_flag=True, help="Plurality vote over views instead of averaging (Castro's protocol)."),
    click.option(
        "--preset",
        type=click.Choice([*PRESETS_2D, *PRESETS_3D[1:]]),
        default=None,
        help="Backbone: small/medium (ours, CPUs) or torchvision's resnet18/34/50, mobilenet_v2 (rgb, flow; "
        "starts from ImageNet: --pretrained); small or torchvision's r3d_18, r2plus1d_18, mc3_18, s3d (rgb --arch "
        "3d). Default: mobilenet_v2 for flow, small for the others.",
    ),
    _choice(
        "--arch",
        ["tsn", "3d", "sequence"],
        "rgb: a 2D CNN with segment consensus (tsn), a 3D CNN over one short clip, or a CNN-LSTM (sequence: "
        "the CNN on --frames frames, then --head over them).",
    ),
    click.option(
        "--clip-len", type=int, default=D["clip_len"], show_default=True, help="Frames per 3D clip (rgb --arch 3d)."
    ),
    click.option(
        "--frame-stride",
        type=int,
        default=D["frame_stride"],
        show_default=True,
        help="Frames between 3D clip frames (rgb --arch 3d).",
    ),
    click.option("--segments", type=int, default=D["segments"], show_default=True, help="TSN segments (rgb, flow)."),
    click.option("--stack", type=int, default=D["stack"], show_default=True, help="Stacked flow fields L (flow)."),
    click.option("--size", type=int, default=D["size"], show_default=True, help="Input crop size (rgb, flow)."),
    click.option(
        "--sample-fps",
        type=float,
        default=D["sample_fps"],
        help="Rate at which clips are sampled in time, whatever each video's own frame rate (windows, stacks and "
        "strides are in samples at this rate). Default: the median frame rate of the training videos.",
    ),
    click.option(
        "--frames",
        type=int,
        default=D["frames"],
        show_default=True,
        help="Frames per sequence (pose; rgb --arch sequence; features, features-pose: one per equal segment of "
        "the clip).",
    ),
    _choice(
        "--head",
        ["tcn", "lstm", "lstm_attention", "stgcn"],
        "Temporal model (pose, rgb --arch sequence, features, features-pose).",
    ),
    _choice(
        "--pose-input",
        ["joint", "bone", "motion"],
        "pose --head stgcn: joints, bones (joint minus its parent in the COCO tree) or motion (frame "
        "difference); train one run each and fuse them (the joint/bone ensemble).",
    ),
    _choice(
        "--skeleton-augment",
        ["light", "strong"],
        "pose: light = scale jitter and flip; strong = also rotation ±15°, shear ±0.15, scale ±15 % and "
        "dropping a dancer (p 0.15).",
    ),
    _choice(
        "--pose-sampling",
        ["window", "uniform"],
        "pose: one window of --frames consecutive samples, or --frames instants spread over the whole clip "
        "(pyskl's UniformSample).",
    ),
    click.option(
        "--features",
        default=D["features"],
        show_default=True,
        help="Cached embeddings to train on (features, features-pose): the NAME of bin/extract-features.",
    ),
    click.option(
        "--init",
        type=click.Path(exists=True, dir_okay=False),
        default=None,
        help="Start from the matching tensors of this state dict.",
    ),
    click.option(
        "--pretrained",
        default=None,
        help="Backbone weights: imagenet (the preset's ImageNet file: $DANCE_MOBILENET_V2, ../shared/models, "
        "torch's cache, else its download), a state dict of the preset's torchvision architecture (.pth, "
        ".safetensors), every backbone tensor used (flow: TSN cross-modality first layer), a run of ours (its "
        "best.pt), or none (from scratch). Default: imagenet for mobilenet_v2, none for the others.",
    ),
    click.option(
        "--weights",
        default=D["weights"],
        help="torchvision's published weights by name (ResNet18_Weights.IMAGENET1K_V1, "
        "R2Plus1D_18_Weights.KINETICS400_V1 ...): downloaded once into torch's cache ($TORCH_HOME) and checked "
        "against their checksum. Needs the network; offline, use --pretrained PATH.",
    ),
    click.option(
        "--human-mask-confusion",
        type=float,
        default=D["human_mask_confusion"],
        show_default=True,
        help="rgb, flow: weight λ of the human-mask confusion loss (Choi et al. 2019): every training clip also "
        "goes through the network with each tracked person hidden (WORK/pose's boxes), and λ · KL(its prediction ‖ "
        "uniform) is added, so that the venue left visible cannot name the style. 0: off; needs WORK/pose.",
    ),
    click.option(
        "--scene-adversary",
        type=float,
        default=D["scene_adversary"],
        show_default=True,
        help="rgb, flow: weight λ of a scene-adversarial head (gradient reversal): it learns to tell a clip's group "
        "(source video, performer) from the features, within the clip's class, and the backbone is pushed to "
        "features that cannot; only classes with training clips of several groups count. 0: off.",
    ),
    click.option(
        "--background-erasing",
        type=float,
        default=D["background_erasing"],
        show_default=True,
        help="rgb: probability that a training clip gets a random frame of its video blended into every frame "
        "(weight 0-0.5, label kept; Wang et al. 2021), so that the static scene stops telling the class. 0: off.",
    ),
    click.option(
        "--partial-bn/--no-partial-bn",
        default=None,
        help="TSN partial BN: freeze the statistics of every BatchNorm layer but the first. Default: on for a "
        "backbone that starts from ImageNet weights, else off.",
    ),
]
