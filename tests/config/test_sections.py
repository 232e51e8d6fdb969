"""The sections' checks (glcic_tf.config.sections, and GLCICConfig.validate across them): bad
values are refused with the value received; configs are frozen."""

import pytest

from glcic_tf import config as cfg


@pytest.mark.parametrize("overrides, message", [
    ({"masks.hole_max": 200}, r"hole_max \(200\) is larger than the local patch"),
    ({"data.image_size": 258, "data.resize_min": 300, "data.resize_max": 400},
     "multiple of 4, got 258"),
    ({"schedule.steps_joint": -1}, "steps_joint must be >= 0, got -1"),
    ({"data.resize_min": 128}, r"resize_min \(128\) must be >= data.image_size"),
    ({"masks.local_size": 512}, r"local_size \(512\) must be <= data.image_size"),
    ({"schedule.batch_size": 0}, "batch_size must be >= 1"),
    ({"data.mean_pixel": [0.5, 0.5]}, "must have 3 values"),
    ({"masks.kind": "circle"}, "masks.kind must be one of"),
    ({"precision": "fp8"}, "precision must be one of"),
])
def test_validation_errors(overrides, message):
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.get_preset("paper").override(overrides)


def test_configs_are_frozen():
    c = cfg.get_preset("paper")
    with pytest.raises(Exception):
        c.schedule.batch_size = 3  # type: ignore[misc]
