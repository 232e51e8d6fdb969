"""One benchmark command: every glcic_tf benchmark, one JSON document (`make bench`).

Runs each section in its own subprocess (`python -m glcic_tf.benchmarks.machine --section NAME`,
which calls `glcic_tf.benchmarks.NAME.run(quick)`), so each section's peak memory (VmHWM of that
process; the embedded server's memory for `serving` is in children_peak_memory_mb) is its own
and one failing section does not stop the others. Sections, in order:

  machine         CPU model and flags, cores, memory, TF/Keras versions, oneDNN, AVX512_BF16, GPUs
  calibration     matmul peak GFLOP/s, float32 and bfloat16 (4096^3), the reference for FLOP/s
  input_pipeline  training input (tf.data) images/s, AUTOTUNE and fixed parallelism
  make_tfrecords  images-to-TFRecords Beam pipeline images/s (DirectRunner)
  training        phase-1 and phase-3 step images/s at 256x256, batch 4, full width; float32,
                  mixed bfloat16 (CPU with AVX512_BF16) or mixed float16 (GPU); XLA on phase 1;
                  the photos128 preset's shape; fused vs Keras batch norm interleaved (A/B);
                  each step's time split (input, forward, backward, optimizer) and the
                  ceiling its convolution kernels alone put on it
  train_memory    peak memory of phase-3 steps at two sizes and widths (each in a fresh process)
                  against glcic_tf.training.memory's estimate (train.py's check before the
                  first step)
  completion      completion latency at 256 and 512 px: Keras, folded, `complete` signature,
                  Completer with and without post-processing; float32 and bfloat16
  large_image     full-resolution completion of a 4000x3000 photo: peak memory and time per
                  case, each case in a fresh process
  serving         REST server: requests/s with p50/p99 latency (8 clients, 256 px), REST vs
                  direct signature latency at 512 px

Each figure inside a section is a median of repeated runs with min and max (see each module's
docstring). `summary` gathers the headline figures, with the achieved GFLOP/s of the completion
network and of the training steps as a fraction of the calibrated matmul peak of the same dtype.
Other processes sharing the CPU lower every figure: each section records the load average at
its start and end.

Usage:
  python pipelines/benchmark.py --out bench.json             # everything, ~20-30 min on 2 cores
  python pipelines/benchmark.py --quick                      # smoke version, ~5 min
  python pipelines/benchmark.py --only calibration,training  # some sections

Exit status: 0 when every section ran, 1 when one failed (its entry holds the error and the
tail of its log), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

from glcic_tf import console

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTIONS = ("machine", "calibration", "input_pipeline", "make_tfrecords", "training",
            "train_memory", "completion", "large_image", "serving")
DEFAULT_TIMEOUT_S = 3600
QUICK_TIMEOUT_S = 900
LOG_TAIL = 3000
# Issue 14: the float32 `complete` signature at 512 px at this fraction of the matmul peak.
COMPLETION_FRACTION_TARGET = 0.90


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", help=f"comma-separated sections to run (default all: "
                                  f"{','.join(SECTIONS)})")
    p.add_argument("--quick", action="store_true",
                   help="each section's quick smoke version (figures not representative)")
    p.add_argument("--out", help="also write the JSON document to this file")
    p.add_argument("--timeout", type=float,
                   help=f"seconds per section (default {DEFAULT_TIMEOUT_S}, quick "
                        f"{QUICK_TIMEOUT_S})")
    console.add_verbose_flag(p)
    args = p.parse_args(argv)
    if args.only:
        names = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [s for s in names if s not in SECTIONS]
        if unknown or not names:
            p.error(f"--only: unknown section(s) {unknown or args.only!r}; choose from "
                    f"{','.join(SECTIONS)}")
        args.sections = [s for s in SECTIONS if s in names]  # the documented order
    else:
        args.sections = list(SECTIONS)
    if args.timeout is None:
        args.timeout = QUICK_TIMEOUT_S if args.quick else DEFAULT_TIMEOUT_S
    if args.timeout <= 0:
        p.error(f"--timeout must be > 0, got {args.timeout}")
    return args


def run_section(name: str, quick: bool, timeout: float, verbose: bool = False) -> dict:
    """Runs one section in a subprocess; returns its JSON (or an error entry, with the tail of
    the section's log: library start-up noise included only with `verbose`)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    with tempfile.TemporaryDirectory(prefix=f"glcic-bench-{name}-") as tmp:
        out_json = os.path.join(tmp, "section.json")
        log_path = os.path.join(tmp, "section.log")
        cmd = [sys.executable, "-m", "glcic_tf.benchmarks.machine", "--section", name,
               "--json-out", out_json] + (["--quick"] if quick else []) + (
            ["--verbose"] if verbose else [])
        start = time.perf_counter()
        with open(log_path, "w") as log:
            try:
                status = subprocess.call(cmd, cwd=REPO, env=env, stdout=log,
                                         stderr=subprocess.STDOUT, timeout=timeout)
            except subprocess.TimeoutExpired:
                status = None
        wall = round(time.perf_counter() - start, 2)
        with open(log_path, errors="replace") as f:
            tail = f.read()[-LOG_TAIL:]
        if status == 0 and os.path.isfile(out_json):
            with open(out_json) as f:
                entry = json.load(f)
            entry["process_wall_s"] = wall
            return entry
        error = (f"timed out after {timeout:.0f} s" if status is None
                 else f"exit status {status}")
        return {"section": name, "quick": quick, "error": error, "process_wall_s": wall,
                "log_tail": tail}


def _get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _fraction(gflops, peak):
    return round(gflops / peak, 3) if gflops and peak else None


def summarize(sections: dict) -> dict:
    """The headline figures of the sections that ran (missing ones are left out)."""
    s: dict = {}
    machine = _get(sections, "machine", "result")
    if machine:
        s["machine"] = {k: machine.get(k) for k in
                        ("cpu_model", "cpu_count", "cpus_usable", "memory", "bf16_native",
                         "onednn", "tensorflow", "keras", "gpus")}
    peaks = _get(sections, "calibration", "result", "peak_gflop_per_s") or {}
    if peaks:
        s["matmul_peak_gflop_per_s"] = peaks
    ip = _get(sections, "input_pipeline", "result")
    if ip:
        s["input_pipeline_images_per_s"] = {
            name: {k: _get(ip, name, f"images_per_s_{k}") for k in ("median", "min", "max")}
            for name in ("autotune", "fixed_2") if name in ip}
    mt = _get(sections, "make_tfrecords", "result")
    if mt:
        s["make_tfrecords_images_per_s"] = {k: mt.get(f"images_per_s_{k}")
                                            for k in ("median", "min", "max")}
    tr = _get(sections, "training", "result")
    if tr:
        entries = {}
        for name, v in (tr.get("variants") or {}).items():
            if not name.startswith("phase") or not isinstance(v, dict):
                continue
            if "error" in v:
                entries[name] = {"error": v["error"]}
                continue
            dtype = ("bfloat16" if "bfloat16" in name else
                     "float16" if "float16" in name else "float32")
            peak = peaks.get(f"{'gpu' if tr.get('device') == 'gpu' else 'cpu'}_{dtype}")
            entries[name] = {
                "images_per_s": {k: v.get(f"images_per_s_{k}") for k in ("median", "min", "max")},
                "achieved_gflop_per_s": v.get("achieved_gflop_per_s"),
                "cores_used": v.get("cores_used"),
                "fraction_of_calibrated_peak": _fraction(v.get("achieved_gflop_per_s"), peak),
                "meets_target": v.get("meets_target"),
                "target_images_per_s": v.get("target_images_per_s"),
            }
            if "keras_batch_norm" in v:  # the A/B: Keras' own batch norm, same steps
                entries[name]["keras_batch_norm_fraction_of_calibrated_peak"] = _fraction(
                    v["keras_batch_norm"].get("achieved_gflop_per_s"), peak)
                entries[name]["speedup_over_keras_batch_norm"] = v.get(
                    "speedup_over_keras_batch_norm")
            if "time_split" in v:
                entries[name]["time_split_share"] = v["time_split"].get("share_of_step")
            if "conv_bound" in v:
                entries[name]["fraction_if_only_convolutions"] = _fraction(
                    v["conv_bound"].get("conv_gflop_per_s"), peak)
            if "bounded_by" in v:
                entries[name]["bounded_by"] = v["bounded_by"]
        s["training"] = {"image_size": tr.get("image_size"), "batch_size": tr.get("batch_size"),
                         "width": tr.get("width"), "variants": entries,
                         "targets_met": tr.get("targets_met")}
    co = _get(sections, "completion", "result")
    if co:
        latency = {}
        for size, entry in (co.get("sizes") or {}).items():
            rows = {}
            for name, v in entry.items():
                if not isinstance(v, dict) or "median_s" not in v:
                    continue
                dtype = "bfloat16" if "bfloat16" in name else "float32"
                row = {k: v.get(k) for k in ("median_s", "min_s", "max_s")}
                if v.get("gflop_per_s") is not None:
                    row["gflop_per_s"] = v["gflop_per_s"]
                    row["fraction_of_calibrated_peak"] = _fraction(
                        v["gflop_per_s"], peaks.get(f"cpu_{dtype}"))
                rows[name] = row
            latency[size] = rows
        s["completion_latency_s"] = latency
        if co.get("targets_512") is not None:
            s["completion_targets_512"] = dict(co["targets_512"])
            complete = latency.get("512", {}).get("saved_model_complete_float32", {})
            if complete.get("fraction_of_calibrated_peak") is not None:
                met = complete["fraction_of_calibrated_peak"] >= COMPLETION_FRACTION_TARGET
                s["completion_targets_512"]["complete_float32_ge_0.90_of_peak"] = met
                bound = co.get("forward_conv_bound") or {}
                if not met and bound.get("ceiling_fraction") is not None:
                    slow = sorted(bound["layers"], key=lambda r: r["fraction_of_peak"])[:4]
                    ceiling = bound["ceiling_fraction"]
                    at_limit = ("no more than the whole network does: it runs at the kernels' "
                                "limit" if ceiling <= complete["fraction_of_calibrated_peak"]
                                else "the most the network could reach without faster kernels")
                    s["completion_targets_512"]["bounded_by"] = (
                        f"the convolution kernels: the network's convolutions alone at "
                        f"{bound['size']} px take {bound['seconds']:.3f} s, "
                        f"{ceiling:.2f} of the in-process matmul peak "
                        f"({bound['matmul_peak_gflop_per_s_in_process']:.0f} GFLOP/s), "
                        f"{at_limit}; slowest: "
                        + ", ".join(f"{r['layer']} {r['fraction_of_peak']:.2f}" for r in slow))
    tm = _get(sections, "train_memory", "result")
    if tm:
        s["train_memory"] = {
            "cases": [{k: c.get(k) for k in ("size", "width", "batch", "precision", "peak_mb",
                                             "estimate_mb", "estimate_over_measured")}
                      for c in tm.get("cases", [])],
            "within_30_pct": tm.get("within_30_pct")}
    li = _get(sections, "large_image", "result")
    if li:
        s["large_image"] = {
            "image_size": li.get("image_size"),
            "cases": {name: {k: c.get(k) for k in ("cold_s", "warm_s", "peak_rss_gib")
                             if k in c}
                      for name, c in (li.get("cases") or {}).items()},
            "target_peak_lt_4_gib": li.get("target_peak_lt_4_gib"),
        }
    sv = _get(sections, "serving", "result")
    if sv:
        th = sv.get("throughput") or {}
        s["serving"] = {
            "requests_per_s": th.get("requests_per_s"),
            "latency_p50_s": th.get("latency_p50_s"), "latency_p99_s": th.get("latency_p99_s"),
            "clients": th.get("clients"), "image_size": th.get("image_size"),
            "errors": th.get("errors"),
            "rest_512": _get(sv, "rest_overhead"),
        }
    fractions = [v.get("fraction_of_calibrated_peak") for part in
                 (list((s.get("training") or {}).get("variants", {}).values())
                  + [row for rows in (s.get("completion_latency_s") or {}).values()
                     for row in rows.values()])
                 for v in [part] if isinstance(v, dict)]
    if any(f is not None and f > 1.0 for f in fractions):
        s["calibration_warning"] = (
            "a fraction of the calibrated peak exceeds 1: the matmul calibration ran while "
            "other processes loaded the CPU (see its load_average_start/end); rerun "
            "`--only calibration` on a quieter machine")
    s["peak_memory_mb"] = {name: e.get("peak_memory_mb") for name, e in sections.items()
                           if "error" not in e}
    # Sections whose work runs in processes of their own (the server, one process per case);
    # elsewhere the children are short-lived helpers forked by imports.
    s["children_peak_memory_mb"] = {name: e.get("children_peak_memory_mb")
                                    for name, e in sections.items()
                                    if "error" not in e and name in ("serving", "large_image")}
    s["wall_s"] = {name: e.get("process_wall_s") for name, e in sections.items()}
    s["failed"] = [name for name, e in sections.items() if "error" in e]
    return s


def main(args: argparse.Namespace) -> int:
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    load_start = [round(v, 2) for v in os.getloadavg()]
    sections: dict = {}
    for name in args.sections:
        print(f"benchmark.py: {name}{' (quick)' if args.quick else ''} ...", file=sys.stderr,
              flush=True)
        sections[name] = run_section(name, args.quick, args.timeout, args.verbose)
        entry = sections[name]
        print(f"benchmark.py: {name}: "
              + (f"FAILED ({entry['error']})" if "error" in entry else
                 f"{entry['process_wall_s']} s, peak {entry.get('peak_memory_mb')} MiB"),
              file=sys.stderr, flush=True)
    document = {
        "benchmark": "glcic_tf",
        "command": " ".join(["python", "pipelines/benchmark.py"] + sys.argv[1:]),
        "quick": args.quick,
        "started_utc": started,
        "load_average_start": load_start,
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "note": "2 shared cores: other processes running at the same time lower the figures; "
                "see each section's load_average_start/end",
        "summary": summarize(sections),
        "sections": sections,
    }
    text = json.dumps(document, indent=2)
    print(text)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 1 if document["summary"]["failed"] else 0


if __name__ == "__main__":
    sys.exit(main(console.parse_quietly(parse_args)))
