"""Per-example directional derivatives of a loss on JAX (forward mode).

For a direction u in weight space, `jax.jvp` of the vector of per-example
losses, written over `model.stateless_call(trainable_values,
non_trainable_values, x, training=False)`, gives every example's derivative
along u, u . grad_w loss_i(w), in one forward pass with tangents (about two
forward passes of cost, whatever the batch size). Compiled with `jax.jit`;
the weights are arguments of the jitted function, so one compilation serves
every call while training moves them.

`training=False`: BatchNorm uses its moving statistics and Dropout is off;
the non-trainable values `stateless_call` returns are discarded.
"""

import weakref

import jax
import numpy as np

from robustlab.backend.jax.autodiff import with_cheap_max_pool_derivatives

__all__ = [
    "DirectionalDerivative",
    "make_directional_derivative",
]


class DirectionalDerivative:
    """`f(x, y, tangents)` -> `(losses, derivatives)`, two NumPy arrays of
    shape `(batch,)`: the per-example losses at the current weights and their
    derivatives along `tangents` (one array per trainable variable, same
    shapes and dtypes)."""

    def __init__(self, model, per_example_loss):
        self._model_ref = weakref.ref(model)
        self._trainable = list(model.trainable_variables)
        self._non_trainable = list(model.non_trainable_variables)
        self._per_example_loss = per_example_loss
        self.trace_count = 0
        self._compiled = jax.jit(self._traced)

    def _traced(self, trainable_values, non_trainable_values, x, y, tangents):
        self.trace_count += 1  # Python side effect: runs only while tracing
        model = self._model_ref()
        if model is None:
            raise RuntimeError("The model of this compiled function was deleted.")

        def losses(values):
            y_pred, _ = model.stateless_call(
                values, non_trainable_values, x, training=False
            )
            return self._per_example_loss(y, y_pred)

        return jax.jvp(with_cheap_max_pool_derivatives(losses),
                       (trainable_values,), (tangents,))

    def __call__(self, x, y, tangents):
        losses, derivatives = self._compiled(
            [v.value for v in self._trainable],
            [v.value for v in self._non_trainable],
            x,
            y,
            list(tangents),
        )
        return np.asarray(losses), np.asarray(derivatives)


def make_directional_derivative(model, per_example_loss):
    """A compiled per-example directional derivative for `model`.

    Args:
        model: a built Keras model.
        per_example_loss: `(y, y_pred) -> (batch,)` losses, written with
            `keras.ops`.

    Returns:
        A `DirectionalDerivative`; its `trace_count` counts traces.
    """
    return DirectionalDerivative(model, per_example_loss)
