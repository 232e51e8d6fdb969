"""Named presets (glcic_tf.config.presets): the paper's values, the registry, every preset
through JSON."""

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


def test_presets_include_paper_and_demo():
    assert {"paper", "demo"} <= set(cfg.preset_names())
    with pytest.raises(cfg.ConfigError, match="unknown preset 'nope'"):
        cfg.get_preset("nope")


@pytest.mark.parametrize("name", cfg.preset_names())
def test_json_round_trip(name):
    c = cfg.get_preset(name)
    text = c.to_json()
    assert cfg.GLCICConfig.from_json(text) == c
    assert json.loads(text)["name"] == name
