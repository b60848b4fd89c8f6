"""Scene reliance of trained runs measured again with the work directory's person boxes as they are now: after
``bin/preprocess persons`` (every person a multi-person model finds), against the record the run wrote at the end
of its training (the pose stage's boxes alone). The measurement is the product's own (``streams.scene.measure``)."""

from __future__ import annotations

from pathlib import Path


def scene_reliance(runs: tuple[str, ...], *, device: str, out: str | None, log=print) -> list[dict]:
    from preprocess.batch import write_json
    from streams import scene
    from streams.run import Run
    from streams.scores import read_score_file, score_path

    rows = []
    for folder in runs:
        run = Run.load(folder)
        dev = run.device(device)
        scored = {}
        for split in ("val", "test"):
            if score_path(run.path, split).is_file():
                arrays = read_score_file(run.path, split)
                scored[split] = (arrays["probs"], arrays["labels"])
        before = scene.read(run.path)
        after = scene.measure(run.run_config, run.models(dev)[0], dev, scored, log=lambda line: None)
        row = {"run": str(run.path), "before": before, "after": after}
        rows.append(row)
        log(f"{run.path}:")
        for split in after.get("splits", {}):
            was = ((before or {}).get("splits") or {}).get(split)
            now = after["splits"][split]
            then = f"{100 * was['hidden_top1']:.1f} %" if was else "–"
            log(
                f"  {split}: top-1 {100 * now['top1']:.1f} %, every person hidden {then} (record, "
                f"{_per_frame(before)} a frame) → {100 * now['hidden_top1']:.1f} % now ({_per_frame(after)} a frame); "
                f"KL to uniform {_kl(was)} → {now['hidden_kl_uniform']:.2f}"
            )
        if after.get("status") != "measured":
            log(f"  {after.get('status')}")
    if out:
        write_json(Path(out), {"runs": rows})
    return rows


def _per_frame(record: dict | None) -> str:
    persons = (record or {}).get("persons") or {}
    return f"{persons['per_frame']:.2f} persons" if persons.get("per_frame") is not None else "? persons"


def _kl(split: dict | None) -> str:
    return f"{split['hidden_kl_uniform']:.2f}" if split else "–"
