import numpy as np
import pytest
import keras
import tensorflow as tf

from glcic_tf.networks import models
from glcic_tf.config import ModelConfig


def trainable_params(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def conv_params(k, cin, cout):
    return k * k * cin * cout + cout  # kernel + bias


def bn_params(c):
    return 2 * c  # gamma, beta (moving statistics are not trainable)


def test_completion_network_parameter_count_matches_hand_arithmetic():
    # Table 1: (kernel, in, out) for every layer; BN after all but the output conv.
    layers = [(5, 4, 64), (3, 64, 128), (3, 128, 128), (3, 128, 256), (3, 256, 256),
              (3, 256, 256)] + [(3, 256, 256)] * 4 + [(3, 256, 256)] * 2 + [
        (4, 256, 128), (3, 128, 128), (4, 128, 64), (3, 64, 32), (3, 32, 3)]
    assert len(layers) == 17
    expected = (sum(conv_params(*layer) for layer in layers)
                + sum(bn_params(layer[2]) for layer in layers[:-1]))
    assert expected == 6_072_131
    assert trainable_params(models.completion_network()) == 6_072_131


def test_context_discriminator_parameter_count_matches_hand_arithmetic():
    def branch(filters, size):
        cin, total = 3, 0
        for f in filters:
            total += conv_params(5, cin, f) + bn_params(f)
            cin = f
            size //= 2
        return total + (size * size * cin) * 1024 + 1024  # FC-1024 on the flattened 4x4x512

    expected = branch((64, 128, 256, 512, 512, 512), 256) + branch((64, 128, 256, 512, 512), 128)
    expected += 2048 * 1 + 1  # FC on the concatenated 2048-d vector
    assert expected == 45_063_681
    d = models.context_discriminator()
    assert trainable_params(d) == 45_063_681
    assert d.get_layer("concat_2048").output.shape[-1] == 2048


def test_layer_names_follow_the_paper():
    c = models.completion_network(width=0.125)
    names = {layer.name for layer in c.layers}
    for n in ["conv1", "conv6", "dilated_conv_d2", "dilated_conv_d4", "dilated_conv_d8",
              "dilated_conv_d16", "conv7", "conv8", "deconv1", "conv9", "deconv2", "conv10",
              "output_conv", "conv1_bn", "deconv2_relu"]:
        assert n in names, n
    convs = [layer for layer in c.layers
             if isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))]
    assert len(convs) == 17
    bns = [layer for layer in c.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 16
    assert [c.get_layer(f"dilated_conv_d{d}").dilation_rate for d in (2, 4, 8, 16)] == [
        (2, 2), (4, 4), (8, 8), (16, 16)]
    d = models.context_discriminator(64, 32, width=0.125)
    g = d.get_layer("global_discriminator")
    lo = d.get_layer("local_discriminator")
    assert [layer.name for layer in g.layers if isinstance(layer, keras.layers.Conv2D)] == [
        f"global_conv{i}" for i in range(1, 7)]
    assert [layer.name for layer in lo.layers if isinstance(layer, keras.layers.Conv2D)] == [
        f"local_conv{i}" for i in range(1, 6)]
    assert g.get_layer("global_fc").units == 128 and lo.get_layer("local_fc").units == 128


@pytest.mark.parametrize("h, w", [(256, 256), (200, 304), (36, 20)])
def test_completion_output_shape_equals_input_shape(h, w):
    c = models.completion_network(width=1 / 16)
    rng = np.random.default_rng(0)
    out = c({"image": rng.random((2, h, w, 3), dtype=np.float32),
             "mask": np.zeros((2, h, w, 1), np.float32)})
    assert out.shape == (2, h, w, 3)
    out = np.asarray(out)
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert out.dtype == np.float32


def test_sigmoid_output_range_under_extreme_inputs():
    c = models.completion_network(width=1 / 16)
    x = np.full((1, 32, 32, 3), 1e4, np.float32)
    out = np.asarray(c({"image": x, "mask": np.ones((1, 32, 32, 1), np.float32)}))
    assert np.all((out >= 0) & (out <= 1))


def test_discriminator_output_is_a_probability_per_image():
    d = models.context_discriminator(64, 32, width=1 / 16)
    rng = np.random.default_rng(0)
    p = np.asarray(d({"global_image": rng.random((3, 64, 64, 3), dtype=np.float32),
                      "local_image": rng.random((3, 32, 32, 3), dtype=np.float32)}))
    assert p.shape == (3, 1) and np.all((p > 0) & (p < 1))
    logits = models.discriminator_logits(d)
    lg = np.asarray(logits({"global_image": np.zeros((1, 64, 64, 3), np.float32),
                            "local_image": np.zeros((1, 32, 32, 3), np.float32)}))
    p0 = np.asarray(d({"global_image": np.zeros((1, 64, 64, 3), np.float32),
                       "local_image": np.zeros((1, 32, 32, 3), np.float32)}))
    np.testing.assert_allclose(1 / (1 + np.exp(-lg)), p0, rtol=1e-6)


def _measured_receptive_field(dilations, size=384):
    c = models.completion_network(width=1 / 16, dilations=dilations)
    for w in c.weights:  # positive kernels: no gradient can cancel out
        if w.path.endswith("kernel"):
            w.assign(tf.random.uniform(w.shape, 0.01, 1.0, seed=1))
    # Pre-sigmoid output: positive kernels saturate the sigmoid and would zero its gradient.
    pre = keras.Model(c.inputs, c.get_layer("output_conv").output)
    img = tf.ones((1, size, size, 3))
    mask = tf.ones((1, size, size, 1))
    with tf.GradientTape() as tape:
        tape.watch(img)
        y = pre({"image": img, "mask": mask}, training=False)[0, size // 2, size // 2, 0]
    g = np.abs(tape.gradient(y, img).numpy()[0]).sum(-1)
    ys, xs = np.nonzero(g)
    return ys.max() - ys.min() + 1, xs.max() - xs.min() + 1


def test_receptive_field_of_dilated_design_is_299():
    assert _measured_receptive_field((2, 4, 8, 16)) == (299, 299)
    assert models.receptive_field() == 301  # theoretical upper bound; paper counts 307


def test_receptive_field_without_dilation_is_91():
    assert _measured_receptive_field((1, 1, 1, 1)) == (91, 91)


def test_width_scales_channels_not_structure():
    full = models.completion_network()
    small = models.completion_network(width=0.25)
    assert len(full.layers) == len(small.layers)
    assert [layer.name for layer in full.layers] == [layer.name for layer in small.layers]
    assert small.get_layer("conv1").filters == 16 and small.get_layer("output_conv").filters == 3


def test_synchronized_batch_norm_is_selectable():
    c = models.completion_network(width=1 / 16, config=ModelConfig(sync_batch_norm=True))
    assert all(layer.synchronized for layer in c.layers
               if isinstance(layer, keras.layers.BatchNormalization))
    c = models.completion_network(width=1 / 16)
    assert not any(layer.synchronized for layer in c.layers
                   if isinstance(layer, keras.layers.BatchNormalization))


@pytest.mark.parametrize("kwargs, message", [
    ({"width": 0}, r"width must be a number in \(0, 4\], got 0"),
    ({"width": -1.0}, "got -1.0"),
    ({"dilations": (2, 4)}, "dilations must be 4 positive integers"),
])
def test_bad_builder_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        models.completion_network(**kwargs)


def test_bad_discriminator_arguments():
    with pytest.raises(ValueError, match=r"local_size \(128\) must be <= image_size \(64\)"):
        models.context_discriminator(64, 128)


def test_dilated_taps_beyond_a_small_training_crop_get_no_gradient():
    """Why the old 64 px demo network painted noise on real photos (docs/results.md): at 64 px
    the dilated layers run on 16x16 feature maps, so every off-centre tap of the dilation-16
    layer reads zero padding, gets a zero gradient and keeps its random initial value, and
    then meets real features on a larger image."""
    import tensorflow as tf

    c = models.completion_network(width=1 / 16)
    rng = np.random.default_rng(0)
    image = tf.constant(rng.random((2, 64, 64, 3)), tf.float32)
    mask = tf.constant((rng.random((2, 64, 64, 1)) > 0.8).astype(np.float32))
    layer = c.get_layer("dilated_conv_d16")
    with tf.GradientTape() as tape:
        out = c({"image": image, "mask": mask}, training=True)
        loss = tf.reduce_mean(tf.square(out - image))
    grad = tape.gradient(loss, layer.kernel).numpy()  # [3, 3, in, out]
    centre = grad[1, 1]
    off_centre = np.delete(grad.reshape(9, *grad.shape[2:]), 4, axis=0)
    assert np.abs(centre).max() > 0
    assert np.abs(off_centre).max() == 0.0
    # At 128 px (32x32 maps, the photos128 preset) every tap is trained.
    image = tf.image.resize(image, [128, 128])
    mask = tf.cast(tf.image.resize(mask, [128, 128]) > 0.5, tf.float32)
    with tf.GradientTape() as tape:
        out = c({"image": image, "mask": mask}, training=True)
        loss = tf.reduce_mean(tf.square(out - image))
    grad = tape.gradient(loss, layer.kernel).numpy()
    assert (np.abs(grad.reshape(9, -1)).max(axis=1) > 0).all()
