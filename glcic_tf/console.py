"""What the commands print: the project's own lines, without the libraries' start-up noise.

Importing TensorFlow, Beam and TFDV prints about 15 lines before a command says anything:
TensorFlow's C++ start-up log (oneDNN, CUDA stubs and factories, TF-TRT, "rebuild TensorFlow"
with other compiler flags), google api_core's FutureWarnings about Python 3.11, TFDV's IPython
notice, Beam's python-snappy notice, TensorFlow's deprecation notices for calls TFDV makes,
Keras' `shuffle=True` UserWarning for tf.data input. None of it is about the user's job.

Every entry point (`pipelines/*.py`, `serving/*.py`, `python -m glcic_tf...` modules with a
command line) offers `--verbose` and calls `quiet_libraries(verbose)` after parsing its flags and
before anything imports TensorFlow:

* `TF_CPP_MIN_LOG_LEVEL=3` (unless the user set it): TensorFlow's C++ INFO, WARNING and ERROR
  lines are hidden; a real failure still raises a Python exception with its message;
* the known library warnings are filtered by category and message (never all warnings: a
  warning from glcic_tf or an unknown one still shows);
* TFDV's IPython notice (written straight to stderr at import) is dropped from `sys.stderr`;
* the `tensorflow`, `absl` and Beam's `apache_beam.io.tfrecordio` loggers show errors only
  (TensorFlow's deprecation notices for calls TFDV makes, Beam's python-snappy notice).

`--verbose` leaves all of it as the libraries print it. Nothing here runs at import time.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings

VERBOSE_HELP = ("show the libraries' start-up lines and warnings (TensorFlow's C++ log, "
                "Beam, TFDV, google api_core), hidden by default")

# (category, message regex) of library warnings that say nothing about the user's job.
_WARNINGS = (
    (FutureWarning, r"You are using a Python version .* which Google will stop supporting"),
    (UserWarning, r"`shuffle=True` was passed, but will be ignored since the data `x` was "
                  r"provided as a tf\.data\.Dataset"),
    (UserWarning, r"Do not pass an `input_shape`/`input_dim` argument to a layer"),
)
# Start of writes to sys.stderr that libraries make at import time, bypassing `warnings`.
_STDERR_NOISE = (
    "Unable to import IPython",  # tensorflow_data_validation.utils.display_util
)


# Python loggers whose warnings are the libraries' own business: TensorFlow's deprecation and
# retracing notices (TFDV calls deprecated TF APIs), Beam's python-snappy notice, absl.
_QUIET_LOGGERS = ("absl", "tensorflow", "apache_beam.io.tfrecordio")


def add_verbose_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Adds `--verbose` (store_true) to a command's parser; returns the parser."""
    parser.add_argument("--verbose", action="store_true", help=VERBOSE_HELP)
    return parser


class _FilteredStream:
    """A text stream that drops writes starting with a known noise prefix, passes the rest."""

    def __init__(self, stream, prefixes):
        self._stream = stream
        self._prefixes = tuple(prefixes)

    def write(self, text):
        if text.lstrip().startswith(self._prefixes):
            return len(text)
        return self._stream.write(text)

    def __getattr__(self, name):
        return getattr(self._stream, name)


def quiet_libraries(verbose: bool = False) -> None:
    """Hides the libraries' start-up noise unless `verbose`; call before importing TensorFlow.

    Called later (TensorFlow already imported) it still filters the Python-level warnings and
    TFDV's notice, but TensorFlow's C++ log level is read when TensorFlow starts.
    """
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for category, message in _WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    if not isinstance(sys.stderr, _FilteredStream):
        sys.stderr = _FilteredStream(sys.stderr, _STDERR_NOISE)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def parse_quietly(parse_args, argv=None):
    """A command's `parse_args(argv)`, then `quiet_libraries(args.verbose)`; returns what
    `parse_args` returned (a Namespace, or a tuple whose first item is one)."""
    parsed = parse_args(argv)
    args = parsed[0] if isinstance(parsed, tuple) else parsed
    quiet_libraries(getattr(args, "verbose", False))
    return parsed
