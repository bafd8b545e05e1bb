"""Input gradients and the compiled attack runner on JAX."""

import jax
import keras

from robustlab import _keras_compat
from robustlab.backend.jax import tiled_max

__all__ = [
    "compile_attack",
    "input_gradient",
    "repeat",
    "run_stateless",
    "with_cheap_max_pool_derivatives",
]


def with_cheap_max_pool_derivatives(fn):
    """`fn` (a function of arrays written with Keras), evaluated so that its
    max pools over non-overlapping windows are differentiated with one
    select per window (`tiled_max`): the same values and derivatives as
    JAX's own rule, with cheaper kernels on CPU (the selected elements are
    the same; a sum after them may be fused in another order, so a last
    digit can differ). On the digits CNN a PGD-3 training epoch took 133 ms
    instead of 165, a PGD-10 `evaluate` of 797 digits 217 ms instead of 389
    (`benchmarks/bench_jax_max_pool.py`).

    `fn` is traced first in a trace of its own, inside a block that keeps
    Keras's writes apart (`_keras_compat.keras_writes_recorded`). A function
    that writes Keras state while it runs (BatchNorm's moving statistics or
    Dropout's seed in a training-mode forward pass; an added loss) would
    leave values of that trace in the state, so it is run as it is instead,
    with JAX's own rule.

    Where JAX computes on an accelerator, `fn` is returned as it is: the
    rewrite was measured on the CPU only, and the GPU run (a network without
    max pooling) was measured without it."""
    if jax.default_backend() != "cpu":
        return fn

    def evaluated(*args):
        with _keras_compat.keras_writes_recorded() as record:
            traced = tiled_max.trace(fn, *args)
        if record.written:
            return fn(*args)
        return traced(*args)

    return evaluated


def input_gradient(fn, x):
    """d fn(x) / d x for a scalar `fn`. Only `x` is differentiated: the
    weights enter `fn` as constants of this transformation."""
    return jax.grad(with_cheap_max_pool_derivatives(fn))(x)


def repeat(steps, body, initial):
    """`body(i, value)` applied `steps` times: a `lax.fori_loop`, unrolled
    where JAX computes on the CPU.

    XLA:CPU runs convolutions inside a `while` loop far more slowly than the
    same convolutions outside one: three PGD steps of the digits CNN's input
    gradient (batch 64) took 22.4 ms in a rolled loop and 3.6-4.0 ms
    unrolled, with the same numbers bit for bit and the same compile time
    (0.15 s for 3 or 10 steps); a PGD-3 training epoch of the digits setting
    went from 470 to 186 ms. On an accelerator the loop stays rolled (the
    GPU run was measured that way, and a deep network's program would grow
    with every step).

    One step is applied without a loop on the CPU: `fori_loop` fully
    unrolled over one step still lowers to a `while` of one trip (JAX
    unrolls by copying the body `unroll` times inside the loop), and PGD-1
    took 8.7 ms a batch of 64 digits against 4.1 ms for PGD-2."""
    on_cpu = jax.default_backend() == "cpu"
    if on_cpu and steps == 1:
        return body(0, initial)
    return jax.lax.fori_loop(0, steps, body, initial, unroll=on_cpu)


def run_stateless(variables, values, fn, keep=(), collect_losses=False):
    """Run `fn()` with `variables` reading `values`; return `fn`'s result and
    the values after it, where only the writes to the variables in `keep`
    are kept (all other writes are dropped). With `collect_losses`, the
    losses layers add in their calls (activity regularisers, `add_loss`)
    are kept for `model.losses` inside `fn`, as outside a scope."""
    with keras.StatelessScope(state_mapping=list(zip(variables, values)),
                              collect_losses=collect_losses) as scope:
        result = fn()
    keep_ids = {id(v) for v in keep}
    updated = []
    for variable, value in zip(variables, values):
        if id(variable) in keep_ids:
            new = scope.get_current_value(variable)
            value = value if new is None else new
        updated.append(value)
    return result, updated


def compile_attack(model, craft):
    """Compile `craft(x, y, seed_generator) -> x_adv` into
    `runner(x, y, seed_state) -> (x_adv, next_seed_state)`.

    The weights are arguments of the jitted function (read from the model at
    each call), so training between calls never leaves it with stale
    constants, and one compilation serves every call of the same shape.
    """
    seed_generator = keras.random.SeedGenerator(0)
    variables = list(model.trainable_variables) + list(model.non_trainable_variables)

    @jax.jit
    def attack(values, x, y, seed_state):
        x_adv, updated = run_stateless(
            variables + [seed_generator.state],
            list(values) + [seed_state],
            lambda: craft(x, y, seed_generator),
            keep=[seed_generator.state],
        )
        return x_adv, updated[-1]

    def runner(x, y, seed_state):
        return attack([v.value for v in variables], x, y, seed_state)

    return runner
