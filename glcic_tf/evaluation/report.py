"""The evaluation report: what each method and metric is, the summary statistics, the tables.

`build_report` turns the scored samples of `glcic_tf.evaluation.evaluate` (one `Sample` per
image, mask kind and mask index, every method's metrics) into the dict written to report.json:

* `results[method][kind][metric]` = {mean, ci_low, ci_high (Student-t 95%), std, count,
  dropped};
* `paired[method][baseline][kind][metric]`: the same for the per-sample difference method -
  baseline on the same image and hole (ours and ours_post against Telea, Navier-Stokes and mean
  fill), with `excludes_zero` and `better` (the whole interval on the better side of zero);
* `by_hole_area[method][kind][bin]` = {count, and the mean of each metric} for 10%-wide
  hole-area bins;
* `counts[kind]` samples; the model (path, kind, version, step, precision, config), the data
  (pattern, files, images, crop size, mask parameters) and the seeds;
* `regression_guard` (ours, rect, PSNR without post-processing), read by `guard_value`.

`format_table` prints it as plain text (pipelines/evaluate.py), `markdown_table` as the Markdown
of docs/results.md and the shipped model's card.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from glcic_tf.evaluation import metrics as metrics_lib

REPORT_FORMAT = "glcic_tf.evaluation/1"

# The default methods (postprocess="opencv"); "in-graph" / "both" add POST_GRAPH after ours_post.
METHODS = ("ours", "ours_post", "mean_fill", "telea", "navier_stokes")
POST_GRAPH = "ours_post_graph"
METHOD_LABELS = {"ours": "ours", "ours_post": "ours + post", POST_GRAPH: "ours + in-graph post",
                 "mean_fill": "mean fill", "telea": "Telea", "navier_stokes": "Navier-Stokes"}
METRICS = ("l1", "l1_hole", "psnr", "ssim")
METRIC_DESCRIPTIONS = {
    "l1": "mean absolute error, 0-255 scale, whole crop (lower is better)",
    "l1_hole": "mean absolute error, 0-255 scale, hole pixels only (lower is better)",
    "psnr": "tf.image.psnr, max_val 1.0, whole crop, dB (higher is better; identical "
            "images give +inf and are counted in 'dropped')",
    "ssim": "tf.image.ssim, max_val 1.0, 11x11 Gaussian window, whole crop (higher is better)",
}
# Paired comparisons: each of these methods against each baseline, on the same image and hole.
PAIRED_METHODS = ("ours", "ours_post", POST_GRAPH)
PAIRED_BASELINES = ("telea", "navier_stokes", "mean_fill")
# Direction of each metric: +1 higher is better, -1 lower is better.
METRIC_SIGN = {"l1": -1, "l1_hole": -1, "psnr": 1, "ssim": 1}
# The regression guard (`--fail-below`) reads this entry of the report.
GUARD = {"method": "ours", "mask_kind": "rect", "metric": "psnr"}


@dataclasses.dataclass
class Sample:
    """One scored (image, mask kind, mask index): every method's metrics on the same hole."""

    key: str
    kind: str
    mask_index: int
    hole_fraction: float
    scores: dict  # method -> metric -> float
    # PSNR (dB) between the OpenCV and in-graph post-processed pictures: whole crop, hole.
    agreement: tuple[float, float] | None = None


def build_report(samples: list[Sample], methods: list[str], kinds: tuple, *, config, info: dict,
                 files: list[str], data_pattern, seed: int, mask_seeds: list[int], images: int,
                 datasets_used=(), inpaint_radius: int, postprocess: str) -> dict:
    """The report of an evaluation (see the module docstring), JSON-ready.

    Args:
      samples: every scored sample, of every mask kind.
      methods: the methods scored, in report order.
      kinds: the mask kinds scored.
      config: the evaluation's GLCICConfig (crop size, holes, mean pixel).
      info: the model's description (`glcic_tf.evaluation.loader.load_model`).
      files, data_pattern, datasets_used: the data, as resolved and as given.
      seed, mask_seeds: the base seed and the hole seed of each mask index.
      images: distinct images scored.
      inpaint_radius: radius of the OpenCV baselines.
      postprocess: which post-processing was scored ("opencv", "in-graph", "both", "none").
    """
    import keras
    import tensorflow as tf

    results: dict = {}
    by_area: dict = {}
    for method in methods:
        results[method], by_area[method] = {}, {}
        for kind in kinds:
            chosen = [s for s in samples if s.kind == kind]
            results[method][kind] = {
                metric: metrics_lib.mean_ci([s.scores[method][metric] for s in chosen])
                for metric in METRICS}
            bins: dict = {}
            for label in metrics_lib.hole_area_bins():
                in_bin = [s for s in chosen
                          if metrics_lib.hole_area_bin(s.hole_fraction) == label]
                if not in_bin:
                    continue
                entry = {"count": len(in_bin)}
                for metric in METRICS:
                    values = np.array([s.scores[method][metric] for s in in_bin])
                    finite = values[np.isfinite(values)]
                    entry[metric] = round(float(finite.mean()), 6) if finite.size else None
                bins[label] = entry
            by_area[method][kind] = bins
    paired: dict = {}
    for method in (m for m in PAIRED_METHODS if m in methods):
        paired[method] = {}
        against = PAIRED_BASELINES + (("ours_post",) if method == POST_GRAPH else ())
        for baseline in (b for b in against if b in methods):
            paired[method][baseline] = {}
            for kind in kinds:
                chosen = [s for s in samples if s.kind == kind]
                entry = {}
                for metric in METRICS:
                    ci = metrics_lib.mean_ci([s.scores[method][metric] - s.scores[baseline][metric]
                                              for s in chosen])
                    if ci["mean"] is not None:
                        excludes = ci["ci_low"] > 0 or ci["ci_high"] < 0
                        better = (ci["ci_low"] > 0 if METRIC_SIGN[metric] > 0
                                  else ci["ci_high"] < 0)
                        ci = {**ci, "excludes_zero": bool(excludes), "better": bool(better)}
                    entry[metric] = ci
                paired[method][baseline][kind] = entry
    guard = results.get(GUARD["method"], {}).get(GUARD["mask_kind"], {}).get(GUARD["metric"], {})
    fractions = {kind: [s.hole_fraction for s in samples if s.kind == kind] for kind in kinds}
    return {
        "format": REPORT_FORMAT,
        "model": {**info, "config": config.to_dict()},
        "data": {
            "pattern": data_pattern, "files": files, "images": images,
            "datasets": [d.info_path for d in datasets_used],
            "image_size": config.data.image_size,
            "crop": "centre crop, shorter side resized to image_size (data.make_eval_dataset)",
            "masks_per_image": len(mask_seeds), "mask_kinds": list(kinds),
            "masks": dataclasses.asdict(config.masks),
            "mean_pixel": list(config.data.mean_pixel),
            "hole_fraction": {k: {"mean": round(float(np.mean(v)), 6),
                                  "min": round(float(np.min(v)), 6),
                                  "max": round(float(np.max(v)), 6)}
                              for k, v in fractions.items() if v},
        },
        "seed": seed,
        "mask_seeds": list(mask_seeds),
        "methods": methods,
        "method_details": {
            "ours": "network composite (output inside the hole, input outside), 8-bit",
            "ours_post": "ours + postprocessing.postprocess (Telea radius 1, then Poisson blending)"
                         if "ours_post" in methods else None,
            POST_GRAPH: "ours + poisson.postprocess (ring fill, then Poisson blending, in "
                        "TensorFlow ops)" if POST_GRAPH in methods else None,
            "mean_fill": "holes filled with data.mean_pixel",
            "telea": f"cv2.inpaint INPAINT_TELEA, radius {inpaint_radius}",
            "navier_stokes": f"cv2.inpaint INPAINT_NS, radius {inpaint_radius}",
        },
        "metrics": METRIC_DESCRIPTIONS,
        "confidence_interval": "Student-t 95% interval of the mean over samples (ci_low, "
                               "ci_high); non-finite values are dropped and counted",
        "counts": {kind: sum(s.kind == kind for s in samples) for kind in kinds},
        "results": results,
        "paired": paired,
        "paired_details": "per-sample difference method - baseline (same image, same hole), "
                          "mean and Student-t 95% interval; better: the whole interval is on "
                          "the method's better side of zero (lower L1, higher PSNR / SSIM)",
        "hole_area_bins": metrics_lib.hole_area_bins(),
        "by_hole_area": by_area,
        "regression_guard": {**GUARD, "postprocess": False, "value": guard.get("mean")},
        # postprocess="both": how close the in-graph picture is to the OpenCV one.
        "postprocess_agreement_psnr_db": _agreement_summary(samples, kinds),
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }


def _agreement_summary(samples: list, kinds: tuple) -> dict | None:
    summary = {}
    for kind in kinds:
        values = np.array([s.agreement for s in samples
                           if s.kind == kind and s.agreement is not None])
        if not len(values):
            return None
        summary[kind] = {where: {"median": round(float(np.median(values[:, i])), 2),
                                 "p10": round(float(np.percentile(values[:, i], 10)), 2),
                                 "min": round(float(values[:, i].min()), 2)}
                         for i, where in enumerate(("whole_crop", "hole"))}
    return summary


def guard_value(report: dict) -> float | None:
    """The figure `--fail-below` compares: mean PSNR of `ours` on rect holes, no post-processing."""
    return report.get("regression_guard", {}).get("value")


def format_table(report: dict) -> str:
    """A short plain-text table: per mask kind, each method's L1 (hole), PSNR and SSIM."""
    lines = []
    for kind in report["data"]["mask_kinds"]:
        lines.append(f"{kind} holes ({report['counts'][kind]} samples, "
                     f"{report['data']['images']} images, "
                     f"{report['data']['image_size']} px; mean [95% CI])")
        lines.append(f"  {'method':<22}{'L1 hole (0-255)':>24}{'L1 all':>10}"
                     f"{'PSNR dB':>22}{'SSIM':>22}")
        for method in report["methods"]:
            r = report["results"][method][kind]

            def cell(metric, digits):
                m = r[metric]
                if m["mean"] is None:
                    return "n/a"
                return (f"{m['mean']:.{digits}f} [{m['ci_low']:.{digits}f}, "
                        f"{m['ci_high']:.{digits}f}]")

            l1_all = r["l1"]["mean"]
            lines.append(f"  {METHOD_LABELS[method]:<22}{cell('l1_hole', 2):>24}"
                         f"{(f'{l1_all:.2f}' if l1_all is not None else 'n/a'):>10}"
                         f"{cell('psnr', 2):>22}{cell('ssim', 3):>22}")
        for line in paired_lines(report, kind):
            lines.append("  " + line)
    return "\n".join(lines)


def paired_lines(report: dict, kind: str) -> list[str]:
    """'ours - Telea: L1 hole -1.23 [-1.80, -0.66] better; PSNR ...' lines for one mask kind."""
    out = []
    for method, against in report.get("paired", {}).items():
        for baseline, kinds in against.items():
            entry = kinds.get(kind)
            if not entry:
                continue
            cells = []
            for metric, label in (("l1_hole", "L1 hole"), ("psnr", "PSNR")):
                ci = entry[metric]
                if ci["mean"] is None:
                    continue
                verdict = "better" if ci["better"] else (
                    "worse" if ci["excludes_zero"] else "no significant difference")
                cells.append(f"{label} {ci['mean']:+.2f} [{ci['ci_low']:+.2f}, "
                             f"{ci['ci_high']:+.2f}] {verdict}")
            out.append(f"{METHOD_LABELS[method]} - {METHOD_LABELS[baseline]}: "
                       + "; ".join(cells))
    return out


def markdown_table(report: dict) -> str:
    """The results as Markdown tables, one per mask kind (for docs/results.md)."""
    out = []
    for kind in report["data"]["mask_kinds"]:
        out.append(f"**{kind} holes** ({report['counts'][kind]} samples: "
                   f"{report['data']['images']} images x {report['data']['masks_per_image']} "
                   f"masks; mean with 95% CI)\n")
        out.append("| method | L1 in hole (0-255) | L1 whole crop | PSNR (dB) | SSIM |")
        out.append("|---|---|---|---|---|")
        for method in report["methods"]:
            r = report["results"][method][kind]

            def cell(metric, digits):
                m = r[metric]
                if m["mean"] is None:
                    return "n/a"
                half = (m["ci_high"] - m["ci_low"]) / 2
                return f"{m['mean']:.{digits}f} ± {half:.{digits}f}"

            out.append(f"| {METHOD_LABELS[method]} | {cell('l1_hole', 2)} | {cell('l1', 2)} | "
                       f"{cell('psnr', 2)} | {cell('ssim', 3)} |")
        out.append("")
        rows = []
        for method, against in report.get("paired", {}).items():
            for baseline, kinds in against.items():
                entry = kinds.get(kind)
                if not entry or entry["l1_hole"]["mean"] is None:
                    continue

                def paired_cell(metric):
                    ci = entry[metric]
                    mark = " ✓" if ci["better"] else (" ✗" if ci["excludes_zero"] else "")
                    return f"{ci['mean']:+.2f} [{ci['ci_low']:+.2f}, {ci['ci_high']:+.2f}]{mark}"

                rows.append(f"| {METHOD_LABELS[method]} − {METHOD_LABELS[baseline]} | "
                            f"{paired_cell('l1_hole')} | {paired_cell('psnr')} |")
        if rows:
            out.append("Paired differences (same image and hole; 95% CI; ✓ = the whole interval "
                       "is better, ✗ = worse):\n")
            out.append("| comparison | Δ L1 in hole | Δ PSNR (dB) |")
            out.append("|---|---|---|")
            out.extend(rows)
            out.append("")
        agreement = (report.get("postprocess_agreement_psnr_db") or {}).get(kind)
        if agreement:
            whole, hole = agreement["whole_crop"], agreement["hole"]
            out.append(f"PSNR between the in-graph and the OpenCV post-processed pictures: "
                       f"median {whole['median']:.1f} dB over the crop, {hole['median']:.1f} "
                       f"dB inside the hole (10th percentile {whole['p10']:.1f} / "
                       f"{hole['p10']:.1f} dB).\n")
    return "\n".join(out)
