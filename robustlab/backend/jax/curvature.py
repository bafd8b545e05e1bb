"""Hessian-vector products and loss gradients on JAX.

Forward-over-reverse: `jax.jvp` of `jax.grad` of the loss written over
`model.stateless_call(trainable_values, non_trainable_values, x,
training=False)`, compiled with `jax.jit`. The weights are arguments of the
jitted function, not constants closed over, so one compilation serves every
call while training moves them (a new batch shape or dtype compiles once more).

`training=False`: BatchNorm uses its moving statistics and Dropout is off; the
non-trainable values `stateless_call` returns are discarded, so nothing in the
model changes.

The Hessian-vector product keeps its forward and backward pass: `jax.linearize`
of the gradient at the current weights and batch is computed once (compiled)
and its linear map is applied to each tangent (compiled too), until the
weights or the batch change. That is what PyHessian does by keeping its
autograd graph, and it gives the numbers of `jax.jvp` of `jax.grad` (the
tangent operations are the same ones): bit for bit on a 2-core CPU without
AVX-512; on one with AVX-512, where XLA compiles the two programs into
differently ordered sums, up to the last bits (relative 5e-15 in float64,
a few elements of 27 in the tests' network). On the small CNN of
the digits setting on 2 CPU cores a product went from 52 to 39 ms (the
linearization itself: 14 ms). Only the latest linearization is kept, and
it is dropped when its batch is: an estimator's memory holds one batch's
residuals at a time, and none once its operator is gone.

Max pooling over non-overlapping windows (Keras's `MaxPooling2D` with its
default strides) is differentiated with one select per window instead of
JAX's windowed `select_and_gather_add`/`select_and_scatter_add`, which XLA
runs slowly on CPU (`robustlab.backend.jax.tiled_max`): the same elements are
selected, so the products are the same (bit for bit on the digits CNN). On
that CNN (256 digits, 2 CPU cores, the same hour) a product went from 19.2
to 17.2-18.6 ms, the gradient from 11.8 to 9.5-10.1 ms.
"""

import weakref

import jax
import jax.numpy as jnp
import numpy as np

from robustlab.backend.jax.tiled_max import with_tiled_max_derivatives

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

        return with_tiled_max_derivatives(loss)

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

    Consecutive products with the same weights and the same batch objects
    reuse one linearization (see the module docstring).
    """

    def __init__(self, model, weighted_loss):
        super().__init__(model, weighted_loss)
        self._apply = jax.jit(self._applied)
        self._linearization = None  # (weak refs to its inputs, linear map)
        self._generation = 0  # which linearization a batch's finalizer may drop

    def _traced(self, trainable_values, non_trainable_values, x, y, sample_weight):
        self.trace_count += 1  # Python side effect: runs only while tracing
        loss = self._loss_of_weights(non_trainable_values, x, y, sample_weight)
        _, linear_map = jax.linearize(jax.grad(loss), trainable_values)
        return linear_map  # a jax.tree_util.Partial: its leaves are the residuals

    def _applied(self, linear_map, tangent):
        self.trace_count += 1
        return self._concat(linear_map(self._split(tangent)), tangent.dtype)

    def _linear_map(self, x, y, sample_weight):
        trainable_values, non_trainable_values = self._current_values()
        # Keras replaces a JAX variable's value array when it is assigned, so
        # the identities of the value arrays and of the batch say whether
        # anything changed. They are held weakly: a cache entry keeps neither
        # a batch nor old weights alive.
        inputs = (*trainable_values, *non_trainable_values, x, y, sample_weight)
        kept = self._linearization
        if kept is not None and len(kept[0]) == len(inputs) and all(
                ref() is a for ref, a in zip(kept[0], inputs)):
            return kept[1]
        self._linearization = None  # free the old residuals before computing new ones
        linear_map = self._compiled(
            trainable_values, non_trainable_values, x, y, sample_weight)
        try:
            refs = tuple(weakref.ref(a) for a in inputs)
        except TypeError:  # an input that cannot be weakly referenced: no reuse
            return linear_map
        self._linearization = (refs, linear_map)
        self._generation += 1
        weakref.finalize(x, _forget, weakref.ref(self), self._generation)
        return linear_map

    def __call__(self, x, y, sample_weight, tangent):
        return np.asarray(self._apply(self._linear_map(x, y, sample_weight), tangent))


def _forget(hvp_ref, generation):
    """Drop a product's kept linearization once the batch it was computed on
    is gone (unless a newer one replaced it)."""
    hvp = hvp_ref()
    if hvp is not None and hvp._generation == generation:
        hvp._linearization = None


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
