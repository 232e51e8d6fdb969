import json

import pytest

from glcic_tf import config as cfg


def test_paper_defaults_are_the_papers_values():
    c = cfg.get_preset("paper")
    assert c.data.image_size == 256 and c.masks.local_size == 128
    assert (c.masks.hole_min, c.masks.hole_max) == (96, 128)
    assert (c.data.resize_min, c.data.resize_max) == (256, 384)
    assert c.schedule.batch_size == 96
    assert c.loss.alpha == pytest.approx(0.0004)
    assert (c.schedule.steps_completion, c.schedule.steps_discriminator,
            c.schedule.steps_joint) == (90_000, 10_000, 400_000)
    assert c.schedule.total_steps == 500_000
    assert c.optimizer.learning_rate_completion == 1.0
    assert len(c.data.mean_pixel) == 3


@pytest.mark.parametrize("name", cfg.preset_names())
def test_json_round_trip(name):
    c = cfg.get_preset(name)
    text = c.to_json()
    assert cfg.GLCICConfig.from_json(text) == c
    assert json.loads(text)["name"] == name


def test_save_load_round_trip(tmp_path):
    c = cfg.get_preset("tiny").override({"schedule.batch_size": 3,
                                         "data.mean_pixel": [0.1, 0.2, 0.3]})
    c.save(str(tmp_path / "config.json"))
    assert cfg.GLCICConfig.load(str(tmp_path / "config.json")) == c
    assert c.data.mean_pixel == (0.1, 0.2, 0.3)


def test_presets_include_paper_and_demo():
    assert {"paper", "demo"} <= set(cfg.preset_names())
    with pytest.raises(cfg.ConfigError, match="unknown preset 'nope'"):
        cfg.get_preset("nope")


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


def test_configs_are_frozen():
    c = cfg.get_preset("paper")
    with pytest.raises(Exception):
        c.schedule.batch_size = 3  # type: ignore[misc]


def test_with_mean_pixel():
    c = cfg.get_preset("paper").with_mean_pixel([0.25, 0.5, 0.75])
    assert c.data.mean_pixel == (0.25, 0.5, 0.75)
    with pytest.raises(cfg.ConfigError, match="mean_pixel"):
        cfg.get_preset("paper").with_mean_pixel([2.0, 0.5, 0.5])
