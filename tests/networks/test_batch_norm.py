"""glcic_tf.networks.batch_norm.FusedBatchNormalization against keras.layers.BatchNormalization."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from glcic_tf.networks import batch_norm
from glcic_tf.networks import models
from glcic_tf.training import distribute, inputs
from glcic_tf.training import trainer as trainer_lib
from glcic_tf.networks.batch_norm import FusedBatchNormalization
from glcic_tf.config import ModelConfig

from helpers.training import policy, tiny_config

SHAPE = (3, 6, 5, 4)  # small, odd sizes: n = 90 values per channel


def pair(**kwargs):
    """A Keras layer and a fused layer with the same (non-trivial) weights and statistics."""
    rng = np.random.default_rng(0)
    kwargs = {"momentum": 0.9, "epsilon": 1e-5, **kwargs}
    ref, fused = keras.layers.BatchNormalization(**kwargs), FusedBatchNormalization(**kwargs)
    for layer in (ref, fused):
        layer.build(SHAPE)
    values = [rng.uniform(0.5, 1.5, SHAPE[-1]), rng.normal(size=SHAPE[-1]),
              rng.normal(size=SHAPE[-1]), rng.uniform(0.5, 2.0, SHAPE[-1])]
    for layer in (ref, fused):
        for var, value in zip((layer.gamma, layer.beta, layer.moving_mean,
                               layer.moving_variance), values):
            var.assign(value.astype(np.float32))
    return ref, fused


def batches(n, dtype="float32", seed=1):
    rng = np.random.default_rng(seed)
    return [tf.cast(rng.normal(1.0, 2.0, SHAPE).astype(np.float32), dtype) for _ in range(n)]


def grads(layer, x, training_mode, w):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training_mode)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * w)
    dx, dgamma, dbeta = tape.gradient(loss, [x, layer.gamma, layer.beta])
    return y, dx, dgamma, dbeta


def f32(t):
    return np.asarray(tf.cast(t, tf.float32))


def test_is_a_keras_batch_norm_with_the_same_variables_and_config():
    ref, fused = pair()
    assert isinstance(fused, keras.layers.BatchNormalization)
    assert [v.path.split("/")[-1] for v in fused.weights] == [
        v.path.split("/")[-1] for v in ref.weights] == [
        "gamma", "beta", "moving_mean", "moving_variance"]
    assert [v.shape for v in fused.weights] == [v.shape for v in ref.weights]
    assert fused.get_config() | {"name": None} == ref.get_config() | {"name": None}
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(fused))
    assert type(clone) is FusedBatchNormalization
    assert clone.momentum == 0.9 and clone.epsilon == 1e-5


@pytest.mark.parametrize("compile_fn", [False, True], ids=["eager", "tf_function"])
def test_training_mode_outputs_statistics_and_gradients_match_keras_float32(compile_fn):
    ref, fused = pair()
    w = tf.constant(np.random.default_rng(2).normal(size=SHAPE).astype(np.float32))
    run = {name: (tf.function(lambda x, layer=layer: grads(layer, x, True, w)) if compile_fn
                  else (lambda x, layer=layer: grads(layer, x, True, w)))
           for name, layer in (("ref", ref), ("fused", fused))}
    for x in batches(3):  # three steps: the moving statistics compound
        a, b = run["ref"](x), run["fused"](x)
        for got, want in zip(b, a):
            np.testing.assert_allclose(f32(got), f32(want), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fused.moving_mean.numpy(), ref.moving_mean.numpy(), rtol=1e-6,
                               atol=1e-6)
    # Keras' moving variance takes the biased batch variance (fused's own would be Bessel's).
    np.testing.assert_allclose(fused.moving_variance.numpy(), ref.moving_variance.numpy(),
                               rtol=1e-6, atol=1e-6)
    x = batches(1, seed=5)[0]
    n = np.prod(SHAPE[:-1])
    var = f32(x).reshape(-1, SHAPE[-1]).var(axis=0)
    before = fused.moving_variance.numpy().copy()
    fused(x, training=True)
    np.testing.assert_allclose(fused.moving_variance.numpy(), 0.9 * before + 0.1 * var,
                               rtol=1e-5)
    assert not np.allclose(fused.moving_variance.numpy(),
                           0.9 * before + 0.1 * var * n / (n - 1), rtol=1e-5)


def test_inference_mode_and_frozen_layers_match_keras_and_leave_statistics_alone():
    ref, fused = pair()
    w = tf.constant(np.random.default_rng(3).normal(size=SHAPE).astype(np.float32))
    stats = [fused.moving_mean.numpy().copy(), fused.moving_variance.numpy().copy()]
    x = batches(1)[0]
    for got, want in zip(grads(fused, x, False, w), grads(ref, x, False, w)):
        np.testing.assert_allclose(f32(got), f32(want), rtol=1e-5, atol=1e-6)
    ref.trainable = fused.trainable = False  # Keras: a frozen batch norm runs in inference mode
    np.testing.assert_allclose(f32(fused(x, training=True)), f32(ref(x, training=True)),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fused.moving_mean.numpy(), stats[0])
    np.testing.assert_array_equal(fused.moving_variance.numpy(), stats[1])


@pytest.mark.parametrize("training_mode", [True, False])
def test_mixed_bfloat16_matches_keras(training_mode):
    with policy("mixed_bfloat16"):
        ref, fused = pair()
    w = tf.constant(np.random.default_rng(4).normal(size=SHAPE).astype(np.float32))
    for x in batches(2, "bfloat16"):
        a, b = grads(ref, x, training_mode, w), grads(fused, x, training_mode, w)
        assert b[0].dtype == a[0].dtype == tf.bfloat16  # output in the compute dtype
        assert b[2].dtype == tf.float32  # gamma stays float32
        # Outputs and input gradients are bfloat16: one rounding (2^-8 relative) apart at most.
        np.testing.assert_allclose(f32(b[0]), f32(a[0]), rtol=1e-2, atol=1e-2)
        np.testing.assert_allclose(f32(b[1]), f32(a[1]), rtol=1e-2, atol=1e-2)
        np.testing.assert_allclose(f32(b[2]), f32(a[2]), rtol=1e-2, atol=1e-2)
        np.testing.assert_allclose(f32(b[3]), f32(a[3]), rtol=1e-4, atol=1e-4)
    for got, want in ((fused.moving_mean, ref.moving_mean),
                      (fused.moving_variance, ref.moving_variance)):
        assert got.dtype == "float32"
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-6)


def test_float16_input_is_fused_too():
    ref, fused = pair(dtype="mixed_float16")
    x = batches(1, "float16")[0]
    np.testing.assert_allclose(f32(fused(x, training=True)), f32(ref(x, training=True)),
                               rtol=5e-3, atol=5e-3)


def _op_types(layer, x, training_mode):
    fn = tf.function(lambda x: layer(x, training=training_mode))
    return {op.type for op in fn.get_concrete_function(x).graph.get_operations()}


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_the_fused_kernel_is_what_runs(dtype):
    with policy("mixed_bfloat16" if dtype == "bfloat16" else "float32"):
        _, fused = pair(synchronized=True)  # one replica: synchronised = local statistics
    x = batches(1, dtype)[0]
    for training_mode in (True, False):
        types = _op_types(fused, x, training_mode)
        assert "FusedBatchNormV3" in types and "Mean" not in types, types


def test_falls_back_to_keras_where_the_fused_kernel_is_not_exact():
    with policy("float64"):
        ref, fused = pair()
    x = tf.cast(batches(1)[0], tf.float64)
    assert "FusedBatchNormV3" not in _op_types(fused, x, True)
    np.testing.assert_allclose(fused(x, training=True).numpy(), ref(x, training=True).numpy(),
                               rtol=1e-12)
    ref3d, fused3d = keras.layers.BatchNormalization(), FusedBatchNormalization()
    x3 = tf.random.normal([2, 7, 3])
    np.testing.assert_allclose(fused3d(x3, training=True), ref3d(x3, training=True),
                               rtol=1e-6, atol=1e-6)
    assert batch_norm.FUSED_DTYPES == ("float32", "bfloat16", "float16")


def test_synchronized_over_two_replicas_uses_the_global_batch():
    strategy = distribute.mirrored_strategy(["/cpu:0", "/cpu:1"])
    x = tf.concat(batches(2), axis=0)  # 6 examples, 3 per replica
    ref, _ = pair()
    with strategy.scope():
        _, fused = pair(synchronized=True)
    want = ref(x, training=True).numpy()

    @tf.function
    def step(dist_x):
        return strategy.run(lambda xi: fused(xi, training=True), args=(dist_x,))

    dist = strategy.experimental_distribute_values_from_function(
        lambda ctx: x[3 * ctx.replica_id_in_sync_group:3 * (ctx.replica_id_in_sync_group + 1)])
    got = np.concatenate([v.numpy() for v in strategy.experimental_local_results(step(dist))])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean.numpy(), ref.moving_mean.numpy(), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(fused.moving_variance.numpy(), ref.moving_variance.numpy(),
                               rtol=1e-4, atol=1e-5)


def test_models_use_the_fused_layer_and_old_keras_checkpoints_load(tmp_path):
    config = ModelConfig(width=1 / 16)
    with pytest.raises(ValueError, match="batch_norm must be one of"):
        models.completion_network(config=config, batch_norm="cudnn")
    old = models.completion_network(config=config, batch_norm="keras")
    new = models.completion_network(config=config)
    bns = [layer for layer in new.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bns) == 16 and all(type(b) is FusedBatchNormalization for b in bns)
    assert [w.path for w in new.weights] == [w.path for w in old.weights]
    x = {"image": tf.random.uniform([2, 32, 32, 3], seed=1),
         "mask": tf.cast(tf.random.uniform([2, 32, 32, 1], seed=2) > 0.7, tf.float32)}
    old(x, training=True)  # non-trivial moving statistics
    path = tf.train.Checkpoint(completion=old).save(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(completion=new).restore(path).assert_consumed()
    for a, b in zip(old.weights, new.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(new(x, training=False), old(x, training=False), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(new(x, training=True), old(x, training=True), rtol=1e-4,
                               atol=1e-4)
    d = models.context_discriminator(64, 32, width=1 / 16)
    assert sum(isinstance(layer, FusedBatchNormalization)
               for branch in ("global_discriminator", "local_discriminator")
               for layer in d.get_layer(branch).layers) == 11


def _tiny_trainer_config(precision="float32"):
    # helpers' tiny trainer, with batch norm unsynchronised: one replica, the fused kernel.
    return tiny_config(**{"model.sync_batch_norm": False, "precision": precision})


def _updates(config, init, batch, phase, batch_norm):
    """Weight changes of one SGD step (linear in the gradients) from `init`."""
    ds = inputs.training_features(tf.data.Dataset.from_tensors(batch).repeat())
    with policy(config.precision):
        trainer = trainer_lib.build_trainer(
            config, optimizer_fn=lambda lr, c: keras.optimizers.SGD(0.05), batch_norm=batch_norm)
    trainer.set_weights(init)
    trainer.set_phase(phase)
    trainer.fit(ds, epochs=1, steps_per_epoch=1, verbose=0)
    return [w - w0 for w, w0 in zip(trainer.get_weights(), init)]


@pytest.mark.parametrize("phase", [1, 3])
def test_a_training_step_with_fused_batch_norm_matches_keras_batch_norm(phase):
    config = _tiny_trainer_config()
    batch = inputs.synthetic_batch(config, seed=1, smooth=False)
    init = trainer_lib.build_trainer(config, batch_norm="keras").get_weights()
    want = _updates(config, init, batch, phase, "keras")
    got = _updates(config, init, batch, phase, "fused")
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)
    assert sum(np.any(a != 0) for a in want) > 10


def test_a_mixed_bfloat16_step_is_as_close_to_float32_as_with_keras_batch_norm():
    # bfloat16 gradients of this tiny network are noisy (sums over cancelling terms): compare
    # each implementation with the float32 update instead of with each other.
    config = _tiny_trainer_config()
    batch = inputs.synthetic_batch(config, seed=1, smooth=False)
    init = trainer_lib.build_trainer(config, batch_norm="keras").get_weights()
    exact = _updates(config, init, batch, 1, "keras")
    bf16 = _tiny_trainer_config("mixed_bfloat16")
    errors = {}
    for impl in ("keras", "fused"):
        got = _updates(bf16, init, batch, 1, impl)
        assert all(np.isfinite(g).all() for g in got)
        errors[impl] = np.median([np.linalg.norm(g - e) / np.linalg.norm(e)
                                  for g, e in zip(got, exact) if np.any(e != 0)])
    assert errors["fused"] <= 1.25 * errors["keras"] + 1e-3, errors
    assert errors["keras"] < 0.5, errors
