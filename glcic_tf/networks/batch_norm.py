"""Batch normalization on TensorFlow's fused kernel, a drop-in for keras.layers.BatchNormalization.

Keras 3's BatchNormalization on the TensorFlow backend computes the moments (`tf.nn.moments`:
mean, squared difference, mean) and the normalisation (`tf.nn.batch_normalization`: a multiply
and an add) as separate element-wise ops, and their gradients as a dozen more; in mixed
precision it also casts every activation to float32 and back. `FusedBatchNormalization` runs
the same computation as one `FusedBatchNormV3` op (oneDNN-backed on CPUs, cuDNN on GPUs) and its
gradient as one `FusedBatchNormGradV3`, wherever that is exact:

* 4-D input, channels last, no mask, no renorm, float32 / bfloat16 / float16 input (the op keeps
  its statistics, scale and offset in float32, so nothing overflows in half precision);
* not `synchronized` across several replicas: the fused op only sees its own replica's batch,
  so synchronized batch norm under a multi-replica strategy keeps Keras' exact path (cross-
  replica sums of x and x^2). One replica, or no strategy, takes the fused path.

Everything else (float64, masks, renorm, other layouts) falls back to Keras' own `call`.

The layer *is* a `keras.layers.BatchNormalization` (a subclass): same constructor arguments and
config, same variables (`gamma`, `beta`, `moving_mean`, `moving_variance`, same shapes and
order), so checkpoints and SavedModels written with the Keras layer load unchanged, and code that
walks `isinstance(layer, keras.layers.BatchNormalization)` (batch-norm folding in
`glcic_tf.networks.folding`, the Torch7 importer) keeps working. Moving statistics follow Keras:
moving = moving * momentum + batch * (1 - momentum), with the *biased* batch variance (the fused
op returns the Bessel-corrected one for its running average; the correction is undone here).
`tests/networks/test_batch_norm.py` checks outputs, moving statistics and gradients against
Keras' layer in training and inference mode, float32 and mixed bfloat16.
"""

from __future__ import annotations

import keras

# Input dtypes the fused kernel takes (statistics, scale and offset stay float32).
FUSED_DTYPES = ("float32", "bfloat16", "float16")


@keras.saving.register_keras_serializable(package="glcic_tf")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by `FusedBatchNormV3` where it is exact.

    Takes exactly Keras' arguments (`momentum`, `epsilon`, `synchronized`, initializers, ...)
    and forwards them; see the module docstring for when the fused kernel is used.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)

    def _fused_applies(self, inputs, mask) -> bool:
        """Whether the fused kernel computes exactly what Keras' layer would, here."""
        if keras.backend.backend() != "tensorflow" or mask is not None or self.renorm:
            return False
        if len(inputs.shape) != 4 or self.axis not in (-1, 3):
            return False
        if keras.backend.standardize_dtype(inputs.dtype) not in FUSED_DTYPES:
            return False
        if self.synchronized:
            import tensorflow as tf

            context = tf.distribute.get_replica_context()
            # In a replica context of several replicas the batch statistics must be summed
            # across them; Keras' path does that exactly. (In a cross-replica context, context
            # is None and Keras uses local moments too.)
            if context is not None and context.num_replicas_in_sync > 1:
                return False
        return True

    def call(self, inputs, training=None, mask=None):
        if not self._fused_applies(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = int(inputs.shape[-1])
        gamma = (tf.cast(self.gamma, tf.float32) if self.scale
                 else tf.ones([channels], tf.float32))
        beta = (tf.cast(self.beta, tf.float32) if self.center
                else tf.zeros([channels], tf.float32))
        if training and self.trainable:
            empty = tf.constant([], tf.float32)
            # epsilon passed as is (tf.compat.v1.nn.fused_batch_norm would raise it to 1.001e-5).
            y, mean, unbiased_var, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta, mean=empty, variance=empty,
                epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
                is_training=True)
            # The kernel returns var * n / max(n - 1, 1) for its running average; Keras' moving
            # variance takes the biased variance, so undo the correction.
            n = tf.cast(tf.size(inputs, out_type=tf.int64) // channels, tf.float32)
            variance = unbiased_var * (tf.maximum(n - 1.0, 1.0) / n)
            moving_mean = tf.cast(self.moving_mean, tf.float32)
            moving_variance = tf.cast(self.moving_variance, tf.float32)
            self.moving_mean.assign(
                moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, _, _, _, _, _ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta,
                mean=tf.cast(self.moving_mean, tf.float32),
                variance=tf.cast(self.moving_variance, tf.float32),
                epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC",
                is_training=False)
        return tf.cast(y, self.compute_dtype)

    def get_config(self):
        return super().get_config()  # no arguments of its own: Keras' config round-trips
