"""The GAN's losses as pure functions of tensors (Iizuka et al. 2017, Eq. 1-3), each per example.

C's reconstruction term is the paper's weighted MSE ||M * (C(x, M) - x)||^2 or (`loss.reconstruction
= "l1"`) the mean absolute error in the hole; the MSE of an example is the mean over its pixels and
channels of the masked squared error (what Torch's MSECriterion on masked tensors gives, and what
alpha = 0.0004 was tuned against). D's loss is the binary cross-entropy of its logits; C's GAN term
is Eq. 2's saturating log(1 - D(completed)) or the non-saturating -log D(completed)
(`loss.generator_gan`).

Every function returns shape [B]: the trainer (`glcic_tf.training.trainer`) averages over the
*global* batch with `tf.nn.compute_average_loss`, so N replicas sum their gradients into exactly
the single-device update.
"""

from __future__ import annotations

import tensorflow as tf


def masked_mse_per_example(prediction: tf.Tensor, target: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """||M * (C(x, M) - x)||^2 per example, as the mean over pixels and channels: shape [B]."""
    prediction = tf.cast(prediction, tf.float32)
    diff = (prediction - tf.cast(target, tf.float32)) * tf.cast(mask, tf.float32)
    return tf.reduce_mean(tf.square(diff), axis=[1, 2, 3])


def masked_l1_per_example(prediction: tf.Tensor, target: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """|M * (C(x, M) - x)| per example, as the mean over pixels and channels: shape [B]."""
    prediction = tf.cast(prediction, tf.float32)
    diff = (prediction - tf.cast(target, tf.float32)) * tf.cast(mask, tf.float32)
    return tf.reduce_mean(tf.abs(diff), axis=[1, 2, 3])


def reconstruction_per_example(prediction, target, mask, kind: str) -> tf.Tensor:
    """C's reconstruction term (`loss.reconstruction`): "mse" (the paper) or "l1"; shape [B]."""
    if kind == "mse":
        return masked_mse_per_example(prediction, target, mask)
    if kind == "l1":
        return masked_l1_per_example(prediction, target, mask)
    raise ValueError(f"unknown loss.reconstruction {kind!r}")


def generator_gan_per_example(fake_logits: tf.Tensor, kind: str) -> tf.Tensor:
    """C's GAN term from D's logits on completed images (`loss.generator_gan`); shape [B].

    "saturating": log(1 - D(C(x))) as Eq. 2 writes it (C minimises it; its gradient vanishes
    where D is confident); "non_saturating": -log D(C(x)).
    """
    if kind == "saturating":
        return -bce_with_logits_per_example(fake_logits, 0.0)  # log(1 - sigmoid(logits))
    if kind == "non_saturating":
        return bce_with_logits_per_example(fake_logits, 1.0)
    raise ValueError(f"unknown loss.generator_gan {kind!r}")


def bce_with_logits_per_example(logits: tf.Tensor, label: float) -> tf.Tensor:
    """Binary cross-entropy of D's logits against a constant label: shape [B]."""
    logits = tf.reshape(tf.cast(logits, tf.float32), [-1])
    return tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.fill(tf.shape(logits), label),
                                                   logits=logits)
