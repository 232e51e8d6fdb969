"""pipelines/benchmark.py and the light benchmark modules (no heavy section runs here)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from glcic_tf.benchmarks import machine
from glcic_tf.benchmarks import training as training_bench
from glcic_tf.config import get_preset

from helpers.scripts import REPO, load_pipeline


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
    assert np.all((batch["image"] >= 0) & (batch["image"] <= 1))


def _conv(k, cin, cout, side):
    """GFLOP of a k x k convolution from cin to cout channels with a side x side output."""
    return 2.0 * k * k * cin * cout * side * side / 1e9


def _channels(width):
    """Table 1's channel counts at `width` (rounded, at least 1)."""
    return lambda c: max(1, round(c * width))


def _table1_completion_gflop(size, width):
    """One forward pass of each completion-network convolution at size x size (GFLOP, batch 1)
    from Table 1 by hand (see `_table1_gflop`)."""
    ch, conv = _channels(width), _conv
    s2, s4 = size // 2, size // 4
    completion = [conv(5, 4, ch(64), size), conv(3, ch(64), ch(128), s2),
                  conv(3, ch(128), ch(128), s2), conv(3, ch(128), ch(256), s4)]
    # 2 plain, 4 dilated (2, 4, 8, 16), 2 plain
    completion += [conv(3, ch(256), ch(256), s4)] * 8
    completion += [conv(4, ch(256), ch(128), s4),  # deconv to size/2
                   conv(3, ch(128), ch(128), s2),
                   conv(4, ch(128), ch(64), s2),  # deconv to size
                   conv(3, ch(64), ch(32), size), conv(3, ch(32), 3, size)]
    return completion


def _table1_gflop(phase, size, local, width):
    """A training step's convolution GFLOP per image from the paper's Table 1 by hand, not from
    the model code: (kernel, in, out channels, output side) per layer, transposed convolutions
    counted on their input side; channels times width (rounded), the 4 input (RGB + mask) and 3
    output channels fixed. Passes per step: C forward + kernel gradient + input gradient (none
    for conv1: nothing needs the gradient wrt the network's input); in phase 3, D forward on
    real, completed and completed again, kernel gradients of two passes and input gradients of
    three (the first layer: one, down to the completed image)."""
    ch = _channels(width)
    completion = _table1_completion_gflop(size, width)
    total = 3 * sum(completion) - completion[0]
    if phase == 3:
        branches = ((size, (64, 128, 256, 512, 512, 512)), (local, (64, 128, 256, 512, 512)))
        for side, filters in branches:
            cin = 3
            for i, f in enumerate(filters):
                side //= 2  # 5x5, stride 2
                flop = _conv(5, cin, ch(f), side)
                total += (3 + 2 + (3 if i else 1)) * flop
                cin = ch(f)
    return total


@pytest.mark.parametrize("preset,phase", [("paper", 1), ("paper", 3), ("photos128", 1),
                                          ("photos128", 3)])
def test_training_flops_match_table_1_by_hand(preset, phase):
    config = get_preset(preset)
    expected = _table1_gflop(phase, config.data.image_size, config.masks.local_size,
                             config.model.width)
    assert training_bench.gflop_per_image(phase, config) == pytest.approx(expected, rel=1e-12)
    if preset == "paper":  # the figures docs/training_speed.md quotes
        assert round(expected, 1) == {1: 194.5, 3: 256.1}[phase]


def test_step_profile_time_split_and_conv_bound_on_a_tiny_trainer():
    import keras

    from glcic_tf.training import trainer as trainer_lib
    from glcic_tf.benchmarks import step_profile

    config = get_preset("tiny").override({
        "data.image_size": 32, "data.resize_min": 32, "data.resize_max": 40,
        "masks.local_size": 16, "masks.hole_min": 6, "masks.hole_max": 12,
        "model.width": 1 / 16, "schedule.batch_size": 2})
    trainer = trainer_lib.build_trainer(config)
    optimizers = trainer.c_optimizer, trainer.d_optimizer
    batch = training_bench.synthetic_batch(config, 2)
    split = step_profile.time_split(trainer, 3, batch, steps=1)
    assert (trainer.c_optimizer, trainer.d_optimizer) == optimizers  # the sinks are gone
    assert set(split["share_of_step"]) == {"input", "forward", "backward", "optimizer", "other"}
    assert split["step_s"] > 0 and split["forward_s"] > 0
    bound = step_profile.conv_bound(trainer, 3, batch, peak_gflop_per_s=100.0, runs=1)
    assert set(bound["conv_s_by_kind"]) == {"forward", "grad_input", "grad_kernel"}
    assert bound["conv_s"] == pytest.approx(sum(bound["conv_s_by_kind"].values()), abs=1e-3)
    phase1 = step_profile.conv_bound(trainer, 1, batch, peak_gflop_per_s=None, runs=1)
    assert phase1["fraction_of_peak_if_only_convolutions"] is None
    # What conv_bound times is what the benchmark divides by (both counted from the shapes).
    assert phase1["counted_gflop_per_image"] == pytest.approx(
        training_bench.gflop_per_image(1, config), abs=1e-3)
    assert bound["counted_gflop_per_image"] == pytest.approx(
        training_bench.gflop_per_image(3, config), abs=1e-3)
    assert bound["counted_gflop_per_image"] == pytest.approx(_table1_gflop(3, 32, 16, 1 / 16),
                                                             abs=1e-3)
    assert bound["counted_gflop_per_image"] > phase1["counted_gflop_per_image"]
    with pytest.raises(ValueError, match="phases 1 and 3"):
        step_profile.time_split(trainer, 2, batch, steps=1)
    conv = keras.layers.Conv2D(16, 3, strides=2, padding="same")
    deconv = keras.layers.Conv2DTranspose(3, 4, strides=2, padding="same")
    conv.build((1, 8, 8, 4))
    deconv.build((1, 4, 4, 8))
    assert step_profile._conv_flop(conv, (1, 8, 8, 4)) == 2 * 4 * 4 * 9 * 4 * 16
    assert step_profile._conv_flop(deconv, (1, 4, 4, 8)) == 2 * 4 * 4 * 16 * 8 * 3


def test_forward_conv_bound_times_every_completion_convolution():
    from glcic_tf.benchmarks import step_profile
    from glcic_tf.networks import models

    config = get_preset("tiny").override({"model.width": 1 / 16})
    model = models.completion_network(config.model.width, config.model)
    bound = step_profile.forward_conv_bound(model, 32, peak_gflop_per_s=50.0, runs=1)
    names = [name for name, *_ in models.COMPLETION_LAYERS if "conv" in name]
    assert [r["layer"] for r in bound["layers"]] == names
    want = _table1_completion_gflop(32, 1 / 16)
    assert [r["gflop"] for r in bound["layers"]] == pytest.approx(want, abs=1e-4)
    assert bound["gflop"] == pytest.approx(sum(want), abs=1e-3)
    assert bound["seconds"] == pytest.approx(sum(r["ms"] for r in bound["layers"]) / 1e3,
                                             abs=1e-3)
    assert bound["ceiling_fraction"] == pytest.approx(
        bound["gflop_per_s"] / 50.0, abs=2e-3)
    assert [r["input"] for r in bound["layers"]][:2] == [[32, 32, 4], [32, 32, 4]]


def test_summary_says_what_bounds_a_missed_completion_target():
    cli = _benchmark_cli()
    layers = [{"layer": "conv5", "fraction_of_peak": 0.9},
              {"layer": "output_conv", "fraction_of_peak": 0.08},
              {"layer": "conv10", "fraction_of_peak": 0.5}]
    sections = {
        "calibration": {"result": {"peak_gflop_per_s": {"cpu_float32": 400.0}}},
        "completion": {"result": {
            "sizes": {"512": {"saved_model_complete_float32": {
                "median_s": 0.75, "min_s": 0.7, "max_s": 0.8, "gflop_per_s": 340.0}}},
            "targets_512": {"fp32_le_1.35_s": True},
            "forward_conv_bound": {"size": 512, "seconds": 0.8, "ceiling_fraction": 0.81,
                                   "matmul_peak_gflop_per_s_in_process": 401.0,
                                   "layers": layers}}},
    }
    targets = cli.summarize(sections)["completion_targets_512"]
    assert targets["complete_float32_ge_0.90_of_peak"] is False  # 340 / 400 = 0.85
    assert targets["bounded_by"].startswith("the convolution kernels")
    assert "0.81 of the in-process matmul peak (401 GFLOP/s), no more than the whole " \
           "network does: it runs at the kernels' limit" in targets["bounded_by"]
    assert targets["bounded_by"].endswith("slowest: output_conv 0.08, conv10 0.50, conv5 0.90")
    sections["completion"]["result"]["sizes"]["512"]["saved_model_complete_float32"][
        "gflop_per_s"] = 380.0
    targets = cli.summarize(sections)["completion_targets_512"]
    assert targets["complete_float32_ge_0.90_of_peak"] is True and "bounded_by" not in targets
