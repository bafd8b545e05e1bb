"""PAC-Bayes bounds for a Gaussian posterior around the trained weights.

The posterior is Q = N(w, diag sigma^2) (the cloud of SGD iterates, measured
or predicted by `robustlab.posterior`), the prior P = N(w_0, sigma_0^2 I)
centred on the initial weights. For a loss bounded in [0, 1] (here: the 0-1
robust error, 1 when the PGD attack flips the prediction) the theorem used
(Seeger 2002; Maurer 2004) reads: with probability >= 1 - delta over the n
training examples, simultaneously for every Q,

    kl( R_emp(Q) || R(Q) ) <= ( KL(Q || P) + ln(2 sqrt(n) / delta) ) / n,

with kl the binary KL divergence and R, R_emp the expected and empirical
Gibbs risks of Q. Inverting kl gives `seeger_bound`; relaxing it with Pinsker's
inequality kl(q || p) >= 2 (p - q)^2 gives the familiar square-root form we
call `mcallester_bound` (McAllester's 1999 theorem has a slightly larger
complexity term), so the Seeger bound is never larger.

`time_resolved_bound` evaluates both per epoch from tracked quantities.

Pure NumPy: no Keras, TensorFlow or JAX.
"""

import numbers
from typing import NamedTuple

import numpy as np

from robustlab import validation

# The argument checks are shared with the posterior's modules so that all
# speak with one voice ("Argument `x` must be ... Received: x=...").
from robustlab.validation import _as_scalar_if_0d
from robustlab.validation import _finite
from robustlab.validation import _flatten_weights
from robustlab.validation import _float_array
from robustlab.validation import _is_layer_list
from robustlab.validation import _received
from robustlab.validation import _require

__all__ = [
    "TimeResolvedBound",
    "expected_loss_under_posterior",
    "gaussian_kl",
    "kl_bernoulli",
    "kl_inverse",
    "mcallester_bound",
    "seeger_bound",
    "time_resolved_bound",
]


def _finite_positive(name, value):
    array = _finite(name, value)
    _require(name, array, array > 0, "finite and > 0 (a Gaussian's variance)")
    return array


def _as_parameter_vector(name, value):
    """Per-layer lists are flattened; plain arrays keep their shape."""
    if _is_layer_list(value):
        return _flatten_weights(name, value)
    return _float_array(name, value)


def _layer_shapes(value):
    return [tuple(int(d) for d in np.shape(layer)) for layer in value]


def _check_same_layers(arguments):
    """Every per-layer list among `arguments` ((name, value) pairs) must have
    the layers of the first: flattened, two layouts with the same total size
    would pair unrelated parameters by position without a word."""
    layered = [(name, _layer_shapes(value)) for name, value in arguments
               if _is_layer_list(value)]
    for name, shapes in layered[1:]:
        first, first_shapes = layered[0]
        if shapes != first_shapes:
            raise ValueError(
                f"Arguments `{first}` and `{name}` are both per-layer lists and "
                "must have the same layers (as many arrays, shaped alike) so "
                "that their parameters pair up. Received: layer shapes "
                f"{first}={first_shapes}, {name}={shapes}"
            )


def _probability(name, value):
    array = _float_array(name, value)
    _require(name, array, (array >= 0) & (array <= 1), "in [0, 1]")
    return array


def _check_delta(delta):
    if (
        not isinstance(delta, numbers.Real)
        or isinstance(delta, bool)
        or not 0 < delta < 1
    ):
        raise ValueError(
            "Argument `delta` (the confidence parameter) must be a number in "
            "(0, 1). " + _received("delta", delta)
        )
    return float(delta)


def _check_empirical_risk(value, name="empirical_risk"):
    array = _float_array(name, value)
    _require(
        name,
        array,
        (array >= 0) & (array <= 1),
        "in [0, 1]: the bounds hold for a loss bounded in [0, 1], such as the "
        "0-1 (robust) error",
    )
    return array


def _check_kl(value):
    array = _float_array("kl", value)
    _require("kl", array, array >= 0, ">= 0 (a KL divergence; +inf is allowed)")
    return array


# ---------------------------------------------------------------------------
# Divergences.
# ---------------------------------------------------------------------------


def gaussian_kl(mean_q, var_q, mean_p, var_p, *, axis=None):
    """KL(N(mean_q, diag var_q) || N(mean_p, diag var_p)), summed over parameters.

        KL = 1/2 sum_i [ vq_i/vp_i + (mq_i - mp_i)^2 / vp_i - 1 - ln(vq_i/vp_i) ]

    Every argument broadcasts against the others, so a scalar var_p is the
    isotropic prior sigma_0^2 I, and a scalar var_q an isotropic posterior.
    The term x - ln(1 + x), x = vq/vp - 1, is evaluated where |x| <= 1/2 by
    a series without cancellation, to a few units in the last place, so
    that near-equal variances lose no digits (x - log1p(x) keeps only 4 of
    16 at vq/vp = 1 + 1e-12), and as x - (ln vq - ln vp) elsewhere, so that
    a posterior variance far below the prior's (1e-12 of it, say) loses
    none either.

    Args:
        mean_q: posterior mean (e.g. the trained weights): an array, or a
            list of per-layer arrays (flattened in order; the arguments
            given as such lists must have the same layers, as many arrays
            shaped alike, while a flat array pairs with one by position).
        var_q: posterior variances, finite and > 0; scalar, array or list.
        mean_p: prior mean (e.g. the initial weights), same layout.
        var_p: prior variance(s), finite and > 0.
        axis: None (default) sums over everything; an int sums over that axis
            only (e.g. axis=-1 for one KL per row of an (epochs, P) array;
            the arguments must then be arrays or scalars, not lists of
            arrays, which are flattened).

    Returns:
        The KL divergence in nats (np.float64, or an array when `axis` is
        given), >= 0.

    Example:

    >>> from robustlab.bounds import gaussian_kl
    >>> print(gaussian_kl(0.0, 1.0, 0.0, 1.0))  # identical Gaussians
    0.0
    >>> print(f"{gaussian_kl(1.0, 2.0, 0.0, 1.0):.6f}")  # (2 + 1 - 1 - ln 2) / 2
    0.653426
    """
    layouts = [("mean_q", mean_q), ("var_q", var_q), ("mean_p", mean_p),
               ("var_p", var_p)]
    if axis is not None:
        for name, value in layouts:
            if _is_layer_list(value):
                # Flattened into one vector, it has no axis to sum over
                # apart: every row would be summed into one number.
                raise ValueError(
                    f"Argument `axis` needs arrays: `{name}` is a list of "
                    "arrays, which is read as per-layer arrays and flattened "
                    f"into one vector (pass np.asarray({name}) for rows). "
                    + _received("axis", axis))
    mean_q = _as_parameter_vector("mean_q", mean_q)
    var_q = _as_parameter_vector("var_q", var_q)
    mean_p = _as_parameter_vector("mean_p", mean_p)
    var_p = _as_parameter_vector("var_p", var_p)
    _check_same_layers(layouts)
    _require("mean_q", mean_q, np.isfinite(mean_q), "finite (no NaN or inf)")
    _require("mean_p", mean_p, np.isfinite(mean_p), "finite (no NaN or inf)")
    var_q = _finite_positive("var_q", var_q)
    var_p = _finite_positive("var_p", var_p)
    try:
        shape = np.broadcast_shapes(
            mean_q.shape, var_q.shape, mean_p.shape, var_p.shape
        )
    except ValueError:
        raise ValueError(
            "Arguments `mean_q`, `var_q`, `mean_p` and `var_p` must broadcast "
            "to one shape (one entry per parameter). Received: shapes "
            f"mean_q={mean_q.shape}, var_q={var_q.shape}, mean_p={mean_p.shape}, "
            f"var_p={var_p.shape}"
        ) from None
    if axis is not None and not (
        isinstance(axis, numbers.Integral) and not isinstance(axis, bool)
        and -len(shape) <= axis < len(shape)
    ):
        raise ValueError(
            f"Argument `axis` must be None or an axis of the {len(shape)}-D "
            "broadcast parameters. " + _received("axis", axis)
        )
    with np.errstate(over="ignore"):
        ratio_minus_one = (var_q - var_p) / var_p
        mean_term = (mean_q - mean_p) ** 2 / var_p
    per_parameter = 0.5 * (_x_minus_log1p(ratio_minus_one, var_q, var_p) + mean_term)
    per_parameter = np.broadcast_to(per_parameter, shape)
    return _as_scalar_if_0d(np.asarray(per_parameter.sum(axis=axis)))


def _x_minus_log1p(x, var_q, var_p):
    """x - ln(1 + x) for x = var_q / var_p - 1, accurate over the whole range.

    Near x = 0 the series of `_x_minus_log1p_near_zero` keeps the digits the
    subtraction would cancel. Away from it the log is taken as ln var_q -
    ln var_p: 1 + x recomputed in floats is 0 once var_q < 1e-16 var_p (a KL
    of inf instead of about 19 nats at 1e-17) and loses digits long before,
    and x itself may overflow (inf - inf would be NaN)."""
    return _near_zero_or(x, x - (np.log(var_q) - np.log(var_p)))


# phi(x) = x - ln(1 + x) for |x| <= 1/2, through u = x / (2 + x): then
# ln(1 + x) = 2 atanh(u) = 2 (u + u^3/3 + u^5/5 + ...) and x - 2u = x u, so
#
#     phi(x) = x u - 2 u^3 (1/3 + u^2/5 + u^4/7 + ...).
#
# x - log1p(x) instead keeps log1p's rounding error, up to about 1e-16 |x|,
# against phi ~ x^2 / 2: a relative error of 1e-4 at x = 1e-12. Here nothing
# cancels: the series adds at most 16% to x u (~ 2 u^2) for x < 0 and takes
# off at most 6% for x > 0. |x| <= 1/2 gives -1/3 <= u <= 1/5 and u^2 <= 1/9, so the
# terms after the 16 kept (from u^35 / 35 on) are below 1e-17 of phi, and
# the result is good to a few units in the last place (at most 3.3e-16
# relative on 8000 points of [-1/2, 1/2], against 60-digit arithmetic).
_ATANH_SERIES = tuple(1.0 / (2 * j + 3) for j in range(16))  # 1/3, ..., 1/33


def _x_minus_log1p_near_zero(x):
    u = x / (2.0 + x)
    u_squared = u * u
    series = np.zeros_like(u)
    for coefficient in reversed(_ATANH_SERIES):
        series = series * u_squared + coefficient
    return x * u - 2.0 * u * u_squared * series


def _near_zero_or(x, elsewhere, scale=1.0):
    """scale * phi(x) where |x| <= 1/2 (the series), `elsewhere` (the
    caller's own form of it) at the other entries of x."""
    x = np.asarray(x)
    result = np.array(np.broadcast_to(elsewhere, x.shape), dtype=np.float64)
    # Only the entries near 0 pay for the series (a posterior far narrower
    # than the prior has none).
    near = np.abs(x) <= 0.5
    result[near] = (np.broadcast_to(scale, x.shape)[near]
                    * _x_minus_log1p_near_zero(x[near]))
    return result


def kl_bernoulli(q, p):
    """Binary KL divergence kl(q || p) = q ln(q/p) + (1-q) ln((1-q)/(1-p)).

    With the conventions 0 ln 0 = 0 and a ln(a/0) = +inf for a > 0, so it is
    defined on all of [0, 1]^2: kl(0 || p) = -ln(1 - p), kl(q || 1) = +inf for
    q < 1, and kl(q || q) = 0.

    Args:
        q: empirical risk(s) in [0, 1].
        p: true risk(s) in [0, 1]; broadcast against q.

    Returns:
        kl(q || p) >= 0 in nats, broadcast (np.float64 for scalars).

    Example:

    >>> from robustlab.bounds import kl_bernoulli
    >>> print(kl_bernoulli(0.5, 0.5), kl_bernoulli(0.0, 0.0), kl_bernoulli(0.5, 1.0))
    0.0 0.0 inf
    >>> print(f"{kl_bernoulli(0.0, 0.5):.6f}")  # -ln(1 - 0.5) = ln 2
    0.693147
    """
    q = _probability("q", q)
    p = _probability("p", p)
    validation.check_broadcast(q=q, p=p)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d = p - q
        interior = (_scaled_x_minus_log1p(q, d, np.log(q), np.log(p))
                    + _scaled_x_minus_log1p(1 - q, -d, np.log1p(-q), np.log1p(-p)))
        # + 0.0: -ln(1) is -0.0, and kl(1 || 1) printed as "-0.0".
        kl = np.where(q == 0, -np.log1p(-p), np.where(q == 1, -np.log(p), interior)) + 0.0
    return _as_scalar_if_0d(np.asarray(kl))


def _scaled_x_minus_log1p(scale, d, log_scale, log_target):
    """scale * phi(d / scale) with phi(x) = x - ln(1 + x) >= 0, for scale > 0,
    where scale + d is the probability whose log is `log_target`.

    kl(q || p) = q phi(d/q) + (1-q) phi(-d/(1-q)) with d = p - q: the two O(d)
    parts of the textbook form cancel exactly, and for |x| <= 1/2 phi is
    the series of `_x_minus_log1p_near_zero`, so near p = q the rounding
    error is relative to kl ~ d^2 itself (the textbook form's is relative
    to 1, and kl_inverse(q, 0) would stop ~1e-8 above q; x - log1p(x)'s is
    relative to d, 1e-5 of kl at q = 0.3, d = 1e-12). For |x| > 1/2 phi has
    no cancellation and scale * phi(x) = d - scale (ln(scale + d) -
    ln(scale)) is evaluated with the logs of the probabilities themselves:
    scale + d recomputed in floats rounds a p far below q to 0 (kl(0.5 ||
    1e-300) would be inf, not 344.69), and d / scale may overflow
    (subnormal q).
    """
    return _near_zero_or(d / scale, d - scale * (log_target - log_scale), scale)


def kl_inverse(empirical_risk, bound, *, tol=1e-12):
    """The largest p in [q, 1] with kl(q || p) <= bound, by bisection.

    kl(q || .) increases on [q, 1] from 0 to +inf (for q < 1), so the
    inverse exists and is unique. The bisection keeps kl(q || lo) <= bound <
    kl(q || hi) and stops when hi - lo <= tol; it returns hi, which lies
    within tol *above* the exact inverse, so a bound computed with it stays a
    valid upper bound. Vectorised over arrays (every entry is bisected at
    once; about log2(1/tol) iterations).

    Args:
        empirical_risk: q in [0, 1].
        bound: the kl budget, >= 0 (+inf gives 1); broadcast against q.
        tol: bracket width at which to stop, in (0, 1).

    Returns:
        p with kl(q || p) = bound to within tol (1 when the budget cannot
        be exhausted below 1, e.g. q = 1), broadcast (np.float64 for scalars).

    Example:

    kl(0 || p) = -ln(1 - p), so the inverse at q = 0 is 1 - exp(-bound):

    >>> import numpy as np
    >>> from robustlab.bounds import kl_inverse
    >>> print(f"{kl_inverse(0.0, np.log(2.0)):.10f}")
    0.5000000000
    >>> print(f"{kl_inverse(0.3, 0.0):.10f}")  # no budget: p = q
    0.3000000000
    """
    q = _check_empirical_risk(empirical_risk)
    budget = _float_array("bound", bound)
    _require("bound", budget, budget >= 0, ">= 0 (a kl budget; +inf is allowed)")
    if not isinstance(tol, numbers.Real) or isinstance(tol, bool) or not 0 < tol < 1:
        raise ValueError(
            "Argument `tol` must be a number in (0, 1). " + _received("tol", tol)
        )
    validation.check_broadcast(empirical_risk=q, bound=budget)
    q, budget = np.broadcast_arrays(q, budget)
    lo = np.array(q, dtype=np.float64)
    hi = np.ones_like(lo)
    # ceil(log2(1/tol)) halvings of a bracket of width <= 1 reach tol; the
    # cap also ends the loop for a tol below float spacing near p, where a
    # bracket cannot shrink further.
    for _ in range(int(np.ceil(np.log2(1.0 / tol))) + 2):
        # Entries stop once their own bracket is narrow enough, so a
        # vectorised call returns exactly what one call per entry would.
        active = hi - lo > tol
        if not np.any(active):
            break
        mid = 0.5 * (lo + hi)
        inside = kl_bernoulli(q, mid) <= budget
        lo = np.where(active & inside, mid, lo)
        hi = np.where(active & ~inside, mid, hi)
    return _as_scalar_if_0d(hi)


# ---------------------------------------------------------------------------
# Bounds.
# ---------------------------------------------------------------------------


def _complexity(kl, n, delta):
    """(KL + ln(2 sqrt(n) / delta)) / n, the kl budget of the Seeger/Maurer theorem."""
    return (kl + np.log(2.0 * np.sqrt(n) / delta)) / n


def _square_root_bound(q, budget):
    """q + sqrt(budget / 2): past it kl(q || p) >= 2 (p - q)^2 > budget."""
    return q + np.sqrt(budget / 2.0)


def mcallester_bound(empirical_risk, kl, n, delta=0.05, *, clip=False):
    """Square-root PAC-Bayes bound: q + sqrt((KL + ln(2 sqrt(n)/delta)) / (2 n)).

    This is the Seeger/Maurer theorem (module docstring) relaxed by Pinsker's
    inequality kl(q || p) >= 2 (p - q)^2, so it holds with the same
    probability >= 1 - delta and is never below `seeger_bound`. (McAllester's
    1999 statement has (KL + ln(1/delta) + 2 ln n + 2) / (2n - 1) under the
    root; this variant is the standard modern form.)

    Args:
        empirical_risk: empirical Gibbs risk(s) of Q in [0, 1] (a loss
            bounded in [0, 1], e.g. the 0-1 robust error).
        kl: KL(Q || P) in nats, >= 0; broadcast against empirical_risk.
        n: number of training examples, an integer >= 1.
        delta: confidence parameter in (0, 1).
        clip: if True, cap the result at 1 (a bound above 1 is vacuous). The
            default keeps it unclipped so plots show how vacuous it is.

    Returns:
        The upper bound on the expected risk (np.float64 for scalars).

    Example:

    With n = 50, KL = 4 and delta = 2 sqrt(50) e^-5 (so ln(2 sqrt(n)/delta)
    = 5), the root is sqrt(9 / 100) = 0.3:

    >>> import numpy as np
    >>> from robustlab.bounds import mcallester_bound
    >>> delta = 2 * np.sqrt(50) * np.exp(-5)
    >>> print(f"{mcallester_bound(0.1, 4.0, 50, delta):.6f}")
    0.400000
    """
    q = _check_empirical_risk(empirical_risk)
    kl = _check_kl(kl)
    validation.check_broadcast(empirical_risk=q, kl=kl)
    n = validation.check_int_at_least("n", n, 1)
    delta = _check_delta(delta)
    bound = _square_root_bound(q, _complexity(kl, n, delta))
    if validation.check_bool("clip", clip):
        bound = np.minimum(bound, 1.0)
    return _as_scalar_if_0d(np.asarray(bound))


def seeger_bound(empirical_risk, kl, n, delta=0.05, *, tol=1e-12):
    """kl-inverse PAC-Bayes bound: kl_inverse(q, (KL + ln(2 sqrt(n)/delta)) / n).

    The Seeger (2002) / Langford / Maurer (2004) bound: with probability >=
    1 - delta, R(Q) is at most the largest p with kl(q || p) <= (KL + ln(2
    sqrt(n) / delta)) / n. Always in [q, 1], and never above
    `mcallester_bound`, much tighter when q is near 0. (Near q = 1/2 with
    a tiny budget the two nearly meet, and the bisection's tolerance could
    take the kl inverse above the McAllester value; that value, a valid
    bound too by Pinsker's inequality, is returned then.)

    Args:
        empirical_risk: empirical Gibbs risk(s) of Q in [0, 1].
        kl: KL(Q || P) in nats, >= 0; broadcast against empirical_risk.
        n: number of training examples, an integer >= 1.
        delta: confidence parameter in (0, 1).
        tol: bisection tolerance of `kl_inverse` (the result is at most
            tol above the exact inverse).

    Returns:
        The upper bound on the expected risk (np.float64 for scalars).

    Example:

    At q = 0 the inverse is 1 - exp(-budget); with the numbers of the
    `mcallester_bound` example the budget is 9 / 50:

    >>> import numpy as np
    >>> from robustlab.bounds import seeger_bound
    >>> delta = 2 * np.sqrt(50) * np.exp(-5)
    >>> print(f"{seeger_bound(0.0, 4.0, 50, delta):.6f}", f"{1 - np.exp(-0.18):.6f}")
    0.164730 0.164730
    """
    q = _check_empirical_risk(empirical_risk)
    kl = _check_kl(kl)
    validation.check_broadcast(empirical_risk=q, kl=kl)
    n = validation.check_int_at_least("n", n, 1)
    delta = _check_delta(delta)
    budget = _complexity(kl, n, delta)
    # The same float as mcallester_bound's, so the order holds exactly.
    bound = np.minimum(kl_inverse(q, budget, tol=tol), _square_root_bound(q, budget))
    return _as_scalar_if_0d(np.asarray(bound))


def expected_loss_under_posterior(loss, curvature, posterior_variance):
    """Second-order expected loss under Q: L(w) + 1/2 sum_i lambda_i sigma_i^2.

    For Q = N(w, Sigma), a Taylor expansion around w gives E_Q L = L(w) +
    1/2 tr(H Sigma) + higher order (the gradient term has mean zero). When
    Sigma is diagonal in the basis in which the curvature is given, tr(H
    Sigma) = sum_i H_ii sigma_i^2 exactly: pass the Hessian diagonal with a
    diagonal posterior, or eigenvalues lambda_i = u_i^T H u_i with the
    posterior variances along the same u_i. Exact for a quadratic loss.

    Args:
        loss: L(w), finite; scalar or an array broadcast against the result
            (e.g. one value per epoch).
        curvature: H_ii or lambda_i, finite (may be negative: saddle
            directions lower the expected loss); the last axis runs over
            parameters or directions.
        posterior_variance: sigma_i^2, finite and >= 0, broadcast against
            curvature.

    Returns:
        L(w) + 1/2 sum over the last axis of curvature * posterior_variance.

    Example:

    >>> from robustlab.bounds import expected_loss_under_posterior
    >>> print(expected_loss_under_posterior(0.5, [2.0, 10.0], [0.1, 0.01]))
    0.65
    """
    loss = _finite("loss", loss)
    curvature = _finite("curvature", curvature)
    variance = _finite("posterior_variance", posterior_variance)
    _require("posterior_variance", variance, variance >= 0, "finite and >= 0")
    try:
        product = curvature * variance
    except ValueError:
        raise ValueError(
            "Arguments `curvature` and `posterior_variance` must broadcast to "
            f"one shape. Received: curvature with shape {curvature.shape}, "
            f"posterior_variance with shape {variance.shape}"
        ) from None
    trace_term = 0.5 * (product.sum(axis=-1) if product.ndim else product)
    try:
        return _as_scalar_if_0d(np.asarray(loss + trace_term))
    except ValueError:
        raise ValueError(
            "Argument `loss` must broadcast against the trace term of shape "
            f"{np.shape(trace_term)}. Received: loss with shape {loss.shape}"
        ) from None


# ---------------------------------------------------------------------------
# Time-resolved bound.
# ---------------------------------------------------------------------------


class TimeResolvedBound(NamedTuple):
    """Per-epoch KL divergence and risk bound."""

    kl: np.ndarray
    """KL(Q_t || P) in nats, shape (epochs,)."""
    bound: np.ndarray
    """Upper bound on the expected 0-1 robust error of Q_t, shape (epochs,)."""


def _per_epoch_rows(name, value, epochs):
    """An (epochs, P) float array from an array or a sequence of per-epoch weights."""
    if isinstance(value, np.ndarray) and value.ndim == 2:
        rows = _float_array(name, value)
    else:
        try:
            rows = [_flatten_weights(name, row) for row in value]
        except TypeError:
            raise TypeError(
                f"Argument `{name}` must be an (epochs, P) array or a sequence "
                f"with one entry per epoch. Received: {name} of type "
                f"{type(value).__name__}"
            ) from None
        sizes = {r.size for r in rows}
        if len(sizes) > 1:
            raise ValueError(
                f"Argument `{name}` must have the same size at every epoch. "
                f"Received: {name} with sizes {sorted(sizes)}"
            )
        rows = np.stack(rows) if rows else np.zeros((0, 0))
    if rows.shape[0] != epochs:
        raise ValueError(
            f"Argument `{name}` must have one entry per epoch ({epochs}, the "
            f"length of empirical_risks). Received: {name} with {rows.shape[0]} entries"
        )
    return rows


def time_resolved_bound(
    empirical_risks,
    posterior_variances,
    weights,
    initial_weights,
    prior_variance,
    n,
    delta=0.05,
    kind="seeger",
):
    """PAC-Bayes bound per epoch from the tracked weights and posterior widths.

    For every epoch t, Q_t = N(weights[t], diag posterior_variances[t]) and
    the prior P = N(initial_weights, prior_variance I):
    kl[t] = `gaussian_kl`(Q_t, P) and bound[t] = `seeger_bound` (or
    `mcallester_bound`) of empirical_risks[t].

    The loss is the 0-1 robust error (1 when the attack changes the
    prediction away from the label), so it is bounded in [0, 1] as the
    theorem needs. Caveats the numbers inherit:

    - empirical_risks[t] should be the Gibbs risk of Q_t (the robust error
      averaged over weights sampled from Q_t); the robust error of the mean
      weights is a cheaper stand-in that the theorem does not cover.
    - empirical_risks[t] is meant over the same n examples; a risk measured
      on a subset of them estimates it (the theorem for the subset alone
      takes the subset's size as n).
    - no union bound over the epochs is needed: the theorem holds for every
      Q at once, so with probability >= 1 - delta the bounds of all epochs
      hold together, as long as the prior, delta and the n examples are
      fixed before training.
    - the prior may not depend on the training data: w_0 (the initialisation)
      is fine; a prior_variance picked after looking at the bounds needs a
      union bound over the candidates tried.

    Args:
        empirical_risks: (epochs,) empirical 0-1 robust errors in [0, 1].
        posterior_variances: per-epoch posterior variances, finite and > 0:
            an (epochs, P) array or sequence of per-epoch flat vectors / lists
            of per-layer arrays, or an (epochs,) array of isotropic variances.
        weights: per-epoch posterior means, (epochs, P) or a sequence of
            per-epoch flat vectors / lists of per-layer arrays.
        initial_weights: the prior mean w_0, flat (P,) or a list of arrays.
            Per-layer lists (here and in the entries of `weights` and
            `posterior_variances`) must all have the same layers.
        prior_variance: sigma_0^2, > 0, a scalar or (P,).
        n: number of training examples, an integer >= 1.
        delta: confidence parameter in (0, 1).
        kind: "seeger" (kl-inverse, default) or "mcallester" (square root).

    Returns:
        A `TimeResolvedBound` (kl, bound) of (epochs,) arrays.

    Example:

    A posterior equal to the prior has KL = 0; as it narrows 100x the KL,
    and with it the bound, jumps (here P = 1 parameter):

    >>> import numpy as np
    >>> from robustlab.bounds import time_resolved_bound
    >>> result = time_resolved_bound([0.1, 0.1], [1.0, 0.01], [[0.0], [0.0]],
    ...                              [0.0], 1.0, n=1000)
    >>> print(np.round(result.kl, 4), np.round(result.bound, 4))
    [0.     1.8076] [0.1396 0.1448]
    """
    if kind not in ("seeger", "mcallester"):
        raise ValueError(
            'Argument `kind` must be "seeger" or "mcallester". '
            + _received("kind", kind)
        )
    risks = _check_empirical_risk(empirical_risks, "empirical_risks")
    if risks.ndim != 1:
        raise ValueError(
            "Argument `empirical_risks` must be 1-D, one risk per epoch. "
            f"Received: empirical_risks with shape {risks.shape}"
        )
    epochs = risks.shape[0]
    means = _per_epoch_rows("weights", weights, epochs)
    if isinstance(posterior_variances, np.ndarray) or not isinstance(
        posterior_variances, (list, tuple)
    ):
        variances = _float_array("posterior_variances", posterior_variances)
        if variances.ndim == 1:  # isotropic: one variance per epoch
            variances = variances[:, None]
    else:
        variances = posterior_variances
    variances = _per_epoch_rows("posterior_variances", variances, epochs)
    prior_mean = _flatten_weights("initial_weights", initial_weights)
    if (
        variances.shape[1] not in (1, means.shape[1])
        or prior_mean.size != means.shape[1]
    ):
        raise ValueError(
            "Arguments `weights`, `posterior_variances` and `initial_weights` "
            "must have one entry per parameter (posterior_variances may have "
            f"one per epoch). Received: weights with {means.shape[1]}, "
            f"posterior_variances with {variances.shape[1]} and "
            f"initial_weights with {prior_mean.size} entries per epoch"
        )
    # The rows are flat by now, so gaussian_kl cannot see the layers.
    layouts = [("initial_weights", initial_weights)]
    for name, rows in (("weights", weights),
                       ("posterior_variances", posterior_variances)):
        if isinstance(rows, (list, tuple)):
            layouts += [(f"{name}[{t}]", row) for t, row in enumerate(rows)]
    _check_same_layers(layouts)
    # Checked under the names the caller used (gaussian_kl would name them
    # mean_q, var_q, var_p).
    _finite("weights", means)
    _finite_positive("posterior_variances", variances)
    _finite("initial_weights", prior_mean)
    prior_variance = _finite_positive("prior_variance", prior_variance)
    if np.ndim(prior_variance) != 0 and np.shape(prior_variance) != (prior_mean.size,):
        # Broadcasting would sum the KL over entries that are no parameters
        # (or over none: an empty array gave KL 0).
        raise ValueError(
            "Argument `prior_variance` must be a scalar or have one entry per "
            f"parameter ({prior_mean.size}). Received: prior_variance with shape "
            f"{np.shape(prior_variance)}")
    n = validation.check_int_at_least("n", n, 1)
    delta = _check_delta(delta)
    kl = np.array(
        [
            gaussian_kl(mean, variance, prior_mean, prior_variance)
            for mean, variance in zip(means, variances)
        ],
        dtype=np.float64,
    ).reshape(epochs)
    if kind == "seeger":
        bound = seeger_bound(risks, kl, n, delta)
    else:
        bound = mcallester_bound(risks, kl, n, delta)
    return TimeResolvedBound(kl, np.asarray(bound, dtype=np.float64).reshape(epochs))
