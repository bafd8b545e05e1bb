"""Hessian-vector products and loss gradients on JAX.

Forward-over-reverse: `jax.jvp` of `jax.grad` of the loss written over
`model.stateless_call(trainable_values, non_trainable_values, x,
training=False)`, compiled with `jax.jit`. The weights are arguments of the
jitted function, not constants closed over, so one compilation serves every
call while training moves them (a new batch shape or dtype compiles once more).

`training=False`: BatchNorm uses its moving statistics and Dropout is off; the
non-trainable values `stateless_call` returns are discarded, so nothing in the
model changes.
"""

import weakref

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "HessianVectorProduct",
    "LossGradient",
    "make_hessian_vector_product",
    "make_loss_gradient",
]


class _CompiledOnModel:
    """Shared plumbing: a weak reference to the model, its variables at
    construction, a trace counter, the jitted function, and the in-graph
    conversion between flat vectors and per-variable arrays (one host
    transfer each way instead of one per variable)."""

    def __init__(self, model, weighted_loss):
        self._model_ref = weakref.ref(model)
        self._trainable = list(model.trainable_variables)
        self._non_trainable = list(model.non_trainable_variables)
        self._shapes = [tuple(v.shape) for v in self._trainable]
        self._offsets = np.cumsum([int(np.prod(s)) for s in self._shapes])[:-1]
        self._weighted_loss = weighted_loss
        self.trace_count = 0
        self._compiled = jax.jit(self._traced)

    def _split(self, flat):
        pieces = jnp.split(flat, self._offsets)
        return [
            piece.reshape(shape).astype(v.dtype)
            for piece, shape, v in zip(pieces, self._shapes, self._trainable)
        ]

    @staticmethod
    def _concat(parts, dtype):
        return jnp.concatenate([jnp.ravel(p).astype(dtype) for p in parts])

    def _model(self):
        model = self._model_ref()
        if model is None:
            raise RuntimeError("The model of this compiled function was deleted.")
        return model

    def _loss_of_weights(self, non_trainable_values, x, y, sample_weight):
        model = self._model()

        def loss(trainable_values):
            y_pred, _ = model.stateless_call(
                trainable_values, non_trainable_values, x, training=False
            )
            return self._weighted_loss(y, y_pred, sample_weight)

        return loss

    def _current_values(self):
        return (
            [v.value for v in self._trainable],
            [v.value for v in self._non_trainable],
        )


class HessianVectorProduct(_CompiledOnModel):
    """`hvp(x, y, sample_weight, tangent)` -> flat NumPy array: the product
    of the Hessian of `sum_i sample_weight[i] * loss_i` (with respect to the
    model's trainable variables, at their current values) with the flat
    `tangent` (all variables raveled in C order and concatenated, in the
    order of `model.trainable_variables`). The result has `tangent`'s dtype.
    """

    def _traced(self, trainable_values, non_trainable_values, x, y, sample_weight,
                tangent):
        self.trace_count += 1  # Python side effect: runs only while tracing
        loss = self._loss_of_weights(non_trainable_values, x, y, sample_weight)
        _, products = jax.jvp(
            jax.grad(loss), (trainable_values,), (self._split(tangent),)
        )
        return self._concat(products, tangent.dtype)

    def __call__(self, x, y, sample_weight, tangent):
        trainable_values, non_trainable_values = self._current_values()
        return np.asarray(self._compiled(
            trainable_values, non_trainable_values, x, y, sample_weight, tangent
        ))


class LossGradient(_CompiledOnModel):
    """`gradient(x, y, sample_weight)` -> flat NumPy array (the layout of
    `HessianVectorProduct`, in the dtype of `sample_weight`): the gradient of
    `sum_i sample_weight[i] * loss_i` with respect to the model's trainable
    variables (the reference cost for an HVP)."""

    def _traced(self, trainable_values, non_trainable_values, x, y, sample_weight):
        self.trace_count += 1
        loss = self._loss_of_weights(non_trainable_values, x, y, sample_weight)
        return self._concat(jax.grad(loss)(trainable_values), sample_weight.dtype)

    def __call__(self, x, y, sample_weight):
        trainable_values, non_trainable_values = self._current_values()
        return np.asarray(self._compiled(
            trainable_values, non_trainable_values, x, y, sample_weight
        ))


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
