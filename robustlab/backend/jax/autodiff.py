"""Input gradients and the compiled attack runner on JAX."""

import jax
import keras

__all__ = [
    "compile_attack",
    "input_gradient",
    "repeat",
    "run_stateless",
]


def input_gradient(fn, x):
    """d fn(x) / d x for a scalar `fn`. Only `x` is differentiated: the
    weights enter `fn` as constants of this transformation."""
    return jax.grad(fn)(x)


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
    with every step)."""
    return jax.lax.fori_loop(0, steps, body, initial,
                             unroll=jax.default_backend() == "cpu")


def run_stateless(variables, values, fn, keep=()):
    """Run `fn()` with `variables` reading `values`; return `fn`'s result and
    the values after it, where only the writes to the variables in `keep`
    are kept (all other writes are dropped)."""
    with keras.StatelessScope(state_mapping=list(zip(variables, values))) as scope:
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
