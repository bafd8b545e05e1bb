"""The posterior cloud of momentum SGD: predicted and measured widths.

Near a minimum, along one Hessian eigendirection u with curvature lambda,
heavy-ball SGD with learning rate eta_t, momentum beta and batch size B is a
linear system driven by the minibatch gradient noise xi_t (Var xi_t = s^2/B):

    x_{t+1} = x_t - eta_t (lambda x_t + xi_t) + beta (x_t - x_{t-1}).

With z_t = (x_t, x_{t-1}) it reads z_{t+1} = A_t z_t + b_t xi_t with

    A_t = [[1 + beta - eta_t lambda, -beta],     b_t = (-eta_t, 0),
           [1,                        0    ]]

so its covariance follows P_{t+1} = A_t P_t A_t^T + (eta_t^2 s^2 / B) e1 e1^T
step by step through any learning-rate schedule. It is stable (the iterates
forget their start geometrically) iff 0 < eta lambda < 2 (1 + beta).

Prediction, all pure NumPy and vectorised over directions:

- `covariance_recursion`: the weight variance after every step of a schedule
  (the time-resolved prediction; the one to compare measurements with).
- `stationary_variance`, `stationary_covariance`: its constant-LR limit.
- `spectral_radius`, `relaxation_steps`, `is_stable`, `stability_margin`:
  how fast, and whether, a direction forgets.
- `minibatch_noise_variance`: the noise input, from per-example gradients.

Measurement:

- `IterateStatistics`: running (Welford) mean and variance of the iterates
  over a window, per layer, overall and along tracked directions.
- `replica_variance`: the spread across replicas forked from one state.
"""

import numbers
from typing import NamedTuple

import numpy as np

from robustlab import validation

__all__ = [
    "CovarianceTrajectory",
    "IterateStatistics",
    "ReplicaVariance",
    "covariance_recursion",
    "is_stable",
    "minibatch_noise_variance",
    "relaxation_steps",
    "replica_variance",
    "spectral_radius",
    "stability_margin",
    "stationary_covariance",
    "stationary_variance",
]


# ---------------------------------------------------------------------------
# Argument checks. Each names the argument and the allowed range and ends, as
# Keras's own errors do, with "Received: name=value". For arrays the first
# offending entry is quoted with its index, so a bad direction among 10^5 can
# be found.
# ---------------------------------------------------------------------------


def _received(name, value):
    return f"Received: {name}={value!r}"


def _is_real_scalar(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _float_array(name, value):
    if isinstance(value, (bool, np.bool_)) or (
        isinstance(value, np.ndarray) and value.dtype == bool
    ):
        raise TypeError(
            f"Argument `{name}` must be a real number or an array of real "
            f"numbers, not booleans. " + _received(name, value)
        )
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"Argument `{name}` must be a real number or an array of real "
            f"numbers. " + _received(name, value)
        ) from None


def _require(name, array, ok, requirement):
    """Raise a ValueError quoting the first entry of `array` where not `ok`."""
    ok = np.broadcast_to(ok, np.shape(array))
    if np.all(ok):
        return
    array = np.asarray(array)
    if array.ndim == 0:
        received = f"{name}={array.item()!r}"
    else:
        index = tuple(int(i) for i in np.argwhere(~ok)[0])
        label = ", ".join(str(i) for i in index)
        received = f"{name}[{label}]={array[index].item()!r}"
    raise ValueError(f"Argument `{name}` must be {requirement}. Received: {received}")


def _finite(name, value):
    array = _float_array(name, value)
    _require(name, array, np.isfinite(array), "finite (no NaN or inf)")
    return array


def _finite_nonnegative(name, value):
    array = _finite(name, value)
    _require(name, array, array >= 0, "finite and >= 0")
    return array


def _check_momentum(momentum):
    # beta = 1 has no damping and no stationary state; beta < 0 is not what
    # an optimizer's `momentum` means.
    if not _is_real_scalar(momentum) or not 0 <= momentum < 1:
        raise ValueError(
            "Argument `momentum` must be a number in [0, 1). "
            + _received("momentum", momentum)
        )
    return float(momentum)


def _check_ddof(ddof):
    return validation.check_int_at_least("ddof", ddof, 0)


def _stability_limit(momentum):
    """The oscillatory edge of stability: eta lambda must stay below it."""
    return 2.0 * (1.0 + momentum)


def _as_scalar_if_0d(array):
    # Scalar in, scalar (np.float64 / np.bool_) out; arrays stay arrays.
    return array[()] if isinstance(array, np.ndarray) and array.ndim == 0 else array


# ---------------------------------------------------------------------------
# Stability and relaxation of one direction.
# ---------------------------------------------------------------------------


def is_stable(lr, momentum, curvature):
    """Whether heavy-ball SGD is stable: 0 < lr*curvature < 2 (1 + momentum).

    This is the stationarity condition of the AR(2) process
    x_{t+1} = (1 + beta - eta lambda) x_t - beta x_{t-1} + noise, i.e. both
    roots of mu^2 - (1 + beta - eta lambda) mu + beta have modulus < 1. At
    eta lambda = 0 (a flat direction, or a zero learning rate) one root is 1;
    at eta lambda = 2 (1 + beta) one root is -1: both edges are unstable.

    Args:
        lr: learning rate(s) eta, finite and >= 0.
        momentum: beta in [0, 1).
        curvature: curvature(s) lambda along the direction(s), finite.

    Returns:
        A boolean (NumPy bool for scalar inputs, array when broadcasting).

    Example:

    >>> bool(is_stable(0.1, 0.9, 37.9)), bool(is_stable(0.1, 0.9, 38.0))
    (True, False)
    >>> is_stable([0.0, 0.1, 0.1], 0.9, [1.0, 1.0, -1.0]).tolist()
    [False, True, False]
    """
    return stability_margin(lr, momentum, curvature) > 0


def stability_margin(lr, momentum, curvature):
    """Signed distance of lr*curvature to the nearer edge of (0, 2(1+momentum)).

    The distance is divided by the interval length 2 (1 + beta), so it is
    positive exactly where `is_stable` holds, 0 on either edge, at most 0.5
    (at eta lambda = 1 + beta) and negative outside. A direction with margin
    near 0 from above forgets slowly (eta lambda -> 0) or rings (eta lambda ->
    2 (1 + beta)); `relaxation_steps` says how slowly.

    Args:
        lr: learning rate(s), finite and >= 0.
        momentum: beta in [0, 1).
        curvature: curvature(s), finite.

    Returns:
        min(eta lambda, 2 (1 + beta) - eta lambda) / (2 (1 + beta)), broadcast.

    Example:

    >>> print(stability_margin(0.5, 0.0, 1.0))
    0.25
    >>> print(stability_margin(0.5, 0.0, 6.0))
    -0.5
    """
    momentum = _check_momentum(momentum)
    eta_lambda = _finite_nonnegative("lr", lr) * _finite("curvature", curvature)
    limit = _stability_limit(momentum)
    margin = np.minimum(eta_lambda, limit - eta_lambda) / limit
    return _as_scalar_if_0d(margin)


def _spectral_gap(eta_lambda, beta):
    """1 - rho(A), computed without cancellation.

    With e = eta lambda, f = 2 (1 + beta) - e and m = min(e, f) (the distance
    to the nearer stability edge), the discriminant of mu^2 - a mu + beta is
    a^2 - 4 beta = (1 - beta)^2 - e f, and for real roots rationalising
    1 - (|a| + sqrt(disc)) / 2 gives 2 m / (m + 1 - beta + sqrt(disc)). So the
    gap is exactly 0 on both edges and keeps full relative precision for tiny
    e, where 1 - rho would otherwise lose digits to cancellation.
    """
    far = _stability_limit(beta) - eta_lambda
    discriminant = (1.0 - beta) ** 2 - eta_lambda * far
    nearer = np.minimum(eta_lambda, far)
    real_gap = (
        2.0 * nearer / (nearer + (1.0 - beta) + np.sqrt(np.maximum(discriminant, 0.0)))
    )
    return np.where(discriminant < 0, 1.0 - np.sqrt(beta), real_gap)


def spectral_radius(lr, momentum, curvature):
    """Spectral radius rho of the heavy-ball transition matrix A.

    A = [[1 + beta - eta lambda, -beta], [1, 0]] has the eigenvalues
    mu = (a +- sqrt(a^2 - 4 beta)) / 2 with a = 1 + beta - eta lambda. When
    a^2 < 4 beta they are complex with |mu| = sqrt(beta): momentum then sets
    a floor on how fast any direction can forget, however sharp it is.

    Args:
        lr: learning rate(s), finite and >= 0.
        momentum: beta in [0, 1).
        curvature: curvature(s), finite.

    Returns:
        rho(A) >= 0, broadcast over the inputs; < 1 exactly where `is_stable`
        holds, and exactly 1 on both edges of the stability interval.

    Example:

    >>> print(spectral_radius(0.5, 0.0, 1.0))  # plain SGD: |1 - eta lambda|
    0.5
    >>> print(f"{spectral_radius(0.1, 0.81, 1.0):.4f}")  # complex pair: sqrt(beta)
    0.9000
    >>> # both edges of the stability interval (0, 3):
    >>> print(spectral_radius(0.5, 0.5, 0.0), spectral_radius(0.5, 0.5, 6.0))
    1.0 1.0
    """
    momentum = _check_momentum(momentum)
    eta_lambda = _finite_nonnegative("lr", lr) * _finite("curvature", curvature)
    return _as_scalar_if_0d(1.0 - _spectral_gap(eta_lambda, momentum))


def relaxation_steps(lr, momentum, curvature):
    """Exact relaxation time, in steps, of the mean along a direction: -1 / ln rho(A).

    The distance of the mean iterate from the minimum shrinks like rho^t, so
    after `relaxation_steps` steps it has fallen by a factor e; the variance,
    quadratic in the iterates, relaxes twice as fast. For small eta lambda
    this is (1 - beta) / (eta lambda) to first order (the slow root of A is
    1 - eta lambda / (1 - beta) + O((eta lambda)^2)); once eta lambda is large
    enough for the roots to turn complex it is the momentum floor
    -2 / ln beta, e.g. 19 steps for beta = 0.9. That is the time the
    covariance recursion needs to forget its start: windows shorter than it
    never reach the stationary variance.

    Args:
        lr: learning rate(s), finite and >= 0.
        momentum: beta in [0, 1).
        curvature: curvature(s), finite.

    Returns:
        Steps (float), broadcast; `inf` where the direction does not relax
        (rho >= 1: a flat or negative-curvature direction, a zero learning
        rate, or eta lambda >= 2 (1 + beta)); check `is_stable` to tell these
        apart.

    Example:

    >>> print(f"{relaxation_steps(1e-4, 0.9, 1.0):.1f}")  # (1 - 0.9) / 1e-4 = 1000
    990.4
    >>> print(f"{relaxation_steps(0.1, 0.9, 1.0):.1f}")  # momentum floor
    19.0
    >>> print(relaxation_steps(0.1, 0.9, 0.0))
    inf
    """
    momentum = _check_momentum(momentum)
    eta_lambda = _finite_nonnegative("lr", lr) * _finite("curvature", curvature)
    gap = _spectral_gap(eta_lambda, momentum)
    with np.errstate(divide="ignore"):
        # log1p keeps the precision of a tiny gap (ln rho = log1p(-gap)).
        steps = np.where(gap > 0, -1.0 / np.log1p(-np.minimum(gap, 1.0)), np.inf)
    return _as_scalar_if_0d(steps)


# ---------------------------------------------------------------------------
# Stationary (constant learning rate) limit.
# ---------------------------------------------------------------------------


def _check_stationary_args(lr, momentum, curvature, noise_variance, batch_size):
    momentum = _check_momentum(momentum)
    batch_size = validation.check_int_at_least("batch_size", batch_size, 1)
    lr = _finite_nonnegative("lr", lr)
    curvature = _finite("curvature", curvature)
    noise_variance = _finite_nonnegative("noise_variance", noise_variance)
    _require(
        "curvature",
        curvature,
        curvature > 0,
        "> 0 for a stationary distribution to exist (along a direction with "
        "curvature <= 0 the variance grows without bound)",
    )
    eta_lambda = lr * curvature
    limit = _stability_limit(momentum)
    _require(
        "lr*curvature",
        eta_lambda,
        (eta_lambda > 0) & (eta_lambda < limit),
        f"in the stability interval 0 < lr*curvature < 2*(1+momentum) = "
        f"{limit:g} for a stationary distribution to exist",
    )
    return lr, momentum, curvature, noise_variance, batch_size


def stationary_variance(lr, momentum, curvature, noise_variance, batch_size):
    """Stationary weight variance of heavy-ball SGD along one eigendirection.

    The constant-LR process x_{t+1} = x_t - eta (lambda x_t + xi_t) + beta
    (x_t - x_{t-1}), Var xi = s^2 / B, is an AR(2) process whose stationary
    variance is

        sigma^2 = eta s^2 (1 + beta)
                  / (B lambda (1 - beta) (2 (1 + beta) - eta lambda))
                ~ eta s^2 / (2 B lambda (1 - beta))   for small eta lambda.

    It is the limit of `covariance_recursion` under a constant learning rate,
    reached only after several `relaxation_steps`.

    Args:
        lr: learning rate(s) eta, > 0.
        momentum: beta in [0, 1).
        curvature: curvature(s) lambda, > 0.
        noise_variance: per-example gradient-noise variance(s) s^2 along the
            direction, >= 0.
        batch_size: B, an integer >= 1.

    Returns:
        sigma^2, broadcast over lr, curvature and noise_variance (np.float64
        for scalar inputs).

    Raises:
        ValueError: where there is no stationary distribution: curvature <= 0
            (the variance grows without bound; we raise rather than return
            inf so that a sign error in a curvature estimate cannot pass
            silently), or lr*curvature outside the stability interval
            (0, 2 (1 + momentum)).

    Example:

    >>> print(f"{stationary_variance(0.1, 0.9, 1.0, 64.0, 64):.4f}")
    0.5135
    >>> stationary_variance(0.1, 0.9, 38.0, 1.0, 1)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ... stability interval 0 < lr*curvature < 2*(1+momentum) = 3.8 ...
    """
    lr, beta, lam, s2, batch = _check_stationary_args(
        lr, momentum, curvature, noise_variance, batch_size
    )
    variance = (
        lr
        * s2
        * (1.0 + beta)
        / (batch * lam * (1.0 - beta) * (_stability_limit(beta) - lr * lam))
    )
    return _as_scalar_if_0d(variance)


class CovarianceTrajectory(NamedTuple):
    """The three distinct entries of the symmetric 2x2 covariance of (x_t, x_{t-1})."""

    variance: np.ndarray
    """Var(x_t): the weight variance."""
    covariance: np.ndarray
    """Cov(x_t, x_{t-1})."""
    previous_variance: np.ndarray
    """Var(x_{t-1})."""


def stationary_covariance(lr, momentum, curvature, noise_variance, batch_size):
    """Stationary covariance of (x_t, x_{t-1}) under a constant learning rate.

    The lag-one autocovariance of the AR(2) process follows from its
    Yule-Walker equation: gamma_1 = a gamma_0 / (1 + beta) with a = 1 + beta
    - eta lambda; both marginal variances are gamma_0 = `stationary_variance`.
    This is the fixed point of `covariance_recursion`, and what to start it
    from to follow an already-equilibrated cloud through a schedule change
    (``initial="stationary"``).

    Args:
        lr, momentum, curvature, noise_variance, batch_size: as in
            `stationary_variance`.

    Returns:
        A `CovarianceTrajectory` (variance, covariance, previous_variance) of
        broadcast arrays (np.float64 for scalar inputs).

    Example:

    >>> var, cov, prev = stationary_covariance(0.5, 0.0, 1.0, 3.0, 1)
    >>> print(var, cov, prev)  # plain SGD: AR(1) with coefficient 0.5
    1.0 0.5 1.0
    """
    lr, beta, lam, s2, batch = _check_stationary_args(
        lr, momentum, curvature, noise_variance, batch_size
    )
    gamma0 = np.asarray(stationary_variance(lr, beta, lam, s2, batch))
    gamma1 = (1.0 + beta - lr * lam) * gamma0 / (1.0 + beta)
    gamma0, gamma1 = np.broadcast_arrays(gamma0, gamma1)
    return CovarianceTrajectory(
        _as_scalar_if_0d(np.array(gamma0)),
        _as_scalar_if_0d(np.array(gamma1)),
        _as_scalar_if_0d(np.array(gamma0)),
    )


# ---------------------------------------------------------------------------
# Time-resolved covariance recursion.
# ---------------------------------------------------------------------------


def _check_lrs(lrs):
    lrs = _float_array("lrs", lrs)
    if lrs.ndim != 1:
        raise ValueError(
            "Argument `lrs` must be a 1-D array with one learning rate per "
            "step (for a constant rate use np.full(steps, lr)). "
            f"Received: lrs with shape {lrs.shape}"
        )
    _require("lrs", lrs, np.isfinite(lrs) & (lrs >= 0), "finite and >= 0")
    return lrs


def _sampling_factor(sampling_correction, batch_size):
    """(n - B) / (n - 1): the variance of a minibatch mean drawn without replacement."""
    if sampling_correction is None:
        return 1.0
    n = validation.check_int_at_least("sampling_correction", sampling_correction, 2)
    if n < batch_size:
        raise ValueError(
            "Argument `sampling_correction` (the training-set size n) must be "
            f">= batch_size={batch_size}. " + _received("sampling_correction", n)
        )
    return (n - batch_size) / (n - 1)


def _check_schedule_stable(lrs, curvature, limit):
    """Raise for the first step at which some direction diverges geometrically.

    lrs >= 0 and rounding is monotone, so the extreme products are those with
    the extreme curvatures: O(T + n) work, and the same floating-point
    products as the recursion itself, so the boundary is decided exactly.
    """
    if curvature.size == 0 or lrs.size == 0:
        return
    flat = curvature.ravel()
    i_max, i_min = int(np.argmax(flat)), int(np.argmin(flat))
    upper = lrs * flat[i_max] >= limit
    lower = lrs * flat[i_min] < 0
    bad = upper | lower
    if not bad.any():
        return
    step = int(np.argmax(bad))
    where = np.unravel_index(i_max if upper[step] else i_min, curvature.shape)
    label = (
        "" if curvature.ndim == 0 else "[" + ", ".join(str(int(i)) for i in where) + "]"
    )
    eta_lambda = lrs[step] * curvature[where]
    reason = (
        f">= 2*(1+momentum) = {limit:g} (past the oscillatory edge of stability)"
        if upper[step]
        else "< 0 (negative curvature)"
    )
    raise ValueError(
        f"Step {step} of the schedule is unstable: lrs[{step}]*curvature{label} = "
        f"{eta_lambda!r} {reason}; heavy-ball SGD diverges unless "
        f"0 <= lr*curvature < 2*(1+momentum) (0 is marginal: no restoring "
        f"force, the variance grows like a random walk). Pass "
        f"allow_unstable=True to compute the diverging recursion anyway. "
        f"Received: lrs[{step}]={lrs[step]!r}, "
        f"curvature{label}={curvature[where].item()!r}"
    )


def _initial_covariance(initial, shape, stationary_args):
    if initial is None:
        zeros = np.zeros(shape)
        return zeros, zeros.copy(), zeros.copy()
    if isinstance(initial, str):
        if initial != "stationary":
            raise ValueError(
                "Argument `initial` must be None (zero covariance: replicas "
                'forked from one state), "stationary", or a triple (variance, '
                "covariance, previous_variance). " + _received("initial", initial)
            )
        state = stationary_covariance(*stationary_args)
    else:
        try:
            state = tuple(initial)
        except TypeError:
            state = ()
        if len(state) != 3:
            raise ValueError(
                "Argument `initial` must be a triple (variance, covariance, "
                "previous_variance), e.g. the last row of a previous "
                "return_full=True result. " + _received("initial", initial)
            )
    names = ("initial.variance", "initial.covariance", "initial.previous_variance")
    var, cov, prev = (_finite(name, value) for name, value in zip(names, state))
    try:
        var, cov, prev = (np.array(np.broadcast_to(x, shape)) for x in (var, cov, prev))
    except ValueError:
        raise ValueError(
            "Argument `initial` must broadcast to the directions' shape "
            f"{shape}. Received: initial with shapes "
            f"{[np.shape(x) for x in state]}"
        ) from None
    _require("initial.variance", var, var >= 0, ">= 0")
    _require("initial.previous_variance", prev, prev >= 0, ">= 0")
    # A covariance matrix is positive semi-definite: |cov| <= sqrt(var prev),
    # up to rounding in values handed back from an earlier run.
    bound = np.sqrt(var * prev) * (1 + 1e-9) + 1e-300
    _require(
        "initial.covariance",
        cov,
        np.abs(cov) <= bound,
        "at most sqrt(variance * previous_variance) in absolute value (a "
        "covariance matrix is positive semi-definite)",
    )
    return var, cov, prev


def _record_indices(record_at, steps):
    if record_at is None:
        return np.arange(steps)
    indices = np.asarray(record_at)
    if indices.ndim != 1 or not (
        np.issubdtype(indices.dtype, np.integer) or indices.size == 0
    ):
        raise ValueError(
            "Argument `record_at` must be None or a 1-D array of integer step "
            "indices. " + _received("record_at", record_at)
        )
    indices = indices.astype(np.int64)
    _require(
        "record_at",
        indices,
        (indices >= 0) & (indices < steps),
        f"step indices in [0, {steps - 1}] (len(lrs) = {steps})",
    )
    if np.any(np.diff(indices) <= 0):
        raise ValueError(
            "Argument `record_at` must be strictly increasing. "
            + _received("record_at", record_at)
        )
    return indices


def covariance_recursion(
    lrs,
    momentum,
    curvature,
    noise_variance,
    batch_size,
    *,
    initial=None,
    sampling_correction=None,
    allow_unstable=False,
    return_full=False,
    record_at=None,
):
    """Weight variance of heavy-ball SGD after every step of a learning-rate schedule.

    Along each direction, with a_t = 1 + beta - eta_t lambda, the covariance
    P_t of z_t = (x_t, x_{t-1}) follows

        P_{t+1} = A_t P_t A_t^T + (eta_t^2 s^2 / B) e1 e1^T,
        A_t = [[a_t, -beta], [1, 0]],

    which on the three distinct entries p = Var x_t, c = Cov(x_t, x_{t-1}),
    r = Var x_{t-1} is

        c' = a_t p - beta c
        p' = a_t c' - beta (a_t c - beta r) + eta_t^2 s^2 / B
        r' = p.

    The loop runs over steps and is vectorised over directions (10^5
    directions x 10^3 steps take about a second).

    Why this is Keras's SGD, also when the learning rate changes: Keras's
    ``SGD(momentum=beta)`` updates v_{t+1} = beta v_t - eta_t g_t, w_{t+1} =
    w_t + v_{t+1}. So v_{t+1} = w_{t+1} - w_t at every step, hence v_t = w_t
    - w_{t-1}, and substituting,

        x_{t+1} - x_t = v_{t+1} = beta (x_t - x_{t-1}) - eta_t g_t,

    with g_t = lambda x_t + xi_t: the heavy-ball recursion with eta_t inside
    the gradient term only. The velocity carries no memory of earlier learning
    rates. (PyTorch's form, buf = beta buf + g, w -= eta_t buf, gives beta
    eta_t / eta_{t-1} in place of beta at a change, so it is not this
    recursion across a drop.)

    Args:
        lrs: 1-D array, the learning rate eta_t of every step t = 0..T-1,
            each finite and >= 0.
        momentum: beta in [0, 1).
        curvature: curvature lambda of each direction (scalar or array),
            finite. Broadcast against noise_variance to the directions' shape.
        noise_variance: per-example gradient-noise variance s^2 along each
            direction, >= 0 (the minibatch noise is s^2 / B). To pass a
            minibatch noise variance as returned by `minibatch_noise_variance`,
            use batch_size=1 and no sampling_correction.
        batch_size: B, an integer >= 1.
        initial: covariance before step 0. None (default): zero, all copies
            start from the same weights and velocity, as replicas forked from
            one state do. "stationary": the stationary covariance at lrs[0]
            (an already-equilibrated cloud). Or a triple (variance,
            covariance, previous_variance) broadcastable to the directions,
            e.g. the last row of an earlier ``return_full=True`` result to
            continue it.
        sampling_correction: None, or the training-set size n (an integer >=
            max(2, B)): minibatches drawn without replacement from n examples
            have mean-gradient variance s^2 / B * (n - B) / (n - 1) (the
            finite-population correction, with s^2 the population variance
            over the n examples); the noise is multiplied by that factor.
        allow_unstable: by default a ValueError names the first step at which
            some direction has eta_t lambda >= 2 (1 + beta) (past the
            oscillatory edge of stability) or eta_t lambda < 0 (negative
            curvature): there the quadratic model diverges geometrically and
            the "prediction" means nothing. eta_t lambda = 0 (a flat
            direction or a zero learning rate) is allowed: the recursion stays
            finite and grows at most like a random walk. True computes the
            recursion anyway.
        return_full: also return Cov(x_t, x_{t-1}) and Var(x_{t-1}).
        record_at: None (every step) or strictly increasing step indices
            after which to record, e.g. the last step of every epoch; keeps
            memory at len(record_at) x directions for long schedules.

    Returns:
        The weight variance Var(x_{t+1}) after each recorded step t, of shape
        (T,) + directions' shape ((T,) for scalar curvature and noise,
        (T, n) for n directions). With return_full, a `CovarianceTrajectory`
        of three such arrays. Row t is the state after applying step t (lrs[t]).

    Raises:
        ValueError: for out-of-range arguments, or an unstable step (see
            allow_unstable).

    Example:

    Plain SGD (beta = 0) from zero: Var x_t = q (1 - a^{2t}) / (1 - a^2), with
    q = eta^2 s^2 / B and a = 1 - eta lambda.

    >>> covariance_recursion([0.5, 0.5, 0.5], 0.0, 1.0, 4.0, 1)
    array([1.    , 1.25  , 1.3125])

    A 10x drop shrinks the momentum cloud from its stationary width by ~10x:

    >>> lrs = np.r_[np.full(500, 0.1), np.full(500, 0.01)]
    >>> var = covariance_recursion(lrs, 0.9, 1.0, 1.0, 1)
    >>> print(f"{var[499]:.4f} {var[-1]:.4f}")
    0.5135 0.0501
    """
    lrs = _check_lrs(lrs)
    beta = _check_momentum(momentum)
    batch_size = validation.check_int_at_least("batch_size", batch_size, 1)
    curvature = _finite("curvature", curvature)
    noise_variance = _finite_nonnegative("noise_variance", noise_variance)
    try:
        curvature, noise_variance = np.broadcast_arrays(curvature, noise_variance)
    except ValueError:
        raise ValueError(
            "Arguments `curvature` and `noise_variance` must broadcast to one "
            f"shape (one entry per direction). Received: curvature with shape "
            f"{np.shape(curvature)}, noise_variance with shape "
            f"{np.shape(noise_variance)}"
        ) from None
    factor = _sampling_factor(sampling_correction, batch_size)
    limit = _stability_limit(beta)
    if not allow_unstable:
        _check_schedule_stable(lrs, curvature, limit)
    record = _record_indices(record_at, len(lrs))
    shape = curvature.shape

    # Noise injected per unit eta^2: s^2 / B times the sampling factor.
    noise_per_eta2 = noise_variance * (factor / batch_size)
    first_lr = lrs[0] if len(lrs) else 0.0
    p, c, r = _initial_covariance(
        initial, shape, (first_lr, beta, curvature, noise_variance * factor, batch_size)
    )

    out_p = np.empty((len(record),) + shape)
    out_c = np.empty_like(out_p) if return_full else None
    out_r = np.empty_like(out_p) if return_full else None
    is_recorded = np.zeros(len(lrs), dtype=bool)
    is_recorded[record] = True

    # Preallocated buffers: the loop body allocates nothing, so 10^5
    # directions cost ~10 passes over memory per step.
    a = np.empty(shape)
    tmp = np.empty(shape)
    row = 0
    with np.errstate(over="ignore", invalid="ignore"):  # only if allow_unstable
        for t, eta in enumerate(lrs):
            np.multiply(curvature, -eta, out=a)
            a += 1.0 + beta
            # tmp = a c - beta r (old c, r); r is free once scaled.
            r *= beta
            np.multiply(a, c, out=tmp)
            tmp -= r
            # c' = a p - beta c
            np.multiply(a, p, out=r)
            c *= -beta
            c += r
            # r' = p ; p' = a c' - beta tmp + eta^2 s^2 / B
            np.copyto(r, p)
            np.multiply(a, c, out=p)
            tmp *= beta
            p -= tmp
            np.multiply(noise_per_eta2, eta * eta, out=a)
            p += a
            if is_recorded[t]:
                out_p[row] = p
                if return_full:
                    out_c[row] = c
                    out_r[row] = r
                row += 1
    if return_full:
        return CovarianceTrajectory(out_p, out_c, out_r)
    return out_p


# ---------------------------------------------------------------------------
# Noise input.
# ---------------------------------------------------------------------------


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

    >>> print(minibatch_noise_variance([-1.0, 1.0], batch_size=1))
    1.0

    Without replacement, a batch of both examples has no noise at all:

    >>> print(minibatch_noise_variance([-1.0, 1.0], batch_size=2, n=2))
    0.0
    """
    g = _finite("per_example_projections", per_example_projections)
    if g.ndim not in (1, 2) or g.shape[0] < 1:
        raise ValueError(
            "Argument `per_example_projections` must have shape (examples,) or "
            "(examples, directions) with at least one example. "
            f"Received: per_example_projections with shape {g.shape}"
        )
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


# ---------------------------------------------------------------------------
# Measurement: replicas and running iterate statistics.
# ---------------------------------------------------------------------------


def _is_layer_list(value):
    """A list of per-layer arrays, as opposed to a flat list of numbers."""
    return isinstance(value, (list, tuple)) and any(np.ndim(v) > 0 for v in value)


def _flatten_weights(name, weights):
    """One flat float64 vector from an array or a list of per-layer arrays."""
    if _is_layer_list(weights):
        parts = [_float_array(name, w).ravel() for w in weights]
        return np.concatenate(parts) if parts else np.zeros(0)
    return _float_array(name, weights).ravel()


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

    >>> spread = replica_variance([[0.0, 1.0], [2.0, 1.0]], direction=[1.0, 0.0])
    >>> spread.per_parameter.tolist(), float(spread.overall), float(spread.projected)
    ([2.0, 0.0], 1.0, 2.0)
    """
    ddof = _check_ddof(ddof)
    if isinstance(replica_weights, np.ndarray) and replica_weights.ndim == 2:
        stacked = _float_array("replica_weights", replica_weights)
    else:
        try:
            rows = [_flatten_weights("replica_weights", w) for w in replica_weights]
        except TypeError:
            raise TypeError(
                "Argument `replica_weights` must be an (R, P) array or a "
                "sequence of replicas. "
                + _received("replica_weights", type(replica_weights).__name__)
            ) from None
        sizes = {row.size for row in rows}
        if len(sizes) > 1:
            raise ValueError(
                "Argument `replica_weights` must hold replicas of one size. "
                f"Received: replica_weights with sizes {sorted(sizes)}"
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
    ``dtype="float32"``) plus two scalars per tracked direction.

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
            Welford's update keeps float32 accumulators accurate to about the
            float32 resolution of the weights (~1e-7 relative to |w|), far
            below the spread SGD leaves; results (`mean`, `variance`,
            `summary`) are float64 either way, and projections always
            accumulate in float64.

    Example:

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
        if names is not None:
            names = list(names)
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
        self._mean = None
        self._m2 = None
        if directions is not None:
            if not hasattr(directions, "items"):
                raise TypeError(
                    "Argument `directions` must be a mapping name -> direction. "
                    + _received("directions", type(directions).__name__)
                )
            for name, direction in directions.items():
                self.track_direction(name, direction)

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
            parts = [_float_array("direction", d) for d in direction]
            squared = sum(float(np.sum(np.square(d))) for d in parts)
            finite = all(np.all(np.isfinite(d)) for d in parts)
            source = parts
        else:
            source = _float_array("direction", direction).ravel()
            squared = float(np.dot(source, source))
            finite = bool(np.all(np.isfinite(source)))
        if not finite or not squared > 0 or not np.isfinite(squared):
            raise ValueError(
                "Argument `direction` must be finite and non-zero (it is "
                f"normalised to unit length). Received: direction with squared "
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
            if len(source) != len(self._shapes) or any(
                d.size != size for d, size in zip(source, sizes)
            ):
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
            delta = w - mean
            mean += delta / n  # (rounded to the accumulator dtype in place)
            delta *= w - mean
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
        return [m2.astype(np.float64) / (self._count - ddof) for m2 in self._m2]

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
        """Restore a state from `get_state` (any mapping, e.g. from ``np.load``)."""
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
