"""Quality check on real photos: train a preset, score it on held-out crops, write the results.

Trains with `pipelines/train.py` (the `demo` preset, which fine-tunes the shipped network on the
sample photos bundled with scikit-image, by default; every unknown flag is passed through to
train.py), evaluates the run's latest checkpoint with `glcic_tf.evaluation.evaluate.evaluate` on
the held-out validation crops (the sample photos' val split, or --eval-data) against mean fill,
OpenCV Telea and Navier-Stokes, and writes a results section into a Markdown file (default
docs/results.md; one section per preset, replaced on re-runs), with the exact command, the
figures and a contact sheet copied beside it.

Usage:
  # The demo preset (a few minutes on a 2-core CPU): section "demo" of docs/results.md.
  python pipelines/quality_check.py

  # The shipped model's section: score its training run on your held-out split.
  python pipelines/quality_check.py --out runs/photos128 --skip-training \
      --eval-data 'shards/photos-val-*' --masks-per-image 8

  # A larger run: flags after the quality-check flags go to train.py.
  python pipelines/quality_check.py --out runs/qc_wide --width 0.5 --steps-completion 2000 \
      --steps-discriminator 200 --steps-joint 1000

  # Re-score an existing run without training.
  python pipelines/quality_check.py --out runs/quality_check_demo --skip-training

Exit status: 0 ok, 1 training failed, 2 evaluation could not run.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time

from glcic_tf import console

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START = "<!-- quality_check:{name}:start -->"
END = "<!-- quality_check:{name}:end -->"
HEADER = """# Results

Figures written by `pipelines/quality_check.py` (one section per preset; re-running the command
replaces its section). Metrics (glcic_tf/evaluation/evaluate.py): L1 on the 0-255 scale inside
the hole and over the whole crop, PSNR (dB) and SSIM over the whole crop; every method keeps the
pixels outside the hole, so whole-crop figures rise with the hole's share of the crop. Mean over
the samples with the half-width of the Student-t 95% confidence interval.
"""


def parse_args(argv=None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="run directory (default runs/quality_check_PRESET, PRESET "
                                 "from --preset or demo)")
    p.add_argument("--results", default=os.path.join("docs", "results.md"),
                   help="Markdown file to write the section into (default docs/results.md)")
    p.add_argument("--eval-data", help="glob of held-out TFRecord shards (default: the sample "
                                       "photos' val split)")
    p.add_argument("--masks-per-image", type=int, default=16,
                   help="holes per held-out image and kind (default 16)")
    p.add_argument("--seed", type=int, default=0, help="seed of the evaluation holes")
    p.add_argument("--name", help="section name in the results file (default: the preset's "
                                  "name, or the basename of --out when given)")
    p.add_argument("--fresh", action="store_true",
                   help="delete the run directory first (only if it is a training run dir)")
    p.add_argument("--skip-training", action="store_true",
                   help="evaluate the existing run in --out without training")
    console.add_verbose_flag(p)
    args, train_args = p.parse_known_args(argv)
    if args.masks_per_image < 1:
        p.error(f"--masks-per-image must be >= 1, got {args.masks_per_image}")
    if "--out" in train_args:
        p.error("give --out before the train.py flags (it is the quality check's own flag)")
    return args, train_args


def _preset(train_args: list[str]) -> str:
    for i, a in enumerate(train_args):
        if a == "--preset" and i + 1 < len(train_args):
            return train_args[i + 1]
        if a.startswith("--preset="):
            return a.split("=", 1)[1]
    return "demo"


def _command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in
                                [os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:])


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def section(report: dict, *, name: str, command: str, train_seconds: float | None,
            sheet_file: str | None, curve_file: str | None = None) -> str:
    """The Markdown section for one quality-check run."""
    from glcic_tf.evaluation.report import markdown_table

    model = report["model"]
    config = model["config"]
    sched = config["schedule"]
    data = report["data"]
    trained = (f"{train_seconds / 60:.1f} min of training" if train_seconds is not None
               else "training time not measured (--skip-training)")
    run = model["path"]
    if run.startswith(REPO + os.sep):
        run = os.path.relpath(run, REPO)
    pattern = data["pattern"]
    patterns = pattern if isinstance(pattern, list) else [pattern]
    shown = ", ".join(f"`{os.path.basename(p)}`" for p in patterns)
    if all("sample_data" in p for p in patterns):
        shown += " (the sample photos' held-out val split, glcic_tf.data.sample_data)"
    lines = [
        START.format(name=name),
        f"## `{name}` preset",
        "",
        f"Command: `{command}`",
        "",
        f"- Model: `{run}` at step {model['step']}; width {config['model']['width']}, "
        f"{config['data']['image_size']} px crops, batch {sched['batch_size']}, "
        f"{sched['steps_completion']} + {sched['steps_discriminator']} + "
        f"{sched['steps_joint']} steps (phases 1-3); {trained}.",
        f"- Held-out data: {shown}, "
        f"{data['images']} images (centre crops), {data['masks_per_image']} masks per image "
        f"and kind, seed {report['seed']}; holes {data['masks']['hole_min']}-"
        f"{data['masks']['hole_max']} px rectangles / free-form strokes in a "
        f"{data['masks']['local_size']} px patch (mean hole share: "
        + ", ".join(f"{k} {v['mean'] * 100:.0f}%" for k, v in data["hole_fraction"].items())
        + ").",
        f"- Machine: {_cpu()}, {os.cpu_count()} cores; git {_git_commit() or 'unknown'}; "
        f"{datetime.date.today().isoformat()}.",
        "",
        markdown_table(report),
    ]
    if sheet_file:
        lines += [f"![contact sheet: masked input, ours, ours + post-processing, Telea, "
                  f"ground truth]({sheet_file})", ""]
    if curve_file:
        lines += ["Learning curve (held-out crops with fixed holes, scored during training every "
                  f"{sched.get('eval_every')} steps; `eval/hole_l1` and `eval/psnr` in "
                  "TensorBoard):", "", f"![learning curve]({curve_file})", ""]
    ours = report["results"]["ours"]
    telea = report["results"].get("telea")
    if telea:
        notes = []
        for kind in data["mask_kinds"]:
            a, b = ours[kind]["l1_hole"]["mean"], telea[kind]["l1_hole"]["mean"]
            if a is not None and b is not None:
                verdict = "lower (better)" if a < b else "higher (worse)"
                notes.append(f"{kind}: {a:.1f} vs {b:.1f}, {verdict}")
        lines += ["Network alone vs Telea, L1 in the hole: " + "; ".join(notes) + ".", ""]
    if data["images"] < 10:
        lines += [f"Only {data['images']} held-out images: the intervals reflect the spread "
                  f"over hole positions on these images, not over photographs in general.", ""]
    if config["name"] == "demo":
        steps = sched['steps_completion'] + sched['steps_discriminator'] + sched['steps_joint']
        lines += [f"The demo preset fine-tunes the shipped `photos128` network for {steps}"
                  " steps on the bundled sample photos (about a minute): it shows the whole "
                  "pipeline on a network that already inpaints; its figures are those of the "
                  "shipped network, moved a little by the sample photos.", ""]
    if config["name"] == "tiny":
        lines += ["The tiny preset (a width-1/4 network, 64 px crops, 140 steps) checks the "
                  "pipeline end to end; it is not expected to beat the classical inpainters.", ""]
    lines.append(END.format(name=name))
    return "\n".join(lines)


def update_results(path: str, name: str, text: str) -> str:
    """Replaces (or appends) the section `name` of the Markdown file; returns the new content."""
    start, end = START.format(name=name), END.format(name=name)
    content = HEADER
    if os.path.isfile(path):
        with open(path) as f:
            content = f.read()
    if start in content and end in content:
        before = content[:content.index(start)]
        after = content[content.index(end) + len(end):]
        content = before + text + after
    else:
        content = content.rstrip("\n") + "\n\n" + text + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(content)
    return content


def main(parsed: tuple[argparse.Namespace, list[str]]) -> int:
    args, train_args = parsed
    from glcic_tf.evaluation import evaluate as evaluation
    from glcic_tf.evaluation.loader import EvaluationError
    from glcic_tf.training import runs

    name = _preset(train_args)
    run_dir = args.out or os.path.join("runs", f"quality_check_{name}")
    command = _command_line()
    train_seconds = None
    if not args.skip_training:
        if args.fresh and os.path.isdir(run_dir):
            if not runs.is_run_dir(run_dir):
                print(f"quality_check.py: --fresh: {run_dir} is not a training run directory; "
                      f"refusing to delete it", file=sys.stderr)
                return 1
            shutil.rmtree(run_dir)
        cmd = [sys.executable, os.path.join(REPO, "pipelines", "train.py"), "--out", run_dir,
               *train_args]
        print("quality_check.py: " + " ".join(shlex.quote(c) for c in cmd), flush=True)
        t0 = time.perf_counter()
        status = subprocess.call(cmd)
        train_seconds = time.perf_counter() - t0
        if status != 0:
            print(f"quality_check.py: training failed with status {status}", file=sys.stderr)
            return 1
    try:
        report = evaluation.evaluate(
            run_dir, args.eval_data or evaluation.default_data_pattern("val"),
            os.path.join(run_dir, "eval"), masks_per_image=args.masks_per_image,
            seed=args.seed)
    except (EvaluationError, FileNotFoundError, ValueError) as e:
        print(f"quality_check.py: {e}", file=sys.stderr)
        return 2
    if args.name:
        name = args.name
    elif args.out:
        name = os.path.basename(os.path.normpath(run_dir))
    else:
        name = report["model"]["config"]["name"]
    sheet_file = None
    sheet = os.path.join(run_dir, "eval", evaluation.CONTACT_SHEET_NAME)
    if os.path.isfile(sheet):
        results_dir = os.path.dirname(os.path.abspath(args.results))
        os.makedirs(results_dir, exist_ok=True)
        sheet_file = f"quality_check_{name}.png"
        shutil.copyfile(sheet, os.path.join(results_dir, sheet_file))
    curve_file = None
    from glcic_tf.evaluation import curve as learning_curve

    points = learning_curve.read_curve(os.path.join(run_dir, learning_curve.CURVE_NAME))
    if points:
        results_dir = os.path.dirname(os.path.abspath(args.results))
        os.makedirs(results_dir, exist_ok=True)
        curve_file = f"quality_check_{name}_curve.png"
        learning_curve.plot_curve(points, os.path.join(results_dir, curve_file),
                                  title=f"{name}: {points[-1]['images']} held-out crops, "
                                        f"rectangles and free-form holes")
    text = section(report, name=name, command=command, train_seconds=train_seconds,
                   sheet_file=sheet_file, curve_file=curve_file)
    update_results(args.results, name, text)
    print(text)
    print(f"quality_check.py: wrote section '{name}' of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main(console.parse_quietly(parse_args)))
