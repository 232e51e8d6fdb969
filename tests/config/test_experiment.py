"""GLCICConfig (glcic_tf.config.experiment): saving and loading, and the mean pixel value."""

import pytest

from glcic_tf import config as cfg


def test_save_load_round_trip(tmp_path):
    c = cfg.get_preset("tiny").override({"schedule.batch_size": 3,
                                         "data.mean_pixel": [0.1, 0.2, 0.3]})
    c.save(str(tmp_path / "config.json"))
    assert cfg.GLCICConfig.load(str(tmp_path / "config.json")) == c
    assert c.data.mean_pixel == (0.1, 0.2, 0.3)


def test_with_mean_pixel():
    c = cfg.get_preset("paper").with_mean_pixel([0.25, 0.5, 0.75])
    assert c.data.mean_pixel == (0.25, 0.5, 0.75)
    with pytest.raises(cfg.ConfigError, match="mean_pixel"):
        cfg.get_preset("paper").with_mean_pixel([2.0, 0.5, 0.5])
