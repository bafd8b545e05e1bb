"""Heavy-ball (momentum) SGD near a minimum: the predicted width of the weight cloud.

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

All pure NumPy and vectorised over directions:

- `covariance_recursion`: the weight variance after every step of a schedule
  (the time-resolved prediction; the one to compare measurements with).
- `shuffled_pass_variance`: the same from zero covariance over one shuffled
  pass, where the minibatches are disjoint and their noises anticorrelated.
- `stationary_variance`, `stationary_covariance`: its constant-LR limit.
- `spectral_radius`, `relaxation_steps`, `is_stable`, `stability_margin`:
  how fast, and whether, a direction forgets.

The noise input s^2 / B and the measured width the prediction is compared
with are in `robustlab.iterate_statistics`.
"""

from typing import NamedTuple

import numpy as np

from robustlab import validation
from robustlab.validation import _as_scalar_if_0d
from robustlab.validation import _finite
from robustlab.validation import _finite_nonnegative
from robustlab.validation import _float_array
from robustlab.validation import _is_real_number
from robustlab.validation import _received
from robustlab.validation import _require

__all__ = [
    "CovarianceTrajectory",
    "covariance_recursion",
    "is_stable",
    "relaxation_steps",
    "shuffled_pass_variance",
    "spectral_radius",
    "stability_margin",
    "stationary_covariance",
    "stationary_variance",
]


# ---------------------------------------------------------------------------
# Arguments of the model: its momentum and stability limit. (The array checks
# are shared with the other maths modules, in robustlab.validation.)
# ---------------------------------------------------------------------------


def _check_momentum(momentum):
    # beta = 1 has no damping and no stationary state; beta < 0 is not what
    # an optimizer's `momentum` means.
    if not _is_real_number(momentum):
        raise TypeError(
            "Argument `momentum` must be a number in [0, 1). "
            + _received("momentum", momentum)
        )
    if not 0 <= momentum < 1:
        raise ValueError(
            "Argument `momentum` must be a number in [0, 1). "
            + _received("momentum", momentum)
        )
    return float(momentum)


def _stability_limit(momentum):
    """The oscillatory edge of stability: eta lambda must stay below it."""
    return 2.0 * (1.0 + momentum)


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

    >>> from robustlab.heavy_ball import is_stable
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

    >>> from robustlab.heavy_ball import stability_margin
    >>> print(stability_margin(0.5, 0.0, 1.0))
    0.25
    >>> print(stability_margin(0.5, 0.0, 6.0))
    -0.5
    """
    momentum = _check_momentum(momentum)
    eta_lambda = _eta_lambda(lr, curvature)
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
        rho(A) >= 0, broadcast over the inputs; < 1 where `is_stable` holds
        (in exact arithmetic; in float64 a stable eta lambda under about
        1e-17 rounds it to 1.0, while `relaxation_steps` stays finite), and
        exactly 1 on both edges of the stability interval.

    Example:

    >>> from robustlab.heavy_ball import spectral_radius
    >>> print(spectral_radius(0.5, 0.0, 1.0))  # plain SGD: |1 - eta lambda|
    0.5
    >>> print(f"{spectral_radius(0.1, 0.81, 1.0):.4f}")  # complex pair: sqrt(beta)
    0.9000
    >>> # both edges of the stability interval (0, 3):
    >>> print(spectral_radius(0.5, 0.5, 0.0), spectral_radius(0.5, 0.5, 6.0))
    1.0 1.0
    """
    momentum = _check_momentum(momentum)
    eta_lambda = _eta_lambda(lr, curvature)
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

    >>> from robustlab.heavy_ball import relaxation_steps
    >>> print(f"{relaxation_steps(1e-4, 0.9, 1.0):.1f}")  # (1 - 0.9) / 1e-4 = 1000
    990.4
    >>> print(f"{relaxation_steps(0.1, 0.9, 1.0):.1f}")  # momentum floor
    19.0
    >>> print(relaxation_steps(0.1, 0.9, 0.0))
    inf
    """
    momentum = _check_momentum(momentum)
    eta_lambda = _eta_lambda(lr, curvature)
    gap = _spectral_gap(eta_lambda, momentum)
    with np.errstate(divide="ignore"):
        # log1p keeps the precision of a tiny gap (ln rho = log1p(-gap)).
        steps = np.where(gap > 0, -1.0 / np.log1p(-np.minimum(gap, 1.0)), np.inf)
    return _as_scalar_if_0d(steps)


# ---------------------------------------------------------------------------
# Stationary (constant learning rate) limit.
# ---------------------------------------------------------------------------


def _eta_lambda(lr, curvature):
    lr = _finite_nonnegative("lr", lr)
    curvature = _finite("curvature", curvature)
    validation.check_broadcast(lr=lr, curvature=curvature)
    return lr * curvature


def _check_stationary_args(lr, momentum, curvature, noise_variance, batch_size):
    momentum = _check_momentum(momentum)
    batch_size = validation.check_int_at_least("batch_size", batch_size, 1)
    lr = _finite_nonnegative("lr", lr)
    curvature = _finite("curvature", curvature)
    noise_variance = _finite_nonnegative("noise_variance", noise_variance)
    validation.check_broadcast(lr=lr, curvature=curvature, noise_variance=noise_variance)
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

    >>> from robustlab.heavy_ball import stationary_variance
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

    >>> from robustlab.heavy_ball import stationary_covariance
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

    >>> import numpy as np
    >>> from robustlab.heavy_ball import covariance_recursion
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
    if not validation.check_bool("allow_unstable", allow_unstable):
        _check_schedule_stable(lrs, curvature, limit)
    return_full = validation.check_bool("return_full", return_full)
    record = _record_indices(record_at, len(lrs))
    shape = curvature.shape

    # Noise injected per unit eta^2: s^2 / B times the sampling factor.
    noise_per_eta2 = noise_variance * (factor / batch_size)
    if isinstance(initial, str) and initial == "stationary" and not len(lrs):
        # It would name lr*curvature = 0, a rate the user never gave.
        raise ValueError(
            'Argument `initial="stationary"` is the stationary covariance at the '
            "schedule's first learning rate, and `lrs` is empty. Received: lrs=[]")
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


def _noise_responses(lrs, momentum, curvature):
    """h_t, the response of x_T to a unit minibatch noise at step t, from
    zero covariance: h_t = e1^T A_{T-1} ... A_{t+1} b_t, b_t = (-eta_t, 0).

    A backward pass with the row vector v = e1^T A_{T-1} ... A_{t+1}:
    v A_t = (a_t v_0 + v_1, -beta v_0). Shape (T,) + directions' shape.
    """
    shape = curvature.shape
    h = np.empty((len(lrs),) + shape)
    v0, v1 = np.ones(shape), np.zeros(shape)
    for t in range(len(lrs) - 1, -1, -1):
        h[t] = -lrs[t] * v0
        v0, v1 = (1.0 + momentum - lrs[t] * curvature) * v0 + v1, -momentum * v0
    return h


def shuffled_pass_variance(
    lrs,
    momentum,
    curvature,
    example_variance,
    batch_size,
    n,
    *,
    independent_variance=0.0,
    allow_unstable=False,
):
    """Weight variance of heavy-ball SGD after a window of one shuffled pass.

    `covariance_recursion` treats the minibatch noises of different steps as
    independent. Within one pass over a shuffled training set they are not:
    the window's minibatches are disjoint draws without replacement from the
    same n examples, so a batch that drew large gradients leaves smaller ones
    to the others. With g_i the gradient of example i along the direction,
    s^2 their population variance (ddof=0) and xi_t the deviation of step t's
    batch mean from the mean over all n,

        Var xi_t = s^2 / B * (n - B) / (n - 1),
        Cov(xi_t, xi_u) = -s^2 / (n - 1)             for t != u,

    and over a whole pass (T B = n) the noises sum to zero. From zero
    covariance (replicas forked from one state, each drawing its own order),
    x_T = sum_t h_t xi_t with h_t the response of x_T to a unit noise at step
    t, so

        Var x_T = s^2 / (n - 1) * ((n / B) sum_t h_t^2 - (sum_t h_t)^2)
                  + s_ind^2 / B * sum_t h_t^2,

    where s_ind^2 is the variance of a noise each example's gradient carries
    independently at every draw (in adversarial training, the attack's random
    start: the same example gives another gradient each time it is drawn).
    The first term is what the anticorrelation changes. Where the h_t change
    sign within the window (a large eta lambda: with momentum the position
    oscillates, and with beta = 0.9 and eta lambda = 0.5 its period is 8.5
    steps), sum_t h_t is small and the result is close to the
    independent-noise prediction (+6% for the quick setting's window before
    its drop). Where they keep one sign (an eta lambda small enough that
    the oscillation's half period is about as long as the window: after the
    quick setting's drop, eta lambda 0.05-0.08, where 11 to 14 of its 15
    steps share a sign), (sum_t h_t)^2 approaches (n / B) sum_t h_t^2 as the
    window approaches a whole pass, and the noises largely cancel (for that
    15-step window of batches of 64 from n = 1000, 0.31-0.75x the
    recursion; by eta lambda 0.12 the signs split about evenly and it is
    1.0x).

    With one step (T = 1) it is the one-step `covariance_recursion` with
    ``sampling_correction=n`` (plus the independent part).

    Args:
        lrs: 1-D array, the learning rate eta_t of every step t = 0..T-1,
            each finite and >= 0, with T * batch_size <= n (one pass).
        momentum: beta in [0, 1).
        curvature: curvature lambda of each direction (scalar or array),
            finite.
        example_variance: s^2, the population variance (ddof=0) over the n
            training examples of their gradient along each direction, >= 0;
            broadcast against `curvature`.
        batch_size: B, an integer >= 1.
        n: the number of training examples the pass draws from, an integer
            >= max(2, T * B).
        independent_variance: s_ind^2 >= 0, the variance of the noise that
            is drawn anew every time an example is used (default 0).
        allow_unstable: as in `covariance_recursion`: by default a step with
            eta_t lambda >= 2 (1 + beta) or < 0 raises a ValueError.

    Returns:
        Var(x_T) after the last step (np.float64, or the directions' shape).

    Raises:
        ValueError: for out-of-range arguments, or an unstable step.

    Example:

    Plain SGD on a flat direction over a whole pass: the position moves by
    -eta times the sum of the batches' noises, which is zero.

    >>> from robustlab.heavy_ball import shuffled_pass_variance
    >>> print(shuffled_pass_variance([0.1] * 4, 0.0, 0.0, 1.0, 2, 8))
    0.0

    One step is the finite-population formula, eta^2 s^2 / B (n - B) / (n - 1):

    >>> print(round(float(shuffled_pass_variance([0.5], 0.0, 1.0, 4.0, 2, 5)), 12))
    0.375
    """
    lrs = _check_lrs(lrs)
    beta = _check_momentum(momentum)
    batch_size = validation.check_int_at_least("batch_size", batch_size, 1)
    n = validation.check_int_at_least("n", n, 2)
    if len(lrs) * batch_size > n:
        raise ValueError(
            "Argument `n` must be at least len(lrs) * batch_size: one pass draws "
            f"{len(lrs)} disjoint batches of {batch_size} examples. "
            + _received("n", n)
        )
    curvature = _finite("curvature", curvature)
    example_variance = _finite_nonnegative("example_variance", example_variance)
    independent_variance = _finite_nonnegative("independent_variance", independent_variance)
    try:
        curvature, example_variance, independent_variance = np.broadcast_arrays(
            curvature, example_variance, independent_variance)
    except ValueError:
        raise ValueError(
            "Arguments `curvature`, `example_variance` and `independent_variance` "
            "must broadcast to one shape (one entry per direction). Received: "
            f"shapes {np.shape(curvature)}, {np.shape(example_variance)} and "
            f"{np.shape(independent_variance)}"
        ) from None
    if not validation.check_bool("allow_unstable", allow_unstable):
        _check_schedule_stable(lrs, curvature, _stability_limit(beta))
    h = _noise_responses(lrs, beta, curvature)
    squares = np.sum(h * h, axis=0)
    total = np.sum(h, axis=0)
    # (n/B) sum h^2 - (sum h)^2 >= 0 by Cauchy-Schwarz (T <= n/B); rounding
    # can leave it a few ulps below.
    anticorrelated = np.maximum(n / batch_size * squares - total * total, 0.0)
    variance = (example_variance / (n - 1) * anticorrelated
                + independent_variance / batch_size * squares)
    return _as_scalar_if_0d(variance)
