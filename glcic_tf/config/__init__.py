"""Typed, frozen configuration for glcic_tf, with the paper's values as defaults.

One frozen dataclass per concern (data, masks, model, loss, optimizer, schedule;
`glcic_tf.config.sections`) grouped under `GLCICConfig` (`glcic_tf.config.experiment`). Builders
receive their own sub-config, never the whole tree. Named presets are functions registered with
`register_preset` (`glcic_tf.config.presets`); `get_preset("paper")` and `get_preset("demo")`
ship.

Overrides are dotted keys (`"schedule.batch_size": 4`) applied with `override()`, which rejects
unknown keys and values of the wrong type (`glcic_tf.config.overrides`). `to_json()` /
`from_json()` round-trip exactly; the resolved config is written beside every checkpoint and into
every export's `assets/`.

This package is the user-facing config API: import from `glcic_tf.config` itself. Importing it
does not import TensorFlow (`save` and `load` do, when called).
"""

from glcic_tf.config.experiment import LEGACY_DEFAULTS, GLCICConfig
from glcic_tf.config.overrides import override
from glcic_tf.config.presets import (demo, get_preset, paper, photos128, preset_names,
                                     register_preset, tiny)
from glcic_tf.config.sections import (DEFAULT_MEAN_PIXEL, GENERATOR_GANS, INITIALIZERS,
                                      INPUT_CONVENTIONS, LOCAL_PATCHES, MASK_KINDS, OPTIMIZERS,
                                      OUTPUTS, PADDINGS, PRECISIONS, REAL_LOCAL_PATCHES,
                                      RECONSTRUCTIONS, ConfigError, DataConfig, LossConfig,
                                      MaskConfig, ModelConfig, OptimizerConfig, ScheduleConfig)

__all__ = [
    "DEFAULT_MEAN_PIXEL", "INPUT_CONVENTIONS", "MASK_KINDS", "PRECISIONS", "PADDINGS",
    "LOCAL_PATCHES", "REAL_LOCAL_PATCHES", "GENERATOR_GANS", "RECONSTRUCTIONS", "INITIALIZERS",
    "OUTPUTS", "OPTIMIZERS", "LEGACY_DEFAULTS",
    "ConfigError", "DataConfig", "MaskConfig", "ModelConfig", "LossConfig", "OptimizerConfig",
    "ScheduleConfig", "GLCICConfig",
    "override", "register_preset", "preset_names", "get_preset",
    "paper", "photos128", "demo", "tiny",
]
