"""Dotted-key overrides and typed reading (glcic_tf.config.overrides): unknown keys and wrong types
are refused, in overrides and in JSON."""

import pytest

from glcic_tf import config as cfg


@pytest.mark.parametrize("overrides, message", [
    ({"schedule.batchsize": 4}, "unknown config key 'schedule.batchsize'"),
    ({"nosuch.key": 1}, "unknown config key 'nosuch.key'"),
    ({"schedule.batch_size": "8"}, "schedule.batch_size must be an integer, got '8'"),
    ({"schedule.batch_size": 2.5}, "must be an integer"),
    ({"data.random_flip": 1}, "must be true or false"),
    ({"loss.alpha": "big"}, "loss.alpha must be a number"),
    ({"schedule": 3}, "is a section"),
])
def test_override_rejects_unknown_keys_and_wrong_types(overrides, message):
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.get_preset("paper").override(overrides)


def test_from_json_rejects_unknown_nested_key_and_bad_json():
    d = cfg.get_preset("paper").to_dict()
    d["model"]["depth"] = 3
    with pytest.raises(cfg.ConfigError, match="unknown config key.*model.depth"):
        cfg.GLCICConfig.from_dict(d)
    with pytest.raises(cfg.ConfigError, match="not valid JSON"):
        cfg.GLCICConfig.from_json("{")
