"""Model builders: an MLP, the small CNN of the digits setting, PreAct ResNet-18.

Every builder returns a built `keras.Model` whose output is **logits** (no
softmax): train it with e.g.
`keras.losses.SparseCategoricalCrossentropy(from_logits=True)`.

Initial weights depend only on the builder's arguments, `seed` included, never
on global random state: every layer gets its own initializer, seeded from a
per-layer seed derived from `seed`, which draws its values with NumPy. The same
seed therefore gives identical initial weights, on TensorFlow and JAX alike.

`weight_decay` follows the PyTorch / Rice et al. convention: with
`weight_decay=wd > 0` each regularised weight `w` carries
`keras.regularizers.L2(wd / 2)`, whose penalty `(wd / 2) * sum(w**2)` adds
exactly `wd * w` to the gradient. That term then passes through the
optimizer's momentum like the loss gradient does, unlike the decoupled
`weight_decay` argument of Keras optimizers.
"""

import math
import numbers

import keras
import numpy as np

from robustlab import validation

__all__ = [
    "mlp",
    "preact_resnet18",
    "small_cnn",
]

# Every layer that reads an image axis is told the layout the builders
# document, `(height, width, channels)`: left to Keras's global
# `image_data_format` ("channels_first" in a keras.json), the same call would
# silently build another network.
_DATA_FORMAT = "channels_last"


def mlp(
    input_shape=(8, 8, 1),
    num_classes=10,
    hidden=(256, 256),
    seed=0,
    *,
    weight_decay=0.0,
):
    """A multi-layer perceptron of `Dense(h, relu)` layers, then linear logits.

    Flatten -> Dense(h, relu) for h in `hidden` -> Dense(num_classes).

    Kernels are Glorot-uniform and biases zero (Keras's defaults), seeded.

    Args:
        input_shape: shape of one input, `(height, width, channels)`.
        num_classes: number of classes (logits), >= 2.
        hidden: widths of the hidden layers, each a positive int; `()` gives
            a linear (multinomial logistic regression) model.
        seed: non-negative int fixing the initial weights.
        weight_decay: float >= 0; if > 0, every kernel and bias gets
            `L2(weight_decay / 2)`, adding `weight_decay * w` to its gradient.

    Returns:
        A built `keras.Model` mapping `(batch,) + input_shape` to
        `(batch, num_classes)` logits.

    Example:

    >>> from robustlab.models import mlp
    >>> model = mlp((8, 8, 1), num_classes=10, hidden=(32,), seed=0)
    >>> model.count_params()  # (64 * 32 + 32) + (32 * 10 + 10)
    2410
    """
    input_shape = _check_input_shape(input_shape)
    num_classes = validation.check_int_at_least("num_classes", num_classes, 2)
    hidden = _check_widths("hidden", hidden, allow_empty=True)
    seeds = _LayerSeeds(seed)
    regularizer = _l2_for_weight_decay(weight_decay)

    inputs = keras.Input(shape=input_shape, name="inputs")
    x = keras.layers.Flatten(data_format=_DATA_FORMAT, name="flatten")(inputs)
    for i, width in enumerate(hidden, start=1):
        x = _dense(width, "relu", seeds, regularizer, name=f"dense{i}")(x)
    logits = _dense(num_classes, None, seeds, regularizer, name="logits")(x)
    return keras.Model(inputs, logits, name="mlp")


def small_cnn(
    input_shape=(8, 8, 1),
    num_classes=10,
    filters=(16, 32),
    dense=512,
    seed=0,
    *,
    weight_decay=0.0,
):
    """The small CNN of the digits setting (the course's `quick` experiment).

    Conv2D(f, 3, same, relu) for f in `filters` -> MaxPool(2) -> Flatten ->
    Dense(`dense`, relu) -> Dense(num_classes). With the defaults on 8x8x1
    inputs it has 272,586 parameters. Kernels are Glorot-uniform and biases
    zero (Keras's default initializer types), seeded.

    Args:
        input_shape: shape of one input, `(height, width, channels)`; height
            and width must be at least 2 for the pooling.
        num_classes: number of classes (logits), >= 2.
        filters: output channels of the convolutions, a non-empty tuple of
            positive ints.
        dense: width of the hidden dense layer, a positive int.
        seed: non-negative int fixing the initial weights.
        weight_decay: float >= 0; if > 0, every kernel and bias gets
            `L2(weight_decay / 2)`, adding `weight_decay * w` to its gradient
            (the `quick` experiment uses 5e-4, i.e. `L2(2.5e-4)`).

    Returns:
        A built `keras.Model` mapping `(batch,) + input_shape` to
        `(batch, num_classes)` logits.

    Example:

    >>> from robustlab.models import small_cnn
    >>> model = small_cnn((8, 8, 1), num_classes=10, seed=0)
    >>> model.count_params()
    272586
    >>> model.output_shape
    (None, 10)
    """
    input_shape = _check_input_shape(input_shape)
    num_classes = validation.check_int_at_least("num_classes", num_classes, 2)
    filters = _check_widths("filters", filters)
    dense = validation.check_int_at_least("dense", dense, 1)
    if min(input_shape[:2]) < 2:
        raise ValueError(
            "Argument `input_shape` must have height and width >= 2 for the "
            f"2x2 max-pooling of `small_cnn`. Received: input_shape={input_shape}"
        )
    seeds = _LayerSeeds(seed)
    regularizer = _l2_for_weight_decay(weight_decay)

    inputs = keras.Input(shape=input_shape, name="inputs")
    x = inputs
    for i, channels in enumerate(filters, start=1):
        x = keras.layers.Conv2D(
            channels,
            3,
            padding="same",
            data_format=_DATA_FORMAT,
            activation="relu",
            kernel_initializer=_SeededGlorotUniform(seed=seeds.next()),
            bias_initializer="zeros",
            kernel_regularizer=regularizer,
            bias_regularizer=regularizer,
            name=f"conv{i}",
        )(x)
    x = keras.layers.MaxPooling2D(2, data_format=_DATA_FORMAT, name="pool")(x)
    x = keras.layers.Flatten(data_format=_DATA_FORMAT, name="flatten")(x)
    x = _dense(dense, "relu", seeds, regularizer, name="dense")(x)
    logits = _dense(num_classes, None, seeds, regularizer, name="logits")(x)
    return keras.Model(inputs, logits, name="small_cnn")


def preact_resnet18(
    input_shape=(32, 32, 3), num_classes=10, width=64, seed=0, *, weight_decay=0.0
):
    """PreAct ResNet-18 (He et al. 2016), as in Rice et al.'s (2020) code.

    conv3x3(width) stem -> 4 stages of 2 pre-activation blocks with widths
    `width * (1, 2, 4, 8)` and strides (1, 2, 2, 2) -> BN -> ReLU -> global
    average pooling -> Dense(num_classes). A block computes
    `a = relu(BN(x))`, `out = conv3x3(relu(BN(conv3x3_stride(a))))` and adds
    the shortcut: `x` itself, or a 1x1 strided convolution of `a` when the
    shape changes. Convolutions have no bias.

    To match the PyTorch reference: BatchNorm uses epsilon 1e-5 and momentum
    0.9 (PyTorch's 0.1), stride-2 3x3 convolutions pad one pixel on every side
    (Keras's "same" would pad only bottom/right), and weights start from
    PyTorch's default initialisation (uniform in +-1/sqrt(fan_in) for kernels
    and the final bias), seeded. At width 64 on 32x32x3 with 10 classes it
    has 11,172,170 trainable parameters (plus 7,808 BatchNorm moving
    statistics); implementations without the final BN-ReLU (e.g. kuangliu's
    pytorch-cifar) have 1,024 fewer.

    Args:
        input_shape: shape of one input, `(height, width, channels)`.
        num_classes: number of classes (logits), >= 2.
        width: channels of the stem and first stage, a positive int (64 is
            the standard network; e.g. 16 gives a cheap one for benchmarks).
        seed: non-negative int fixing the initial weights.
        weight_decay: float >= 0; if > 0, every trainable weight (kernels,
            the final bias, BatchNorm scales and offsets, as PyTorch's SGD
            `weight_decay` does) gets `L2(weight_decay / 2)`, adding
            `weight_decay * w` to its gradient.

    Returns:
        A built `keras.Model` mapping `(batch,) + input_shape` to
        `(batch, num_classes)` logits. It contains BatchNorm, so call it with
        `training=True` while training.

    Example:

    >>> from robustlab.models import preact_resnet18
    >>> model = preact_resnet18((16, 16, 3), num_classes=10, width=4, seed=0)
    >>> model.output_shape
    (None, 10)
    """
    input_shape = _check_input_shape(input_shape)
    num_classes = validation.check_int_at_least("num_classes", num_classes, 2)
    width = validation.check_int_at_least("width", width, 1)
    seeds = _LayerSeeds(seed)
    regularizer = _l2_for_weight_decay(weight_decay)

    inputs = keras.Input(shape=input_shape, name="inputs")
    x = _conv(width, 3, 1, seeds, regularizer, name="stem_conv")(inputs)
    in_channels = width
    for stage, (multiplier, stride) in enumerate(
        zip((1, 2, 4, 8), (1, 2, 2, 2), strict=True), start=1
    ):
        for block in (1, 2):
            channels = width * multiplier
            x = _preact_block(
                x,
                in_channels,
                channels,
                stride if block == 1 else 1,
                seeds,
                regularizer,
                name=f"stage{stage}_block{block}",
            )
            in_channels = channels
    x = _batch_norm(regularizer, name="final_bn")(x)
    x = keras.layers.ReLU(name="final_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(data_format=_DATA_FORMAT, name="pool")(x)
    logits = keras.layers.Dense(
        num_classes,
        kernel_initializer=_pytorch_default_init(seeds.next()),
        bias_initializer=_pytorch_default_bias_init(in_channels, seeds.next()),
        kernel_regularizer=regularizer,
        bias_regularizer=regularizer,
        name="logits",
    )(x)
    return keras.Model(inputs, logits, name="preact_resnet18")


# ---------------------------------------------------------------------------
# Building blocks.


def _preact_block(x, in_channels, channels, stride, seeds, regularizer, name):
    activated = _batch_norm(regularizer, name=f"{name}_bn1")(x)
    activated = keras.layers.ReLU(name=f"{name}_relu1")(activated)
    if stride != 1 or in_channels != channels:
        # The projection shortcut reads the pre-activated input, as in the
        # reference implementation.
        shortcut = _conv(
            channels, 1, stride, seeds, regularizer, name=f"{name}_shortcut"
        )(activated)
    else:
        shortcut = x
    out = _conv(channels, 3, stride, seeds, regularizer, name=f"{name}_conv1")(
        activated
    )
    out = _batch_norm(regularizer, name=f"{name}_bn2")(out)
    out = keras.layers.ReLU(name=f"{name}_relu2")(out)
    out = _conv(channels, 3, 1, seeds, regularizer, name=f"{name}_conv2")(out)
    return keras.layers.Add(name=f"{name}_add")([out, shortcut])


def _conv(channels, kernel_size, stride, seeds, regularizer, name):
    """A bias-free convolution with PyTorch's padding and initialisation."""
    conv = keras.layers.Conv2D(
        channels,
        kernel_size,
        strides=stride,
        # With stride 1, "same" pads 1 pixel each side for a 3x3 kernel, like
        # PyTorch's padding=1; with stride 2 it would pad bottom/right only,
        # so pad explicitly and convolve "valid" there.
        padding="same" if stride == 1 or kernel_size == 1 else "valid",
        data_format=_DATA_FORMAT,
        use_bias=False,
        kernel_initializer=_pytorch_default_init(seeds.next()),
        kernel_regularizer=regularizer,
        name=name,
    )
    if stride == 1 or kernel_size == 1:
        return conv
    pad = keras.layers.ZeroPadding2D(kernel_size // 2, data_format=_DATA_FORMAT,
                                     name=f"{name}_pad")
    return lambda tensor: conv(pad(tensor))


def _batch_norm(regularizer, name):
    return keras.layers.BatchNormalization(
        axis=-1,  # the channels, in the `_DATA_FORMAT` layout
        momentum=0.9,
        epsilon=1e-5,
        gamma_regularizer=regularizer,
        beta_regularizer=regularizer,
        name=name,
    )


def _dense(units, activation, seeds, regularizer, name):
    return keras.layers.Dense(
        units,
        activation=activation,
        kernel_initializer=_SeededGlorotUniform(seed=seeds.next()),
        bias_initializer="zeros",
        kernel_regularizer=regularizer,
        bias_regularizer=regularizer,
        name=name,
    )


def _pytorch_default_init(seed):
    # PyTorch's kaiming_uniform_(a=sqrt(5)) default draws from
    # U(-1/sqrt(fan_in), 1/sqrt(fan_in)), i.e. variance 1 / (3 fan_in).
    return _SeededVarianceScaling(
        scale=1.0 / 3.0, mode="fan_in", distribution="uniform", seed=seed
    )


def _pytorch_default_bias_init(fan_in, seed):
    bound = 1.0 / math.sqrt(fan_in)
    return _SeededRandomUniform(-bound, bound, seed=seed)


# Seeded initializers that draw with NumPy. Keras's own draw through the
# backend's RNG, so TensorFlow and JAX give different weights for one seed,
# and on JAX every new weight shape costs an XLA compilation (~0.5 s on CPU;
# seconds for a ResNet). Drawing with `numpy.random.default_rng(seed)` gives
# the same weights on every backend at no compile cost, from the same
# distributions as the Keras classes they subclass.


def _uniform_from_seed(shape, minval, maxval, seed, dtype):
    values = np.random.default_rng(seed).uniform(minval, maxval, size=tuple(shape))
    return keras.ops.convert_to_tensor(values, dtype=dtype or keras.backend.floatx())


def _fans(shape):
    # Keras's convention: kernels are (..., fan_in units, fan_out units), and
    # the leading (spatial) axes multiply both.
    if len(shape) < 2:
        return (shape[0], shape[0]) if shape else (1, 1)
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


class _NumpyUniformVarianceScaling:
    """`VarianceScaling(distribution="uniform")` values drawn with NumPy."""

    def __call__(self, shape, dtype=None):
        fan_in, fan_out = _fans(tuple(shape))
        fan = {"fan_in": fan_in, "fan_out": fan_out}.get(
            self.mode, (fan_in + fan_out) / 2.0
        )
        limit = math.sqrt(3.0 * self.scale / max(1.0, fan))
        return _uniform_from_seed(shape, -limit, limit, self.seed, dtype)


@keras.saving.register_keras_serializable(package="robustlab")
class _SeededGlorotUniform(
    _NumpyUniformVarianceScaling, keras.initializers.GlorotUniform
):
    pass


@keras.saving.register_keras_serializable(package="robustlab")
class _SeededVarianceScaling(
    _NumpyUniformVarianceScaling, keras.initializers.VarianceScaling
):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.distribution != "uniform":
            raise ValueError(
                "Only distribution='uniform' is drawn with NumPy. "
                f"Received: distribution={self.distribution!r}"
            )


@keras.saving.register_keras_serializable(package="robustlab")
class _SeededRandomUniform(keras.initializers.RandomUniform):
    def __call__(self, shape, dtype=None):
        return _uniform_from_seed(shape, self.minval, self.maxval, self.seed, dtype)


def _l2_for_weight_decay(weight_decay):
    """`L2(weight_decay / 2)`, whose gradient is `weight_decay * w`; None for 0."""
    if (
        not isinstance(weight_decay, numbers.Real)
        or isinstance(weight_decay, bool)
        or not np.isfinite(weight_decay)
        or weight_decay < 0
    ):
        raise ValueError(
            "Argument `weight_decay` must be a finite number >= 0. "
            f"Received: weight_decay={weight_decay!r}"
        )
    if weight_decay == 0:
        return None
    return keras.regularizers.L2(float(weight_decay) / 2.0)


class _LayerSeeds:
    """Distinct, reproducible initializer seeds for successive layers.

    Each layer needs its own seed: a seeded Keras initializer returns the
    same values on every call, so sharing one would give same-shaped layers
    identical weights.
    """

    def __init__(self, seed):
        validation.check_seed("seed", seed)
        self._seed = int(seed)
        self._count = 0

    def next(self):
        # SeedSequence mixes (seed, layer index) into well-spread 31-bit
        # integers, so neighbouring seeds do not share layer seeds.
        state = np.random.SeedSequence([self._seed, self._count]).generate_state(1)
        self._count += 1
        return int(state[0] >> 1)


# ---------------------------------------------------------------------------
# Argument checks.


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_input_shape(input_shape):
    if (
        not isinstance(input_shape, (tuple, list))
        or len(input_shape) != 3
        or not all(_is_int(d) and d >= 1 for d in input_shape)
    ):
        raise ValueError(
            "Argument `input_shape` must be a tuple of 3 positive integers "
            "(height, width, channels). "
            f"Received: input_shape={input_shape!r}"
        )
    return tuple(int(d) for d in input_shape)


def _check_widths(arg, widths, allow_empty=False):
    what = "a tuple of" if allow_empty else "a non-empty tuple of"
    if (
        not isinstance(widths, (tuple, list))
        or (not widths and not allow_empty)
        or not all(_is_int(w) and w >= 1 for w in widths)
    ):
        raise ValueError(
            f"Argument `{arg}` must be {what} positive integers. "
            f"Received: {arg}={widths!r}"
        )
    return tuple(int(w) for w in widths)
