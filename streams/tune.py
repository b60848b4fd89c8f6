"""Hyperparameter search for one stream with Optuna: ``bin/tune STREAM WORK OUT --trials N``.

::

    Optuna study (OUT/study.db, SQLite) ──TPE sampler──► a trial's options ──streams.train.train──► validation
         ▲                                                                                          macro-F1
         └─────────── per-epoch validation macro-F1 reported; the median pruner stops weak trials ◄──┘

Each trial is an ordinary ``bin/train`` run in ``OUT/trials/<number>`` on WORK's train split, early-stopped and
judged on its validation split; test is never evaluated (no trial writes test scores). The study lives in an SQLite
file, so rerunning the command continues it up to ``--trials`` finished trials, and several processes (or
machines sharing the file system) can work on one study at once. A trial killed mid-run is marked failed by its
missed heartbeats and retried once. When it stops, OUT holds the best configuration as JSON and as a ``bin/train``
command line, and a PNG of the optimisation history and the parameter importances.
"""

from __future__ import annotations

import json
import shlex
import warnings
from pathlib import Path

from preprocess.batch import folder_lock, write_json, write_text

from .registry import DEFAULTS
from .train import train

# option → (kind, choices or (low, high)); "log" is a log-uniform float, "float" uniform, "choice" categorical
COMMON_SPACE = {
    "lr": ("log", (1e-4, 3e-3)),
    "weight_decay": ("log", (1e-6, 1e-2)),
    "dropout": ("float", (0.0, 0.7)),
    "optimizer": ("choice", ["adamw", "sgd"]),
    "batch_size": ("choice", [8, 16, 32]),
    "label_smoothing": ("choice", [0.0, 0.1]),
}
STREAM_SPACE = {
    "rgb": {"segments": ("choice", [2, 3, 5]), "preset": ("choice", ["small", "medium"])},
    "flow": {
        "segments": ("choice", [2, 3, 5]),
        "stack": ("choice", [3, 5, 10]),
        "preset": ("choice", ["small", "medium"]),
    },
    "pose": {
        "head": ("choice", ["tcn", "lstm", "lstm_attention"]),
        "frames": ("choice", [16, 32, 48]),
        "pose_sampling": ("choice", ["window", "uniform"]),
        "skeleton_augment": ("choice", ["light", "strong"]),
    },
    "features": {"head": ("choice", ["lstm", "lstm_attention", "tcn"]), "frames": ("choice", [8, 16, 32])},
    "features-pose": {"head": ("choice", ["lstm", "lstm_attention", "tcn"]), "frames": ("choice", [8, 16, 32])},
}


def search_space(stream: str) -> dict:
    """The options a study of ``stream`` varies, and their ranges."""
    return {**COMMON_SPACE, **STREAM_SPACE[stream]}


def suggest(trial, stream: str) -> dict:
    options = {}
    for name, (kind, values) in search_space(stream).items():
        if kind == "log":
            options[name] = trial.suggest_float(name, *values, log=True)
        elif kind == "float":
            options[name] = trial.suggest_float(name, *values)
        else:
            options[name] = trial.suggest_categorical(name, values)
    return options


def command_line(stream: str, work: str, run: str, options: dict) -> str:
    """``bin/train`` with ``options`` (only those that differ from its defaults)."""
    words = ["bin/train", stream, work, run]
    for name, value in options.items():
        if name in DEFAULTS and DEFAULTS[name] == value:
            continue
        words += [
            f"--{name.replace('_', '-')}",
            repr(value) if isinstance(value, float) else str(value),
        ]  # every digit: rerunning gives the best trial's run
    return shlex.join(words)


def tune(stream: str, work: str, out: str, **options) -> dict:
    """Run (or continue) the study in OUT (see ``_tune``), one bin/tune per OUT at a time: the lock also proves
    that a trial the study lists as running was left by a killed process."""
    with folder_lock(out, "bin/tune"):
        return _tune(stream, work, out, **options)


def _tune(
    stream: str,
    work: str,
    out: str,
    *,
    trials: int,
    timeout: float | None = None,
    options: dict | None = None,
    seed: int = 0,
    log=print,
) -> dict:
    """Run (or continue) the study until ``trials`` trials have finished (completed or pruned) or ``timeout``
    seconds pass; returns the best trial's {number, value, params, command}."""
    try:
        from optuna.study import MaxTrialsCallback
    except ImportError:
        raise RuntimeError("bin/tune needs Optuna: pip install 'dance-streams[tune]'") from None
    from optuna.trial import TrialState

    out_dir = Path(out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    study = _open_study(out_dir, stream, seed, log)
    fixed = {**(options or {}), "stream": stream, "work": str(Path(work).resolve())}
    finished = (TrialState.COMPLETE, TrialState.PRUNED)
    done = len(study.get_trials(deepcopy=False, states=finished))
    if done < trials:
        log(f"study {out_dir / 'study.db'}: {done} trials finished, running up to {trials}")
        study.optimize(
            _objective(stream, out_dir, fixed, set(options or {}), log),
            n_trials=trials - done,
            timeout=timeout,
            callbacks=[MaxTrialsCallback(trials, states=finished)],
            catch=(),
        )
    completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not completed:
        raise RuntimeError(f"{out_dir / 'study.db'}: no trial completed")
    best = study.best_trial
    chosen = {**{k: v for k, v in fixed.items() if k not in ("stream", "work")}, **best.params}
    summary = {
        "stream": stream,
        "objective": "validation macro-F1 (test never evaluated)",
        "best_trial": best.number,
        "best_value": best.value,
        "params": best.params,
        "trials": {s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,))) for s in TrialState},
        "command": command_line(stream, fixed["work"], str(out_dir / "best_run"), chosen),
    }
    write_json(out_dir / "best.json", summary)
    write_text(out_dir / "best_command.sh", summary["command"] + "\n")
    _plot(study, out_dir / "study.png", stream)
    log(f"best: trial {best.number}, validation macro-F1 {best.value:.3f}; {out_dir / 'best.json'}")
    log(summary["command"])
    return summary


def _open_study(out_dir: Path, stream: str, seed: int, log):
    """The study of ``out_dir/study.db`` (made, or continued where a killed process left it)."""
    import optuna
    from optuna.storages import RDBStorage, RetryFailedTrialCallback
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():  # Optuna's notes on its own API's future are not for our users
        warnings.simplefilter("ignore")
        storage = RDBStorage(
            f"sqlite:///{out_dir / 'study.db'}",
            heartbeat_interval=60,
            grace_period=180,
            failed_trial_callback=RetryFailedTrialCallback(max_retry=1),
        )
    study = optuna.create_study(
        study_name=stream,
        storage=storage,
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        # no pruning before 3 trials have finished or before a trial's 2nd epoch: early epochs are noisy
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
    )
    # A continued study: its sampler's stream goes on from the trials it already has (the same seed in every
    # process would propose trial 0's parameters again), and a trial still marked running was left by a killed
    # process (we hold the folder's lock): it is marked failed and its parameters are tried again first, as an
    # uninterrupted study would have finished them.
    before = study.get_trials(deepcopy=False)
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(before))
    for trial in before:
        if trial.state == TrialState.RUNNING:
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # (no public id: Optuna keeps it private)
            study.enqueue_trial(trial.params)
            log(f"trial {trial.number} was left running by a killed process: marked failed, its parameters retried")
    return study


def _objective(stream: str, out_dir: Path, fixed: dict, given: set, log):
    """One trial: a run trained with the parameters the sampler suggests (``out_dir/trials/<number>``), pruned on
    its validation macro-F1 by epoch; its value, that macro-F1 at the end (test is never scored)."""
    import optuna

    def objective(trial) -> float:
        chosen = suggest(trial, stream)
        run = out_dir / "trials" / f"{trial.number:04d}"

        def report(epoch: int, metrics: dict) -> None:
            trial.report(metrics["macro_f1"], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"epoch {epoch}: validation macro-F1 {metrics['macro_f1']:.3f}")

        result = train(
            {**fixed, **chosen, "run": str(run)},
            log=lambda line: None,
            on_epoch=report,
            splits=("val",),
            given=given,
        )
        log(f"trial {trial.number}: validation macro-F1 {result['val']['macro_f1']:.3f} with {json.dumps(chosen)}")
        return result["val"]["macro_f1"]

    return objective


def _plot(study, path: Path, stream: str) -> None:
    """Optimisation history (every trial's value, the running best) and parameter importances, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.importance import get_param_importances
    from optuna.trial import TrialState

    from preprocess.batch import atomic_path

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    numbers = [t.number for t in trials]
    values = [100 * t.value for t in trials]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=110)
    left.plot(numbers, values, "o", color="#4c72b0", label="trial")
    best = [max(values[: i + 1]) for i in range(len(values))]
    left.step(numbers, best, where="post", color="#dd8452", label="best so far")
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    if pruned:
        left.plot([], [], " ", label=f"{len(pruned)} pruned")
    left.set_xlabel("trial")
    left.set_ylabel("validation macro-F1 (%)")
    left.set_title("optimisation history")
    left.xaxis.get_major_locator().set_params(integer=True)
    left.legend()
    left.grid(alpha=0.3)
    try:
        importances = get_param_importances(study) if len(trials) >= 2 else {}
    except (RuntimeError, ValueError):  # too few distinct trials to judge
        importances = {}
    if importances:
        names = list(importances)[::-1]
        right.barh(names, [importances[n] for n in names], color="#55a868")
        right.set_xlabel("importance (fANOVA, share of the variance)")
    else:
        right.text(0.5, 0.5, "too few completed trials\nfor importances", ha="center", va="center")
        right.set_axis_off()
    right.set_title(
        "parameter importances" + (f" (from {len(trials)} trials: indicative only)" if len(trials) < 20 else "")
    )
    fig.suptitle(f"{stream} stream: {len(trials)} completed trials; objective validation macro-F1")
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
