"""Evaluation test helpers: how many holes the shared evaluation draws per image, and reading
the samples.jsonl an evaluation wrote."""

import json
import os

from glcic_tf.evaluation.evaluate import SAMPLES_NAME

MASKS = 2


def read_samples(out):
    """The samples.jsonl of the evaluation written to `out`, one dict per line."""
    with open(os.path.join(out, SAMPLES_NAME)) as f:
        return [json.loads(line) for line in f]
