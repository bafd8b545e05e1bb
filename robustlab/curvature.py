"""Curvature of a model's loss: Hessian-vector products, top eigenvalues,
trace and spectral density.

Two layers:

- **Operator level** (`power_iteration`, `lanczos`, `lanczos_eigenpairs`,
  `hutchinson_trace`, `slq_density`): pure NumPy algorithms on a symmetric
  linear operator given as `matvec(v) -> A v` on flat float64 vectors. They
  know nothing about Keras and are tested on matrices with known spectra.
- **Model level** (`hessian_vector_product`, `top_hessian_eigenvalue`,
  `top_hessian_eigenvalues`, `hessian_trace`, `spectral_density`): the same
  algorithms applied to `HessianOperator`, the Hessian of the mean loss of a
  Keras model over a fixed probe set with respect to `model.trainable_variables`.

What "the loss" is, for every model-level function:

- the mean over the probe examples of the per-example loss (a loss whose
  output has more than one value an example is first averaged over its
  non-batch axes). The `reduction` and sample weights of a
  `keras.losses.Loss` are ignored, and so are regularisation losses
  (`model.losses`): an L2 penalty `l * ||w||^2` adds `2 l` to the Hessian on the
  penalised weights, which you can add analytically.
- `loss=None` takes the model's compiled loss (`model.loss`).
- `attack=None` is the clean loss. With an attack (for instance
  `robustlab.PGD(eps=0.1, steps=10)`, or any callable `attack(model, x, y,
  seed=seed)` returning adversarial inputs of x's shape) it is the robust loss:
  the adversarial examples are crafted once, at the current weights, and then
  held fixed while the Hessian is probed. This is the Hessian of the loss on
  fixed adversarial inputs, not of the max-over-perturbations loss.
- the model runs in inference mode (`training=False`): BatchNorm uses (and
  does not update) its moving statistics, Dropout is off.

Vectors in weight space. The canonical form is a list of NumPy float64 arrays,
one per entry of `model.trainable_variables`, in that order and with those
shapes (the form of `eigenvector`s). `hessian_vector_product` also accepts a
flat vector (the arrays raveled in C order and concatenated; see
`flatten_weights` / `unflatten_weights`) and returns the form it was given.

Numerics. Each Hessian-vector product runs compiled (`tf.function` /
`jax.jit`, cached per model and loss, so repeated products do not retrace) in
the model's dtype (JAX: forward-over-reverse, `jax.jvp` of `jax.grad`;
TensorFlow: double backward through nested `GradientTape`s); batches are summed
and the outer algorithms run in float64. (On JAX, Keras computes some ops of a
float64 model, such as `tanh` and `ops.mean`, in float32: its type promotion maps
64-bit types to 32-bit ones there, so expect about 1e-7 relative accuracy.
Float64 on JAX also needs `jax.config.update("jax_enable_x64", True)`.)
Random numbers come from `numpy.random.default_rng(seed)`, so the same inputs
and seed give the same numbers.
"""

import contextlib
import dataclasses
import math
import numbers
import weakref

import keras
import numpy as np
from keras import ops

from robustlab import backend as _backend
from robustlab import losses
from robustlab import validation

try:  # a dependency of scikit-learn, which robustlab requires
    from threadpoolctl import threadpool_limits
except ImportError:  # pragma: no cover
    threadpool_limits = None

__all__ = [
    "EigenpairsEstimate",
    "EigenvalueEstimate",
    "HessianOperator",
    "LanczosDecomposition",
    "SpectralDensity",
    "TraceEstimate",
    "WHICH",
    "flatten_weights",
    "hessian_trace",
    "hessian_vector_product",
    "hutchinson_trace",
    "lanczos",
    "lanczos_eigenpairs",
    "power_iteration",
    "slq_density",
    "spectral_density",
    "top_hessian_eigenvalue",
    "top_hessian_eigenvalues",
    "unflatten_weights",
]

WHICH = ("largest_magnitude", "largest_algebraic")


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, eq=False)
class EigenvalueEstimate:
    """One eigenpair found by power iteration.

    Attributes:
        eigenvalue: the Rayleigh quotient `v^T A v` of `eigenvector`.
        eigenvector: unit-norm vector (flat float64 at the operator level; a
            list of arrays shaped like the trainable variables at the model
            level).
        iterations: matrix-vector products used.
        converged: whether the relative change of the Rayleigh quotient
            between two iterations fell to `tol` or below.
    """

    eigenvalue: float
    eigenvector: object
    iterations: int
    converged: bool


@dataclasses.dataclass(frozen=True, eq=False)
class EigenpairsEstimate:
    """The k eigenpairs of largest magnitude found by Lanczos.

    Attributes:
        eigenvalues: float64 array `(k,)`, sorted by magnitude, largest first.
        eigenvectors: the unit-norm Ritz vectors in the same order (a `(k,
            dim)` array at the operator level; a list of k weight-shaped lists
            at the model level).
        residuals: float64 array `(k,)`, `||A u - lambda u||` of each pair.
        iterations: Lanczos steps (matrix-vector products) used.
        converged: whether every residual is <= `tol * |eigenvalue|`.
    """

    eigenvalues: np.ndarray
    eigenvectors: object
    residuals: np.ndarray
    iterations: int
    converged: bool


@dataclasses.dataclass(frozen=True, eq=False)
class TraceEstimate:
    """A Hutchinson estimate of a trace.

    Attributes:
        trace: mean of the per-probe estimates `z^T A z`.
        stderr: their sample standard deviation (ddof=1) over sqrt(probes);
            NaN with a single probe.
        samples: float64 array `(probes,)`, the per-probe estimates.
    """

    trace: float
    stderr: float
    samples: np.ndarray


@dataclasses.dataclass(frozen=True, eq=False)
class SpectralDensity:
    """A spectral density estimated by stochastic Lanczos quadrature.

    Attributes:
        grid: float64 array `(points,)`, where the density is evaluated.
        density: float64 array `(points,)`, Gaussian-broadened and normalised
            so that its trapezoidal integral over `grid` is 1.
        nodes: float64 array `(probes, steps)`, the Ritz values of each probe.
        weights: float64 array `(probes, steps)`, their quadrature weights
            (squared first components of the Ritz vectors; each row sums to 1).
        sigma: the standard deviation of the Gaussian broadening.
    """

    grid: np.ndarray
    density: np.ndarray
    nodes: np.ndarray
    weights: np.ndarray
    sigma: float


@dataclasses.dataclass(frozen=True, eq=False)
class LanczosDecomposition:
    """`A V^T ~= V^T T` with `V` orthonormal rows and `T` tridiagonal.

    Attributes:
        alphas: float64 array `(m,)`, the diagonal of T.
        betas: float64 array `(m - 1,)`, its off-diagonal. A zero marks a
            restart after an invariant subspace was exhausted.
        residual_norm: norm of the part of `A v_m` outside the basis; the
            residual of Ritz pair i is `residual_norm * |S[m - 1, i]|`.
        basis: float64 array `(m, dim)`, the orthonormal Lanczos vectors.
    """

    alphas: np.ndarray
    betas: np.ndarray
    residual_norm: float
    basis: np.ndarray

    def tridiagonal(self):
        """The tridiagonal matrix T as a dense `(m, m)` array."""
        return (
            np.diag(self.alphas)
            + np.diag(self.betas, 1)
            + np.diag(self.betas, -1)
        )

    def ritz_pairs(self):
        """`(values, vectors_in_basis)`: eigh of T, ascending values; column i
        of `vectors_in_basis` holds the coefficients of Ritz vector i."""
        return np.linalg.eigh(self.tridiagonal())


# ---------------------------------------------------------------------------
# Operator-level algorithms (flat float64 NumPy vectors)
# ---------------------------------------------------------------------------


def _unit(vector, name):
    vector = np.asarray(vector, dtype=np.float64).ravel()
    norm = np.linalg.norm(vector)
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError(
            f"Argument `{name}` must be a finite, non-zero vector. "
            f"Received: {name} with norm {norm!r}"
        )
    return vector / norm


def _matvec64(matvec, vector):
    return np.asarray(matvec(vector), dtype=np.float64).ravel()


def _check_which(which):
    if which not in WHICH:
        raise ValueError(
            f"Argument `which` must be one of {WHICH}. Received: which={which!r}"
        )


def _power_iteration_run(matvec, initial, iterations, tol, shift):
    """Power iteration on `A - shift I`; returns the shifted eigenvalue."""
    v = _unit(initial, "initial")
    eigenvalue, previous = 0.0, None
    for step in range(1, iterations + 1):
        w = _matvec64(matvec, v)
        if shift:
            w = w - shift * v
        eigenvalue = float(v @ w)  # Rayleigh quotient of v
        if previous is not None and abs(eigenvalue - previous) <= tol * abs(eigenvalue):
            return EigenvalueEstimate(eigenvalue, v, step, True)
        norm = np.linalg.norm(w)
        if norm == 0.0:  # v is in the null space: eigenvalue 0, exactly
            return EigenvalueEstimate(0.0, v, step, True)
        previous, v = eigenvalue, w / norm
    return EigenvalueEstimate(eigenvalue, v, iterations, False)


def power_iteration(matvec, initial, iterations=20, tol=1e-3, *,
                    which="largest_magnitude"):
    """The dominant eigenpair of a symmetric operator by power iteration.

    With `which="largest_magnitude"` (the default) this finds the eigenvalue
    of LARGEST MAGNITUDE, which is negative when the most negative eigenvalue
    outweighs the most positive one. `which="largest_algebraic"` returns the
    most positive eigenvalue instead: when the dominant one is negative,
    lambda_dom, a second power iteration runs on `A - lambda_dom I`, whose
    dominant eigenvalue is `lambda_max - lambda_dom`.

    Each iteration costs one product: `w = A v`, Rayleigh quotient `v . w`,
    `v <- w / ||w||`. It stops when the Rayleigh quotient changes by at most
    `tol` relative to its value, or after `iterations` products (per run).
    Convergence is geometric with ratio |lambda_2 / lambda_1|; when the top
    two magnitudes are close, small relative change does not mean small
    error.

    Args:
        matvec: `v -> A v` for a flat float64 vector; A must be symmetric.
        initial: starting vector (not orthogonal to the dominant
            eigenvector); it is normalised.
        iterations: maximum number of products per run, >= 1.
        tol: relative tolerance on the Rayleigh quotient, > 0.
        which: `"largest_magnitude"` or `"largest_algebraic"`.

    Returns:
        `EigenvalueEstimate` with a flat unit-norm eigenvector.

    Example:

    >>> import numpy as np
    >>> a = np.diag([1.0, 2.0, -5.0])
    >>> result = power_iteration(lambda v: a @ v, np.ones(3), iterations=200,
    ...                          tol=1e-12)
    >>> round(result.eigenvalue, 6), result.converged
    (-5.0, True)
    >>> round(power_iteration(lambda v: a @ v, np.ones(3), 200, 1e-12,
    ...                       which="largest_algebraic").eigenvalue, 6)
    2.0
    """
    iterations = validation.check_int_at_least("iterations", iterations, 1)
    tol = validation.check_finite_positive("tol", tol)
    _check_which(which)
    result = _power_iteration_run(matvec, initial, iterations, tol, 0.0)
    if which == "largest_magnitude" or result.eigenvalue >= 0.0:
        return result
    shift = result.eigenvalue
    shifted = _power_iteration_run(matvec, initial, iterations, tol, shift)
    return EigenvalueEstimate(
        eigenvalue=shifted.eigenvalue + shift,
        eigenvector=shifted.eigenvector,
        iterations=result.iterations + shifted.iterations,
        converged=shifted.converged,
    )


_BREAKDOWN = 1e-10  # beta below this times ||A|| (so far) ends a Krylov space


def _orthogonalize(w, rows):
    """Remove from w its components along the orthonormal `rows` (twice:
    "twice is enough" for full reorthogonalisation in floating point)."""
    for _ in range(2):
        w = w - rows.T @ (rows @ w)
    return w


def _lanczos_iterations(matvec, initial, steps, rng):
    """Run Lanczos with full reorthogonalisation, yielding after every step.

    Yields `(alphas, betas, residual_norm, basis)`, where `basis` is a view
    of the rows built so far (live: copy what you keep). When the Krylov
    space of the start vector is exhausted (an exact invariant subspace,
    beta ~ 0), it restarts from a random vector orthogonal to the basis with
    a zero off-diagonal, so T stays the restriction of A to the basis and
    `steps` may go up to the dimension.
    """
    v = _unit(initial, "initial")
    dim = v.size
    steps = min(steps, dim)
    basis = np.empty((steps, dim))
    alphas, betas = [], []
    operator_norm = 0.0
    beta = 0.0
    for step in range(steps):
        basis[step] = v
        built = basis[: step + 1]
        w = _matvec64(matvec, v)
        operator_norm = max(operator_norm, float(np.linalg.norm(w)))
        alpha = float(v @ w)
        w = w - alpha * v
        if step > 0:
            w = w - beta * basis[step - 1]
        w = _orthogonalize(w, built)
        residual_norm = float(np.linalg.norm(w))
        alphas.append(alpha)
        yield alphas, betas, residual_norm, built
        if step == steps - 1:
            return
        if residual_norm > _BREAKDOWN * operator_norm:
            beta, v = residual_norm, w / residual_norm
        else:
            restart = _orthogonalize(rng.standard_normal(dim), built)
            beta, v = 0.0, restart / np.linalg.norm(restart)
        betas.append(beta)


def _decomposition(alphas, betas, residual_norm, basis):
    return LanczosDecomposition(
        alphas=np.array(alphas, dtype=np.float64),
        betas=np.array(betas, dtype=np.float64),
        residual_norm=float(residual_norm),
        basis=np.array(basis, dtype=np.float64),
    )


def lanczos(matvec, initial, steps, *, rng=None):
    """Lanczos tridiagonalisation with full reorthogonalisation.

    Builds an orthonormal basis `v_1..v_m` of the Krylov space of `initial`
    and the tridiagonal `T = V A V^T` (m = min(steps, dim)). Each step costs
    one product and O(m dim) for the reorthogonalisation. If the Krylov
    space is exhausted before m steps (beta ~ 0), it restarts from a random
    vector orthogonal to the basis, recording a zero off-diagonal.

    Args:
        matvec: `v -> A v` for a flat float64 vector; A must be symmetric.
        initial: non-zero starting vector; it is normalised.
        steps: number of steps, >= 1 (at most the dimension is used).
        rng: `numpy.random.Generator` for restart vectors (default seed 0).

    Returns:
        `LanczosDecomposition`.

    Example:

    >>> import numpy as np
    >>> a = np.diag([3.0, 1.0, -2.0])
    >>> decomposition = lanczos(lambda v: a @ v, np.ones(3), steps=3)
    >>> np.round(decomposition.ritz_pairs()[0], 6)
    array([-2.,  1.,  3.])
    """
    steps = validation.check_int_at_least("steps", steps, 1)
    rng = np.random.default_rng(0) if rng is None else rng
    state = None
    for state in _lanczos_iterations(matvec, initial, steps, rng):
        pass
    return _decomposition(*state)


def _top_ritz_pairs(decomposition, k):
    """The k Ritz pairs of largest magnitude: values, coefficient columns and
    residual norms, largest magnitude first."""
    values, coefficients = decomposition.ritz_pairs()
    order = np.argsort(-np.abs(values), kind="stable")[:k]
    residuals = decomposition.residual_norm * np.abs(coefficients[-1, order])
    return values[order], coefficients[:, order], residuals


def lanczos_eigenpairs(matvec, initial, k, steps, tol=1e-3, *, rng=None):
    """The k eigenpairs of largest magnitude of a symmetric operator, by
    Lanczos with full reorthogonalisation (no deflation).

    Runs up to `steps` Lanczos steps and stops early as soon as each of the
    k Ritz pairs of largest magnitude has residual `||A u - theta u|| <=
    tol * |theta|` (the eigenvalue error is then about residual^2 / gap).
    Limitation: a single Krylov space holds one copy of a repeated
    eigenvalue; further copies appear only after the space is exhausted.

    Args:
        matvec: `v -> A v` for a flat float64 vector; A must be symmetric.
        initial: non-zero starting vector.
        k: number of eigenpairs, 1 <= k <= dim.
        steps: maximum number of Lanczos steps, k <= steps (capped at dim).
        tol: relative residual tolerance, > 0.
        rng: `numpy.random.Generator` for restart vectors (default seed 0).

    Returns:
        `EigenpairsEstimate` with eigenvectors as a `(k, dim)` array.

    Example:

    >>> import numpy as np
    >>> a = np.diag([4.0, 1.0, 0.5, -3.0])
    >>> result = lanczos_eigenpairs(lambda v: a @ v, np.ones(4), k=2, steps=4)
    >>> np.round(result.eigenvalues, 6)
    array([ 4., -3.])
    """
    dim = np.asarray(initial).size
    k = _check_k(k, dim)
    steps = validation.check_int_at_least("steps", steps, 1)
    if steps < k:
        raise ValueError(
            f"Argument `steps` must be >= k={k}: Lanczos needs at least k steps "
            f"to produce k eigenpairs. Received: steps={steps}"
        )
    tol = validation.check_finite_positive("tol", tol)
    rng = np.random.default_rng(0) if rng is None else rng
    converged = False
    for alphas, betas, residual_norm, basis in _lanczos_iterations(
        matvec, initial, steps, rng
    ):
        if len(alphas) < k:
            continue
        decomposition = _decomposition(alphas, betas, residual_norm, basis[:0])
        values, _, residuals = _top_ritz_pairs(decomposition, k)
        converged = bool(np.all(residuals <= tol * np.abs(values)))
        if converged:
            break
    decomposition = _decomposition(alphas, betas, residual_norm, basis)
    values, coefficients, residuals = _top_ritz_pairs(decomposition, k)
    vectors = coefficients.T @ decomposition.basis
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return EigenpairsEstimate(
        eigenvalues=values,
        eigenvectors=vectors,
        residuals=residuals,
        iterations=len(alphas),
        converged=converged,
    )


def _rademacher(rng, dim):
    return rng.integers(0, 2, size=dim).astype(np.float64) * 2.0 - 1.0


def hutchinson_trace(matvec, dim, probes, rng):
    """Hutchinson's trace estimate with Rademacher probes.

    For z with independent +-1 entries, E[z^T A z] = tr(A). Returns the mean
    of `probes` such samples and its standard error (sample standard
    deviation, ddof=1, over sqrt(probes)).

    Args:
        matvec: `v -> A v` for a flat float64 vector.
        dim: dimension of the operator, >= 1.
        probes: number of probe vectors, >= 1.
        rng: `numpy.random.Generator`.

    Returns:
        `TraceEstimate`.

    Example:

    >>> import numpy as np
    >>> estimate = hutchinson_trace(lambda v: 2.0 * v, dim=5, probes=3,
    ...                             rng=np.random.default_rng(0))
    >>> estimate.trace, estimate.stderr
    (10.0, 0.0)
    """
    dim = validation.check_int_at_least("dim", dim, 1)
    probes = validation.check_int_at_least("probes", probes, 1)
    samples = np.empty(probes)
    for i in range(probes):
        z = _rademacher(rng, dim)
        samples[i] = z @ _matvec64(matvec, z)
    stderr = (
        float(np.std(samples, ddof=1) / math.sqrt(probes)) if probes > 1 else math.nan
    )
    return TraceEstimate(trace=float(np.mean(samples)), stderr=stderr, samples=samples)


if hasattr(np, "trapezoid"):
    _trapezoid = np.trapezoid
else:  # NumPy < 2
    _trapezoid = np.trapz


def _check_grid(grid):
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 2 or not np.all(np.isfinite(grid)) or not np.all(
        np.diff(grid) > 0
    ):
        raise ValueError(
            "Argument `grid` must be None or a 1-D array of at least 2 finite, "
            f"strictly increasing values. Received: grid with shape {grid.shape}"
        )
    return grid


def _gaussian_broadened_density(nodes, weights, grid, sigma):
    """`sum_j weights_j N(t; nodes_j, sigma^2)` at each t of `grid`, summed
    over all probes' nodes, then normalised so that the trapezoidal integral
    over `grid` is 1 (which also averages over the probes)."""
    nodes = np.asarray(nodes, dtype=np.float64).reshape(-1)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    offsets = (grid[:, None] - nodes[None, :]) / sigma
    kernel = np.exp(-0.5 * offsets**2) / (sigma * math.sqrt(2.0 * math.pi))
    density = kernel @ weights
    mass = _trapezoid(density, grid)
    if not mass > 0.0:
        raise ValueError(
            "Argument `grid` holds no spectral mass: widen it to cover the Ritz "
            f"values in [{nodes.min():g}, {nodes.max():g}]. Received: grid over "
            f"[{grid[0]:g}, {grid[-1]:g}]"
        )
    return density / mass


def slq_density(matvec, dim, steps, probes, grid=None, sigma=None, rng=None):
    """Spectral density of a symmetric operator by stochastic Lanczos
    quadrature (Ubaru, Chen & Saad 2017; Ghorbani et al. 2019).

    For each normalised Rademacher probe z, `steps` Lanczos steps give T with
    eigenpairs (theta_j, s_j); the Gauss quadrature nodes theta_j with weights
    s_j[0]^2 approximate the spectral measure seen by z, whose expectation is
    (1/dim) sum_i delta(lambda_i). The nodes are broadened by Gaussians of
    width `sigma` and averaged over the probes. With steps = dim each probe's
    nodes are the exact eigenvalues.

    Args:
        matvec: `v -> A v` for a flat float64 vector; A must be symmetric.
        dim: dimension of the operator, >= 1.
        steps: Lanczos steps per probe, >= 1 (capped at dim).
        probes: number of probe vectors, >= 1.
        grid: where to evaluate the density; default 1001 points from
            5 sigma below the smallest node to 5 sigma above the largest.
        sigma: broadening, > 0; default 1% of the node range (or 1e-3 times
            the largest |node|, at least 1e-12, when all nodes coincide).
        rng: `numpy.random.Generator` (default seed 0).

    Returns:
        `SpectralDensity`.

    Example:

    >>> import numpy as np
    >>> a = np.diag([1.0, 2.0, 3.0, 4.0])
    >>> result = slq_density(lambda v: a @ v, dim=4, steps=4, probes=2)
    >>> np.round(result.nodes[0], 6), np.round(result.weights[0], 6)
    (array([1., 2., 3., 4.]), array([0.25, 0.25, 0.25, 0.25]))
    """
    dim = validation.check_int_at_least("dim", dim, 1)
    steps = validation.check_int_at_least("steps", steps, 1)
    probes = validation.check_int_at_least("probes", probes, 1)
    if sigma is not None:
        sigma = validation.check_finite_positive("sigma", sigma)
    if grid is not None:
        grid = _check_grid(grid)
    rng = np.random.default_rng(0) if rng is None else rng
    steps = min(steps, dim)
    nodes = np.empty((probes, steps))
    weights = np.empty((probes, steps))
    for p in range(probes):
        decomposition = lanczos(matvec, _rademacher(rng, dim), steps, rng=rng)
        values, coefficients = decomposition.ritz_pairs()
        nodes[p] = values
        weights[p] = coefficients[0] ** 2
    if sigma is None:
        spread = float(nodes.max() - nodes.min())
        scale = float(np.abs(nodes).max())
        sigma = 0.01 * spread if spread > 0 else max(1e-3 * scale, 1e-12)
    if grid is None:
        grid = np.linspace(nodes.min() - 5 * sigma, nodes.max() + 5 * sigma, 1001)
    density = _gaussian_broadened_density(nodes, weights, grid, sigma)
    return SpectralDensity(
        grid=grid, density=density, nodes=nodes, weights=weights, sigma=float(sigma)
    )


# ---------------------------------------------------------------------------
# Weight-space vectors
# ---------------------------------------------------------------------------


def flatten_weights(arrays):
    """Ravel a list of arrays (C order) and concatenate them into one flat
    float64 vector.

    Example:

    >>> import numpy as np
    >>> flatten_weights([np.ones((2, 2)), np.zeros(1)])
    array([1., 1., 1., 1., 0.])
    """
    return np.concatenate(
        [np.asarray(a, dtype=np.float64).ravel() for a in arrays]
    ) if len(arrays) else np.zeros(0)


def unflatten_weights(vector, model):
    """Split a flat vector into float64 arrays shaped like
    `model.trainable_variables` (the inverse of `flatten_weights`).

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    >>> [a.shape for a in unflatten_weights(np.arange(9.0), model)]
    [(2, 3), (3,)]
    """
    shapes = [tuple(v.shape) for v in model.trainable_variables]
    return _split(np.asarray(vector, dtype=np.float64), shapes, "vector")


def _split(flat, shapes, name):
    sizes = [math.prod(s) for s in shapes]
    if flat.ndim != 1 or flat.size != sum(sizes):
        raise ValueError(
            f"Argument `{name}` must be a flat vector of {sum(sizes)} values (the "
            "number of trainable parameters), or a list of arrays shaped like "
            f"model.trainable_variables. Received: {name} with shape {flat.shape}"
        )
    pieces = np.split(flat, np.cumsum(sizes)[:-1])
    return [piece.reshape(shape) for piece, shape in zip(pieces, shapes)]


# ---------------------------------------------------------------------------
# The Hessian of a model's mean loss as a linear operator
# ---------------------------------------------------------------------------


_HALF_PRECISION = ("float16", "bfloat16")


def _weighted_mean_loss(per_example_loss):
    """`(y, y_pred, sample_weight) -> sum_i sample_weight[i] * loss_i`, with
    keras.ops; per-example losses with extra axes are first averaged over
    them. With weights 1/n this is the mean loss."""

    def weighted_loss(y, y_pred, sample_weight):
        if keras.backend.standardize_dtype(y_pred.dtype) in _HALF_PRECISION:
            y_pred = ops.cast(y_pred, "float32")
        if keras.backend.is_float_dtype(y.dtype):
            y = ops.cast(y, y_pred.dtype)
        losses = per_example_loss(y, y_pred)
        shape = tuple(losses.shape)
        if not shape:
            raise ValueError(
                "Argument `loss` must return one value per example, not a "
                "reduced scalar. Received: a loss returning shape ()"
            )
        if len(shape) > 1:  # sum / count: ops.mean runs float64 in float32 on JAX
            axes = tuple(range(1, len(shape)))
            if None in shape[1:]:
                losses = ops.mean(losses, axis=axes)
            else:
                losses = ops.sum(losses, axis=axes) / float(math.prod(shape[1:]))
        return ops.sum(losses * ops.cast(sample_weight, losses.dtype))

    return weighted_loss


def _single_threaded_blas():
    """Run NumPy's BLAS on one thread while a model-level estimator loops.

    OpenBLAS worker threads busy-wait for a while after each dot product or
    matrix-vector product of the outer float64 algebra, and steal the cores
    the next compiled Hessian-vector product needs: on 2 CPU cores that made
    20 power iterations about 2x slower. The outer algebra is cheap on one
    thread.
    """
    if threadpool_limits is None:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


_COMPILED = weakref.WeakKeyDictionary()  # model -> {key: compiled function}


def _compiled(model, kind, loss_key, per_example_loss):
    """The backend's compiled `kind` ("hvp" or "gradient") for this model and
    loss, built once and reused (keyed also on the variables, so toggling
    `trainable` gives a fresh one)."""
    per_model = _COMPILED.setdefault(model, {})
    key = (
        kind,
        loss_key,
        tuple(id(v) for v in model.trainable_variables),
        tuple(id(v) for v in model.non_trainable_variables),
    )
    function = per_model.get(key)
    if function is None:
        module = _backend.get()
        make = (
            module.make_hessian_vector_product
            if kind == "hvp"
            else module.make_loss_gradient
        )
        function = make(model, _weighted_mean_loss(per_example_loss))
        per_model[key] = function
    return function


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model. "
            f"Received: model of type {type(model).__name__}"
        )
    if not model.trainable_variables:
        raise ValueError(
            "Argument `model` must be built and have trainable variables (call "
            "it on a batch, or give it an Input, first). Received: model with "
            "no trainable variables"
        )


def _check_probe_data(x, y):
    x = np.asarray(x)
    validation.check_inputs(x, None, name="x")
    if x.ndim == 0:
        raise ValueError(
            "Argument `x` must be a batch of examples (first axis: examples). "
            f"Received: x with shape {x.shape}"
        )
    y = np.asarray(y)
    if y.ndim == 0 or len(y) != len(x):
        raise ValueError(
            "Arguments `x` and `y` must hold the same number of examples. "
            f"Received: x with {len(x)} examples and y with shape {y.shape}"
        )
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y)):
        raise ValueError(
            "Argument `y` must be finite (no NaN or inf). "
            f"Received: y with {int(np.sum(~np.isfinite(y)))} non-finite values"
        )
    return x, y


def _check_batch_size(batch_size):
    if batch_size is None:
        return None
    return validation.check_int_at_least("batch_size", batch_size, 1)


def _check_k(k, dim):
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= dim:
        raise ValueError(
            f"Argument `k` must be an integer in [1, {dim}] (the dimension: the "
            f"number of trainable parameters for a model). Received: k={k!r}"
        )
    return int(k)


class HessianOperator:
    """The Hessian of a model's mean loss over a fixed probe set, as a
    symmetric linear operator on weight space.

    The probe set is prepared once: inputs and labels validated, adversarial
    inputs crafted (when `attack` is given) at the current weights, split in
    batches of `batch_size` (the last one padded with zero-weight copies of
    the first examples, so every batch has one shape and one trace serves
    all). `matvec` then sums the compiled per-batch products, each weighted by
    1/n per example, into the product with the Hessian of the mean loss.
    The weights are read at each product: if they change, so does the
    operator (the adversarial inputs do not). Driving it with your own NumPy
    loop on CPU, run that loop under
    `threadpoolctl.threadpool_limits(1, user_api="blas")` (as the model-level
    functions do): OpenBLAS threads that busy-wait after a dot product slow
    the next compiled product down.

    Args:
        model: a built Keras model.
        x: probe inputs, a NumPy-convertible array; first axis: examples.
        y: probe labels, same number of examples.
        loss: a Keras loss, or None for the model's compiled loss.
        attack: None (clean loss), or `attack(model, x, y, seed=seed)`
            returning adversarial inputs of x's shape (e.g. `robustlab.PGD`).
        batch_size: examples per compiled product; None: all in one batch.
        seed: passed to the attack.

    Attributes:
        dim: number of trainable parameters.
        inputs: the probe inputs used (adversarial ones when `attack` is set).
        matvec_count: products computed so far.

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> operator = HessianOperator(
    ...     model, np.eye(2), np.array([0, 1]),
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> operator.dim, operator.matvec(np.zeros(operator.dim)).shape
    (6, (6,))
    """

    def __init__(self, model, x, y, *, loss=None, attack=None, batch_size=None,
                 seed=0):
        _check_model(model)
        x, y = _check_probe_data(x, y)
        batch_size = _check_batch_size(batch_size)
        loss_key, per_example = losses.resolve_model_loss(model, loss)
        if attack is not None:
            x = _craft_adversarial(attack, model, x, y, seed)
        self.model = model
        self.inputs = x
        self._variables = list(model.trainable_variables)
        self._shapes = [tuple(v.shape) for v in self._variables]
        self.dim = int(sum(math.prod(s) for s in self._shapes))
        dtypes = {keras.backend.standardize_dtype(v.dtype) for v in self._variables}
        # the dtype of tangents, products, sample weights and float inputs
        self._float_dtype = "float64" if "float64" in dtypes else "float32"
        self._batches = _padded_batches(x, y, batch_size, self._float_dtype)
        self._loss = (loss_key, per_example)
        self._hvp = _compiled(model, "hvp", loss_key, per_example)
        self._gradient = None
        self.matvec_count = 0

    def flatten(self, arrays, name="vector"):
        """A list of weight-shaped arrays -> flat float64 vector (validated)."""
        arrays = list(arrays)
        shapes = [tuple(np.shape(a)) for a in arrays]
        if shapes != self._shapes:
            raise ValueError(
                f"Argument `{name}` must be a list of arrays shaped like "
                f"model.trainable_variables {self._shapes}. "
                f"Received: {name} with shapes {shapes}"
            )
        return self._check_flat(flatten_weights(arrays), name)

    def unflatten(self, vector):
        """Flat vector -> list of float64 arrays shaped like the variables."""
        return _split(np.asarray(vector, dtype=np.float64), self._shapes, "vector")

    def _check_flat(self, vector, name):
        vector = np.asarray(vector, dtype=np.float64)
        if vector.ndim != 1 or vector.size != self.dim:
            raise ValueError(
                f"Argument `{name}` must be a flat vector of {self.dim} values "
                "(the number of trainable parameters) or a list of arrays "
                "shaped like model.trainable_variables. "
                f"Received: {name} with shape {vector.shape}"
            )
        if not np.all(np.isfinite(vector)):
            raise ValueError(
                f"Argument `{name}` must be finite (no NaN or inf). "
                f"Received: {name} with non-finite values"
            )
        return vector

    def as_flat(self, vector, name="vector"):
        """Accept the canonical list form or a flat vector; return flat."""
        if isinstance(vector, (list, tuple)):
            return self.flatten(vector, name)
        return self._check_flat(vector, name)

    def gradient(self):
        """The gradient of the mean loss over the probe set at the current
        weights, as a flat float64 vector (compiled like `matvec`, so the two
        costs compare directly)."""
        if self._gradient is None:
            self._gradient = _compiled(self.model, "gradient", *self._loss)
        return _sum_over_batches(self._gradient(*batch) for batch in self._batches)

    def matvec(self, vector):
        """H v for a flat vector v; returns a flat float64 vector."""
        vector = np.asarray(vector)
        if vector.shape != (self.dim,):
            raise ValueError(
                f"Argument `vector` must be a flat vector of {self.dim} values. "
                f"Received: vector with shape {vector.shape}"
            )
        tangent = ops.convert_to_tensor(vector.astype(self._float_dtype))
        product = _sum_over_batches(
            self._hvp(*batch, tangent) for batch in self._batches
        )
        self.matvec_count += 1
        return product


def _sum_over_batches(per_batch_vectors):
    """Sum per-batch flat vectors (already weighted) in float64."""
    total = None
    for vector in per_batch_vectors:
        vector = np.asarray(vector, dtype=np.float64)
        total = vector if total is None else total + vector
    return total


def _craft_adversarial(attack, model, x, y, seed):
    if not callable(attack):
        raise TypeError(
            "Argument `attack` must be None or a callable `attack(model, x, y, "
            "seed=seed)` such as robustlab.PGD(...). "
            f"Received: attack of type {type(attack).__name__}"
        )
    x_adv = np.asarray(attack(model, x, y, seed=seed))
    if x_adv.shape != x.shape or not np.all(np.isfinite(x_adv)):
        raise ValueError(
            "Argument `attack` must return finite adversarial inputs of x's "
            f"shape {x.shape}. Received: an attack returning shape {x_adv.shape}"
        )
    return x_adv


def _padded_batches(x, y, batch_size, float_dtype):
    """Batches `(x, y, per-example weight)` as backend tensors; weight 1/n for
    real examples, 0 for the padding that fills the last batch."""
    n = len(x)
    size = n if batch_size is None else min(batch_size, n)
    if np.issubdtype(x.dtype, np.floating):
        x = x.astype(float_dtype)
    if np.issubdtype(y.dtype, np.floating):
        y = y.astype(float_dtype)
    batches = []
    for start in range(0, n, size):
        positions = np.arange(start, start + size)
        index = positions % n
        weight = np.where(positions < n, 1.0 / n, 0.0).astype(float_dtype)
        batches.append(
            tuple(ops.convert_to_tensor(a) for a in (x[index], y[index], weight))
        )
    return batches


# ---------------------------------------------------------------------------
# Model level
# ---------------------------------------------------------------------------


def hessian_vector_product(model, x, y, vector, *, loss=None, attack=None,
                           batch_size=None, seed=0):
    """Hessian-vector product H v of the mean loss over (x, y) with respect
    to `model.trainable_variables`.

    Second-order autodiff (JAX: forward-over-reverse, `jax.jvp` of
    `jax.grad` over `stateless_call`; TensorFlow: double backward through
    nested `GradientTape`s), compiled and cached per model and loss, with the
    model in inference mode; per-batch products are weighted by batch size /
    n and summed, so the result does not depend on `batch_size`.

    Args:
        model: a built Keras model.
        x: probe inputs; first axis: examples. Finite, at least one example.
        y: probe labels, as many as inputs.
        vector: v, as a list of arrays shaped like `model.trainable_variables`
            (canonical) or as a flat vector of all their values (see
            `flatten_weights`).
        loss: a Keras loss (name, function or `keras.losses.Loss`); None: the
            model's compiled loss.
        attack: None for the clean loss, or an attack such as
            `robustlab.PGD(...)`: adversarial inputs are crafted once at the
            current weights and held fixed.
        batch_size: examples per compiled product; None: all at once.
        seed: seed of the attack.

    Returns:
        H v as float64, in the form `vector` was given: a list of arrays (for
        a list or tuple) or a flat vector (for anything else).

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> model.set_weights([np.zeros((2, 2)), np.zeros(2)])
    >>> loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    >>> v = [np.zeros((2, 2)), np.array([1.0, 0.0])]
    >>> hv = hessian_vector_product(model, np.eye(2), np.array([0, 1]), v,
    ...                             loss=loss)
    >>> np.round(hv[1], 6)  # bias block: diag(p) - p p^T with p = (1/2, 1/2)
    array([ 0.25, -0.25])
    """
    operator = HessianOperator(
        model, x, y, loss=loss, attack=attack, batch_size=batch_size, seed=seed
    )
    product = operator.matvec(operator.as_flat(vector))
    if isinstance(vector, (list, tuple)):
        return operator.unflatten(product)
    return product


def _initial(operator, initial_vector, rng):
    if initial_vector is None:
        return rng.standard_normal(operator.dim)
    initial = operator.as_flat(initial_vector, "initial_vector")
    if not np.any(initial):
        raise ValueError(
            "Argument `initial_vector` must be non-zero. "
            "Received: initial_vector with norm 0"
        )
    return initial


def top_hessian_eigenvalue(model, x, y, *, loss=None, attack=None, iterations=20,
                           tol=1e-3, batch_size=None, seed=0, initial_vector=None,
                           which="largest_magnitude"):
    """The dominant eigenvalue of the Hessian of the mean loss, by power
    iteration.

    By default this is the eigenvalue of LARGEST MAGNITUDE, which can be
    negative (away from a minimum the Hessian is indefinite).
    `which="largest_algebraic"` returns the most positive eigenvalue (the
    sharpness) instead, at the cost of a second, shifted power iteration when
    the dominant eigenvalue is negative; see `power_iteration`.

    Args:
        model, x, y, loss, attack, batch_size: as in `hessian_vector_product`;
            the adversarial inputs are crafted once, before the iteration.
        iterations: maximum number of Hessian-vector products (per power
            iteration run), >= 1.
        tol: stop when the Rayleigh quotient changes by at most `tol`
            relative to its value, > 0.
        seed: seed of the random start vector and of the attack.
        initial_vector: start vector (list or flat form); default: standard
            normal from `numpy.random.default_rng(seed)`.
        which: `"largest_magnitude"` or `"largest_algebraic"`.

    Returns:
        `EigenvalueEstimate`; its `eigenvector` is a unit-norm list of arrays
        shaped like `model.trainable_variables`.

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> model.set_weights([np.zeros((2, 2)), np.zeros(2)])
    >>> model.compile(loss=keras.losses.SparseCategoricalCrossentropy(
    ...     from_logits=True))
    >>> result = top_hessian_eigenvalue(model, np.eye(2), np.array([0, 1]),
    ...                                 iterations=100, tol=1e-8)
    >>> round(result.eigenvalue, 4), result.converged
    (0.75, True)
    """
    iterations = validation.check_int_at_least("iterations", iterations, 1)
    tol = validation.check_finite_positive("tol", tol)
    _check_which(which)
    operator = HessianOperator(
        model, x, y, loss=loss, attack=attack, batch_size=batch_size, seed=seed
    )
    initial = _initial(operator, initial_vector, np.random.default_rng(seed))
    with _single_threaded_blas():
        result = power_iteration(operator.matvec, initial, iterations, tol, which=which)
    return dataclasses.replace(
        result, eigenvector=operator.unflatten(result.eigenvector)
    )


def top_hessian_eigenvalues(model, x, y, k, *, loss=None, attack=None,
                            iterations=None, tol=1e-3, batch_size=None, seed=0,
                            initial_vector=None):
    """The k eigenvalues of largest magnitude of the Hessian of the mean loss,
    and their eigenvectors, by Lanczos with full reorthogonalisation.

    Lanczos (rather than deflated power iteration) gets all k pairs from one
    Krylov space, at one product a step, and stops as soon as every pair's
    residual `||H u - lambda u||` is at most `tol * |lambda|`. It needs
    `iterations` vectors of the model's size in memory. A single Krylov space
    sees one copy of an exactly repeated eigenvalue; see `lanczos_eigenpairs`.

    Args:
        model, x, y, loss, attack, batch_size: as in `hessian_vector_product`.
        k: number of eigenpairs, 1 <= k <= number of trainable parameters.
        iterations: maximum Lanczos steps (products), k <= iterations; default
            `max(20, 2 k + 10)`, capped at the number of parameters.
        tol: relative residual tolerance, > 0.
        seed: seed of the random start vector and of the attack.
        initial_vector: start vector (list or flat form).

    Returns:
        `EigenpairsEstimate`: eigenvalues sorted by magnitude (largest
        first); `eigenvectors[i]` is a unit-norm list of arrays shaped like
        `model.trainable_variables`.

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> model.set_weights([np.zeros((2, 2)), np.zeros(2)])
    >>> result = top_hessian_eigenvalues(
    ...     model, np.eye(2), np.array([0, 1]), k=2,
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> np.round(result.eigenvalues, 4)
    array([0.75, 0.25])
    """
    _check_model(model)
    dim = int(sum(math.prod(v.shape) for v in model.trainable_variables))
    k = _check_k(k, dim)
    if iterations is None:
        iterations = min(dim, max(20, 2 * k + 10))
    iterations = validation.check_int_at_least("iterations", iterations, k)
    tol = validation.check_finite_positive("tol", tol)
    operator = HessianOperator(
        model, x, y, loss=loss, attack=attack, batch_size=batch_size, seed=seed
    )
    rng = np.random.default_rng(seed)
    initial = _initial(operator, initial_vector, rng)
    with _single_threaded_blas():
        result = lanczos_eigenpairs(
            operator.matvec, initial, k, iterations, tol, rng=rng
        )
    return dataclasses.replace(
        result, eigenvectors=[operator.unflatten(u) for u in result.eigenvectors]
    )


def hessian_trace(model, x, y, *, probes=100, loss=None, attack=None,
                  batch_size=None, seed=0):
    """The trace of the Hessian of the mean loss, by Hutchinson's estimator
    with Rademacher probes (one Hessian-vector product each).

    Args:
        model, x, y, loss, attack, batch_size: as in `hessian_vector_product`.
        probes: number of probe vectors, >= 1.
        seed: seed of the probes and of the attack.

    Returns:
        `TraceEstimate` with `.trace`, `.stderr` (std of the per-probe
        estimates / sqrt(probes)) and `.samples`.

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> model.set_weights([np.zeros((2, 2)), np.zeros(2)])
    >>> estimate = hessian_trace(
    ...     model, np.eye(2), np.array([0, 1]), probes=200,
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> abs(estimate.trace - 1.0) < 3 * estimate.stderr  # exact trace: 1
    True
    """
    probes = validation.check_int_at_least("probes", probes, 1)
    operator = HessianOperator(
        model, x, y, loss=loss, attack=attack, batch_size=batch_size, seed=seed
    )
    with _single_threaded_blas():
        return hutchinson_trace(
            operator.matvec, operator.dim, probes, np.random.default_rng(seed)
        )


def spectral_density(model, x, y, *, lanczos_steps=30, probes=4, grid=None,
                     sigma=None, loss=None, attack=None, batch_size=None, seed=0):
    """The eigenvalue density of the Hessian of the mean loss, by stochastic
    Lanczos quadrature (`lanczos_steps` products per probe).

    Args:
        model, x, y, loss, attack, batch_size: as in `hessian_vector_product`.
        lanczos_steps: Lanczos steps per probe, >= 1 (capped at the number of
            parameters).
        probes: number of random probe vectors, >= 1.
        grid: points where the density is evaluated; default: 1001 points
            spanning the Ritz values plus 5 sigma on each side.
        sigma: Gaussian broadening, > 0; default 1% of the Ritz value range.
        seed: seed of the probes and of the attack.

    Returns:
        `SpectralDensity` with `.grid`, `.density` (integrates to 1 over the
        grid), the raw Ritz `.nodes` and `.weights` `(probes, steps)`, and
        `.sigma`.

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> model.set_weights([np.zeros((2, 2)), np.zeros(2)])
    >>> result = spectral_density(
    ...     model, np.eye(2), np.array([0, 1]), lanczos_steps=6, probes=1,
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> round(float(result.nodes.max()), 4)
    0.75
    """
    lanczos_steps = validation.check_int_at_least("lanczos_steps", lanczos_steps, 1)
    probes = validation.check_int_at_least("probes", probes, 1)
    if sigma is not None:
        sigma = validation.check_finite_positive("sigma", sigma)
    if grid is not None:
        grid = _check_grid(grid)
    operator = HessianOperator(
        model, x, y, loss=loss, attack=attack, batch_size=batch_size, seed=seed
    )
    with _single_threaded_blas():
        return slq_density(
            operator.matvec, operator.dim, lanczos_steps, probes, grid=grid,
            sigma=sigma, rng=np.random.default_rng(seed),
        )
