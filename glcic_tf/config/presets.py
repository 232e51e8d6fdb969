"""Named presets: functions registered by name, each returning a `GLCICConfig`.

`get_preset(name)` returns a validated config; `register_preset` adds one. Shipped: `paper` (the
paper's setting), `photos128` (the CPU preset the shipped model was trained with), `demo` (a
minute of fine-tuning of that model on the sample photos) and `tiny` (the pipeline end to end in
seconds, for tests). Each docstring gives the command and what it costs.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

from glcic_tf.config.experiment import GLCICConfig
from glcic_tf.config.sections import (ConfigError, DataConfig, LossConfig, MaskConfig,
                                      ModelConfig, OptimizerConfig, ScheduleConfig)

_PRESETS: dict[str, Callable[[], GLCICConfig]] = {}


def register_preset(fn: Callable[[], GLCICConfig]) -> Callable[[], GLCICConfig]:
    _PRESETS[fn.__name__] = fn
    return fn


def preset_names() -> list[str]:
    return sorted(_PRESETS)


def get_preset(name: str) -> GLCICConfig:
    if name not in _PRESETS:
        raise ConfigError(f"unknown preset {name!r}; available: {preset_names()}")
    return _PRESETS[name]().validate()


@register_preset
def paper() -> GLCICConfig:
    """The paper's setting: 256x256 crops, 96-128 px holes, batch 96, 90k/10k/400k steps.

    `python pipelines/train.py --data 'shards/train-*.tfrecord'`. The authors report about two
    months on four K80 GPUs for 500,000 steps on Places2; budget accordingly.
    """
    return GLCICConfig(name="paper")


@register_preset
def photos128() -> GLCICConfig:
    """The CPU preset: an inpainter that beats OpenCV on real photos in under an hour on 2 cores.

    128 px crops of photos resized to 128-192 px on the shorter side, 48-64 px rectangles and
    free-form strokes (half each), width 1/2, batch 16. Departures from the paper, each a config
    field whose default is the paper's (measured effects: docs/results.md):
    `model.output = "harmonic_residual"` (the network corrects a smooth fill instead of
    painting the hole from the mean colour), `loss.reconstruction = "l1"`, Adam instead of
    ADADELTA, and a schedule of 2,400 / 150 / 300 steps.

    `python pipelines/make_tfrecords.py --input 'photos/*.jpg' --output shards/photos
    --val-fraction 0.25`, then `python pipelines/train.py --preset photos128 --data
    'shards/photos-train-*' --out runs/photos128`: about 60 minutes on a 2-core AMD EPYC
    (Zen 4); the shipped `models/glcic_photos128` was trained so (see its model card).
    """
    return GLCICConfig(
        name="photos128",
        data=DataConfig(image_size=128, resize_min=128, resize_max=192, random_flip=True,
                        shuffle_buffer=512),
        masks=MaskConfig(local_size=64, hole_min=48, hole_max=64, kind="mixed",
                         freeform_ratio=0.5, max_strokes=4, stroke_width_min=6,
                         stroke_width_max=14),
        model=ModelConfig(width=0.5, output="harmonic_residual"),
        loss=LossConfig(reconstruction="l1", alpha=0.0004),
        optimizer=OptimizerConfig(name="adam", learning_rate_completion=5e-4,
                                  learning_rate_discriminator=2e-4, beta_1=0.9,
                                  beta_1_discriminator=0.5),
        schedule=ScheduleConfig(batch_size=16, steps_completion=2400, steps_discriminator=150,
                                steps_joint=300, checkpoint_every=300, keep_checkpoints=3,
                                log_every=50, image_every=300, eval_every=300),
    )


@register_preset
def demo() -> GLCICConfig:
    """A minute of fine-tuning of the shipped `photos128` network on the bundled sample photos.

    `python pipelines/train.py` (no arguments; `make demo`): warm-starts C from
    `models/glcic_photos128` (D starts fresh), runs all three phases (40 / 10 / 30 steps at
    batch 8, about 1-2 minutes on a 2-core CPU), checkpoints, logs to TensorBoard, exports and
    writes `preview.png` and `before_after.png` (a held-out sample photo with a hole, before
    and after). The architecture and scale are the shipped model's (width 1/2, 128 px crops);
    the learning rates are lower, so the minute adapts the network without undoing it.
    """
    base = photos128()
    return dataclasses.replace(
        base, name="demo",
        data=dataclasses.replace(base.data, shuffle_buffer=256),
        optimizer=dataclasses.replace(base.optimizer, learning_rate_completion=1e-4,
                                      learning_rate_discriminator=2e-4),
        schedule=ScheduleConfig(batch_size=8, steps_completion=40, steps_discriminator=10,
                                steps_joint=30, checkpoint_every=20, keep_checkpoints=3,
                                log_every=10, image_every=20, eval_every=0),
    )


@register_preset
def tiny() -> GLCICConfig:
    """A few steps of each phase at 64x64 and width 1/4: the pipeline end to end in seconds.

    For tests and smoke runs (`python pipelines/train.py --preset tiny`); the network it
    trains is not an inpainter (140 steps at a scale far below real photos, see
    docs/results.md). Before 2026-12 this was the `demo` preset.
    """
    return GLCICConfig(
        name="tiny",
        data=DataConfig(image_size=64, resize_min=64, resize_max=96, shuffle_buffer=256),
        masks=MaskConfig(local_size=32, hole_min=16, hole_max=28),
        model=ModelConfig(width=0.25),
        schedule=ScheduleConfig(batch_size=8, steps_completion=60, steps_discriminator=20,
                                steps_joint=60, checkpoint_every=20, keep_checkpoints=3,
                                log_every=10, image_every=20),
    )
