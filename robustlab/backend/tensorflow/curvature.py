"""Hessian-vector products and loss gradients on TensorFlow.

Double backward: an outer `tf.GradientTape` records the gradient computed by
an inner one, and differentiates `<gradient, v>` once more, giving H v at
the cost of about two gradients. (Forward-over-reverse with
`tf.autodiff.ForwardAccumulator`, which must watch the underlying TensorFlow
variables `v.value` of Keras 3 variables, gives the same numbers; TensorFlow
computes most of its JVPs by transposing backward functions, and on the small
CNN of the digits setting on 2 CPU cores it was about 5% slower: HVP / gradient
2.6 against 2.45 when one core was busy, 2.1 for both with both cores free.
Double backward keeps the inner backward pass for the outer one, so it needs
more memory.) Each function is compiled once per model with `tf.function`,
one graph per batch shape, and reads the weights live from the model's
variables, so it stays valid while training moves them. (Not
`reduce_retracing=True`: after a second batch shape its graph generalises
the batch dimension, and the general graph rounds differently in float32, so
a product depended on the shapes earlier calls had used: a replica fork run
from a callback changed the tracker's logged numbers in their last bits.
The callers pad a call's last batch to its batch size, so a model traces
once per batch size it is probed with.)

The model is always called with `training=False`: BatchNorm uses its moving
statistics (and does not update them) and Dropout is off.
"""

import weakref

import numpy as np
import tensorflow as tf

from robustlab.backend.tensorflow.tracing import concrete_function

__all__ = [
    "HessianVectorProduct",
    "LossGradient",
    "make_hessian_vector_product",
    "make_loss_gradient",
]

_ZERO = tf.UnconnectedGradients.ZERO


class _CompiledOnModel:
    """Shared plumbing: a weak reference to the model, its trainable
    variables at construction, a trace counter, the `tf.function`, and the
    in-graph conversion between flat vectors and per-variable tensors (one
    host transfer each way instead of one per variable)."""

    def __init__(self, model, weighted_loss):
        self._model_ref = weakref.ref(model)
        self._variables = list(model.trainable_variables)
        self._shapes = [tuple(v.shape) for v in self._variables]
        self._sizes = [int(np.prod(s)) for s in self._shapes]
        self._weighted_loss = weighted_loss
        self.trace_count = 0
        # No AutoGraph: no tensor-dependent Python control flow to convert.
        self._compiled = tf.function(self._graph, autograph=False)

    def _split(self, flat):
        pieces = tf.split(flat, self._sizes)
        return [
            tf.cast(tf.reshape(piece, shape), v.dtype)
            for piece, shape, v in zip(pieces, self._shapes, self._variables)
        ]

    @staticmethod
    def _concat(parts, dtype):
        return tf.concat([tf.cast(tf.reshape(p, [-1]), dtype) for p in parts], 0)

    def _model(self):
        model = self._model_ref()
        if model is None:
            raise RuntimeError("The model of this compiled function was deleted.")
        return model

    def _loss(self, x, y, sample_weight):
        y_pred = self._model()(x, training=False)
        return self._weighted_loss(y, y_pred, sample_weight)


class HessianVectorProduct(_CompiledOnModel):
    """`hvp(x, y, sample_weight, tangent)` -> flat NumPy array: the product
    of the Hessian of `sum_i sample_weight[i] * loss_i` (with respect to the
    model's trainable variables, at their current values) with the flat
    `tangent` (all variables raveled in C order and concatenated, in the
    order of `model.trainable_variables`). The result has `tangent`'s dtype.
    """

    def _graph(self, x, y, sample_weight, tangent):
        self.trace_count += 1  # Python side effect: runs only while tracing
        primals = [v.value for v in self._variables]
        with tf.GradientTape() as outer_tape:
            with tf.GradientTape() as tape:
                loss = self._loss(x, y, sample_weight)
            gradients = tape.gradient(loss, primals, unconnected_gradients=_ZERO)
        products = outer_tape.gradient(
            gradients,
            primals,
            output_gradients=self._split(tangent),
            unconnected_gradients=_ZERO,
        )
        return self._concat(products, tangent.dtype)

    def __call__(self, x, y, sample_weight, tangent):
        args = (x, y, sample_weight, tangent)
        # Each model's first trace is expected: a call would count it as
        # retracing (`tracing.concrete_function`).
        return concrete_function(self._compiled, *args)(*args).numpy()


class LossGradient(_CompiledOnModel):
    """`gradient(x, y, sample_weight)` -> flat NumPy array (the layout of
    `HessianVectorProduct`, in the dtype of `sample_weight`): the gradient of
    `sum_i sample_weight[i] * loss_i` with respect to the model's trainable
    variables (the reference cost for an HVP)."""

    def _graph(self, x, y, sample_weight):
        self.trace_count += 1
        primals = [v.value for v in self._variables]
        with tf.GradientTape() as tape:
            loss = self._loss(x, y, sample_weight)
        gradients = tape.gradient(loss, primals, unconnected_gradients=_ZERO)
        return self._concat(gradients, sample_weight.dtype)

    def __call__(self, x, y, sample_weight):
        args = (x, y, sample_weight)
        return concrete_function(self._compiled, *args)(*args).numpy()  # as above


def make_hessian_vector_product(model, weighted_loss):
    """A compiled Hessian-vector product of `weighted_loss` for `model`.

    Args:
        model: a built Keras model.
        weighted_loss: `(y, y_pred, sample_weight) -> scalar`, written with
            `keras.ops`.

    Returns:
        A `HessianVectorProduct`; its `trace_count` counts traces.
    """
    return HessianVectorProduct(model, weighted_loss)


def make_loss_gradient(model, weighted_loss):
    """A compiled gradient of `weighted_loss` for `model` (see
    `make_hessian_vector_product`). Returns a `LossGradient`."""
    return LossGradient(model, weighted_loss)
