"""The configuration files in serving/ (`glcic_tf.serving.model_config` reads models.config;
batching_parameters.txt is checked against its proto's field names)."""

import os
import re

from glcic_tf.serving.model_config import parse_model_config_file

from helpers.scripts import REPO


def test_models_config_file_parses():
    models = parse_model_config_file(os.path.join(REPO, "serving", "models.config"))
    assert [m.name for m in models] == ["glcic"]
    assert models[0].base_path == "/models/glcic"
    assert models[0].policy == "latest" and models[0].num_versions == 1


def test_batching_parameters_file_parses():
    # BatchingParameters (session_bundle_config.proto) is not in the tensorflow-serving-api
    # wheel; check the text proto's syntax and field names against the proto instead.
    fields = {"max_batch_size", "batch_timeout_micros", "num_batch_threads",
              "max_enqueued_batches", "allowed_batch_sizes", "thread_pool_name"}
    seen = {}
    with open(os.path.join(REPO, "serving", "batching_parameters.txt")) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            m = re.fullmatch(r"(\w+) \{ value: (\d+) \}", line)
            if m:
                assert m.group(1) in fields, line
                seen[m.group(1)] = int(m.group(2))
            else:
                assert line == "pad_variable_length_inputs: false", line
                seen["pad_variable_length_inputs"] = False
    assert seen["max_batch_size"] >= 1 and seen["num_batch_threads"] >= 1
    assert seen["pad_variable_length_inputs"] is False
