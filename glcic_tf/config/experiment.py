"""`GLCICConfig`: the whole experiment, its sections grouped, checked together and serialised.

`to_json()` / `from_json()` round-trip exactly; the resolved config is written beside every
checkpoint and into every export's `assets/`. A config saved before a field existed loads with
that field's `LEGACY_DEFAULTS` value: the behaviour the run was trained with.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

from glcic_tf.config.overrides import from_mapping, override
from glcic_tf.config.sections import (PRECISIONS, ConfigError, DataConfig, LossConfig,
                                      MaskConfig, ModelConfig, OptimizerConfig, ScheduleConfig,
                                      ensure)

# Fields added after runs had already been saved: a saved config that lacks one of them was
# trained with the behaviour on the right (the code before the field existed), so loading it
# restores that behaviour rather than the new default (the paper's reading).
LEGACY_DEFAULTS = {
    "masks.local_patch": "containing",
    "loss.real_local_patch": "same_as_fake",
    "loss.generator_gan": "non_saturating",
    "loss.discriminator_alpha": False,
    "loss.reconstruction": "mse",
    "model.initializer": "keras",
    "model.output": "sigmoid",
    "optimizer.name": "adadelta",
}


@dataclasses.dataclass(frozen=True)
class GLCICConfig:
    """The whole experiment. `validate()` checks every part and their consistency."""

    name: str = "paper"
    data: DataConfig = DataConfig()
    masks: MaskConfig = MaskConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    precision: str = "float32"
    jit_compile: bool = False
    seed: int = 0

    def validate(self) -> "GLCICConfig":
        for part in (self.data, self.masks, self.model, self.loss, self.optimizer,
                     self.schedule):
            part.validate()
        ensure(self.masks.local_size <= self.data.image_size,
               f"masks.local_size ({self.masks.local_size}) must be <= data.image_size "
               f"({self.data.image_size})")
        ensure(self.masks.local_size % 4 == 0,
               f"masks.local_size must be a multiple of 4, got {self.masks.local_size}")
        ensure(self.precision in PRECISIONS,
               f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        ensure(self.model.output == "sigmoid" or self.data.input_convention == "mean_fill",
               f"model.output {self.model.output!r} needs data.input_convention 'mean_fill' "
               f"(the fill is computed from the image in [0, 1]), got "
               f"{self.data.input_convention!r}")
        return self

    # --- serialisation -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "GLCICConfig":
        """From a dict such as `to_dict()` gives; keys missing from a section added later take
        their `LEGACY_DEFAULTS` value (what runs saved without them were trained with)."""
        return from_mapping(cls, _with_legacy_defaults(values), prefix="").validate()

    @classmethod
    def from_json(cls, text: str) -> "GLCICConfig":
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {e}") from e
        if not isinstance(values, dict):
            raise ConfigError(f"config JSON must be an object, got {type(values).__name__}")
        return cls.from_dict(values)

    def save(self, path: str) -> None:
        """Writes the config as JSON (any filesystem tf.io.gfile supports)."""
        import tensorflow as tf  # local import: keep `import glcic_tf.config` light

        with tf.io.gfile.GFile(path, "w") as f:
            f.write(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str) -> "GLCICConfig":
        import tensorflow as tf

        if not tf.io.gfile.exists(path):
            raise ConfigError(f"config file not found: {path}")
        with tf.io.gfile.GFile(path) as f:
            try:
                return cls.from_json(f.read())
            except ConfigError as e:
                raise ConfigError(f"{path}: {e}") from e

    # --- convenience ---------------------------------------------------------------------------

    def override(self, overrides: Mapping[str, Any]) -> "GLCICConfig":
        return override(self, overrides)

    def with_mean_pixel(self, mean_pixel) -> "GLCICConfig":
        mean = tuple(float(v) for v in mean_pixel)
        return dataclasses.replace(
            self, data=dataclasses.replace(self.data, mean_pixel=mean)).validate()


def _with_legacy_defaults(values: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(values, Mapping):
        return values
    out = dict(values)
    for dotted, legacy in LEGACY_DEFAULTS.items():
        section, key = dotted.split(".")
        part = out.get(section)
        if isinstance(part, Mapping) and key not in part:
            out[section] = {**part, key: legacy}
    return out
