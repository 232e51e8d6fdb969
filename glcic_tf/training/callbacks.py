"""What happens after each training step: the step counter, loss checks, checkpoints, TensorBoard
scalars and preview images, the learning curve, and the stop that SIGTERM / SIGINT request.

`StepCallback` is a Keras callback (`fit()` calls it; the multi-worker loop calls it by hand);
`StopRequested` turns signals into a flag it checks, so a run saves a checkpoint after the step
it was interrupted in. `preview_grid` is the image grid of TensorBoard and `preview.png`.
"""

from __future__ import annotations

import math
import signal
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from glcic_tf.data import masks as masks_lib
from glcic_tf.training.trainer import TrainingError, phase_for_step
from glcic_tf.config import GLCICConfig


class StopRequested:
    """Turns SIGTERM / SIGINT into a flag the training loop checks after each step."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.signum is not None:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.signum = signum
        print(f"\nglcic_tf: received signal {signum}; saving a checkpoint after this step ...",
              flush=True)

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class StepCallback(keras.callbacks.Callback):
    """Counts global steps, checks losses, checkpoints, logs TensorBoard scalars and images."""

    def __init__(self, *, step: tf.Variable, manager: tf.train.CheckpointManager | None,
                 config: GLCICConfig, writer=None, preview_batch=None, stop=None, curve=None):
        super().__init__()
        self.curve = curve  # eval_curve.CurveLog, or None
        self._clock = time.perf_counter()
        self._eval_seconds = 0.0
        self.step = step
        self.manager = manager
        self.config = config
        self.writer = writer
        self.preview_batch = preview_batch
        self.stop = stop
        self._t = time.perf_counter()
        self._images = 0

    def log_curve(self) -> dict:
        """Scores the held-out crops now (`eval_curve`); its time is not training time."""
        t0 = time.perf_counter()
        minutes = (t0 - self._clock - self._eval_seconds) / 60.0
        step = int(self.step.numpy())
        point = self.curve.log(self.model.completion, step=step,
                               phase=phase_for_step(max(step - 1, 0), self.config),
                               minutes=minutes)
        print(f"\nglcic_tf: step {step}: held-out hole L1 {point['hole_l1']:.2f}, PSNR "
              f"{point['psnr']:.2f} dB (Telea {point['baselines']['telea']['hole_l1']:.2f}, "
              f"{point['baselines']['telea']['psnr']:.2f} dB) after {point['minutes']:.1f} min",
              flush=True)
        self._eval_seconds += time.perf_counter() - t0
        return point

    def save(self) -> str | None:
        """Checkpoints at the current global step; returns the path (None without a manager)."""
        if self.manager is None:
            return None
        return self.manager.save(checkpoint_number=int(self.step.numpy()))

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        for name, value in logs.items():
            v = float(np.asarray(value))
            if not math.isfinite(v):
                self.model.stop_training = True
                raise TrainingError(
                    f"non-finite {name} = {v} at global step {int(self.step.numpy()) + 1} in "
                    f"phase {self.model.phase}; stopping without saving. The last good checkpoint "
                    f"is {self.manager.latest_checkpoint if self.manager else None}. Lower the "
                    f"learning rate or check the data.")
        self.step.assign_add(1)
        self._images += self.config.schedule.batch_size
        step = int(self.step.numpy())
        sched = self.config.schedule
        if self.writer is not None and step % sched.log_every == 0:
            elapsed = time.perf_counter() - self._t
            with self.writer.as_default(step=step):
                for name, value in logs.items():
                    tf.summary.scalar(f"phase{self.model.phase}/{name}", float(value))
                    tf.summary.scalar(name, float(value))
                tf.summary.scalar("images_per_second", self._images / max(elapsed, 1e-9))
                tf.summary.scalar("phase", self.model.phase)
            self._t, self._images = time.perf_counter(), 0
        if self.writer is not None and self.preview_batch is not None and (
                step % sched.image_every == 0):
            grid = preview_grid(self.model.completion, self.preview_batch, self.config)
            with self.writer.as_default(step=step):
                tf.summary.image("preview/masked|output|completed|truth", grid[tf.newaxis],
                                 max_outputs=1)
        if self.curve is not None and sched.eval_every and step % sched.eval_every == 0:
            self.log_curve()
        if step % sched.checkpoint_every == 0:
            self.save()
        if self.stop is not None and self.stop.signum is not None:
            self.save()
            self.model.stop_training = True


def preview_grid(completion: keras.Model, batch: dict, config: GLCICConfig,
                 max_rows: int = 4) -> tf.Tensor:
    """Rows of (masked input | raw output | completed | ground truth), float32 in [0, 1]."""
    image = batch["image"][:max_rows]
    mask = batch["mask"][:max_rows]
    out = completion(masks_lib.network_inputs(image, mask, config.data), training=False)
    completed = masks_lib.composite(out, image, mask)
    masked = masks_lib.fill_holes(image, mask, config.data.mean_pixel)
    row = tf.concat([masked, tf.cast(out, tf.float32), completed, image], axis=2)  # [N,H,4W,3]
    return tf.reshape(row, [-1, tf.shape(row)[2], 3])


def write_png(path: str, image: tf.Tensor) -> None:
    """Writes a float image in [0, 1] (clipped) as an 8-bit PNG (any tf.io.gfile path)."""
    data = tf.io.encode_png(tf.image.convert_image_dtype(tf.clip_by_value(image, 0.0, 1.0),
                                                         tf.uint8, saturate=True))
    tf.io.write_file(path, data)
