"""Scores a completion model on held-out crops with fixed holes, against classical baselines.

`evaluate(model_path, data_pattern, out_dir)` is what `pipelines/evaluate.py` runs:

1. The model: a training run directory, a SavedModel (its `complete` signature) or a TF Serving
   base path (its highest version), via `load_model`. Its config gives the crop size, the hole
   parameters and the mean pixel value (hole fill).
2. The data: `data.make_eval_dataset` centre crops (shorter side resized to the crop size) with
   holes that depend only on (image key, seed, mask index); mask kinds "rect" (the paper's) and
   "freeform" are scored separately. `masks_per_image` N passes use N seeds per image
   (`mask_seed`; index 0 is `seed` itself, the holes `make_eval_dataset(seed=seed)` gives), so
   a small validation split still gives N x images samples per kind. Two models with the same
   crop size and hole parameters are scored on identical holes.
3. Everything is scored as 8-bit images: the ground-truth crop is rounded to uint8 first and the
   model sees that rounded crop; every method's output is uint8 too.
4. Methods, on the same images and holes:
   * `ours`: the network's composite (its output inside the hole, the input outside);
   * `ours_post`: `ours` + the paper's post-processing (`completion.postprocess`: fast marching
     then Poisson blending per hole, OpenCV);
   * `ours_post_graph` (with `postprocess="in-graph"` or `"both"`): `ours` + the same job in
     TensorFlow ops (`poisson.postprocess`, what an in-graph export serves); with "both" it is
     also paired against `ours_post`;
   * `mean_fill`: holes filled with the mean pixel value (what the network sees);
   * `telea`: OpenCV fast marching (`cv2.inpaint`, INPAINT_TELEA, radius `inpaint_radius`);
   * `navier_stokes`: OpenCV Navier-Stokes (`cv2.inpaint`, INPAINT_NS, same radius).
5. Metrics per sample (`glcic_tf.metrics`): `l1` (mean absolute error on the 0-255 scale over
   the whole crop), `l1_hole` (the same inside the hole only), `psnr` and `ssim` (whole crop,
   max_val 1.0). Pixels outside the hole are the input's for every method, so whole-image
   figures grow with the hole area; `l1_hole` does not.

Output in `out_dir`:

* `report.json`: `results[method][kind][metric]` = {mean, ci_low, ci_high (Student-t 95%), std,
  count, dropped}; `paired[method][baseline][kind][metric]`: the same for the per-sample
  difference method - baseline on the same image and hole (ours and ours_post against Telea,
  Navier-Stokes and mean fill), with `excludes_zero` and `better` (the whole interval on the
  better side of zero); `by_hole_area[method][kind][bin]` = {count, and the mean of each metric}
  for 10%-wide hole-area bins; `counts[kind]` samples; the model (path, kind, version, step,
  precision, config), the data (pattern, files, images, crop size, mask parameters) and the
  seed; `regression_guard` (ours, rect, PSNR without post-processing);
* `samples.jsonl`: one line per (image, kind, mask index) with every method's metrics;
* `contact_sheet.png`: `contact_sheet` layout, rows = the first `contact_rows` images with
  their first mask of the first kind, columns = masked input | ours | ours + post-processing |
  Telea | ground truth (columns of disabled methods are left out).

Usage:
  report = evaluate("runs/demo", None, "runs/demo/eval")   # None: sample data, val split
  print(format_table(report))
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from typing import Callable, Sequence

import numpy as np

from glcic_tf import metrics as metrics_lib

REPORT_NAME = "report.json"
SAMPLES_NAME = "samples.jsonl"
CONTACT_SHEET_NAME = "contact_sheet.png"
REPORT_FORMAT = "glcic_tf.evaluation/1"

# The default methods (postprocess="opencv"); "in-graph" / "both" add POST_GRAPH after ours_post.
METHODS = ("ours", "ours_post", "mean_fill", "telea", "navier_stokes")
POST_GRAPH = "ours_post_graph"
METHOD_LABELS = {"ours": "ours", "ours_post": "ours + post", POST_GRAPH: "ours + in-graph post",
                 "mean_fill": "mean fill", "telea": "Telea", "navier_stokes": "Navier-Stokes"}
POSTPROCESS_CHOICES = ("opencv", "in-graph", "both", "none")
METRICS = ("l1", "l1_hole", "psnr", "ssim")
METRIC_DESCRIPTIONS = {
    "l1": "mean absolute error, 0-255 scale, whole crop (lower is better)",
    "l1_hole": "mean absolute error, 0-255 scale, hole pixels only (lower is better)",
    "psnr": "tf.image.psnr, max_val 1.0, whole crop, dB (higher is better; identical "
            "images give +inf and are counted in 'dropped')",
    "ssim": "tf.image.ssim, max_val 1.0, 11x11 Gaussian window, whole crop (higher is better)",
}
MASK_KINDS = ("rect", "freeform", "file")
DEFAULT_MASK_KINDS = ("rect", "freeform")
INPAINT_RADIUS = 5
# Paired comparisons: each of these methods against each baseline, on the same image and hole.
PAIRED_METHODS = ("ours", "ours_post", POST_GRAPH)
PAIRED_BASELINES = ("telea", "navier_stokes", "mean_fill")
# Direction of each metric: +1 higher is better, -1 lower is better.
METRIC_SIGN = {"l1": -1, "l1_hole": -1, "psnr": 1, "ssim": 1}
# The regression guard (`--fail-below`) reads this entry of the report.
GUARD = {"method": "ours", "mask_kind": "rect", "metric": "psnr"}

# complete_fn(image float32 [B, S, S, 3] in [0, 1], mask float32 [B, S, S, 1]) -> composite
CompleteFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


class EvaluationError(ValueError):
    """The model or data cannot be evaluated; the message names the path and the problem."""


# --- the model ------------------------------------------------------------------------------------

def load_model(path: str) -> tuple[object, CompleteFn, dict]:
    """Loads a run directory, a SavedModel directory or a TF Serving base path.

    Args:
      path: a training run directory (config.json + checkpoints/, see `glcic_tf.runs`), a
        SavedModel written by `glcic_tf.export` (has saved_model.pb and assets/config.json), or
        a base path whose integer subdirectories are such SavedModels (the highest is used).

    Returns:
      (config, complete_fn, info): the GLCICConfig the model was trained with; complete_fn(image
      [B, S, S, 3] float32 in [0, 1], mask [B, S, S, 1] 0/1) -> numpy float32 [B, S, S, 3], the
      network's output inside the hole and `image` outside (S a multiple of 4); info = {"kind":
      "run_dir" | "saved_model" | "base_path", "path", "version", "step", "precision",
      "source"}.

    Raises:
      EvaluationError: the path is none of the three, or a SavedModel lacks the `complete`
        signature or its config.
    """
    from glcic_tf import export, runs

    if not os.path.isdir(path):
        raise EvaluationError(f"--model {path}: directory not found")
    path = os.path.abspath(path)
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return _load_saved_model(path, kind="saved_model")
    if runs.is_run_dir(path):
        return _load_run_dir(path)
    versions = [v for v in export.existing_versions(path)
                if os.path.isfile(os.path.join(path, str(v), "saved_model.pb"))]
    if versions:
        return _load_saved_model(os.path.join(path, str(versions[-1])), kind="base_path",
                                 base_path=path)
    raise EvaluationError(
        f"--model {path}: not a training run directory (config.json + checkpoints/), a "
        f"SavedModel (saved_model.pb) or a TF Serving base path (integer version "
        f"subdirectories holding saved_model.pb)")


def _load_run_dir(path: str):
    import tensorflow as tf

    from glcic_tf import completion, runs

    try:
        config, model, step = runs.load_completion_network(path)
    except FileNotFoundError as e:
        raise EvaluationError(str(e)) from e
    fn = tf.function(completion.keras_complete_fn(model, config.data), reduce_retracing=True)

    def complete_fn(image, mask):
        return fn(tf.constant(image, tf.float32), tf.constant(mask, tf.float32)).numpy()

    info = {"kind": "run_dir", "path": path, "version": None, "step": step,
            "precision": "float32", "checkpoint": runs.latest_checkpoint(path),
            "source": f"run {path} (step {step})"}
    return config, complete_fn, info


def _load_saved_model(path: str, *, kind: str, base_path: str | None = None):
    import tensorflow as tf

    from glcic_tf.config import GLCICConfig

    config_file = os.path.join(path, "assets", "config.json")
    if not os.path.isfile(config_file):
        raise EvaluationError(f"{path}: SavedModel has no assets/config.json (export it with "
                              f"glcic_tf.export / pipelines/export.py)")
    config = GLCICConfig.load(config_file)
    loaded = tf.saved_model.load(path)
    if "complete" not in loaded.signatures:
        raise EvaluationError(f"{path}: SavedModel has no 'complete' signature (has "
                              f"{sorted(loaded.signatures)})")
    signature = loaded.signatures["complete"]
    export_info = {}
    info_file = os.path.join(path, "assets", "export.json")
    if os.path.isfile(info_file):
        with open(info_file) as f:
            export_info = json.load(f)
    name = os.path.basename(path.rstrip("/"))
    version = int(name) if name.isdigit() else export_info.get("version")

    def complete_fn(image, mask):
        out = signature(image=tf.constant(image, tf.float32), mask=tf.constant(mask, tf.float32))
        return out["completed"].numpy()

    complete_fn.loaded = loaded  # keeps the restored variables alive
    info = {"kind": kind, "path": base_path or path, "saved_model": path, "version": version,
            "step": export_info.get("step"), "precision": export_info.get("precision"),
            "source": export_info.get("source", f"SavedModel {path}")}
    return config, complete_fn, info


# --- evaluation config and holes ------------------------------------------------------------------

def eval_config(config, image_size: int | None = None):
    """The model's config with crops of `image_size`, hole sizes scaled with it.

    With `image_size` None (or equal to the training crop) the config is returned unchanged, so
    the holes are exactly the training distribution's. Otherwise hole sides, the local patch and
    free-form stroke widths are scaled by image_size / data.image_size (the local patch rounded
    to a multiple of 4), keeping the holes' share of the crop.
    """
    size = config.data.image_size
    if image_size is None or image_size == size:
        return config
    if image_size < 16 or image_size % 4:
        raise EvaluationError(f"--image-size must be a multiple of 4 and >= 16, got {image_size}")
    f = image_size / size
    m = config.masks
    local = min(image_size, max(4, int(round(m.local_size * f / 4)) * 4))
    hole_max = min(local, max(1, int(round(m.hole_max * f))))
    hole_min = min(hole_max, max(1, int(round(m.hole_min * f))))
    width_max = max(1, int(round(m.stroke_width_max * f)))
    width_min = min(width_max, max(1, int(round(m.stroke_width_min * f))))
    return config.override({
        "data.image_size": image_size, "data.resize_min": image_size,
        "data.resize_max": max(image_size, int(round(config.data.resize_max * f))),
        "masks.local_size": local, "masks.hole_min": hole_min, "masks.hole_max": hole_max,
        "masks.stroke_width_min": width_min, "masks.stroke_width_max": width_max})


def mask_seed(seed: int, index: int) -> int:
    """The hole seed of mask `index` of every image: `seed` for index 0, else a hash of both."""
    if index == 0:
        return int(seed)
    digest = hashlib.sha256(f"glcic_tf/eval/{int(seed)}/{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**62 - 1)


def default_data_pattern(split: str = "val") -> str | list[str]:
    """The bundled sample dataset's shards ("val", "train" or "all"), built on first use."""
    from glcic_tf import sample_data

    directory = sample_data.ensure_sample_dataset()
    patterns = {"val": sample_data.sample_val_pattern(directory),
                "train": sample_data.sample_train_pattern(directory)}
    if split == "all":
        return [patterns["val"], patterns["train"]]
    if split not in patterns:
        raise EvaluationError(f"split must be 'val', 'train' or 'all', got {split!r}")
    return patterns[split]


# --- baselines ------------------------------------------------------------------------------------

def inpaint_opencv(masked: np.ndarray, hole: np.ndarray, method: str,
                   radius: int = INPAINT_RADIUS) -> np.ndarray:
    """OpenCV inpainting of one uint8 [H, W, 3] image; `hole` bool [H, W]; method "telea"/"ns"."""
    import cv2

    flags = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
    if method not in flags:
        raise ValueError(f"method must be 'telea' or 'ns', got {method!r}")
    return cv2.inpaint(np.ascontiguousarray(masked, np.uint8), hole.astype(np.uint8) * 255,
                       radius, flags[method])


def _to_uint8(x) -> np.ndarray:
    return np.clip(np.round(np.asarray(x, np.float64) * 255.0), 0, 255).astype(np.uint8)


# --- the contact sheet ----------------------------------------------------------------------------

def contact_sheet(rows: Sequence[Sequence[np.ndarray]], labels: Sequence[str], *,
                  cell_size: int = 128, pad: int = 2, header: int = 20) -> np.ndarray:
    """A grid of uint8 RGB images with a label above each column.

    Layout: a `header`-pixel band with the column labels, then the cells, each resized to
    `cell_size` x `cell_size` (nearest neighbour when enlarging, area averaging when shrinking),
    separated and surrounded by `pad` pixels of dark grey. Size: width = C * cell + (C + 1) *
    pad, height = header + R * cell + (R + 1) * pad.

    Returns:
      uint8 [height, width, 3].
    """
    import cv2

    n_cols = len(labels)
    if not rows or any(len(r) != n_cols for r in rows):
        raise ValueError(f"contact_sheet: every row needs {n_cols} images (one per label)")
    width = n_cols * cell_size + (n_cols + 1) * pad
    height = header + len(rows) * cell_size + (len(rows) + 1) * pad
    sheet = np.full((height, width, 3), 32, np.uint8)
    for c, label in enumerate(labels):
        x0 = pad + c * (cell_size + pad)
        scale = 0.4
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        if tw > cell_size - 4:
            scale *= (cell_size - 4) / tw
            (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        org = (x0 + max(0, (cell_size - tw) // 2), max(th, (header + th) // 2))
        cv2.putText(sheet, label, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    for r, row in enumerate(rows):
        y0 = header + pad + r * (cell_size + pad)
        for c, image in enumerate(row):
            x0 = pad + c * (cell_size + pad)
            image = np.asarray(image, np.uint8)
            interp = cv2.INTER_NEAREST if image.shape[0] <= cell_size else cv2.INTER_AREA
            cell = cv2.resize(image, (cell_size, cell_size), interpolation=interp)
            sheet[y0:y0 + cell_size, x0:x0 + cell_size] = cell
    return sheet


# --- evaluation -----------------------------------------------------------------------------------

@dataclasses.dataclass
class _Sample:
    key: str
    kind: str
    mask_index: int
    hole_fraction: float
    scores: dict  # method -> metric -> float
    # PSNR (dB) between the OpenCV and in-graph post-processed pictures: whole crop, hole.
    agreement: tuple[float, float] | None = None


def _score(outputs: dict, truth_u8: np.ndarray, mask: np.ndarray) -> dict:
    """method -> metric -> [B] for uint8 outputs [B, S, S, 3] against the uint8 truth."""
    truth = truth_u8.astype(np.float64) / 255.0
    scores = {}
    for method, out in outputs.items():
        pred = out.astype(np.float64) / 255.0
        scores[method] = {
            "l1": metrics_lib.l1_255(pred, truth),
            "l1_hole": metrics_lib.l1_255(pred, truth, mask),
            "psnr": metrics_lib.psnr(pred, truth),
            "ssim": metrics_lib.ssim(pred, truth),
        }
    return scores


def _float(v) -> float | None:
    v = float(v)
    return round(v, 6) if np.isfinite(v) else None


def evaluate(model_path: str, data_pattern: str | Sequence[str] | None, out_dir: str, *,
             mask_kinds: Sequence[str] = DEFAULT_MASK_KINDS, seed: int = 0,
             masks_per_image: int = 4,
             postprocess: bool | str = True, baselines: bool = True,
             max_images: int | None = None,
             image_size: int | None = None, batch_size: int = 8,
             inpaint_radius: int = INPAINT_RADIUS, contact_rows: int = 4,
             cell_size: int = 128, mask_files: str | None = None, split: str = "val",
             log: Callable[[str], None] | None = print) -> dict:
    """Scores a model and the baselines on fixed holes; writes report.json, samples.jsonl and
    contact_sheet.png into `out_dir` (see the module docstring) and returns the report.

    Args:
      model_path: run directory, SavedModel directory or TF Serving base path (`load_model`).
      data_pattern: a dataset (prefix or metadata file; its `split`) or glob(s) of TFRecord
        shards, comma-separated or a list (`glcic_tf.datasets.select`); None = the sample
        dataset's val split.
      out_dir: output directory (created).
      mask_kinds: any of "rect", "freeform", "file" (masks from `mask_files`, picked by
        image key and seed, centre-cropped); each is reported separately.
      seed: base seed of the holes.
      masks_per_image: holes drawn per image and kind (seeds `mask_seed(seed, i)`).
      postprocess: "opencv" (or True): also score `ours_post`; "in-graph": `ours_post_graph`;
        "both"; "none" (or False).
      baselines: also score mean fill, Telea and Navier-Stokes.
      max_images: use only the first images (file order).
      image_size: crop side (default: the model's training crop; see `eval_config`).
      batch_size: crops per network call.
      inpaint_radius: radius of the OpenCV baselines (the post-processing keeps the paper's 1).
      contact_rows: images on the contact sheet (0: no contact sheet).
      cell_size: pixel side of each contact-sheet cell.
      mask_files: glob of the user's mask images or mask TFRecords for the "file" kind
        (default: the model config's `masks.mask_files`).
      split: the split of a dataset given by name: "val" (default), "train" or "all".
      log: progress messages (None: silent).

    Returns:
      The report dict written to report.json.

    Raises:
      EvaluationError: bad arguments, model or data.
    """
    import tensorflow as tf

    from glcic_tf import completion
    from glcic_tf import data as data_lib
    from glcic_tf import datasets
    from glcic_tf import masks as masks_lib

    kinds = tuple(mask_kinds)
    if not kinds or any(k not in MASK_KINDS for k in kinds) or len(set(kinds)) != len(kinds):
        raise EvaluationError(f"mask kinds must be distinct values of {MASK_KINDS}, got {kinds}")
    if masks_per_image < 1:
        raise EvaluationError(f"masks_per_image must be >= 1, got {masks_per_image}")
    if max_images is not None and max_images < 1:
        raise EvaluationError(f"max_images must be >= 1, got {max_images}")
    if batch_size < 1:
        raise EvaluationError(f"batch_size must be >= 1, got {batch_size}")
    if postprocess is True or postprocess is False:
        postprocess = "opencv" if postprocess else "none"
    if postprocess not in POSTPROCESS_CHOICES:
        raise EvaluationError(f"postprocess must be one of {POSTPROCESS_CHOICES}, got "
                              f"{postprocess!r}")
    post_cv = postprocess in ("opencv", "both")
    post_graph = postprocess in ("in-graph", "both")
    say = log or (lambda message: None)
    start = time.perf_counter()
    config, complete_fn, info = load_model(model_path)
    config = eval_config(config, image_size)
    if mask_files:
        config = config.override({"masks.mask_files": mask_files})
    if "file" in kinds and not config.masks.mask_files.strip():
        raise EvaluationError("mask kind 'file' needs --mask-files: a glob of mask images "
                              "(white = hole) or mask TFRecords")
    if data_pattern is None:
        data_pattern = default_data_pattern("val")
    try:
        selection = datasets.select(data_pattern, split)
    except (FileNotFoundError, ValueError) as e:
        raise EvaluationError(f"--data: {e}") from e
    if split != "val" and not selection.named:
        raise EvaluationError(f"--split {split} applies to a dataset given by its prefix or "
                              f"metadata file; {selection.spec} names shards (globs)")
    files = list(selection.files)
    shown = ", ".join(d.describe() for d in selection.named) or selection.spec
    if selection.named:
        shown += f", {split} split"
    size = config.data.image_size
    # The holes are filled with the model's own mean pixel (what it was trained with), not the
    # evaluation data's.
    say(f"glcic_tf: evaluating {info['source']} on {len(files)} shard(s) of {shown}, "
        f"{size}x{size} crops, kinds {', '.join(kinds)}, {masks_per_image} mask(s) per image")

    methods = ["ours"] + (["ours_post"] if post_cv else []) + ([POST_GRAPH] if post_graph else [])
    if baselines:
        methods += ["mean_fill", "telea", "navier_stokes"]
    samples: list[_Sample] = []
    sheet_rows: list[list[np.ndarray]] = []
    images_seen: set[str] = set()
    for kind in kinds:
        for index in range(masks_per_image):
            try:
                ds = data_lib.make_eval_dataset(files, config, mask_kind=kind,
                                                seed=mask_seed(seed, index),
                                                batch_size=batch_size)
            except (ValueError, FileNotFoundError) as e:
                raise EvaluationError(f"{kind} masks: {e}") from e
            taken = 0
            try:
                for batch in ds:
                    n = int(batch["image"].shape[0])
                    if max_images is not None:
                        n = min(n, max_images - taken)
                    if n <= 0:
                        break
                    taken += n
                    truth_u8 = _to_uint8(batch["image"][:n].numpy())
                    mask = (batch["mask"][:n].numpy() >= 0.5).astype(np.float32)
                    keys = [k.decode("utf-8", "replace") for k in batch["key"][:n].numpy()]
                    truth = truth_u8.astype(np.float32) / 255.0
                    masked_u8 = _to_uint8(masks_lib.fill_holes(
                        tf.constant(truth), tf.constant(mask), config.data.mean_pixel).numpy())
                    hole = mask[..., 0] > 0
                    outputs = {"ours": _to_uint8(complete_fn(truth, mask))}
                    # The network composites with its input; make "outside the hole" exact.
                    outputs["ours"] = np.where(hole[..., None], outputs["ours"], truth_u8)
                    if post_cv:
                        outputs["ours_post"] = np.stack([
                            completion.postprocess(outputs["ours"][i], hole[i])
                            for i in range(n)])
                    if post_graph:
                        outputs[POST_GRAPH] = np.stack([
                            completion.postprocess_in_graph(outputs["ours"][i], hole[i])
                            for i in range(n)])
                    if baselines:
                        outputs["mean_fill"] = masked_u8
                        outputs["telea"] = np.stack([inpaint_opencv(
                            masked_u8[i], hole[i], "telea", inpaint_radius) for i in range(n)])
                        outputs["navier_stokes"] = np.stack([inpaint_opencv(
                            masked_u8[i], hole[i], "ns", inpaint_radius) for i in range(n)])
                    scores = _score(outputs, truth_u8, mask)
                    fractions = metrics_lib.hole_fraction(mask)
                    agreement = (_agreement(outputs["ours_post"], outputs[POST_GRAPH], hole)
                                 if post_cv and post_graph else [None] * n)
                    for i in range(n):
                        images_seen.add(keys[i])
                        samples.append(_Sample(
                            key=keys[i], kind=kind, mask_index=index,
                            hole_fraction=float(fractions[i]),
                            scores={m: {k: float(v[i]) for k, v in s.items()}
                                    for m, s in scores.items()}, agreement=agreement[i]))
                        if (kind == kinds[0] and index == 0
                                and len(sheet_rows) < contact_rows):
                            row = [masked_u8[i], outputs["ours"][i]]
                            for method in ("ours_post", POST_GRAPH):
                                if method in outputs:
                                    row.append(outputs[method][i])
                            if baselines:
                                row.append(outputs["telea"][i])
                            sheet_rows.append(row + [truth_u8[i]])
            except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
                raise data_lib.explain_data_error(e, files) from e
        say(f"glcic_tf: {kind}: {sum(s.kind == kind for s in samples)} samples scored")
    if not samples:
        raise EvaluationError(f"--data {data_pattern}: no image to evaluate")

    report = _report(samples, methods, kinds, config=config, info=info, files=files,
                     data_pattern=data_pattern, datasets_used=selection.datasets, seed=seed,
                     masks_per_image=masks_per_image, images=len(images_seen),
                     inpaint_radius=inpaint_radius,
                     postprocess=postprocess)
    os.makedirs(out_dir, exist_ok=True)
    if sheet_rows:
        from PIL import Image

        labels = ["masked input", "ours"] + [METHOD_LABELS[m] for m in methods
                                             if m in ("ours_post", POST_GRAPH)] + (
            ["Telea"] if baselines else []) + ["ground truth"]
        sheet = contact_sheet(sheet_rows, labels, cell_size=cell_size)
        Image.fromarray(sheet).save(os.path.join(out_dir, CONTACT_SHEET_NAME))
        report["contact_sheet"] = {"file": CONTACT_SHEET_NAME, "columns": labels,
                                   "rows": [s.key for s in samples[:len(sheet_rows)]],
                                   "mask_kind": kinds[0], "cell_size": cell_size}
    report["elapsed_s"] = round(time.perf_counter() - start, 2)
    report = json.loads(json.dumps(report))  # what report.json holds (tuples become lists)
    with open(os.path.join(out_dir, SAMPLES_NAME), "w") as f:
        for s in samples:
            f.write(json.dumps({"key": s.key, "kind": s.kind, "mask_index": s.mask_index,
                                "hole_fraction": round(s.hole_fraction, 6),
                                "scores": {m: {k: _float(v) for k, v in d.items()}
                                           for m, d in s.scores.items()}}) + "\n")
    with open(os.path.join(out_dir, REPORT_NAME), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    say(f"glcic_tf: wrote {os.path.join(out_dir, REPORT_NAME)} ({report['elapsed_s']} s)")
    return report


def _report(samples: list[_Sample], methods: list[str], kinds: tuple, *, config, info: dict,
            files: list[str], data_pattern, seed: int, masks_per_image: int, images: int,
            datasets_used=(),
            inpaint_radius: int, postprocess: str) -> dict:
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
            "masks_per_image": masks_per_image, "mask_kinds": list(kinds),
            "masks": dataclasses.asdict(config.masks),
            "mean_pixel": list(config.data.mean_pixel),
            "hole_fraction": {k: {"mean": round(float(np.mean(v)), 6),
                                  "min": round(float(np.min(v)), 6),
                                  "max": round(float(np.max(v)), 6)}
                              for k, v in fractions.items() if v},
        },
        "seed": seed,
        "mask_seeds": [mask_seed(seed, i) for i in range(masks_per_image)],
        "methods": methods,
        "method_details": {
            "ours": "network composite (output inside the hole, input outside), 8-bit",
            "ours_post": "ours + completion.postprocess (Telea radius 1, then Poisson blending)"
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


def _agreement(a_u8: np.ndarray, b_u8: np.ndarray, hole: np.ndarray) -> list[tuple]:
    """Per image, PSNR (dB, 8-bit peak) between two pictures: whole crop and hole pixels."""
    out = []
    for a, b, h in zip(a_u8.astype(np.float64), b_u8.astype(np.float64), hole):
        sq = (a - b) ** 2
        out.append(tuple(float(10 * np.log10(255.0 ** 2 / max(float(x.mean()), 1e-10)))
                         for x in (sq, sq[h])))
    return out


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
