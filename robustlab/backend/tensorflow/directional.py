"""Per-example directional derivatives of a loss on TensorFlow (forward mode).

For a direction u in weight space, the derivative of every example's loss
along u, d/dh loss_i(w + h u) at h = 0 = u . grad_w loss_i(w), comes out of
ONE forward pass with a `tf.autodiff.ForwardAccumulator`: the tangent u is
pushed through the network alongside the activations, so the cost is about
two forward passes whatever the batch size, where per-example gradients would
cost one backward pass per example. With Keras 3 variables the accumulator
must watch the underlying TensorFlow variables (`v.value`), not the Keras
wrappers.

The function is compiled once per model with `tf.function`, one graph per
batch shape (not `reduce_retracing=True`, whose graph for a second shape
generalises the batch dimension and rounds differently: the derivatives
depended on the shapes of earlier calls, see `curvature`), and reads the
weights live from the model's variables. The model runs with
`training=False` (BatchNorm on its moving statistics, Dropout off).
"""

import weakref

import tensorflow as tf

from robustlab.backend.tensorflow.tracing import concrete_function

__all__ = [
    "DirectionalDerivative",
    "make_directional_derivative",
]

_ZERO = tf.UnconnectedGradients.ZERO


class DirectionalDerivative:
    """`f(x, y, tangents)` -> `(losses, derivatives)`, two NumPy arrays of
    shape `(batch,)`: the per-example losses at the current weights and their
    derivatives along `tangents` (one array per trainable variable, same
    shapes and dtypes)."""

    def __init__(self, model, per_example_loss):
        self._model_ref = weakref.ref(model)
        self._variables = list(model.trainable_variables)
        self._per_example_loss = per_example_loss
        self.trace_count = 0
        # No AutoGraph: no tensor-dependent Python control flow to convert.
        self._compiled = tf.function(self._graph, autograph=False)

    def _graph(self, x, y, tangents):
        self.trace_count += 1  # Python side effect: runs only while tracing
        model = self._model_ref()
        if model is None:
            raise RuntimeError("The model of this compiled function was deleted.")
        primals = [v.value for v in self._variables]
        with tf.autodiff.ForwardAccumulator(primals, list(tangents)) as accumulator:
            losses = self._per_example_loss(y, model(x, training=False))
        return losses, accumulator.jvp(losses, unconnected_gradients=_ZERO)

    def __call__(self, x, y, tangents):
        args = (tf.convert_to_tensor(x), tf.convert_to_tensor(y),
                [tf.convert_to_tensor(t) for t in tangents])
        # As a concrete function: each model traces its own, and TensorFlow
        # would count those traces as retracing (`tracing.concrete_function`).
        losses, derivatives = concrete_function(self._compiled, *args)(*args)
        return losses.numpy(), derivatives.numpy()


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
