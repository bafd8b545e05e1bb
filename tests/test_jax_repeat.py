"""The attack's step loop on JAX: unrolled on the CPU, with the numbers of a
rolled `lax.fori_loop` (XLA:CPU runs convolutions inside a `while` loop
several times more slowly)."""

import keras
import numpy as np
import pytest

if keras.backend.backend() != "jax":
    pytest.skip("the loop is JAX's", allow_module_level=True)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

import robustlab  # noqa: E402
from robustlab.backend.jax.autodiff import repeat  # noqa: E402

RNG = np.random.default_rng(0)
X = jnp.asarray(RNG.random((8, 8, 8, 1)), "float32")
KERNEL_1 = jnp.asarray(RNG.standard_normal((3, 3, 1, 4)) * 0.3, "float32")
KERNEL_2 = jnp.asarray(RNG.standard_normal((3, 3, 4, 6)) * 0.3, "float32")


def conv(x, kernel):
    return lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"))


def signed_gradient_step(i, x):
    """One step of a PGD-like loop through two convolutions."""
    gradient = jax.grad(lambda z: jnp.sum(jnp.tanh(conv(jax.nn.relu(conv(z, KERNEL_1)), KERNEL_2))))(x)
    return jnp.clip(x + 0.01 * (i + 1) * jnp.sign(gradient), 0.0, 1.0)


def loop_unrolling(fn, *args):
    """The `unroll` of the one loop in `fn`'s jaxpr (a `fori_loop` with
    static bounds is a `scan`): its length when fully unrolled, 1 when
    rolled."""
    (loop,) = [eqn for eqn in jax.make_jaxpr(fn)(*args).jaxpr.eqns
               if eqn.primitive.name in ("scan", "while")]
    return loop.params.get("unroll", 1), loop.params.get("length")


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="unrolled on the CPU only")
def test_on_the_cpu_the_loop_is_unrolled():
    assert loop_unrolling(lambda x: repeat(5, signed_gradient_step, x), X) == (5, 5)
    assert loop_unrolling(lambda x: lax.fori_loop(0, 5, signed_gradient_step, x), X) == (1, 5)


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="unrolled on the CPU only")
def test_on_the_cpu_one_step_runs_without_a_loop():
    # Fully unrolled, a one-step fori_loop still lowers to a `while`.
    program = jax.jit(lambda x: repeat(1, signed_gradient_step, x)).lower(X).as_text()
    assert "while" not in program
    assert "while" in jax.jit(
        lambda x: lax.fori_loop(0, 1, signed_gradient_step, x, unroll=True)).lower(X).as_text()


@pytest.mark.parametrize("steps", [1, 3, 10])
def test_the_numbers_are_those_of_a_rolled_loop(steps):
    ours = jax.jit(lambda x: repeat(steps, signed_gradient_step, x))(X)
    rolled = jax.jit(lambda x: lax.fori_loop(0, steps, signed_gradient_step, x))(X)
    np.testing.assert_array_equal(ours, rolled)


@pytest.mark.parametrize("steps", [1, 5])
def test_pgd_on_a_cnn_gives_the_rolled_loop_numbers(monkeypatch, steps):
    import robustlab.backend.jax as jax_backend

    model = robustlab.models.small_cnn(filters=(4, 8), dense=16, seed=0)
    x = np.asarray(RNG.random((16, 8, 8, 1)), "float32")
    y = RNG.integers(0, 10, 16)
    ours = robustlab.attacks.pgd(model, x, y, eps=0.1, steps=steps, seed=3)
    monkeypatch.setattr(jax_backend, "repeat",
                        lambda n, body, initial: lax.fori_loop(0, n, body, initial))
    rolled = robustlab.attacks.pgd(robustlab.models.small_cnn(filters=(4, 8), dense=16, seed=0),
                                   x, y, eps=0.1, steps=steps, seed=3)
    np.testing.assert_array_equal(ours, rolled)
