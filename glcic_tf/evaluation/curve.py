"""Learning curves: held-out crops with fixed holes, scored every `schedule.eval_every` steps.

`HeldOutScorer` takes the first `schedule.eval_images` images of the validation split, centre
crops them at the training size (`data.make_eval_dataset`) and gives each one rectangle and one
free-form hole, fixed once (the same holes `pipelines/evaluate.py` uses with seed 0). OpenCV
Telea and Navier-Stokes are scored once on those holes; the network is scored whenever
`score(completion)` is called. Figures are computed exactly as `glcic_tf.evaluation.evaluate`
does them (8-bit images and the OpenCV baselines of `glcic_tf.evaluation.baselines`, hole L1 on
the 0-255 scale, PSNR of the whole crop), so the curve and the final report agree.

`CurveLog` writes each point to TensorBoard (`eval/hole_l1`, `eval/psnr`, per mask kind
`eval/rect/...`, `eval/freeform/...`, and the baselines' constant values as
`eval/telea_hole_l1`, ...) and appends it to `RUN_DIR/eval_curve.jsonl` with the global step,
the phase and the training wall-clock minutes so far (summed over resumed sessions, evaluation
time excluded), which `pipelines/quality_check.py --curve` plots against the baselines.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from glcic_tf.data import masks as masks_lib
from glcic_tf.evaluation import metrics as metrics_lib
from glcic_tf.evaluation.baselines import inpaint_opencv, to_uint8

CURVE_NAME = "eval_curve.jsonl"
KINDS = ("rect", "freeform")
BASELINES = ("telea", "navier_stokes")


def _figures(pred_u8: np.ndarray, truth_u8: np.ndarray, mask: np.ndarray) -> dict:
    pred = pred_u8.astype(np.float64) / 255.0
    truth = truth_u8.astype(np.float64) / 255.0
    return {"hole_l1": metrics_lib.l1_255(pred, truth, mask), "psnr": metrics_lib.psnr(pred, truth)}


def _summarise(per_kind: dict) -> dict:
    """{"hole_l1", "psnr", "rect/hole_l1", ...}: means per kind and over both kinds."""
    out = {}
    for metric in ("hole_l1", "psnr"):
        values = []
        for kind, figures in per_kind.items():
            v = np.asarray(figures[metric], np.float64)
            v = v[np.isfinite(v)]
            out[f"{kind}/{metric}"] = round(float(v.mean()), 4)
            values.append(v)
        out[metric] = round(float(np.concatenate(values).mean()), 4)
    return out


class HeldOutScorer:
    """Scores a completion network on fixed held-out crops and holes (see the module docstring)."""

    def __init__(self, pattern, config, num_images: int, batch_size: int = 16):
        from glcic_tf.data import input_pipeline

        self.config = config
        self.batches = []  # (kind, truth float32, truth uint8, mask float32)
        for kind in KINDS:
            ds = input_pipeline.make_eval_dataset(pattern, config, mask_kind=kind, seed=0,
                                                  batch_size=batch_size)
            taken = 0
            for batch in ds:
                n = min(int(batch["image"].shape[0]), num_images - taken)
                if n <= 0:
                    break
                taken += n
                truth_u8 = to_uint8(batch["image"][:n].numpy())
                mask = (batch["mask"][:n].numpy() >= 0.5).astype(np.float32)
                self.batches.append((kind, truth_u8.astype(np.float32) / 255.0, truth_u8, mask))
        if not self.batches:
            raise ValueError(f"no held-out image to score in {pattern}")
        self.num_images = sum(b[1].shape[0] for b in self.batches if b[0] == KINDS[0])
        baseline_figures = {}
        for method, flag in (("telea", "telea"), ("navier_stokes", "ns")):
            per_kind: dict = {}
            for kind, truth, truth_u8, mask in self.batches:
                masked = to_uint8(truth * (1.0 - mask))
                out = np.stack([inpaint_opencv(masked[i], mask[i, ..., 0] > 0, flag)
                                for i in range(len(truth))])
                for k, v in _figures(out, truth_u8, mask).items():
                    per_kind.setdefault(kind, {}).setdefault(k, []).extend(v)
            baseline_figures[method] = _summarise(per_kind)
        self.baselines = baseline_figures

    def score(self, completion) -> dict:
        """Figures of the network's composite (inference mode): {"hole_l1", "psnr", ...}."""
        per_kind: dict = {}
        for kind, truth, truth_u8, mask in self.batches:
            out = completion(masks_lib.network_inputs(tf.constant(truth), tf.constant(mask),
                                                      self.config.data), training=False)
            out_u8 = to_uint8(np.asarray(out))
            out_u8 = np.where(mask > 0, out_u8, truth_u8)
            for k, v in _figures(out_u8, truth_u8, mask).items():
                per_kind.setdefault(kind, {}).setdefault(k, []).extend(v)
        return _summarise(per_kind)


class CurveLog:
    """Appends scored points to `eval_curve.jsonl` and TensorBoard (see the module docstring)."""

    def __init__(self, run_dir: str, scorer: HeldOutScorer, writer=None):
        self.path = os.path.join(run_dir, CURVE_NAME)
        self.scorer = scorer
        self.writer = writer
        self.points = read_curve(self.path)
        # Training minutes already spent by earlier sessions of this run.
        self.previous_minutes = self.points[-1]["minutes"] if self.points else 0.0

    def log(self, completion, *, step: int, phase: int, minutes: float) -> dict:
        figures = self.scorer.score(completion)
        point = {"step": int(step), "phase": int(phase),
                 "minutes": round(self.previous_minutes + minutes, 3), **figures,
                 "baselines": self.scorer.baselines, "images": self.scorer.num_images}
        self.points.append(point)
        with tf.io.gfile.GFile(self.path, "a") as f:
            f.write(json.dumps(point) + "\n")
        if self.writer is not None:
            with self.writer.as_default(step=int(step)):
                for name, value in figures.items():
                    tf.summary.scalar(f"eval/{name}", value)
                for method, values in self.scorer.baselines.items():
                    for name in ("hole_l1", "psnr"):
                        tf.summary.scalar(f"eval/{method}_{name}", values[name])
                tf.summary.scalar("eval/minutes", point["minutes"])
            self.writer.flush()
        return point


def read_curve(path: str) -> list[dict]:
    """The points of an `eval_curve.jsonl` ([] when there is none)."""
    if not tf.io.gfile.exists(path):
        return []
    with tf.io.gfile.GFile(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_curve(points: list[dict], path: str, *, title: str = "") -> str:
    """Draws hole L1 and PSNR against training minutes, with Telea and Navier-Stokes as
    horizontal lines, into a PNG at `path` (matplotlib, Agg backend); returns `path`."""
    if not points:
        raise ValueError("no learning-curve points to plot")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [p["minutes"] for p in points]
    baselines = points[-1]["baselines"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    for ax, metric, label in ((axes[0], "hole_l1", "hole L1 (0-255), lower is better"),
                              (axes[1], "psnr", "PSNR (dB), higher is better")):
        for kind, style in (("rect", "-"), ("freeform", "--")):
            key = f"{kind}/{metric}"
            if all(key in p for p in points):
                ax.plot(minutes, [p[key] for p in points], style, color="C0", marker=".",
                        label=f"ours, {kind}")
                for method, color in (("telea", "C1"), ("navier_stokes", "C2")):
                    ax.axhline(baselines[method][key], linestyle=style, color=color,
                               linewidth=1,
                               label=f"{'Telea' if method == 'telea' else 'Navier-Stokes'}, "
                                     f"{kind}")
        phase_starts = [(p["minutes"], p["phase"]) for a, p in zip(points, points[1:])
                        if p["phase"] != a["phase"]]
        for x, phase in phase_starts:
            ax.axvline(x, color="0.7", linewidth=0.8)
            ax.annotate(f"phase {phase}", (x, 1.0), xycoords=("data", "axes fraction"),
                        fontsize=7, color="0.4", va="top", ha="left")
        ax.set_xlabel("training wall-clock minutes")
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
