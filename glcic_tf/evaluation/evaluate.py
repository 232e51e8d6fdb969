"""Scores a completion model on held-out crops with fixed holes, against classical baselines.

`evaluate(model_path, data_pattern, out_dir)` is what `pipelines/evaluate.py` runs:

1. The model: a training run directory, a SavedModel (its `complete` signature) or a TF Serving
   base path (its highest version), via `glcic_tf.evaluation.loader.load_model`. Its config
   gives the crop size, the hole parameters and the mean pixel value (hole fill).
2. The data: `data.make_eval_dataset` centre crops (shorter side resized to the crop size) with
   holes that depend only on (image key, seed, mask index); mask kinds "rect" (the paper's) and
   "freeform" are scored separately. `masks_per_image` N passes use N seeds per image
   (`mask_seed`; index 0 is `seed` itself, the holes `make_eval_dataset(seed=seed)` gives), so
   a small validation split still gives N x images samples per kind. Two models with the same
   crop size and hole parameters are scored on identical holes.
3. Everything is scored as 8-bit images (`glcic_tf.evaluation.baselines.to_uint8`): the
   ground-truth crop is rounded to uint8 first and the model sees that rounded crop; every
   method's output is uint8 too.
4. Methods, on the same images and holes:
   * `ours`: the network's composite (its output inside the hole, the input outside);
   * `ours_post`: `ours` + the paper's post-processing (`inference.postprocessing.postprocess`:
     fast marching then Poisson blending per hole, OpenCV);
   * `ours_post_graph` (with `postprocess="in-graph"` or `"both"`): `ours` + the same job in
     TensorFlow ops (`poisson.postprocess`, what an in-graph export serves); with "both" it is
     also paired against `ours_post`;
   * `mean_fill`: holes filled with the mean pixel value (what the network sees);
   * `telea`: OpenCV fast marching (`cv2.inpaint`, INPAINT_TELEA, radius `inpaint_radius`);
   * `navier_stokes`: OpenCV Navier-Stokes (`cv2.inpaint`, INPAINT_NS, same radius).
5. Metrics per sample (`glcic_tf.evaluation.metrics`): `l1` (mean absolute error on the 0-255
   scale over the whole crop), `l1_hole` (the same inside the hole only), `psnr` and `ssim`
   (whole crop, max_val 1.0). Pixels outside the hole are the input's for every method, so
   whole-image figures grow with the hole area; `l1_hole` does not.

Output in `out_dir`:

* `report.json`: means, confidence intervals, paired differences and hole-area bins per method,
  mask kind and metric, with the model, the data and the seeds (`glcic_tf.evaluation.report`);
* `samples.jsonl`: one line per (image, kind, mask index) with every method's metrics;
* `contact_sheet.png`: `glcic_tf.evaluation.contact_sheet` layout, rows = the first
  `contact_rows` images with their first mask of the first kind, columns = masked input | ours |
  ours + post-processing | Telea | ground truth (columns of disabled methods are left out).

Usage:
  report = evaluate("runs/demo", None, "runs/demo/eval")   # None: sample data, val split
  print(format_table(report))   # format_table: glcic_tf.evaluation.report
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Callable, Sequence

import numpy as np

from glcic_tf.evaluation import metrics as metrics_lib
from glcic_tf.evaluation.baselines import INPAINT_RADIUS, inpaint_opencv, to_uint8
from glcic_tf.evaluation.contact_sheet import contact_sheet
from glcic_tf.evaluation.loader import EvaluationError, load_model
from glcic_tf.evaluation.report import METHOD_LABELS, POST_GRAPH, Sample, build_report

REPORT_NAME = "report.json"
SAMPLES_NAME = "samples.jsonl"
CONTACT_SHEET_NAME = "contact_sheet.png"
POSTPROCESS_CHOICES = ("opencv", "in-graph", "both", "none")
MASK_KINDS = ("rect", "freeform", "file")
DEFAULT_MASK_KINDS = ("rect", "freeform")


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
    from glcic_tf.data import sample_data

    directory = sample_data.ensure_sample_dataset()
    patterns = {"val": sample_data.sample_val_pattern(directory),
                "train": sample_data.sample_train_pattern(directory)}
    if split == "all":
        return [patterns["val"], patterns["train"]]
    if split not in patterns:
        raise EvaluationError(f"split must be 'val', 'train' or 'all', got {split!r}")
    return patterns[split]


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


def _agreement(a_u8: np.ndarray, b_u8: np.ndarray, hole: np.ndarray) -> list[tuple]:
    """Per image, PSNR (dB, 8-bit peak) between two pictures: whole crop and hole pixels."""
    out = []
    for a, b, h in zip(a_u8.astype(np.float64), b_u8.astype(np.float64), hole):
        sq = (a - b) ** 2
        out.append(tuple(float(10 * np.log10(255.0 ** 2 / max(float(x.mean()), 1e-10)))
                         for x in (sq, sq[h])))
    return out


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
      model_path: run directory, SavedModel directory or TF Serving base path
        (`glcic_tf.evaluation.loader.load_model`).
      data_pattern: a dataset (prefix or metadata file; its `split`) or glob(s) of TFRecord
        shards, comma-separated or a list (`glcic_tf.data.selections.select`); None = the sample
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

    from glcic_tf.inference import postprocessing
    from glcic_tf.data import input_pipeline
    from glcic_tf.data import masks as masks_lib
    from glcic_tf.data import selections, shards

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
        selection = selections.select(data_pattern, split)
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
    samples: list[Sample] = []
    sheet_rows: list[list[np.ndarray]] = []
    images_seen: set[str] = set()
    for kind in kinds:
        for index in range(masks_per_image):
            try:
                ds = input_pipeline.make_eval_dataset(files, config, mask_kind=kind,
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
                    truth_u8 = to_uint8(batch["image"][:n].numpy())
                    mask = (batch["mask"][:n].numpy() >= 0.5).astype(np.float32)
                    keys = [k.decode("utf-8", "replace") for k in batch["key"][:n].numpy()]
                    truth = truth_u8.astype(np.float32) / 255.0
                    masked_u8 = to_uint8(masks_lib.fill_holes(
                        tf.constant(truth), tf.constant(mask), config.data.mean_pixel).numpy())
                    hole = mask[..., 0] > 0
                    outputs = {"ours": to_uint8(complete_fn(truth, mask))}
                    # The network composites with its input; make "outside the hole" exact.
                    outputs["ours"] = np.where(hole[..., None], outputs["ours"], truth_u8)
                    if post_cv:
                        outputs["ours_post"] = np.stack([
                            postprocessing.postprocess(outputs["ours"][i], hole[i])
                            for i in range(n)])
                    if post_graph:
                        outputs[POST_GRAPH] = np.stack([
                            postprocessing.postprocess_in_graph(outputs["ours"][i], hole[i])
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
                        samples.append(Sample(
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
                raise shards.explain_data_error(e, files) from e
        say(f"glcic_tf: {kind}: {sum(s.kind == kind for s in samples)} samples scored")
    if not samples:
        raise EvaluationError(f"--data {data_pattern}: no image to evaluate")

    report = build_report(samples, methods, kinds, config=config, info=info, files=files,
                          data_pattern=data_pattern, datasets_used=selection.datasets,
                          seed=seed,
                          mask_seeds=[mask_seed(seed, i) for i in range(masks_per_image)],
                          images=len(images_seen), inpaint_radius=inpaint_radius,
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
