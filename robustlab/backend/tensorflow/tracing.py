"""A `tf.function`'s graph for given arguments, traced without being counted
as retracing.

TensorFlow logs "N out of the last M calls to <function> triggered
tf.function retracing ... Tracing is expensive ..." once 5 of the last 40
calls of the `tf.function`s made from one Python function have traced. It
counts per Python function, across all the `tf.function`s made from it, and
only traces made by calls. robustlab compiles its attack, its metrics' reset
and read and its directional derivatives once per model, as it must (each
reads its own model's variables), so a process that trained a few models
briefly (a sweep, a notebook, a test suite) logged that warning for traces
that were all expected. A trace made by `get_concrete_function` is not
counted, and the concrete function it returns is the graph the call would
have run.
"""

import tensorflow as tf

__all__ = [
    "concrete_function",
]


def concrete_function(function, *args):
    """`function`'s concrete function for `args`: the graph `function(*args)`
    would run, traced now if it has not been; call it with the same `args`.

    Args:
        function: a `tf.function`.
        *args: its arguments (none where it has an `input_signature`).
    """
    if not isinstance(function, tf.types.experimental.PolymorphicFunction):
        raise TypeError(
            "Argument `function` must be a tf.function. "
            f"Received: function of type {type(function).__name__}")
    return function.get_concrete_function(*args)
