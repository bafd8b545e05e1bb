"""Specification of the model builders in `robustlab.models`."""

import contextlib

import keras
import numpy as np
import pytest

from robustlab import models


def conv_params(k, c_in, c_out, bias=True):
    return k * k * c_in * c_out + (c_out if bias else 0)


def dense_params(n_in, n_out):
    return n_in * n_out + n_out


def batch_norm_params(channels):
    return 2 * channels  # trainable scale and offset


def preact_resnet18_trainable_params(width, in_channels=3, num_classes=10):
    """Trainable parameters of PreAct ResNet-18, counted layer by layer."""
    total = conv_params(3, in_channels, width, bias=False)  # stem
    c_in = width
    for multiplier, stride in zip((1, 2, 4, 8), (1, 2, 2, 2), strict=True):
        c_out = width * multiplier
        for block in range(2):
            block_in = c_in if block == 0 else c_out
            total += batch_norm_params(block_in)
            total += conv_params(3, block_in, c_out, bias=False)
            total += batch_norm_params(c_out)
            total += conv_params(3, c_out, c_out, bias=False)
            if block == 0 and (stride != 1 or block_in != c_out):
                total += conv_params(1, block_in, c_out, bias=False)  # shortcut
        c_in = c_out
    total += batch_norm_params(c_in)  # final BN
    total += dense_params(c_in, num_classes)
    return total


def count(weights):
    return sum(int(np.prod(w.shape)) for w in weights)


def weights_of(model):
    return [np.asarray(w) for w in model.get_weights()]


TINY_BUILDERS = {
    "mlp": lambda **kw: models.mlp((8, 8, 1), 10, hidden=(16, 16, 16), **kw),
    "small_cnn": lambda **kw: models.small_cnn(
        (8, 8, 1), 10, filters=(4, 8), dense=16, **kw
    ),
    "preact_resnet18": lambda **kw: models.preact_resnet18(
        (8, 8, 3), 10, width=2, **kw
    ),
}


# ---------------------------------------------------------------------------
# Architecture


def test_small_cnn_defaults_on_digits_have_the_272586_parameters_of_design_4a():
    expected = (
        conv_params(3, 1, 16)  # 160
        + conv_params(3, 16, 32)  # 4,640
        + dense_params(4 * 4 * 32, 512)  # 8x8 pooled to 4x4: 262,656
        + dense_params(512, 10)  # 5,130
    )
    assert expected == 272_586
    assert models.small_cnn().count_params() == expected


def test_small_cnn_layers_are_conv_conv_pool_flatten_dense_dense():
    layers = [
        layer
        for layer in models.small_cnn().layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    conv1, conv2, pool, flatten, dense, logits = layers
    assert (conv1.filters, conv1.kernel_size, conv1.padding) == (16, (3, 3), "same")
    assert (conv2.filters, conv2.kernel_size, conv2.padding) == (32, (3, 3), "same")
    assert conv1.activation is keras.activations.relu is conv2.activation
    assert isinstance(pool, keras.layers.MaxPooling2D) and pool.pool_size == (2, 2)
    assert isinstance(flatten, keras.layers.Flatten)
    assert dense.units == 512 and dense.activation is keras.activations.relu
    assert logits.units == 10


def test_small_cnn_uses_glorot_uniform_kernels_and_zero_biases():
    for layer in models.small_cnn().layers:
        if hasattr(layer, "kernel"):
            assert isinstance(
                layer.kernel_initializer, keras.initializers.GlorotUniform
            )
            np.testing.assert_array_equal(np.asarray(layer.bias), 0.0)


def test_glorot_uniform_kernels_stay_within_the_glorot_limit():
    # Glorot uniform draws from U(-a, a), a = sqrt(6 / (fan_in + fan_out)).
    kernel = np.asarray(models.small_cnn().get_layer("dense").kernel)  # 512 x 512
    limit = np.sqrt(6.0 / (512 + 512))
    assert np.abs(kernel).max() <= limit
    assert np.abs(kernel).max() > 0.99 * limit
    assert abs(kernel.std() - limit / np.sqrt(3.0)) < 0.01 * limit


def test_preact_resnet18_starts_from_pytorch_default_init():
    # PyTorch draws conv/linear weights (and the linear bias) from
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    model = models.preact_resnet18((8, 8, 3), 10, width=16)
    conv = np.asarray(model.get_layer("stage2_block1_conv2").kernel)  # 3x3x32x32
    bound = 1.0 / np.sqrt(3 * 3 * 32)
    assert np.abs(conv).max() <= bound and np.abs(conv).max() > 0.99 * bound
    bias = np.asarray(model.get_layer("logits").bias)
    assert np.abs(bias).max() <= 1.0 / np.sqrt(128) and np.any(bias != 0)


def test_batch_norm_matches_pytorch_epsilon_and_momentum():
    model = models.preact_resnet18((8, 8, 3), 10, width=2)
    norms = [
        layer
        for layer in model.layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    assert len(norms) == 17  # 2 in each of the 8 blocks and the final one
    assert all(norm.epsilon == 1e-5 and norm.momentum == 0.9 for norm in norms)


def test_mlp_parameter_count():
    expected = dense_params(64, 256) + dense_params(256, 256) + dense_params(256, 10)
    assert models.mlp().count_params() == expected == 85_002


def test_preact_resnet18_at_width_64_has_11172170_trainable_parameters():
    model = models.preact_resnet18((32, 32, 3), 10, width=64)
    assert preact_resnet18_trainable_params(64) == 11_172_170
    assert count(model.trainable_weights) == 11_172_170
    # BatchNorm's moving mean and variance, one pair a channel.
    assert count(model.non_trainable_weights) == 7_808


def test_preact_resnet18_reduced_width_scales_every_stage():
    model = models.preact_resnet18((32, 32, 3), 10, width=16)
    assert count(model.trainable_weights) == preact_resnet18_trainable_params(16)


def test_preact_resnet18_downsamples_32_pixels_to_4_before_pooling():
    model = models.preact_resnet18((32, 32, 3), 10, width=8)
    assert model.get_layer("final_relu").output.shape == (None, 4, 4, 64)


@pytest.mark.parametrize("name", sorted(TINY_BUILDERS))
def test_output_is_one_logit_per_class(name):
    model = TINY_BUILDERS[name]()
    batch = (
        np.random.default_rng(0).random((3,) + model.input_shape[1:]).astype("float32")
    )
    assert tuple(model(batch).shape) == (3, 10)
    assert model.layers[-1].activation is keras.activations.linear  # logits, no softmax


def test_num_classes_sets_the_output_width():
    assert models.small_cnn(num_classes=3).output_shape == (None, 3)
    assert models.mlp(num_classes=2).output_shape == (None, 2)
    assert models.preact_resnet18((8, 8, 3), num_classes=5, width=2).output_shape == (
        None,
        5,
    )


def test_models_are_built_on_return():
    for build in TINY_BUILDERS.values():
        model = build()
        assert model.built and len(model.weights) > 0


@contextlib.contextmanager
def image_data_format(data_format):
    """Keras's global image layout (as a keras.json sets it), restored after."""
    saved = keras.config.image_data_format()
    keras.config.set_image_data_format(data_format)
    try:
        yield
    finally:
        keras.config.set_image_data_format(saved)


def test_preact_resnet18_is_the_same_network_under_a_channels_first_keras_config():
    with image_data_format("channels_first"):
        model = models.preact_resnet18((32, 32, 3), 10, width=64)
    assert keras.config.image_data_format() == "channels_last"
    assert model.count_params() == 11_172_170 + 7_808 == 11_179_978
    assert tuple(model.get_layer("stem_conv").kernel.shape) == (3, 3, 3, 64)


@pytest.mark.parametrize("name", sorted(TINY_BUILDERS))
def test_the_same_seed_gives_the_same_logits_under_either_keras_image_layout(name):
    batch = np.random.default_rng(0).random((2, 8, 8, 3 if name == "preact_resnet18" else 1))
    batch = batch.astype("float32")
    logits = {}
    for data_format in ("channels_last", "channels_first"):
        with image_data_format(data_format):
            logits[data_format] = np.asarray(TINY_BUILDERS[name](seed=3)(batch, training=False))
    np.testing.assert_array_equal(logits["channels_first"], logits["channels_last"])


# ---------------------------------------------------------------------------
# Seeding


@pytest.mark.parametrize("name", sorted(TINY_BUILDERS))
def test_same_seed_gives_identical_initial_weights_whatever_the_global_rng(name):
    keras.utils.set_random_seed(1)
    first = weights_of(TINY_BUILDERS[name](seed=5))
    keras.utils.set_random_seed(2)
    np.random.random(10)
    second = weights_of(TINY_BUILDERS[name](seed=5))
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(TINY_BUILDERS))
def test_different_seeds_give_different_initial_weights(name):
    first, second = (
        weights_of(TINY_BUILDERS[name](seed=0)),
        weights_of(TINY_BUILDERS[name](seed=1)),
    )
    kernels = [(a, b) for a, b in zip(first, second, strict=True) if a.ndim >= 2]
    assert all(not np.array_equal(a, b) for a, b in kernels)


def test_initial_weights_are_the_same_numbers_on_every_backend():
    # Weights are drawn with NumPy, so this holds under KERAS_BACKEND=jax and
    # tensorflow alike (values recorded once; run the suite on both backends).
    kernel = np.asarray(models.small_cnn(seed=1).get_layer("conv1").kernel)
    np.testing.assert_allclose(
        kernel.ravel()[:3], [0.05384022, -0.11479919, -0.18541576], rtol=1e-6
    )


def test_same_shaped_layers_of_one_model_start_different():
    model = models.mlp(hidden=(16, 16, 16))
    second, third = model.get_layer("dense2").kernel, model.get_layer("dense3").kernel
    assert not np.array_equal(np.asarray(second), np.asarray(third))


# ---------------------------------------------------------------------------
# Weight decay


def l2_penalty(model):
    return float(sum(np.asarray(loss) for loss in model.losses))


def test_weight_decay_adds_half_wd_times_the_squared_norm_of_kernels_and_biases():
    # Penalty (wd / 2) * sum(w**2) has gradient wd * w: the PyTorch convention.
    wd = 5e-4
    model = models.small_cnn(filters=(4,), dense=8, weight_decay=wd)
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            assert layer.kernel_regularizer.l2 == pytest.approx(wd / 2)
            assert layer.bias_regularizer.l2 == pytest.approx(wd / 2)
            layer.bias.assign(np.ones(layer.bias.shape))  # non-zero, so biases count
    squared_norm = sum(
        float(np.sum(np.asarray(w) ** 2)) for w in model.trainable_weights
    )
    assert l2_penalty(model) == pytest.approx(wd / 2 * squared_norm, rel=1e-5)


def test_preact_resnet18_weight_decay_covers_every_trainable_weight():
    model = models.preact_resnet18((8, 8, 3), 10, width=2, weight_decay=1e-3)
    squared_norm = sum(
        float(np.sum(np.asarray(w) ** 2)) for w in model.trainable_weights
    )
    assert l2_penalty(model) == pytest.approx(5e-4 * squared_norm, rel=1e-5)


def test_no_weight_decay_means_no_regularization_losses():
    assert models.small_cnn().losses == []


# ---------------------------------------------------------------------------
# Training


@pytest.mark.parametrize("name", sorted(TINY_BUILDERS))
def test_one_fit_step_on_random_data_changes_the_weights(name):
    model = TINY_BUILDERS[name](weight_decay=1e-4)
    rng = np.random.default_rng(0)
    x = rng.random((8,) + model.input_shape[1:]).astype("float32")
    y = rng.integers(0, 10, size=8).astype("int32")
    before = weights_of(model)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(
        not np.array_equal(a, b) for a, b in zip(before, weights_of(model), strict=True)
    )


# ---------------------------------------------------------------------------
# Bad arguments


@pytest.mark.parametrize(
    "build, kwargs, error, argument",
    [
        (models.mlp, dict(input_shape=(64,)), ValueError, "input_shape"),
        (models.mlp, dict(input_shape=(8, 0, 1)), ValueError, "input_shape"),
        (models.mlp, dict(num_classes=1), ValueError, "num_classes"),
        (models.mlp, dict(num_classes=2.0), TypeError, "num_classes"),
        (models.mlp, dict(hidden=(16, 0)), ValueError, "hidden"),
        (models.mlp, dict(hidden=16), ValueError, "hidden"),
        (models.mlp, dict(seed=-1), ValueError, "seed"),
        (models.mlp, dict(seed="0"), TypeError, "seed"),
        (models.small_cnn, dict(input_shape=(8, 8)), ValueError, "input_shape"),
        (models.small_cnn, dict(input_shape=(1, 8, 1)), ValueError, "input_shape"),
        (models.small_cnn, dict(filters=()), ValueError, "filters"),
        (models.small_cnn, dict(dense=0), ValueError, "dense"),
        (models.small_cnn, dict(weight_decay=-1e-4), ValueError, "weight_decay"),
        (models.small_cnn, dict(seed=1.5), TypeError, "seed"),
        (models.preact_resnet18, dict(width=0), ValueError, "width"),
        (models.preact_resnet18, dict(num_classes=0), ValueError, "num_classes"),
        (
            models.preact_resnet18,
            dict(input_shape=[32, 32, 3, 1]),
            ValueError,
            "input_shape",
        ),
        (
            models.preact_resnet18,
            dict(weight_decay=float("nan")),
            ValueError,
            "weight_decay",
        ),
    ],
)
def test_bad_argument_raises_naming_it(build, kwargs, error, argument):
    with pytest.raises(error, match=f"`{argument}`.*Received: {argument}="):
        build(**kwargs)


@pytest.mark.parametrize("build, sizes", [
    (models.mlp, {"num_classes": np.int64(3)}),
    (models.small_cnn, {"num_classes": np.int64(3), "dense": np.int64(16)}),
    (models.preact_resnet18, {"num_classes": np.int64(3), "width": np.int64(4)})])
def test_numpy_integer_sizes_build_the_model(build, sizes):
    # They passed the checks and were then refused by Keras's Dense ("expected a
    # positive integer. Received: units=3"); `y.max() + 1` is one.
    shape = (32, 32, 3) if build is models.preact_resnet18 else (8, 8, 1)
    model = build(input_shape=shape, **sizes)
    assert model.output_shape == (None, 3)
