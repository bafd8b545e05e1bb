"""Input gradients and the compiled attack runner on TensorFlow."""

import keras
import tensorflow as tf


def input_gradient(fn, x):
    """d fn(x) / d x for a scalar `fn`; the weights are not watched, so no
    weight gradient is computed or leaks anywhere."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        value = fn(x)
    return tape.gradient(value, x)


# Up to this many iterations are unrolled into the graph: XLA on CPU runs a
# tf.while_loop holding a gradient tape 2-3x slower than the unrolled loop.
MAX_UNROLLED_STEPS = 32


def repeat(steps, body, initial):
    """`body(i, value)` applied `steps` times, in the graph."""
    if steps <= MAX_UNROLLED_STEPS:
        value = initial
        for i in range(steps):
            value = body(i, value)
        return value
    return keras.ops.fori_loop(0, steps, body, initial)


def compile_attack(model, craft):
    """Compile `craft(x, y, seed_generator) -> x_adv` into
    `runner(x, y, seed_state) -> (x_adv, next_seed_state)`.

    The seed state is an argument, not a captured variable, so one trace
    serves every call; the model's weights are read live from its variables.
    Any other state the forward pass writes (BatchNorm statistics when the
    attack runs in training mode) is discarded by the stateless scope.
    """
    seed_generator = keras.random.SeedGenerator(0)

    @tf.function(reduce_retracing=True)
    def runner(x, y, seed_state):
        mapping = [(seed_generator.state, seed_state)]
        with keras.StatelessScope(state_mapping=mapping) as scope:
            x_adv = craft(x, y, seed_generator)
        next_state = scope.get_current_value(seed_generator.state)
        return x_adv, seed_state if next_state is None else next_state

    del model  # read through `craft`'s closure
    return runner
