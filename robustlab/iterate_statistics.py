"""Measured statistics of the weight cloud of SGD, and of the noise that drives it.

The width that `robustlab.heavy_ball` predicts is measured here, either way
one can observe a cloud of weights:

- `IterateStatistics`: running (Welford) mean and variance of the iterates
  of one run over a window, per layer, overall and along tracked directions.
- `replica_variance`: the spread across replicas forked from one state.

and the input of the prediction, measured from per-example gradients:

- `minibatch_noise_variance`: the variance of the minibatch-mean gradient
  along a direction;
- `split_gradient_noise`: that noise split into the part that differs from
  example to example and the part drawn anew each time an example is used.

All pure NumPy.
"""

import math
from typing import NamedTuple

import numpy as np

from robustlab import validation
from robustlab.validation import _as_scalar_if_0d
from robustlab.validation import _finite
from robustlab.validation import _flatten_weights
from robustlab.validation import _float_array
from robustlab.validation import _is_layer_list
from robustlab.validation import _received
from robustlab.validation import _require

__all__ = [
    "GradientNoiseSplit",
    "IterateStatistics",
    "ReplicaVariance",
    "minibatch_noise_variance",
    "replica_variance",
    "split_gradient_noise",
]


def _check_ddof(ddof):
    return validation.check_int_at_least("ddof", ddof, 0)


# ---------------------------------------------------------------------------
# The noise input of the prediction.
# ---------------------------------------------------------------------------


def _per_example_projections(name, value):
    """Per-example gradients along directions: finite, shape (m,) or (m, k), m >= 1."""
    g = _finite(name, value)
    if g.ndim not in (1, 2) or g.shape[0] < 1:
        raise ValueError(
            f"Argument `{name}` must have shape (examples,) or (examples, directions) "
            f"with at least one example. Received: {name} with shape {g.shape}"
        )
    return g


def minibatch_noise_variance(per_example_projections, batch_size, n=None):
    """Variance of the minibatch-mean gradient along a direction.

    Given the per-example gradients projected on u, g_i = u^T grad loss_i
    (for adversarial training: on examples crafted as in training), the
    minibatch mean of B examples has variance

        s^2 / B                        sampling with replacement (n=None),
        s^2 / B * (n - B) / (n - 1)    B distinct examples out of n,

    where s^2 is the population variance (ddof=0) of the g_i: the exact
    finite-population formula when the g_i cover the whole training set of n
    examples; an estimate when they are a random subset of it.

    What is returned already includes the 1/B: pass it to
    `covariance_recursion` as ``noise_variance`` with ``batch_size=1`` and no
    ``sampling_correction``. (Equivalently pass s^2, B and n there.)

    Args:
        per_example_projections: shape (m,) for one direction, or (m, k) for
            k directions (examples along axis 0); finite, m >= 1.
        batch_size: B, an integer >= 1.
        n: None (sampling with replacement, or an infinite data set), or the
            training-set size, an integer >= max(2, B, m).

    Returns:
        The minibatch noise variance (np.float64, or shape (k,)).

    Example:

    Two examples with gradients -1 and 1 (s^2 = 1), batches of one:

    >>> from robustlab.iterate_statistics import minibatch_noise_variance
    >>> print(minibatch_noise_variance([-1.0, 1.0], batch_size=1))
    1.0

    Without replacement, a batch of both examples has no noise at all:

    >>> print(minibatch_noise_variance([-1.0, 1.0], batch_size=2, n=2))
    0.0
    """
    g = _per_example_projections("per_example_projections", per_example_projections)
    batch_size = validation.check_int_at_least("batch_size", batch_size, 1)
    factor = 1.0
    if n is not None:
        n = validation.check_int_at_least("n", n, 2)
        if n < batch_size or n < g.shape[0]:
            raise ValueError(
                f"Argument `n` (the training-set size) must be >= batch_size="
                f"{batch_size} and >= the number of examples given "
                f"({g.shape[0]}). " + _received("n", n)
            )
        factor = (n - batch_size) / (n - 1)
    return _as_scalar_if_0d(np.var(g, axis=0) / batch_size * factor)


class GradientNoiseSplit(NamedTuple):
    """The two parts of the per-example gradient noise along a direction.

    Attributes:
        example_variance: the population variance (ddof=0) over the examples
            of their expected gradient: the part a draw without replacement
            anticorrelates from batch to batch.
        draw_variance: the mean over the examples of the variance of one
            example's gradient from draw to draw (in adversarial training, the
            attack's random start).
    """

    example_variance: object
    draw_variance: object


def split_gradient_noise(first_draw, second_draw):
    """Split per-example gradient noise into its between-example and its
    draw-to-draw part, from two independent draws of every example.

    In adversarial training an example's gradient is not a fixed number: the
    attack starts at random, so each time the example is drawn its gradient
    along u is g_i + e_i, with e_i fresh at every draw. Given the projections
    of two independent draws of the same examples, a_i = g_i + e_i and
    b_i = g_i + e'_i,

        draw_variance    = mean_i (a_i - b_i)^2 / 2,
        example_variance = mean_i (a_i - mean a)(b_i - mean b),

    are unbiased for the mean draw variance of e_i and for the population
    variance (ddof=0) of the g_i: the cross term of two independent draws
    leaves the draw noise out. `robustlab.heavy_ball.shuffled_pass_variance`
    takes the two apart, because only the first is anticorrelated within a
    shuffled pass. The example variance can come out slightly negative when
    the examples barely differ; it is returned as measured.

    Args:
        first_draw, second_draw: shape (m,) or (m, k) (k directions),
            finite, the same shape, the same examples in the same order,
            m >= 1.

    Returns:
        A `GradientNoiseSplit` (np.float64 fields, or shape (k,)).

    Example:

    Two examples drawn twice; each one's draws differ by 1, so the draw
    variance is half of 1^2, and the cross term of the draws, (1.5)(0.5),
    is the spread between the examples:

    >>> from robustlab.iterate_statistics import split_gradient_noise
    >>> split = split_gradient_noise([1.5, -1.5], [0.5, -0.5])
    >>> print(float(split.example_variance), float(split.draw_variance))
    0.75 0.5
    """
    a = _per_example_projections("first_draw", first_draw)
    b = _finite("second_draw", second_draw)
    if b.shape != a.shape:
        raise ValueError(
            "Argument `second_draw` must have the shape of `first_draw` "
            f"{a.shape}: the same examples drawn again. "
            f"Received: second_draw with shape {b.shape}"
        )
    example = np.mean((a - a.mean(axis=0)) * (b - b.mean(axis=0)), axis=0)
    draw = np.mean((a - b) ** 2, axis=0) / 2.0
    return GradientNoiseSplit(_as_scalar_if_0d(example), _as_scalar_if_0d(draw))


# ---------------------------------------------------------------------------
# The width of the cloud: across replicas, and over a window of iterates.
# ---------------------------------------------------------------------------


def _unit_vector(name, vector):
    _require(name, vector, np.isfinite(vector), "finite (no NaN or inf)")
    norm = np.linalg.norm(vector)
    if not norm > 0:
        raise ValueError(
            f"Argument `{name}` must be a non-zero direction (it is normalised "
            f"to unit length). Received: {name} with norm {norm!r}"
        )
    return vector / norm


class ReplicaVariance(NamedTuple):
    """Spread across replicas: per parameter, averaged, and along a direction."""

    per_parameter: np.ndarray
    """Variance across replicas of each parameter, shape (P,)."""
    overall: float
    """Mean of `per_parameter` over all P parameters."""
    projected: float | None
    """Variance across replicas of u^T w for the unit direction u (None without one)."""


def replica_variance(replica_weights, direction=None, ddof=1):
    """Variance of the weights across R replicas forked from one state.

    Args:
        replica_weights: an (R, P) array, or a sequence of R replicas, each a
            flat array or a list of per-layer arrays (e.g.
            ``model.get_weights()``), flattened in order. R > ddof, finite.
        direction: optional direction in weight space, a flat (P,) vector or
            a list of arrays matching a replica's layers; normalised to unit
            length here.
        ddof: delta degrees of freedom, an integer >= 0. The default 1 gives
            the unbiased variance: replicas are independent draws of the
            predicted distribution, so this is the estimate to divide by the
            `covariance_recursion` prediction. (`IterateStatistics` uses
            ddof=0 instead: the iterates of one run are correlated, and it
            describes the window's cloud as `np.var` does.)

    Returns:
        A `ReplicaVariance` (per_parameter, overall, projected).

    Example:

    >>> from robustlab.iterate_statistics import replica_variance
    >>> spread = replica_variance([[0.0, 1.0], [2.0, 1.0]], direction=[1.0, 0.0])
    >>> spread.per_parameter.tolist(), float(spread.overall), float(spread.projected)
    ([2.0, 0.0], 1.0, 2.0)
    """
    ddof = _check_ddof(ddof)
    layer_shapes = None  # of the first replica given as a list of layers
    if isinstance(replica_weights, np.ndarray) and replica_weights.ndim == 2:
        stacked = _float_array("replica_weights", replica_weights)
    else:
        try:
            rows, layouts = [], set()
            for w in replica_weights:
                if _is_layer_list(w):
                    shapes = [np.shape(layer) for layer in w]
                    layer_shapes = shapes if layer_shapes is None else layer_shapes
                    layouts.add(tuple(shapes))
                rows.append(_flatten_weights("replica_weights", w))
        except TypeError:
            raise TypeError(
                "Argument `replica_weights` must be an (R, P) array or a "
                "sequence of replicas. Received: replica_weights of type "
                f"{type(replica_weights).__name__}"
            ) from None
        sizes = {row.size for row in rows}
        if len(sizes) > 1:
            raise ValueError(
                "Argument `replica_weights` must hold replicas of one size. "
                f"Received: replica_weights with sizes {sorted(sizes)}"
            )
        if len(layouts) > 1:
            # Shapes, not sizes: a transposed layer has the size of the
            # others', and its entries would be compared with other weights.
            raise ValueError(
                "Argument `replica_weights` must hold replicas of one layer "
                "layout. Received: replica_weights with layer shapes "
                f"{sorted(list(layout) for layout in layouts)}"
            )
        stacked = np.stack(rows) if rows else np.zeros((0, 0))
    if stacked.shape[0] <= ddof or stacked.shape[1] == 0:
        raise ValueError(
            f"Argument `replica_weights` must hold more than ddof={ddof} "
            "replicas of at least one parameter. "
            f"Received: replica_weights with shape {stacked.shape}"
        )
    _require("replica_weights", stacked, np.isfinite(stacked), "finite (no NaN or inf)")
    per_parameter = np.var(stacked, axis=0, ddof=ddof)
    projected = None
    if direction is not None:
        u = _flatten_weights("direction", direction)
        if u.size != stacked.shape[1]:
            raise ValueError(
                f"Argument `direction` must have one entry per parameter "
                f"({stacked.shape[1]}). Received: direction with {u.size} entries"
            )
        if layer_shapes is not None and _is_layer_list(direction):
            shapes = [np.shape(layer) for layer in direction]
            if shapes != layer_shapes:
                raise ValueError(
                    f"Argument `direction` must match a replica's layers "
                    f"{layer_shapes}. Received: direction with shapes {shapes}"
                )
        projected = float(np.var(stacked @ _unit_vector("direction", u), ddof=ddof))
    return ReplicaVariance(per_parameter, float(per_parameter.mean()), projected)


class _ScalarWelford:
    """Welford accumulator for one scalar series (a projection)."""

    __slots__ = ("mean", "m2")

    def __init__(self, mean=0.0, m2=0.0):
        self.mean, self.m2 = float(mean), float(m2)

    def update(self, value, count):
        delta = value - self.mean
        self.mean += delta / count
        self.m2 += delta * (value - self.mean)


class IterateStatistics:
    """Running mean and variance of weight iterates over a window (Welford).

    Each `update` adds one iterate (a list of per-layer arrays, as
    ``model.get_weights()`` returns). Welford's update

        delta = w - mean;  mean += delta / n;  M2 += delta * (w - mean)

    is exact in exact arithmetic and, unlike E[w^2] - E[w]^2, keeps its
    precision when the spread is tiny compared with the weights themselves,
    as it is after a learning-rate drop. The persistent state is two copies
    of the parameters (mean and M2; float64, or float32 with
    ``dtype="float32"``) plus two scalars per tracked direction; `update`
    also keeps two work buffers the size of the largest layer (in the dtype
    of ``w - mean``), so that it allocates nothing per update.

    Variances use ddof=0 by default (the population variance of the iterates
    in the window, what ``np.var`` of the stacked iterates gives, as in
    SWAG-diagonal); pass ddof=1 for the sample variance.

    Directions (e.g. the top Hessian eigenvector u) are tracked online: the
    scalar projection u^T w / ||u|| of every iterate goes through its own
    Welford accumulator, so the projected variance is exact, not the
    approximation sum_i u_i^2 Var w_i that ignores correlations. Register
    directions at construction or with `track_direction` before the first
    update of a window. A float64 direction is kept by reference (no copy, to
    keep memory at mean + M2): do not modify it in place while it is tracked.

    Args:
        names: optional layer names, one per array of an iterate (default
            "layer_0", "layer_1", ...).
        directions: optional mapping name -> direction, each a flat vector
            over all parameters or a list of arrays shaped like the iterate.
        dtype: dtype of the mean and M2 accumulators, "float64" (default) or
            "float32" (half the memory: for float32 weights, mean and M2
            then take twice the bytes of the weights, not four times).
            In float32 the mean's error grows with the window: once
            `delta / n` is under half a float32 spacing of the mean it is
            rounded away. Against float64 accumulators fed the same float32
            iterates (|w| = 1, spreads 1e-5 to 1e-3, windows of 10^4 and
            10^5 updates, 1,000 and 2,000 parameters), the mean was off by
            3e-7 to 1.1e-6 for the median parameter and up to 2e-6 to 1.7e-5
            for the worst (15 to 140 float32 spacings of |w|; a fifth of a
            1e-5 spread); the variance by at most 0.31% on average over the
            parameters and under 5% for any one of them. Weights of another
            dtype are first rounded to float32 (the statistics are those of
            the rounded iterates). Results (`mean`, `variance`, `summary`)
            are float64 either way, and projections always accumulate in
            float64 from the weights as given.

    Example:

    >>> import numpy as np
    >>> from robustlab.iterate_statistics import IterateStatistics
    >>> u = [np.array([1.0, 1.0]), np.array([0.0])]
    >>> stats = IterateStatistics(names=["w", "b"], directions={"u": u})
    >>> for w in ([[0.0, 0.0], [1.0]], [[2.0, 0.0], [3.0]]):
    ...     stats.update([np.array(x) for x in w])
    >>> stats.count
    2
    >>> [v.tolist() for v in stats.variance()]
    [[1.0, 0.0], [1.0]]
    >>> print(f"{stats.projected_variance('u'):.4f}")  # of u.w: 0 and sqrt(2)
    0.5000
    >>> summary = stats.summary()
    >>> print(summary["per_layer"]["w"], summary["overall"])
    0.5 0.6666666666666666
    """

    def __init__(self, names=None, directions=None, dtype="float64"):
        if isinstance(names, (str, bytes)):
            # list("ab") would name two layers "a" and "b".
            raise TypeError(
                "Argument `names` must be a list of layer names, not one string. "
                + _received("names", names)
            )
        if names is not None:
            try:
                names = list(names)
            except TypeError:
                raise TypeError("Argument `names` must be a list of layer names. "
                                + _received("names", names)) from None
            if not all(isinstance(n, str) for n in names) or len(set(names)) != len(
                names
            ):
                raise ValueError(
                    "Argument `names` must be distinct strings, one per layer. "
                    + _received("names", names)
                )
        try:
            accumulator_dtype = np.dtype(dtype)
        except TypeError:
            accumulator_dtype = None
        if accumulator_dtype not in (np.float32, np.float64):
            raise ValueError(
                'Argument `dtype` must be "float32" or "float64". '
                + _received("dtype", dtype)
            )
        self._dtype = accumulator_dtype
        self._names = names
        self._direction_source = {}  # name -> (flat vector or list, 1/||u||)
        self._direction_parts = (
            {}
        )  # name -> per-layer flat views, bound at first update
        self._projections = {}  # name -> _ScalarWelford
        self._shapes = None
        self._count = 0
        self._scratch = None  # reused buffers of `update`
        self._mean = None
        self._m2 = None
        if directions is not None:
            if not hasattr(directions, "items"):
                raise TypeError(
                    "Argument `directions` must be a mapping name -> direction. "
                    f"Received: directions of type {type(directions).__name__}"
                )
            for name, direction in directions.items():
                # Errors name the entry, `directions['u']`, not `direction`.
                self._track_direction(name, direction,
                                      f"directions[{name!r}]" if isinstance(name, str)
                                      else "directions")

    # -- configuration ----------------------------------------------------

    @property
    def count(self):
        """Number of iterates added since construction or the last `reset`."""
        return self._count

    @property
    def dtype(self):
        """The accumulators' NumPy dtype."""
        return self._dtype

    @property
    def nbytes(self):
        """Bytes held by the mean and M2 accumulators (0 before an update)."""
        if self._mean is None:
            return 0
        return sum(m.nbytes for m in self._mean) + sum(m.nbytes for m in self._m2)

    @property
    def names(self):
        """Layer names (None before the first update when not given)."""
        return None if self._names is None else list(self._names)

    @property
    def direction_names(self):
        """Names of the tracked directions."""
        return list(self._direction_source)

    def track_direction(self, name, direction):
        """Track the variance of the iterates projected on `direction`.

        Args:
            name: a string key for `projected_variance`.
            direction: a flat vector over all parameters, or a list of arrays
                shaped like the iterate; non-zero and finite. Normalised to
                unit length.

        Raises:
            RuntimeError: when called after updates in the current window
                (the projection would miss them); call `reset` first.
        """
        self._track_direction(name, direction, "direction")

    def _track_direction(self, name, direction, argument):
        if not isinstance(name, str):
            raise TypeError(
                "Argument `name` must be a string. " + _received("name", name)
            )
        if self._count:
            raise RuntimeError(
                "track_direction must be called before the first update of a "
                "window (or after reset()), otherwise the projected variance "
                f"would miss earlier iterates. Received: count={self._count}"
            )
        if _is_layer_list(direction):
            parts = [_float_array(argument, d) for d in direction]
            squared = sum(float(np.sum(np.square(d))) for d in parts)
            finite = all(np.all(np.isfinite(d)) for d in parts)
            source = parts
        else:
            source = _float_array(argument, direction).ravel()
            squared = float(np.dot(source, source))
            finite = bool(np.all(np.isfinite(source)))
        if not finite or not squared > 0 or not np.isfinite(squared):
            raise ValueError(
                f"Argument `{argument}` must be finite and non-zero (it is "
                f"normalised to unit length). Received: {argument} with squared "
                f"norm {squared!r}"
            )
        self._direction_source[name] = (source, 1.0 / np.sqrt(squared))
        self._projections[name] = _ScalarWelford()
        if self._shapes is not None:
            self._bind_direction(name)

    def _bind_direction(self, name):
        """Split a direction into per-layer flat views matching the iterate."""
        source, _ = self._direction_source[name]
        sizes = [int(np.prod(s)) for s in self._shapes]
        if isinstance(source, list):
            shapes = [d.shape for d in source]
            # Shapes, not sizes: a transposed layer has the size of the
            # iterate's, and its entries would meet the wrong weights.
            if shapes != self._shapes:
                raise ValueError(
                    f"Direction {name!r} must match the iterate's layers "
                    f"{self._shapes}. Received: direction with shapes {shapes}"
                )
            parts = [d.ravel() for d in source]
        else:
            if source.size != sum(sizes):
                raise ValueError(
                    f"Direction {name!r} must have one entry per parameter "
                    f"({sum(sizes)}). Received: direction with {source.size} entries"
                )
            parts = np.split(source, np.cumsum(sizes)[:-1])
        self._direction_parts[name] = parts

    # -- accumulation -----------------------------------------------------

    def _check_iterate(self, weights):
        if not isinstance(weights, (list, tuple)):
            raise TypeError(
                "Argument `weights` must be a list of arrays, one per layer "
                "(as model.get_weights() returns); wrap a single array as "
                "[w]. " + _received("weights", type(weights).__name__)
            )
        arrays = [np.asarray(w) for w in weights]
        if not arrays:
            raise ValueError(
                "Argument `weights` must hold at least one array. "
                "Received: weights=[]"
            )
        for i, w in enumerate(arrays):
            if w.dtype.kind == "V":
                # ml_dtypes' bfloat16 (the weights of a Keras "bfloat16"
                # policy), not a NumPy floating type: rounded to float32,
                # exactly, as the weights of other dtypes are.
                try:
                    w = arrays[i] = w.astype(np.float32)
                except (TypeError, ValueError):
                    pass
            if not (
                np.issubdtype(w.dtype, np.floating)
                or np.issubdtype(w.dtype, np.integer)
            ):
                raise TypeError(
                    f"Argument `weights` must hold real arrays. "
                    f"Received: weights[{i}] of dtype {w.dtype}"
                )
            if not np.all(np.isfinite(w)):
                raise ValueError(
                    f"Argument `weights` must be finite (a diverged run?). "
                    f"Received: weights[{i}] with {int(np.sum(~np.isfinite(w)))} "
                    f"non-finite values"
                )
        shapes = [w.shape for w in arrays]
        expected = self._shapes
        if (
            expected is None
            and self._names is not None
            and len(self._names) != len(arrays)
        ):
            raise ValueError(
                "Argument `weights` must hold one array per name "
                f"({len(self._names)}). "
                f"Received: weights with {len(arrays)} arrays"
            )
        if expected is not None and shapes != expected:
            raise ValueError(
                f"Argument `weights` must have the shapes of the window's "
                f"first iterate {expected}. Received: weights with shapes {shapes}"
            )
        return arrays

    def update(self, weights):
        """Add one iterate.

        Args:
            weights: a list of arrays, one per layer, with the same shapes at
                every update of a window; finite.
        """
        arrays = self._check_iterate(weights)
        if self._shapes is None:
            self._shapes = [w.shape for w in arrays]
            if self._names is None:
                self._names = [f"layer_{i}" for i in range(len(arrays))]
            self._mean = [np.zeros(w.shape, self._dtype) for w in arrays]
            self._m2 = [np.zeros(w.shape, self._dtype) for w in arrays]
            try:
                for name in self._direction_source:
                    self._bind_direction(name)
            except ValueError:
                self._shapes = self._mean = self._m2 = None
                self._direction_parts = {}
                raise
        self._count += 1
        n = self._count
        for w, mean, m2 in zip(arrays, self._mean, self._m2):
            if w.dtype != mean.dtype and mean.dtype == np.float32:
                # Welford's first delta is w itself: in float64 it would
                # meet a mean rounded to float32 and leave M2 an error of
                # |w| times half a float32 spacing (variances below zero).
                # Rounded first, the update is that of the float32 iterates.
                w = w.astype(np.float32)
            delta, scratch = self._scratch_for(w, mean)
            # The arithmetic of `delta = w - mean; mean += delta / n;
            # delta *= w - mean; m2 += delta`, into reused buffers: with
            # TensorFlow in the process, allocating fresh layer-sized
            # temporaries at every update cost more than the arithmetic
            # (2.7 ms against 0.8 ms an update of the digits CNN's 272,586
            # weights).
            np.subtract(w, mean, out=delta)
            np.divide(delta, n, out=scratch)
            mean += scratch  # (rounded to the accumulator dtype in place)
            np.subtract(w, mean, out=scratch)
            delta *= scratch
            m2 += delta
        for name, parts in self._direction_parts.items():
            inv_norm = self._direction_source[name][1]
            # einsum, not np.dot: a float32 . float64 np.dot misses BLAS, and
            # BLAS's threaded dot is itself slow on a busy machine; einsum's
            # single-threaded loop (in float64) costs ~1 ms per 10^6 values.
            value = sum(
                float(np.einsum("i,i->", w.ravel(), u)) for w, u in zip(arrays, parts)
            )
            self._projections[name].update(value * inv_norm, n)

    def _scratch_for(self, w, mean):
        """Two buffers shaped like `w`, in the dtype of `w - mean`: views of
        two flat arrays as large as the largest layer, reused by every layer
        and update (so the extra memory is two copies of one layer, not of
        the model)."""
        dtype = np.result_type(w.dtype, mean.dtype)
        largest = max(math.prod(shape) for shape in self._shapes)
        if (self._scratch is None or self._scratch[0].dtype != dtype
                or self._scratch[0].size < largest):
            self._scratch = (np.empty(largest, dtype), np.empty(largest, dtype))
        return tuple(b[:w.size].reshape(w.shape) for b in self._scratch)

    def reset(self):
        """Start a new window: forget the iterates, keep names and directions."""
        self._count = 0
        self._shapes = self._mean = self._m2 = None
        self._direction_parts = {}
        for name in self._projections:
            self._projections[name] = _ScalarWelford()

    # -- results ----------------------------------------------------------

    def _check_count(self, ddof):
        ddof = _check_ddof(ddof)
        if self._count <= ddof:
            raise ValueError(
                f"The variance needs more iterates than ddof={ddof}; call "
                f"update() first. Received: count={self._count}"
            )
        return ddof

    def mean(self):
        """Per-layer running means (float64 copies)."""
        self._check_count(0)
        return [m.astype(np.float64) for m in self._mean]

    def variance(self, ddof=0):
        """Per-layer variances M2 / (count - ddof) (float64 arrays)."""
        ddof = self._check_count(ddof)
        # np.asarray: dividing a 0-d array gives a NumPy scalar, not an array.
        return [np.asarray(m2.astype(np.float64) / (self._count - ddof))
                for m2 in self._m2]

    def _projection(self, name):
        if name not in self._projections:
            raise ValueError(
                f"Argument `name` must be a tracked direction "
                f"{self.direction_names}. " + _received("name", name)
            )
        return self._projections[name]

    def projected_mean(self, name):
        """Running mean of the iterates projected on the unit direction `name`."""
        self._check_count(0)
        return self._projection(name).mean

    def projected_variance(self, name, ddof=0):
        """Variance of the iterates projected on the unit direction `name`."""
        ddof = self._check_count(ddof)
        return self._projection(name).m2 / (self._count - ddof)

    def summary(self, ddof=0):
        """Plain-float summary for logs.

        Returns:
            A dict with "count", "per_layer" (name -> mean variance over that
            layer's parameters), "overall" (mean variance over all
            parameters, so large layers weigh more) and "projected" (direction
            name -> projected variance).
        """
        ddof = self._check_count(ddof)
        denominator = self._count - ddof
        total = sum(float(m2.sum(dtype=np.float64)) for m2 in self._m2)
        size = sum(m2.size for m2 in self._m2)
        return {
            "count": self._count,
            "per_layer": {
                name: (
                    float(m2.mean(dtype=np.float64)) / denominator if m2.size else 0.0
                )
                for name, m2 in zip(self._names, self._m2)
            },
            "overall": total / denominator / size if size else 0.0,
            "projected": {
                name: acc.m2 / denominator for name, acc in self._projections.items()
            },
        }

    # -- persistence ------------------------------------------------------

    def get_state(self):
        """The full state as a flat dict of NumPy arrays (``np.savez``-ready).

        Keys: "count", "layer_names", "mean_<i>", "m2_<i>" per layer,
        "direction_names", and per direction j "direction_<j>" (the unit
        vector, flat) and "direction_<j>_stats" ([mean, M2]).
        """
        state = {
            "count": np.array(self._count, dtype=np.int64),
            "layer_names": np.array(self._names or [], dtype=str),
            "direction_names": np.array(self.direction_names, dtype=str),
        }
        if self._mean is not None:
            for i, (mean, m2) in enumerate(zip(self._mean, self._m2)):
                state[f"mean_{i}"] = mean.copy()
                state[f"m2_{i}"] = m2.copy()
        for j, name in enumerate(self.direction_names):
            source, inv_norm = self._direction_source[name]
            flat = _flatten_weights("direction", source) * inv_norm
            acc = self._projections[name]
            state[f"direction_{j}"] = flat
            state[f"direction_{j}_stats"] = np.array([acc.mean, acc.m2])
        return state

    def set_state(self, state):
        """Restore a state from `get_state` (any mapping, e.g. from ``np.load``).

        A state that is refused (a `ValueError` or `TypeError` naming what is
        wrong) leaves the statistics as they were.
        """
        kept = dict(self.__dict__)
        try:
            self._set_state(state)
        except Exception:
            self.__dict__.clear()
            self.__dict__.update(kept)
            raise

    def _set_state(self, state):
        try:
            count = int(np.asarray(state["count"]))
            names = [str(n) for n in np.asarray(state["layer_names"]).ravel()]
            direction_names = [
                str(n) for n in np.asarray(state["direction_names"]).ravel()
            ]
            means = (
                [
                    np.array(state[f"mean_{i}"], dtype=self._dtype)
                    for i in range(len(names))
                ]
                if count
                else []
            )
            m2s = (
                [
                    np.array(state[f"m2_{i}"], dtype=self._dtype)
                    for i in range(len(names))
                ]
                if count
                else []
            )
            directions = [
                (
                    np.array(state[f"direction_{j}"], dtype=np.float64).ravel(),
                    np.asarray(state[f"direction_{j}_stats"], dtype=np.float64),
                )
                for j in range(len(direction_names))
            ]
            for j, (_, stats) in enumerate(directions):
                if stats.shape != (2,):
                    raise ValueError(f"direction_{j}_stats of shape {stats.shape}, not (2,)")
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(
                "Argument `state` must be a dict from IterateStatistics.get_state(). "
                f"Received: state missing or malformed entry {error}"
            ) from None
        if count < 0 or any(m.shape != v.shape for m, v in zip(means, m2s)):
            raise ValueError(
                "Argument `state` is inconsistent (negative count or mean/M2 "
                f"shapes differ). Received: count={count}"
            )
        self._names = names or None
        self._count = 0
        self._shapes = self._mean = self._m2 = None
        self._direction_source, self._direction_parts, self._projections = {}, {}, {}
        for name, (vector, _) in zip(direction_names, directions):
            self.track_direction(name, vector)
        if count:
            self._shapes = [m.shape for m in means]
            self._mean, self._m2 = means, m2s
            for name in direction_names:
                self._bind_direction(name)
        for name, (_, stats) in zip(direction_names, directions):
            self._projections[name] = _ScalarWelford(*stats)
        self._count = count
