"""Max pooling over non-overlapping windows, with a derivative that is one select.

JAX differentiates `reduce_window_max` (what Keras's `MaxPooling2D` lowers to
on JAX) with `select_and_gather_add` forward and `select_and_scatter_add`
backward. On CPU, XLA runs both as general windowed reductions over pairs of
values: for the digits CNN's 2x2 pool of a (256, 8, 8, 32) batch, the tangent
map of its gradient took 4-6 ms (about a quarter of a whole Hessian-vector
product) and its gradient 3-4 ms; with `tiled_max`, 0.6-0.8 and 0.4-0.6 ms.

When the windows tile the input (window == stride on every axis, no padding,
no dilation, each dimension a multiple of its window) every input element
lies in exactly one window, and the derivative is a one-hot mask per window:
`tiled_max` computes the pool with the same primitive, and its derivative
picks, in each window without NaN, the element JAX's rule picks (the first
maximum in row-major window order). The values are the same; only the
kernels differ. Two kinds of window are exceptions. In a window holding a
NaN, `tiled_max` sends the derivative to the first maximum of its other
elements (to the first element when those are all -inf, or there are none),
while JAX's rule may pick the NaN or, for [1, NaN, 0, 0], an element that is
not the maximum (compared over every 2x2 window of {NaN, -inf, -1, -0, 0, 1,
inf}); the pooled value, and so the loss, is NaN either way. In a window
whose every element is -inf, JAX's own rule is not consistent: its forward
tangent is 0 and its gradient goes to the window's first element, which is
what `tiled_max` does both ways.

`with_tiled_max_derivatives(fn)` applies this to a function written without
it (a Keras model's `stateless_call`): it traces `fn` to a jaxpr and
evaluates it, computing each top-level `reduce_window_max` whose windows tile
its input with `tiled_max`, every other equation as traced. Equations nested
inside other primitives (a `jit`, a `scan`) are left as they are.
"""

import numbers

import jax
import jax.extend.core
import jax.numpy as jnp
from jax import lax

__all__ = [
    "TracedFunction",
    "tiled_max",
    "trace",
    "windows_tile",
    "with_tiled_max_derivatives",
]


def windows_tile(shape, window_dimensions, window_strides, padding=None,
                 base_dilation=None, window_dilation=None):
    """Whether a max pool with these parameters has non-overlapping windows
    that cover its input exactly (what `tiled_max` requires)."""
    rank = len(shape)
    ones = (1,) * rank
    return (
        len(window_dimensions) == rank
        and tuple(window_dimensions) == tuple(window_strides)
        and all(tuple(p) == (0, 0) for p in (padding or ((0, 0),) * rank))
        and tuple(base_dilation or ones) == ones
        and tuple(window_dilation or ones) == ones
        and all(n % w == 0 for n, w in zip(shape, window_dimensions))
    )


def _split_shape(shape, window):
    """(n0, n1, ...) -> (n0/w0, w0, n1/w1, w1, ...): a reshape whose odd axes
    run over the positions inside a window."""
    split = []
    for n, w in zip(shape, window):
        split += [n // w, w]
    return split


def _as_windows(x, window):
    """(n0, n1, ...) -> (n0/w0, n1/w1, ..., w0*w1*...): each window's
    elements along the last axis, in row-major window order."""
    rank = len(window)
    outer = [2 * i for i in range(rank)]
    inner = [2 * i + 1 for i in range(rank)]
    blocks = jnp.transpose(x.reshape(_split_shape(x.shape, window)), outer + inner)
    return blocks.reshape(blocks.shape[:rank] + (-1,))


def _from_windows(windows, shape, window):
    """The inverse of `_as_windows`."""
    rank = len(window)
    blocks = windows.reshape(windows.shape[:rank] + tuple(window))
    order = [axis for i in range(rank) for axis in (i, rank + i)]
    return jnp.transpose(blocks, order).reshape(shape)


def _first_maximum(x, window):
    """A boolean mask of `x`'s shape, true at the element of each window that
    JAX's `reduce_window_max` derivative selects in a window without NaN:
    the first maximum in row-major window order (NaN never chosen; see the
    module's docstring for windows with NaN).

    The windows are gathered to one axis (two transposes) only here, where the
    mask is made; the derivative itself then works in `x`'s own layout. On the
    digits CNN's pool that took the tangent map of the gradient from 0.8-1.1 ms
    (the derivative in the gathered layout) to 0.6-0.8 ms; a mask computed in
    `x`'s layout with reductions over the split axes made the gradient slower
    (1.6 against 0.8 ms)."""
    windows = _as_windows(x, window)
    keys = jnp.where(jnp.isnan(windows), -jnp.inf, windows)
    chosen = jnp.argmax(keys, axis=-1)  # argmax returns the first maximum
    mask = jnp.arange(windows.shape[-1]) == chosen[..., None]
    return _from_windows(mask, x.shape, window)


def _pooled(x, window):
    return lax.reduce_window_max_p.bind(
        x, window_dimensions=tuple(window), window_strides=tuple(window),
        padding=((0, 0),) * len(window), base_dilation=(1,) * len(window),
        window_dilation=(1,) * len(window))


def tiled_max(x, window):
    """Max pooling of `x` over the non-overlapping windows `window` (one size
    per axis of `x`, each dividing that axis). The same values as
    `reduce_window_max`; the derivative is a one-hot select per window.

    Raises:
        ValueError: if the windows do not tile `x`.
    """
    # NumPy integers too (a window from `np.array(shape) // 2`).
    window = tuple(int(w) if isinstance(w, numbers.Integral) and not isinstance(w, bool)
                   else w for w in window)
    if not (all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in window)
            and windows_tile(x.shape, window, window)):
        raise ValueError(
            "tiled_max needs one window size per axis of `x`, each dividing "
            f"that axis. Received: window={window} for x of shape {x.shape}")
    return _tiled_max(x, window)


_tiled_max = jax.custom_jvp(_pooled, nondiff_argnums=(1,))


@_tiled_max.defjvp
def _tiled_max_jvp(window, primals, tangents):
    (x,), (t,) = primals, tangents
    mask = _first_maximum(x, window)
    # `where`, not a product with the mask: an infinite tangent stays finite
    # outside its own element, as the select it replaces keeps it.
    picked = jnp.where(mask, t, jnp.zeros((), t.dtype))
    # One nonzero term per window: the sum is exact.
    inside = tuple(range(1, 2 * len(window), 2))
    tangent = jnp.sum(picked.reshape(_split_shape(x.shape, window)), axis=inside)
    # The primal through `_tiled_max` itself, so that a derivative of this
    # rule (second order: the tangent of a gradient) uses this rule again.
    return _tiled_max(x, window), tangent


def _bind(eqn, invals):
    params = eqn.primitive.get_bind_params(eqn.params)
    if isinstance(params, tuple):  # older JAX: (subfuns, params)
        subfuns, params = params
        return eqn.primitive.bind(*subfuns, *invals, **params)
    return eqn.primitive.bind(*invals, **params)


def _tiles(eqn, x):
    params = eqn.params
    return windows_tile(
        x.shape, params["window_dimensions"], params["window_strides"],
        params["padding"], params["base_dilation"], params["window_dilation"])


class TracedFunction:
    """A function traced once for given argument shapes (`trace`), to be
    evaluated with each top-level max pool that tiles its input computed by
    `tiled_max`. Calling it with arrays of the traced shapes and dtypes
    returns what the function returns."""

    def __init__(self, fn, *args):
        self.closed_jaxpr, self._out_shape = jax.make_jaxpr(fn, return_shape=True)(*args)

    def __call__(self, *args):
        closed = self.closed_jaxpr
        jaxpr = closed.jaxpr
        env = {}

        def read(var):
            return var.val if isinstance(var, jax.extend.core.Literal) else env[var]

        for var, value in zip(jaxpr.constvars, closed.consts):
            env[var] = value
        for var, value in zip(jaxpr.invars, jax.tree_util.tree_leaves(args)):
            env[var] = value
        for eqn in jaxpr.eqns:
            invals = [read(v) for v in eqn.invars]
            if eqn.primitive is lax.reduce_window_max_p and _tiles(eqn, invals[0]):
                outs = [_tiled_max(invals[0], tuple(eqn.params["window_dimensions"]))]
            else:
                with eqn.ctx.manager:
                    outs = _bind(eqn, invals)
                if not eqn.primitive.multiple_results:
                    outs = [outs]
            for var, value in zip(eqn.outvars, outs):
                env[var] = value
        leaves = [read(v) for v in jaxpr.outvars]
        return jax.tree_util.tree_unflatten(
            jax.tree_util.tree_structure(self._out_shape), leaves)


def trace(fn, *args):
    """`fn` traced at `args` (arrays or tracers; only their shapes and dtypes
    matter): a `TracedFunction`. Tracing runs `fn`'s Python once, so its
    side effects happen here; `with_tiled_max_derivatives` traces and
    evaluates in one go."""
    return TracedFunction(fn, *args)


def with_tiled_max_derivatives(fn):
    """`fn` (a pure function of arrays returning arrays), evaluated so that
    every top-level max pool whose windows tile its input uses `tiled_max`.

    The values are those of `fn`; first and higher derivatives select the same
    elements as JAX's own rule (see the module docstring), with cheaper
    kernels on CPU. `fn` is traced on each call (under `jax.jit`, once per
    compilation) in a trace of its own: a value it stores elsewhere while it
    runs (a Keras variable's update, say) would leave that trace; see
    `robustlab.backend.jax.autodiff.with_cheap_max_pool_derivatives` for
    functions that may write Keras state.
    """

    def evaluated(*args):
        return trace(fn, *args)(*args)

    return evaluated
