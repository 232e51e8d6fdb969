"""glcic_tf.console: the commands print their own lines; --verbose brings the libraries' back."""

import io
import logging
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from glcic_tf import console

from helpers.images import png_bytes, smooth
from helpers.scripts import REPO

# Lines the libraries print at start-up (TensorFlow C++, CUDA stubs, TF-TRT, google api_core).
NOISE_MARKERS = ("oneDNN custom operations", "cuda", "TF-TRT", "rebuild TensorFlow",
                 "FutureWarning", "cpu_feature_guard", "Unable to import IPython")


@pytest.fixture
def restored(monkeypatch):
    """Runs quiet_libraries' global changes inside a sandbox: warnings filters, sys.stderr,
    TF_CPP_MIN_LOG_LEVEL and the absl logger's level are put back after the test."""
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # put back whatever quiet_libraries wraps
    levels = {name: logging.getLogger(name).level for name in console._QUIET_LOGGERS}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_quiet_hides_the_known_library_warnings_and_nothing_else(restored):
    console.quiet_libraries(verbose=False)
    warnings.warn("You are using a Python version (3.11.7) which Google will stop supporting "
                  "in new releases of google.api_core", FutureWarning)
    warnings.warn("`shuffle=True` was passed, but will be ignored since the data `x` was "
                  "provided as a tf.data.Dataset. The Dataset is expected ...", UserWarning)
    warnings.warn("glcic_tf: something the user must see", UserWarning)
    warnings.warn("You are using a Python version: same text, another category", RuntimeWarning)
    assert [str(w.message) for w in restored] == [
        "glcic_tf: something the user must see",
        "You are using a Python version: same text, another category"]
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    for name in ("absl", "tensorflow", "apache_beam.io.tfrecordio"):
        assert logging.getLogger(name).level == logging.ERROR
    assert logging.getLogger("glcic_tf").getEffectiveLevel() <= logging.WARNING


def test_quiet_drops_tfdv_notice_from_stderr_and_keeps_everything_else(restored, monkeypatch):
    captured = io.StringIO()
    monkeypatch.setattr(sys, "stderr", captured)
    console.quiet_libraries(verbose=False)
    console.quiet_libraries(verbose=False)  # idempotent: one filter, not two
    sys.stderr.write("Unable to import IPython: No module named 'IPython'. \nTFDV visualization "
                     "APIs will not function.\n")
    sys.stderr.write("error: --image x.png: file not found\n")
    sys.stderr.flush()
    assert captured.getvalue() == "error: --image x.png: file not found\n"


def test_verbose_changes_nothing(restored, monkeypatch):
    stream = sys.stderr
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    console.quiet_libraries(verbose=True)
    warnings.warn("You are using a Python version (3.11.7) which Google will stop supporting",
                  FutureWarning)
    assert len(restored) == 1 and sys.stderr is stream
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"


def test_a_user_choice_of_tf_log_level_is_kept(restored, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    console.quiet_libraries(verbose=False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"


def test_parse_quietly_reads_verbose_from_a_namespace_or_a_tuple(restored):
    import argparse

    parser = console.add_verbose_flag(argparse.ArgumentParser())
    args = console.parse_quietly(lambda argv: parser.parse_args(argv), ["--verbose"])
    assert args.verbose is True and "TF_CPP_MIN_LOG_LEVEL" not in os.environ
    args, rest = console.parse_quietly(lambda argv: parser.parse_known_args(argv), ["--beam=1"])
    assert args.verbose is False and rest == ["--beam=1"]
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "3"


@pytest.mark.slow
def test_a_command_prints_its_own_lines_unless_verbose(tmp_path):
    """pipelines/complete.py on the shipped model, in fresh processes as a user runs it: quiet,
    stderr is empty and stdout names the output; with --verbose, TensorFlow's start-up shows."""
    image, mask = tmp_path / "in.png", tmp_path / "mask.png"
    image.write_bytes(png_bytes(smooth(64, 80)))
    hole = np.zeros((64, 80), np.uint8)
    hole[20:40, 30:50] = 255
    mask.write_bytes(png_bytes(hole))
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    cmd = [sys.executable, os.path.join(REPO, "pipelines", "complete.py"), "--image",
           str(image), "--mask", str(mask), "--postprocess", "none"]

    quiet = subprocess.run(cmd + ["--out", str(tmp_path / "q.png")], capture_output=True,
                           text=True, env=env, cwd=tmp_path, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == ""
    assert "q.png" in quiet.stdout
    assert not any(m.lower() in quiet.stdout.lower() for m in NOISE_MARKERS), quiet.stdout

    loud = subprocess.run(cmd + ["--out", str(tmp_path / "v.png"), "--verbose"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert loud.returncode == 0, loud.stderr
    assert any(m.lower() in loud.stderr.lower() for m in NOISE_MARKERS), loud.stderr
    assert (tmp_path / "q.png").read_bytes() == (tmp_path / "v.png").read_bytes()
