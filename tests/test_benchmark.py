"""pipelines/benchmark.py and the light benchmark modules (no heavy section runs here)."""

from pipeline_scripts import load_pipeline
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from glcic_tf.benchmarks import machine
from glcic_tf.benchmarks import training as training_bench
from glcic_tf.config import get_preset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _benchmark_cli():
    return load_pipeline("benchmark")


def test_quick_calibration_and_machine_document(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(REPO, "pipelines", "benchmark.py"), "--quick", "--only",
         "machine,calibration", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    document = json.loads(out.read_text())
    assert json.loads(proc.stdout) == document
    assert document["quick"] is True
    assert list(document["sections"]) == ["machine", "calibration"]
    for name, entry in document["sections"].items():
        assert entry["section"] == name and "error" not in entry
        assert entry["peak_memory_mb"] > 50
        assert len(entry["load_average_start"]) == 3
    summary = document["summary"]
    assert summary["failed"] == []
    assert {"cpu_model", "cpu_count", "memory", "bf16_native", "onednn", "tensorflow",
            "keras", "gpus"} <= set(summary["machine"])
    assert summary["machine"]["tensorflow"].startswith("2.")
    peaks = summary["matmul_peak_gflop_per_s"]
    assert peaks["cpu_float32"] > 0 and peaks["cpu_bfloat16"] > 0
    cal = document["sections"]["calibration"]["result"]
    assert cal["cpu"]["float32"]["n"] == 1024
    assert cal["cpu"]["float32"]["gflop_per_s_min"] <= cal["cpu"]["float32"][
        "gflop_per_s_median"] <= cal["cpu"]["float32"]["gflop_per_s_max"]
    assert set(summary["peak_memory_mb"]) == {"machine", "calibration"}


def test_parse_args_sections():
    cli = _benchmark_cli()
    args = cli.parse_args(["--only", "serving,machine"])
    assert args.sections == ["machine", "serving"]  # the documented order
    assert cli.parse_args([]).sections == list(cli.SECTIONS)
    with pytest.raises(SystemExit):
        cli.parse_args(["--only", "gpu_burn"])


def test_summary_fractions_of_the_calibrated_peak():
    cli = _benchmark_cli()
    sections = {
        "calibration": {"result": {"peak_gflop_per_s": {"cpu_float32": 200.0,
                                                        "cpu_bfloat16": 400.0}}},
        "training": {"result": {"device": "cpu", "image_size": 256, "batch_size": 4,
                                "variants": {
                                    "phase3_float32": {"images_per_s_median": 0.5,
                                                       "achieved_gflop_per_s": 132.5,
                                                       "meets_target": False},
                                    "phase3_mixed_bfloat16": {"achieved_gflop_per_s": 300.0},
                                    "phase1_float32_jit": {"error": "XLA failed"},
                                    "build_float32": {"build_s": 1.0}}}},
        "completion": {"result": {"sizes": {"512": {
            "keras_float32": {"median_s": 1.3, "min_s": 1.2, "max_s": 1.4, "gflop_per_s": 100.0},
            "folded_bfloat16": {"median_s": 0.7, "min_s": 0.6, "max_s": 0.8,
                                "gflop_per_s": 200.0},
            "postprocess_overhead_pct": 3.0}}}},
        "serving": {"error": "exit status 1"},
    }
    s = cli.summarize(sections)
    tr = s["training"]["variants"]
    assert tr["phase3_float32"]["fraction_of_calibrated_peak"] == pytest.approx(0.662, abs=1e-3)
    assert tr["phase3_mixed_bfloat16"]["fraction_of_calibrated_peak"] == 0.75
    assert tr["phase1_float32_jit"] == {"error": "XLA failed"}
    assert "build_float32" not in tr
    at512 = s["completion_latency_s"]["512"]
    assert at512["keras_float32"]["fraction_of_calibrated_peak"] == 0.5
    assert at512["folded_bfloat16"]["fraction_of_calibrated_peak"] == 0.5
    assert "postprocess_overhead_pct" not in at512
    assert s["failed"] == ["serving"]


def test_machine_description_and_peak_memory():
    info = machine.describe(with_tensorflow=False)
    assert info["cpu_count"] >= 1 and info["cpus_usable"] >= 1
    assert isinstance(info["bf16_native"], bool)
    assert set(info["cpu_features"]) >= {"avx512_bf16", "amx_bf16"}
    peak = machine.peak_memory_mb()
    assert peak > 0
    if machine.reset_peak_memory():  # Linux: the peak drops to (about) the current RSS
        assert machine.peak_memory_mb() <= peak
    with pytest.raises(ValueError, match="unknown benchmark section"):
        machine.run_section("nope")


def test_training_benchmark_batch_and_flops():
    config = get_preset("paper").override({"schedule.batch_size": 4})
    batch = training_bench.synthetic_batch(config, 4)
    assert batch["image"].shape == (4, 256, 256, 3) and batch["mask"].shape == (4, 256, 256, 1)
    ls = config.masks.local_size
    for i in range(4):  # the local patch holds the whole hole
        y, x = batch["local_offset"][i]
        patch = batch["mask"][i, y:y + ls, x:x + ls].sum()
        assert patch == batch["mask"][i].sum() > 0
    assert training_bench.gflop_per_image(3, config) == 265.0
    assert training_bench.gflop_per_image(1, config) == 195.0
    small = config.override({"model.width": 0.5})
    assert training_bench.gflop_per_image(1, small) == pytest.approx(195.0 / 4)
    assert np.all((batch["image"] >= 0) & (batch["image"] <= 1))
