"""The machine a benchmark ran on, peak memory, and the runner of one benchmark section.

`describe()` gives the CPU model and flags (/proc/cpuinfo), cores (online and usable by this
process), memory (/proc/meminfo), load average, Python / TensorFlow / Keras versions, whether
oneDNN is on (TF_ENABLE_ONEDNN_OPTS; TensorFlow >= 2.9 enables it by default on x86 Linux),
whether the CPU has AVX512_BF16 / AMX (what makes bfloat16 fast on CPUs) and the GPUs
TensorFlow sees.

`peak_memory_mb()` reads this process's VmHWM (peak resident set) from /proc/self/status;
`reset_peak_memory()` resets it (writes 5 to /proc/self/clear_refs, Linux >= 4.0), so one process
can measure several variants in turn.

`run_section(name, quick)` imports `glcic_tf.benchmarks.NAME`, calls its `run(quick=quick)` and
adds wall time, peak memory and load average; `pipelines/benchmark.py` runs it in a subprocess
per section so that each section's peak memory is its own:

  python -m glcic_tf.benchmarks.machine                          # the description, as JSON
  python -m glcic_tf.benchmarks.machine --section calibration --quick --json-out /tmp/c.json
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import resource
import sys
import time
from typing import Sequence

from glcic_tf import console

SECTIONS = ("machine", "calibration", "input_pipeline", "make_tfrecords", "training",
            "train_memory", "completion", "large_image", "serving")


def _cpuinfo() -> dict:
    # /proc/cpuinfo only: platform.processor() forks `uname`, which would count a copy of this
    # (possibly large) process in RUSAGE_CHILDREN.
    info = {"model": None, "flags": set()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and info["model"] is None:
                    info["model"] = value.strip()
                elif key == "flags" and not info["flags"]:
                    info["flags"] = set(value.split())
    except OSError:
        pass
    info["model"] = info["model"] or platform.machine()
    return info


def _meminfo_gb() -> dict:
    out = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("MemTotal", "MemAvailable"):
                    out[key] = round(int(value.split()[0]) / 2**20, 2)
    except (OSError, ValueError):
        pass
    return {"total_gb": out.get("MemTotal"), "available_gb": out.get("MemAvailable")}


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty off Linux)."""
    return set(_cpuinfo()["flags"])


def has_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512_BF16 or AMX-BF16)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def onednn_enabled() -> bool:
    """oneDNN custom ops: on by default on x86 Linux, off with TF_ENABLE_ONEDNN_OPTS=0."""
    value = os.environ.get("TF_ENABLE_ONEDNN_OPTS")
    if value is None:
        return platform.machine() in ("x86_64", "AMD64")
    return value.strip().lower() not in ("0", "false", "off", "")


def gpus() -> list[dict]:
    """GPUs TensorFlow sees: name and compute capability when known (imports TensorFlow)."""
    import tensorflow as tf

    out = []
    for device in tf.config.list_physical_devices("GPU"):
        entry = {"name": device.name}
        try:
            details = tf.config.experimental.get_device_details(device)
            entry.update({k: (list(v) if isinstance(v, tuple) else v)
                          for k, v in details.items()})
        except (ValueError, RuntimeError):
            pass
        out.append(entry)
    return out


def describe(with_tensorflow: bool = True) -> dict:
    """The machine and software, as a JSON-ready dict (see the module docstring)."""
    cpu = _cpuinfo()
    flags = cpu["flags"]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    out = {
        "platform": platform.platform(),
        "cpu_model": cpu["model"],
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "cpu_features": {name: name in flags for name in
                         ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16",
                          "amx_tile", "amx_bf16")},
        "bf16_native": has_bf16(),
        "memory": _meminfo_gb(),
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS"),
        "onednn": onednn_enabled(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                                           "TF_NUM_INTEROP_THREADS", "CUDA_VISIBLE_DEVICES")
                if k in os.environ},
    }
    if with_tensorflow:
        import keras
        import tensorflow as tf

        out["tensorflow"] = tf.__version__
        out["keras"] = keras.__version__
        out["gpus"] = gpus()
    return out


def peak_memory_mb() -> float | None:
    """This process's peak resident set (VmHWM) in MiB; ru_maxrss where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def current_memory_mb() -> float | None:
    """This process's resident set now (VmRSS) in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def reset_peak_memory() -> bool:
    """Resets VmHWM to the current resident set; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def children_peak_memory_mb() -> float:
    """Largest peak resident set of the child processes waited for so far (MiB)."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


def run(quick: bool = False) -> dict:
    """The `machine` section: `describe()`."""
    del quick
    return {"benchmark": "machine", **describe()}


def run_section(name: str, quick: bool = False) -> dict:
    """Runs benchmark section `name` in this process; adds wall time, memory and load."""
    if name not in SECTIONS:
        raise ValueError(f"unknown benchmark section {name!r}; expected one of {SECTIONS}")
    module = sys.modules[__name__] if name == "machine" else importlib.import_module(
        f"glcic_tf.benchmarks.{name}")
    load_start = os.getloadavg()
    start = time.perf_counter()
    result = module.run(quick=quick)
    wall = time.perf_counter() - start
    return {
        "section": name,
        "quick": quick,
        "wall_s": round(wall, 2),
        "peak_memory_mb": peak_memory_mb(),
        "children_peak_memory_mb": children_peak_memory_mb(),
        "load_average_start": [round(v, 2) for v in load_start],
        "load_average_end": [round(v, 2) for v in os.getloadavg()],
        "result": result,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", choices=SECTIONS,
                        help="run this benchmark section (default: describe the machine)")
    parser.add_argument("--quick", action="store_true", help="the section's quick version")
    parser.add_argument("--json-out", help="write the JSON here instead of printing it")
    console.add_verbose_flag(parser)
    args = parser.parse_args(argv)
    console.quiet_libraries(args.verbose)
    if args.section is None:
        document = describe()
    else:
        document = run_section(args.section, quick=args.quick)
    text = json.dumps(document, indent=2,
                      default=lambda o: o.item() if hasattr(o, "item") else str(o))
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
