"""The completion network shipped in the repository (`models/glcic_photos128`).

A TF Serving base path (its highest version, `models/glcic_photos128/2/`, is a SavedModel with
the `serving_default`, `serving_float` and `complete` signatures, the paper's post-processing in
the graph, its config, mean pixel value and model card in `assets/`), trained
with the `photos128` preset on real photographs (see `models/glcic_photos128/MODEL_CARD.md`).
`pipelines/complete.py` uses it when no `--model` is given, `make demo` fine-tunes from it, and
`evaluate.py`, `serving/server.py` and `train.py --init-from` take its path like any other.
"""

from __future__ import annotations

import os

SHIPPED_MODEL = "glcic_photos128"
_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def models_dir() -> str:
    """The repository's `models/` folder."""
    return os.path.join(_REPO, "models")


def model_path(name: str = SHIPPED_MODEL) -> str:
    """The TF Serving base path of a shipped model; FileNotFoundError when it is missing."""
    path = os.path.join(models_dir(), name)
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"the shipped model {path} is missing: glcic_tf ships it in the repository's "
            f"models/ folder (install from a clone, `pip install -e .`), or pass --model")
    return path


def version_dir(name: str = SHIPPED_MODEL) -> str:
    """The shipped model's highest SavedModel version directory."""
    base = model_path(name)
    versions = sorted(int(n) for n in os.listdir(base)
                      if n.isdigit() and os.path.isfile(os.path.join(base, n, "saved_model.pb")))
    if not versions:
        raise FileNotFoundError(f"{base}: no SavedModel version directory (1/, 2/, ...)")
    return os.path.join(base, str(versions[-1]))


def training_speed(run_dir: str) -> dict[int, float]:
    """Median images/s per phase, from the run's TensorBoard scalars (`images_per_second`)."""
    import statistics

    import tensorflow as tf

    from glcic_tf.training import runs

    by_step: dict[int, dict[str, float]] = {}
    for path in tf.io.gfile.glob(os.path.join(runs.log_dir(run_dir), "train", "events.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag in ("images_per_second", "phase"):
                    number = float(tf.make_ndarray(value.tensor)) if value.HasField(
                        "tensor") else float(value.simple_value)
                    by_step.setdefault(int(event.step), {})[value.tag] = number
    per_phase: dict[int, list[float]] = {}
    for values in by_step.values():
        if "images_per_second" in values and "phase" in values:
            per_phase.setdefault(int(values["phase"]), []).append(values["images_per_second"])
    # The first period of each phase includes tracing: the median ignores it.
    return {phase: round(statistics.median(v), 2) for phase, v in sorted(per_phase.items())}


def model_card(*, config, report: dict, curve: list[dict], speed: dict[int, float],
               commands: list[str], data_note: str, machine: str, maxdim: int) -> str:
    """The shipped model's card (Markdown): data, commands, steps, minutes, speed, figures."""
    from glcic_tf.evaluation.report import markdown_table

    sched = config.schedule
    minutes = curve[-1]["minutes"] if curve else None
    first, last = (curve[0], curve[-1]) if curve else (None, None)
    lines = [
        f"# `{SHIPPED_MODEL}`: GLCIC completion network, `{config.name}` preset",
        "",
        "The completion network of *Globally and Locally Consistent Image Completion* (Iizuka, "
        "Simo-Serra, Ishikawa, SIGGRAPH 2017) as implemented by glcic_tf, trained on a 2-core "
        "CPU with the `photos128` preset (the paper's layers and parameter count, width 1/2, "
        "with the departures listed in the README's 'Deviations from the paper').",
        "",
        "## Data",
        "",
        data_note,
        "",
        "## How it was made",
        "",
        *[f"    {c}" for c in commands],
        "",
        f"- Steps: {sched.steps_completion:,} (phase 1, C alone) + {sched.steps_discriminator:,} "
        f"(phase 2, D alone) + {sched.steps_joint:,} (phase 3, joint) = {sched.total_steps:,} at "
        f"batch {sched.batch_size}, {config.data.image_size} px crops.",
        f"- Training wall-clock: {minutes:.1f} minutes (learning-curve scoring excluded) on "
        f"{machine}." if minutes is not None else "- Training wall-clock: not recorded.",
        "- Speed (median images/s per phase, from TensorBoard): "
        + ", ".join(f"phase {p}: {v}" for p, v in speed.items()) + ".",
        f"- Completes at `maxdim` {maxdim} px on the "
        f"long side by default (its training scale: photos resized to "
        f"{config.data.resize_min}-{config.data.resize_max} px on the shorter side).",
        "",
        "## Held-out figures",
        "",
        f"{report['data']['images']} held-out photos (never trained on), centre crops of "
        f"{report['data']['image_size']} px, {report['data']['masks_per_image']} holes per photo "
        f"and kind ({config.masks.hole_min}-{config.masks.hole_max} px rectangles; free-form "
        f"strokes {config.masks.stroke_width_min}-{config.masks.stroke_width_max} px wide in a "
        f"{config.masks.local_size} px patch), `pipelines/evaluate.py`:",
        "",
        markdown_table(report),
    ]
    if first and last:
        lines += [
            "Learning curve (46-photo subset, one hole of each kind per photo, "
            "`eval_curve.jsonl`): hole L1 "
            f"{first['hole_l1']:.2f} at step 0 (the harmonic fill the network starts from) -> "
            f"{last['hole_l1']:.2f} at step {last['step']}; PSNR {first['psnr']:.2f} -> "
            f"{last['psnr']:.2f} dB.", ""]
    lines += [
        "## Intended use and limits",
        "",
        "- Filling holes (object removal, small damaged regions) in ordinary photographs, at "
        "about the scale it was trained at. Its holes are smooth continuations of their "
        "surroundings with little texture; it does not invent objects.",
        "- Trained on 122 photos of buildings, streets, landscapes and animals: faces, text "
        "and drawings complete poorly. Completions are plausible guesses, not recovered "
        "content: do not use them as evidence.",
        "- `serving_default` and `serving_float` post-process in the graph "
        "(`glcic_tf.inference.poisson`: "
        "a ring fill of the hole's border, then Poisson blending; 'ours + in-graph post' "
        "above); `pipelines/complete.py` post-processes with OpenCV by default ('ours + "
        "post') and gives the served picture with `--postprocess in-graph`.",
    ]
    return "\n".join(lines) + "\n"
