"""Max pooling over non-overlapping windows with a one-select derivative (JAX).

The reference is JAX's own rule for `reduce_window_max` (what Keras's
`MaxPooling2D` lowers to): every value, first derivative and Hessian-vector
product must be the same, on inputs full of ties where the choice of the
selected element shows.
"""

import keras
import numpy as np
import pytest

if keras.backend.backend() != "jax":
    pytest.skip("the rewrite is of JAX programs", allow_module_level=True)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from jax import lax  # noqa: E402

from robustlab.backend.jax.tiled_max import (  # noqa: E402
    tiled_max,
    windows_tile,
    with_tiled_max_derivatives,
)
from tests.jaxpr_primitives import primitives  # noqa: E402

WINDOWED_SELECTS = {"select_and_gather_add", "select_and_scatter_add"}


def jax_max_pool(x, window, strides=None):
    return lax.reduce_window(x, -jnp.inf, lax.max, window, strides or window, "VALID")


@st.composite
def tied_inputs(draw):
    """A batch whose windows tile it, with values from {-1, 0, 1} (ties in
    most windows), and a tangent of distinct values."""
    window = (1, draw(st.integers(1, 3)), draw(st.integers(1, 3)), 1)
    shape = (draw(st.integers(1, 3)), window[1] * draw(st.integers(1, 3)),
             window[2] * draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = rng.integers(-1, 2, shape).astype("float32")
    t = rng.permutation(np.prod(shape)).reshape(shape).astype("float32") + 1.0
    return jnp.asarray(x), jnp.asarray(t), window


@settings(max_examples=40, deadline=None)
@given(tied_inputs())
def test_values_and_first_derivatives_are_jax_own(case):
    x, t, window = case
    ours, ours_tangent = jax.jvp(lambda z: tiled_max(z, window), (x,), (t,))
    theirs, their_tangent = jax.jvp(lambda z: jax_max_pool(z, window), (x,), (t,))
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(ours_tangent, their_tangent)
    cotangent = t[:, ::window[1], ::window[2], :]
    np.testing.assert_array_equal(
        jax.vjp(lambda z: tiled_max(z, window), x)[1](cotangent)[0],
        jax.vjp(lambda z: jax_max_pool(z, window), x)[1](cotangent)[0])


def test_ties_select_the_first_maximum_in_row_major_order():
    x = jnp.array([[0.0, 1.0], [1.0, 1.0]]).reshape(1, 2, 2, 1)
    t = jnp.array([[10.0, 20.0], [30.0, 40.0]]).reshape(1, 2, 2, 1)
    _, tangent = jax.jvp(lambda z: tiled_max(z, (1, 2, 2, 1)), (x,), (t,))
    assert float(tangent.ravel()[0]) == 20.0
    gradient = jax.grad(lambda z: tiled_max(z, (1, 2, 2, 1)).sum())(x)
    np.testing.assert_array_equal(gradient.ravel(), [0.0, 1.0, 0.0, 0.0])


def test_nan_is_never_selected_as_in_jax_rule():
    x = jnp.array([[np.nan, 0.0], [1.0, 1.0]]).reshape(1, 2, 2, 1)
    window = (1, 2, 2, 1)
    assert np.isnan(tiled_max(x, window)).all()
    gradient = jax.grad(lambda z: tiled_max(z, window).sum())(x)
    expected = jax.grad(lambda z: jax_max_pool(z, window).sum())(x)
    np.testing.assert_array_equal(gradient, expected)
    np.testing.assert_array_equal(gradient.ravel(), [0.0, 0.0, 1.0, 0.0])


@pytest.mark.parametrize("window_values, selected", [
    ([1.0, np.nan, 0.0, 0.0], 0),  # JAX's own rule picks element 2, not a maximum
    ([0.0, np.nan, 1.0, 1.0], 2),
    ([np.nan, -np.inf, -np.inf, np.nan], 0),  # nothing but NaN and -inf: the first
])
def test_a_window_with_nan_selects_the_first_maximum_of_its_other_elements(
        window_values, selected):
    x = jnp.array(window_values).reshape(1, 2, 2, 1)
    gradient = jax.grad(lambda z: tiled_max(z, (1, 2, 2, 1)).sum())(x)
    np.testing.assert_array_equal(gradient.ravel(), np.eye(4)[selected])


def test_an_infinite_tangent_stays_in_its_own_element():
    x = jnp.array([[0.0, 1.0], [0.0, 0.0]]).reshape(1, 2, 2, 1)
    t = jnp.array([[np.inf, 2.0], [3.0, 4.0]]).reshape(1, 2, 2, 1)
    _, tangent = jax.jvp(lambda z: tiled_max(z, (1, 2, 2, 1)), (x,), (t,))
    assert float(tangent.ravel()[0]) == 2.0


def _pooled_network(params, x):
    """conv -> relu -> 2x2 max pool -> dense -> log-sum-exp: the shape of the
    digits CNN in plain JAX, in float64."""
    kernel, dense = params
    h = lax.conv_general_dilated(x, kernel, (1, 1), "SAME",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    h = jax_max_pool(jax.nn.relu(h), (1, 2, 2, 1))
    return jax.nn.logsumexp(h.reshape(len(x), -1) @ dense, axis=1).mean()


@pytest.fixture
def network():
    jax.config.update("jax_enable_x64", True)
    try:
        rng = np.random.default_rng(0)
        params = [jnp.asarray(rng.standard_normal((3, 3, 1, 4))),
                  jnp.asarray(rng.standard_normal((4 * 4 * 4, 3)) / 8)]
        x = jnp.asarray(rng.standard_normal((5, 8, 8, 1)))
        tangent = [jnp.asarray(rng.standard_normal(p.shape)) for p in params]
        yield params, x, tangent
    finally:
        jax.config.update("jax_enable_x64", False)


def test_hessian_vector_products_are_jax_own(network):
    params, x, tangent = network
    plain = lambda p: _pooled_network(p, x)  # noqa: E731
    tiled = with_tiled_max_derivatives(plain)

    def product(loss):
        return jax.jit(lambda p, v: jax.jvp(jax.grad(loss), (p,), (v,))[1])(params, tangent)

    assert float(jax.jit(tiled)(params)) == float(jax.jit(plain)(params))
    for ours, theirs in zip(product(tiled), product(plain)):
        scale = float(jnp.abs(theirs).max())
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14 * scale)


def test_second_derivatives_run_no_windowed_select(network):
    params, x, tangent = network
    plain = lambda p: _pooled_network(p, x)  # noqa: E731
    tiled = with_tiled_max_derivatives(plain)

    def hvp(loss):
        return lambda p, v: jax.jvp(jax.grad(loss), (p,), (v,))[1]

    assert WINDOWED_SELECTS <= primitives(hvp(plain), params, tangent)
    assert not WINDOWED_SELECTS & primitives(hvp(tiled), params, tangent)


def test_overlapping_windows_keep_jax_rule():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 4, 4, 1)), "float32")
    overlapping = with_tiled_max_derivatives(
        lambda z: jax_max_pool(z, (1, 2, 2, 1), (1, 1, 1, 1)).sum())
    assert "select_and_scatter_add" in primitives(jax.grad(overlapping), x)
    np.testing.assert_array_equal(
        jax.grad(overlapping)(x),
        jax.grad(lambda z: jax_max_pool(z, (1, 2, 2, 1), (1, 1, 1, 1)).sum())(x))


def test_pytrees_in_and_out_keep_their_structure():
    def fn(inputs):
        pooled = jax_max_pool(inputs["x"], (1, 2, 2, 1))
        return {"pooled": pooled, "sum": (pooled.sum(), inputs["y"] * 2)}

    inputs = {"x": jnp.arange(16.0).reshape(1, 4, 4, 1), "y": jnp.ones(3)}
    ours, theirs = with_tiled_max_derivatives(fn)(inputs), fn(inputs)
    assert jax.tree_util.tree_structure(ours) == jax.tree_util.tree_structure(theirs)
    for a, b in zip(jax.tree_util.tree_leaves(ours), jax.tree_util.tree_leaves(theirs)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape, window, strides, padding, tiles", [
    ((2, 8, 8, 3), (1, 2, 2, 1), (1, 2, 2, 1), None, True),
    ((2, 8, 8, 3), (1, 2, 2, 1), (1, 1, 1, 1), None, False),
    ((2, 7, 8, 3), (1, 2, 2, 1), (1, 2, 2, 1), None, False),
    ((2, 8, 8, 3), (1, 2, 2, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (0, 0), (0, 0)), False),
    ((2, 8, 8, 3), (2, 2, 1), (2, 2, 1), None, False),
])
def test_windows_tile_only_without_overlap_remainder_or_padding(
        shape, window, strides, padding, tiles):
    assert windows_tile(shape, window, strides, padding) is tiles


@pytest.mark.parametrize("window", [(1, 3, 2, 1), (1, 2, 2), (1, 0, 2, 1), (1, 2.0, 2, 1)])
def test_windows_that_do_not_tile_are_refused(window):
    with pytest.raises(ValueError, match=r"Received: window="):
        tiled_max(jnp.zeros((1, 4, 4, 1)), window)


def test_a_window_of_numpy_integers_is_taken():
    # np.int64(2) divides the axis, yet the message said it did not.
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)
    window = tuple(np.array([1, 2, 2, 1]))
    np.testing.assert_array_equal(tiled_max(x, window), tiled_max(x, (1, 2, 2, 1)))
