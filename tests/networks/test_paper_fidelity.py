"""The paper preset's reading of the paper, and the named fields for every deviation (issue 18)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from glcic_tf import config as cfg
from glcic_tf.data import augment
from glcic_tf.data import masks
from glcic_tf.networks import models
from glcic_tf.training import inputs, losses
from glcic_tf.training import trainer as trainer_lib
from glcic_tf.config import GLCICConfig, MaskConfig, ModelConfig

from helpers.training import tiny_config


def test_paper_preset_takes_the_papers_reading():
    c = cfg.get_preset("paper")
    assert c.masks.local_patch == "centred"
    assert c.loss.real_local_patch == "own_random"
    assert c.loss.generator_gan == "saturating"
    assert c.loss.discriminator_alpha is False
    assert c.loss.reconstruction == "mse"
    assert c.model.initializer == "torch"
    assert c.model.output == "sigmoid"
    assert (c.optimizer.name, c.optimizer.rho, c.optimizer.epsilon) == ("adadelta", 0.9, 1e-6)


def test_configs_saved_before_the_fields_load_with_the_old_behaviour():
    values = cfg.get_preset("paper").to_dict()
    for dotted in cfg.LEGACY_DEFAULTS:
        section, key = dotted.split(".")
        del values[section][key]
    values["optimizer"]["rho"] = 0.95  # what old runs stored
    old = GLCICConfig.from_dict(values)
    assert old.masks.local_patch == "containing"
    assert old.loss.real_local_patch == "same_as_fake"
    assert old.loss.generator_gan == "non_saturating"
    assert old.model.initializer == "keras"
    assert old.model.output == "sigmoid"
    assert old.optimizer.rho == 0.95
    # A config that has the fields keeps them.
    assert GLCICConfig.from_json(cfg.get_preset("paper").to_json()) == cfg.get_preset("paper")


@pytest.mark.parametrize("key,value", [("masks.local_patch", "middle"),
                                       ("loss.real_local_patch", "random"),
                                       ("loss.generator_gan", "wgan"),
                                       ("model.initializer", "he"),
                                       ("model.output", "tanh"),
                                       ("optimizer.name", "sgd")])
def test_unknown_option_values_are_rejected_with_the_choices(key, value):
    with pytest.raises(cfg.ConfigError, match=key.split(".")[1]):
        cfg.get_preset("paper").override({key: value})


def test_adam_with_adadeltas_learning_rate_is_refused():
    with pytest.raises(cfg.ConfigError, match="ADADELTA"):
        cfg.get_preset("paper").override({"optimizer.name": "adam"})


# --- the local patch ------------------------------------------------------------------------------

def _centred(start, length, local, size):
    return min(max((2 * start + length - local) // 2, 0), size - local)


def test_centred_patch_is_centred_on_the_hole_and_clipped_at_borders():
    m = MaskConfig(local_size=32, hole_min=6, hole_max=24, local_patch="centred")
    size = 64
    at_border = 0
    for i in range(300):
        out = masks.sample_rect_holes(size, m, tf.constant([i, 7], tf.int64))
        y, x, h, w = out["boxes"].numpy()[0]
        oy, ox = out["local_offset"].numpy()
        assert (oy, ox) == (_centred(y, h, 32, size), _centred(x, w, 32, size))
        assert oy <= y and y + h <= oy + 32 and ox <= x and x + w <= ox + 32
        at_border += oy in (0, size - 32) or ox in (0, size - 32)
    assert at_border > 20  # the clipping was exercised


def test_containing_patch_is_uniform_not_centred():
    m = MaskConfig(local_size=32, hole_min=6, hole_max=12, local_patch="containing")
    offsets = []
    for i in range(200):
        out = masks.sample_rect_holes(64, m, tf.constant([i, 3], tf.int64))
        y, x, h, w = out["boxes"].numpy()[0]
        oy, ox = out["local_offset"].numpy()
        assert oy <= y and y + h <= oy + 32
        offsets.append(abs(oy - _centred(y, h, 32, 64)) + abs(ox - _centred(x, w, 32, 64)))
    assert np.mean(offsets) > 3


def test_centred_freeform_patch_is_centred_on_the_strokes():
    m = MaskConfig(local_size=32, hole_min=6, hole_max=12, local_patch="centred",
                   stroke_width_min=2, stroke_width_max=4)
    for i in range(20):
        out = masks.sample_freeform_holes(64, m, tf.constant([i, 1], tf.int64))
        hole = out["mask"].numpy()[..., 0] > 0.5
        ys, xs = np.nonzero(hole)
        oy, ox = out["local_offset"].numpy()
        assert oy == _centred(ys.min(), ys.max() - ys.min() + 1, 32, 64)
        assert ox == _centred(xs.min(), xs.max() - xs.min() + 1, 32, 64)


def test_real_images_get_their_own_random_patch():
    m = MaskConfig(local_size=16, hole_min=4, hole_max=8)
    same = 0
    for i in range(100):
        example = {"image": tf.zeros([48, 48, 3])}
        out = augment.add_holes(example, m, (0.5, 0.5, 0.5), tf.constant([i, 0], tf.int64))
        real, fake = out["real_local_offset"].numpy(), out["local_offset"].numpy()
        assert (0 <= real).all() and (real <= 48 - 16).all()
        same += np.array_equal(real, fake)
    assert same < 10  # independent draws rarely coincide


def _trainer_and_batch(**overrides):
    config = tiny_config(**{"model.sync_batch_norm": False, **overrides})
    batch = inputs.synthetic_batch(config, 4, seed=2)
    return trainer_lib.build_trainer(config), {k: tf.constant(batch[k])
                                               for k in inputs.TRAIN_FEATURES}


@pytest.mark.parametrize("option,expected_key", [("own_random", "real_local_offset"),
                                                 ("same_as_fake", "local_offset")])
def test_discriminator_crops_real_images_where_the_option_says(option, expected_key):
    trainer, batch = _trainer_and_batch(**{"loss.real_local_patch": option})
    seen = []
    original = trainer._d_logits
    trainer._d_logits = lambda images, offsets, training: (seen.append(offsets.numpy()),
                                                           original(images, offsets,
                                                                    training))[1]
    trainer._d_losses(batch, batch["image"])
    np.testing.assert_array_equal(seen[0], batch[expected_key].numpy())  # real
    np.testing.assert_array_equal(seen[1], batch["local_offset"].numpy())  # completed


# --- losses -------------------------------------------------------------------------------------

def test_generator_gan_terms_against_hand_computed_values():
    logits = tf.constant([[0.0], [2.0], [-1.0]])
    p = 1 / (1 + np.exp(-np.array([0.0, 2.0, -1.0])))
    np.testing.assert_allclose(losses.generator_gan_per_example(logits, "saturating"),
                               np.log(1 - p), rtol=1e-6)
    np.testing.assert_allclose(losses.generator_gan_per_example(logits, "non_saturating"),
                               -np.log(p), rtol=1e-6)


def test_discriminator_alpha_scales_the_discriminator_loss():
    plain, batch = _trainer_and_batch(**{"loss.discriminator_alpha": False})
    scaled, _ = _trainer_and_batch(**{"loss.discriminator_alpha": True, "loss.alpha": 0.25})
    scaled.discriminator.set_weights(plain.discriminator.get_weights())
    a = plain._d_losses(batch, batch["image"]).numpy()
    b = scaled._d_losses(batch, batch["image"]).numpy()
    np.testing.assert_allclose(b, 0.25 * a, rtol=1e-5)


def test_reconstruction_terms():
    pred = tf.constant(np.full((1, 2, 2, 3), 0.5, np.float32))
    target = tf.constant(np.zeros((1, 2, 2, 3), np.float32))
    mask = tf.constant(np.array([1, 0, 0, 0], np.float32).reshape(1, 2, 2, 1))
    # One hole pixel of error 0.5 in 3 channels, averaged over 2x2x3 values.
    np.testing.assert_allclose(losses.reconstruction_per_example(pred, target, mask, "l1"),
                               [0.5 * 3 / 12])
    np.testing.assert_allclose(losses.reconstruction_per_example(pred, target, mask, "mse"),
                               [0.25 * 3 / 12])


# --- optimizer and initialisation ---------------------------------------------------------------

def test_paper_optimizer_is_adadelta_with_torch7_defaults():
    c = cfg.get_preset("paper")
    opt = trainer_lib.make_optimizer(1.0, c)
    assert isinstance(opt, keras.optimizers.Adadelta)
    assert opt.rho == 0.9 and opt.epsilon == 1e-6
    assert float(opt.learning_rate) == 1.0


def test_adam_takes_each_networks_beta_1():
    c = cfg.get_preset("photos128")
    c_opt = trainer_lib.make_optimizer(4e-4, c, "completion")
    d_opt = trainer_lib.make_optimizer(4e-4, c, "discriminator")
    assert isinstance(c_opt, keras.optimizers.Adam)
    assert c_opt.beta_1 == c.optimizer.beta_1 and d_opt.beta_1 == c.optimizer.beta_1_discriminator


def test_torch_initializer_bounds():
    keras.utils.set_random_seed(0)
    model_config = ModelConfig(width=0.25, initializer="torch")
    c = models.completion_network(0.25, model_config)
    checked = 0
    for layer in c.layers:
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose)):
            kernel, bias = (w.numpy() for w in layer.weights)
            k = layer.kernel_size[0] * layer.kernel_size[1]
            fan_in = k * int(layer.input.shape[-1])  # input channels, also for the deconvs
            bound = 1 / math.sqrt(fan_in)
            assert np.abs(kernel).max() <= bound + 1e-7, layer.name
            assert np.abs(kernel).max() > 0.9 * bound, layer.name  # uniform up to the bound
            assert np.abs(bias).max() <= bound + 1e-7 and np.abs(bias).max() > 0, layer.name
            checked += 1
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma = layer.gamma.numpy()
            assert 0 <= gamma.min() and gamma.max() <= 1 and gamma.std() > 0.1
    assert checked == 17
    d = models.context_discriminator(64, 32, 0.25, model_config)
    fc = d.get_layer("context_fc")
    bound = 1 / math.sqrt(fc.kernel.shape[0])
    assert np.abs(fc.kernel.numpy()).max() <= bound + 1e-7


def test_keras_initializer_keeps_zero_biases():
    c = models.completion_network(0.25, ModelConfig(width=0.25, initializer="keras"))
    assert not c.get_layer("conv1").bias.numpy().any()
    assert np.allclose(c.get_layer("conv1_bn").gamma.numpy(), 1.0)


def test_torch_initializer_round_trips_through_keras_serialization():
    init = models.TorchUniform(75)
    again = keras.initializers.deserialize(keras.initializers.serialize(init))
    assert isinstance(again, models.TorchUniform) and again.fan_in == 75
