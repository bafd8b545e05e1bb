"""Eigenvalues, trace and spectral density of a symmetric linear operator.

The operator is given only by its product, `matvec(v) -> A v` on flat float64
NumPy vectors, so these algorithms know nothing of models or frameworks (this
module imports NumPy and `robustlab.validation`, nothing else) and are tested
on matrices with known spectra:

- `power_iteration`: the dominant eigenpair (of largest magnitude, or the
  most positive one).
- `lanczos`: the Lanczos tridiagonalisation with full reorthogonalisation;
  `lanczos_eigenpairs`: the k eigenpairs of largest magnitude from it.
- `hutchinson_trace`: Hutchinson's trace estimate with Rademacher probes.
- `slq_density`: the spectral density by stochastic Lanczos quadrature.

Their results are `EigenvalueEstimate`, `EigenpairsEstimate`, `TraceEstimate`,
`SpectralDensity` and `LanczosDecomposition`. `robustlab.curvature` applies
the same algorithms to the Hessian of a Keras model's loss and returns the
same results, with eigenvectors shaped like the model's weights; it checks
its arguments with the checks here (`check_which`, `check_eigenpair_count`,
`check_density_grid`) before any costly set-up. All randomness comes from the
`numpy.random.Generator` passed in.
"""

import dataclasses
import math
import numbers

import numpy as np

from robustlab import validation

__all__ = [
    "EigenpairsEstimate",
    "EigenvalueEstimate",
    "LanczosDecomposition",
    "SpectralDensity",
    "TraceEstimate",
    "WHICH",
    "check_density_grid",
    "check_eigenpair_count",
    "check_which",
    "hutchinson_trace",
    "lanczos",
    "lanczos_eigenpairs",
    "power_iteration",
    "slq_density",
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
        iterations: matrix-vector products used (the cap plus one when
            not converged: the last one gives the Rayleigh quotient of the
            returned vector).
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
    product = np.asarray(matvec(vector), dtype=np.float64).ravel()
    if product.size != vector.size:
        # Unchecked, NumPy's matmul named only gufunc signatures.
        raise ValueError(
            "Argument `matvec` must return a vector of its input's length "
            f"({vector.size}), and the start vector must have the operator's "
            f"size. Received: a product of size {product.size}")
    if not np.all(np.isfinite(product)):
        # Unchecked, a NaN spreads into every estimate, or np.linalg.eigh
        # fails with "Eigenvalues did not converge", naming nothing given.
        raise ValueError(
            "Argument `matvec` must return finite values (is the operator's "
            "model diverged?). Received: a product with "
            f"{int(np.sum(~np.isfinite(product)))} non-finite values of {product.size}")
    return product


def check_which(which):
    """Raise ValueError unless `which` is one of `WHICH`."""
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
    # At the cap, `eigenvalue` is the quotient of the vector before the last
    # step; one more product gives that of the vector returned, so that the
    # pair agrees (and is the newest estimate of both).
    w = _matvec64(matvec, v)
    if shift:
        w = w - shift * v
    return EigenvalueEstimate(float(v @ w), v, iterations + 1, False)


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
    `tol` relative to its value, or after `iterations` steps (per run); a
    run stopped there takes one more product, for the Rayleigh quotient of
    the vector it returns.
    Convergence is geometric with ratio |lambda_2 / lambda_1|; when the top
    two magnitudes are close, small relative change does not mean small
    error. With two eigenvalues of about the same magnitude and opposite
    signs the quotient can even settle between them and report convergence
    (diag(1, -1, 0.1) from [1, 0.5, 1] stops at 0.6): `top_hessian_eigenvalues`
    (Lanczos) tells them apart.

    Args:
        matvec: `v -> A v` for a flat float64 vector; A must be symmetric.
        initial: starting vector (not orthogonal to the dominant
            eigenvector); it is normalised.
        iterations: maximum number of power steps per run, >= 1 (products:
            one more when the run stops at the cap).
        tol: relative tolerance on the Rayleigh quotient, > 0.
        which: `"largest_magnitude"` or `"largest_algebraic"`.

    Returns:
        `EigenvalueEstimate` with a flat unit-norm eigenvector.

    Example:

    >>> import numpy as np
    >>> from robustlab.spectral import power_iteration
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
    check_which(which)
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

    Yields `(alphas, betas, residual_norm, basis, exhausted)`, where `basis`
    is a view of the rows built so far (live: copy what you keep) and
    `exhausted` says whether this step ended a Krylov space (an exact
    invariant subspace, beta ~ 0). After such a step, if any are left, it
    restarts from a random vector orthogonal to the basis with a zero
    off-diagonal, so T stays the restriction of A to the basis and `steps`
    may go up to the dimension.
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
        exhausted = residual_norm <= _BREAKDOWN * operator_norm
        yield alphas, betas, residual_norm, built, exhausted
        if step == steps - 1:
            return
        if not exhausted:
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
    >>> from robustlab.spectral import lanczos
    >>> a = np.diag([3.0, 1.0, -2.0])
    >>> decomposition = lanczos(lambda v: a @ v, np.ones(3), steps=3)
    >>> np.round(decomposition.ritz_pairs()[0], 6)
    array([-2.,  1.,  3.])
    """
    steps = validation.check_int_at_least("steps", steps, 1)
    rng = _check_rng(rng)
    state = None
    for state in _lanczos_iterations(matvec, initial, steps, rng):
        pass
    return _decomposition(*state[:4])


def check_eigenpair_count(k, dim):
    """`k` as an int if it is an integer in [1, dim]; ValueError otherwise."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= dim:
        raise ValueError(
            f"Argument `k` must be an integer in [1, {dim}] (the dimension: the "
            f"number of trainable parameters for a model). Received: k={k!r}"
        )
    return int(k)


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

    A Krylov space holds one copy of a repeated eigenvalue, and none of an
    eigenvalue whose eigenvectors are orthogonal to `initial`. When the
    space is exhausted (an exact invariant subspace: its Ritz pairs all have
    residual 0, which says nothing of the eigenvalues outside it) with steps
    left, the run restarts from a random vector orthogonal to the basis and
    from then on does not stop early: it takes all `steps` (capped at dim).

    What is guaranteed: with `steps` >= dim the result is the exact top k
    (up to rounding), each repeated eigenvalue as often as its multiplicity.
    With fewer steps, `converged` certifies only the residual of each pair
    returned, not that no eigenvalue of larger magnitude was missed (one
    whose eigenvectors are nearly orthogonal to the space explored, or a
    further copy not yet reached).

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
    >>> from robustlab.spectral import lanczos_eigenpairs
    >>> a = np.diag([4.0, 1.0, 0.5, -3.0])
    >>> result = lanczos_eigenpairs(lambda v: a @ v, np.ones(4), k=2, steps=4)
    >>> np.round(result.eigenvalues, 6)
    array([ 4., -3.])
    """
    dim = np.asarray(initial).size
    k = check_eigenpair_count(k, dim)
    steps = validation.check_int_at_least("steps", steps, 1)
    if steps < k:
        raise ValueError(
            f"Argument `steps` must be >= k={k}: Lanczos needs at least k steps "
            f"to produce k eigenpairs. Received: steps={steps}"
        )
    tol = validation.check_finite_positive("tol", tol)
    rng = _check_rng(rng)
    restarted = False
    for alphas, betas, residual_norm, basis, exhausted in _lanczos_iterations(
        matvec, initial, steps, rng
    ):
        # At an exhausted space every residual is 0, so the test below would
        # pass whatever lies outside it (further copies of a repeated
        # eigenvalue, say); after a restart the old pairs keep residual 0 and
        # would pass it again as soon as the new space's first Ritz value
        # falls outside the top k. So after an exhaustion only the last step
        # is judged.
        restarted = restarted or exhausted
        if len(alphas) < k or restarted:
            continue
        decomposition = _decomposition(alphas, betas, residual_norm, basis[:0])
        values, _, residuals = _top_ritz_pairs(decomposition, k)
        if np.all(residuals <= tol * np.abs(values)):
            break
    decomposition = _decomposition(alphas, betas, residual_norm, basis)
    values, coefficients, residuals = _top_ritz_pairs(decomposition, k)
    converged = bool(np.all(residuals <= tol * np.abs(values)))
    vectors = coefficients.T @ decomposition.basis
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return EigenpairsEstimate(
        eigenvalues=values,
        eigenvectors=vectors,
        residuals=residuals,
        iterations=len(alphas),
        converged=converged,
    )


def _check_rng(rng):
    """`rng`, or a Generator of seed 0 for None."""
    if rng is None:
        return np.random.default_rng(0)
    if not isinstance(rng, np.random.Generator):
        raise TypeError("Argument `rng` must be a numpy.random.Generator or None. "
                        f"Received: rng={rng!r}")
    return rng


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
    >>> from robustlab.spectral import hutchinson_trace
    >>> estimate = hutchinson_trace(lambda v: 2.0 * v, dim=5, probes=3,
    ...                             rng=np.random.default_rng(0))
    >>> estimate.trace, estimate.stderr
    (10.0, 0.0)
    """
    dim = validation.check_int_at_least("dim", dim, 1)
    probes = validation.check_int_at_least("probes", probes, 1)
    if not isinstance(rng, np.random.Generator):
        raise TypeError("Argument `rng` must be a numpy.random.Generator, e.g. "
                        f"np.random.default_rng(0). Received: rng={rng!r}")
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


def check_density_grid(grid):
    """`grid` as a float64 array; ValueError unless it is 1-D, finite and
    strictly increasing, with at least 2 points."""
    grid = validation._float_array("grid", grid)  # NumPy could not convert "x" (no name)
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
    >>> from robustlab.spectral import slq_density
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
        grid = check_density_grid(grid)
    rng = _check_rng(rng)
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
