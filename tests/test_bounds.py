"""Specification of `robustlab.bounds`.

Expected values come from hand computation (written out in each test), the
full-covariance Gaussian KL with matrices, Monte-Carlo estimates with their
standard error, brute-force grid search for the kl inverse, and invariants
checked with hypothesis (positivity, Pinsker, monotonicity).
"""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from robustlab.bounds import (
    expected_loss_under_posterior,
    gaussian_kl,
    kl_bernoulli,
    kl_inverse,
    mcallester_bound,
    seeger_bound,
    time_resolved_bound,
)

SETTINGS = settings(max_examples=80, deadline=None)

probabilities = st.floats(0.0, 1.0)
interior = st.floats(1e-6, 1 - 1e-6)
variances = st.floats(1e-3, 1e3)
means = st.floats(-100.0, 100.0)
kls = st.floats(0.0, 1e4)
sizes = st.integers(1, 10**7)
deltas = st.floats(1e-6, 0.999)

# n = 50, KL = 4, and delta chosen so that ln(2 sqrt(n) / delta) = 5 exactly:
# the kl budget is (4 + 5) / 50 = 0.18 and the square root sqrt(9 / 100) = 0.3.
N, KL = 50, 4.0
DELTA = 2 * math.sqrt(N) * math.exp(-5)


# ---------------------------------------------------------------------------
# gaussian_kl
# ---------------------------------------------------------------------------


def full_covariance_kl(mean_q, cov_q, mean_p, cov_p):
    """KL between multivariate Gaussians with full covariances:

    1/2 [tr(Sp^-1 Sq) + d' Sp^-1 d - k + ln det Sp - ln det Sq].
    """
    inverse = np.linalg.inv(cov_p)
    d = mean_p - mean_q
    _, logdet_p = np.linalg.slogdet(cov_p)
    _, logdet_q = np.linalg.slogdet(cov_q)
    return 0.5 * (
        np.trace(inverse @ cov_q) + d @ inverse @ d - len(d) + logdet_p - logdet_q
    )


def test_kl_one_dimensional_by_hand():
    # q = N(1, 2), p = N(0, 1): 1/2 (2 + 1 - 1 - ln 2)
    assert gaussian_kl(1.0, 2.0, 0.0, 1.0) == pytest.approx(
        1 - math.log(2) / 2, rel=1e-15
    )


def test_kl_two_dimensional_with_isotropic_prior_by_hand():
    # q = N((1, -2), diag(0.5, 4)), p = N(0, 2 I):
    # first:  0.5/2 + 1/2 - 1 - ln(1/4) ; second: 4/2 + 4/2 - 1 - ln 2
    first = 0.25 + 0.5 - 1 + math.log(4)
    second = 2 + 2 - 1 - math.log(2)
    got = gaussian_kl([1.0, -2.0], [0.5, 4.0], 0.0, 2.0)
    assert got == pytest.approx(0.5 * (first + second), rel=1e-15)


@SETTINGS
@given(st.lists(st.tuples(means, variances, means, variances), min_size=1, max_size=6))
def test_kl_equals_the_full_covariance_formula_for_diagonal_gaussians(entries):
    mq, vq, mp, vp = (np.array(column) for column in zip(*entries))
    expected = full_covariance_kl(mq, np.diag(vq), mp, np.diag(vp))
    assert gaussian_kl(mq, vq, mp, vp) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_kl_matches_a_monte_carlo_estimate():
    # KL = E_q[ln q(x) - ln p(x)]; 200k samples, 5 standard errors.
    rng = np.random.default_rng(0)
    mq, vq, mp, vp = (
        np.array([0.3, -1.0]),
        np.array([0.5, 2.0]),
        np.array([0.0, 0.5]),
        1.5,
    )
    x = mq + np.sqrt(vq) * rng.normal(size=(200_000, 2))
    log_q = -0.5 * np.sum((x - mq) ** 2 / vq + np.log(2 * np.pi * vq), axis=1)
    log_p = -0.5 * np.sum((x - mp) ** 2 / vp + np.log(2 * np.pi * vp), axis=1)
    samples = log_q - log_p
    standard_error = samples.std(ddof=1) / math.sqrt(len(samples))
    assert abs(samples.mean() - gaussian_kl(mq, vq, mp, vp)) < 5 * standard_error


@SETTINGS
@given(st.lists(st.tuples(means, variances), min_size=1, max_size=6))
def test_kl_of_identical_gaussians_is_zero(entries):
    m, v = (np.array(column) for column in zip(*entries))
    assert gaussian_kl(m, v, m, v) == 0.0


@SETTINGS
@given(means, variances, means, variances)
def test_kl_is_positive_unless_the_gaussians_are_equal(mq, vq, mp, vp):
    kl = gaussian_kl(mq, vq, mp, vp)
    assert kl >= 0
    # Differences below ~1e-6 give a KL that may underflow to 0.
    if abs(mq - mp) > 1e-6 * math.sqrt(vp) or abs(vq / vp - 1) > 1e-6:
        assert kl > 0


@pytest.mark.parametrize("x", [2.0**-40, -(2.0**-40), (1.0 + 1e-12) - 1.0,
                               2.0**-52, -(2.0**-53)])
def test_kl_of_nearly_equal_variances_keeps_every_digit(x):
    # var_q = 1 + x exactly (1 + 2^-52 is the float after 1, 1 - 2^-53 the
    # one before), so the KL is 1/2 (x - ln(1 + x)) = x^2/4 - x^3/6 + x^4/8
    # - ..., where x^4/8 is below 1e-23 of the rest. x - log1p(x) would keep
    # log1p's rounding error, up to ~1e-16 |x|: 1.3e-4 of the KL at x = 1e-12,
    # all of it at x = -2^-53.
    assert (1.0 + x) - 1.0 == x
    # abs=0: approx's default absolute tolerance, 1e-12, would pass anything.
    assert gaussian_kl(0.0, 1.0 + x, 0.0, 1.0) == pytest.approx(
        x**2 / 4 - x**3 / 6, rel=1e-15, abs=0)


@pytest.mark.parametrize("ratio, expected", [
    # 1/2 (r - 1 - ln r) to 20 digits, at the ends of the range |r - 1| <= 1/2
    # where the series for near-equal variances is used (where its cut-off
    # terms weigh most), and half-way.
    (1.5, 0.047267445945917809011),
    (1.25, 0.013428224342895122117),
    (0.75, 0.01884103622589046372),
    (0.5, 0.096573590279972654709),
])
def test_kl_of_variances_up_to_half_the_prior_apart_keeps_every_digit(
        ratio, expected):
    assert gaussian_kl(0.0, ratio, 0.0, 1.0) == pytest.approx(
        expected, rel=1e-15, abs=0)


@pytest.mark.parametrize("ratio", [0.3, 1e-6, 1e-12, 1e-17, 1e-200])
def test_kl_of_a_posterior_far_narrower_than_the_prior_by_hand(ratio):
    # 1/2 (r - 1 - ln r): what a parameter that barely moved adds. Near
    # r = 1e-17, 1 + (r - 1) is 0 in floats: the KL must not be inf.
    expected = 0.5 * (ratio - 1.0 - math.log(ratio))
    for var_p in (1.0, 1e-3, 0.037):
        assert gaussian_kl(0.0, ratio * var_p, 0.0, var_p) == pytest.approx(
            expected, rel=1e-13)


def test_kl_of_a_posterior_far_wider_than_the_prior_by_hand():
    assert gaussian_kl(0.0, 1e12, 0.0, 1.0) == pytest.approx(
        0.5 * (1e12 - 1.0 - math.log(1e12)), rel=1e-15)
    # r overflows: the KL is infinite, not NaN.
    assert gaussian_kl(0.0, 1e300, 0.0, 1e-300) == math.inf


def test_kl_accepts_per_layer_lists_and_per_row_sums():
    layers_q = [np.array([[1.0, 2.0]]), np.array([3.0])]
    flat_q = np.array([1.0, 2.0, 3.0])
    assert gaussian_kl(
        layers_q, 0.5, [np.zeros((1, 2)), np.zeros(1)], 1.0
    ) == pytest.approx(gaussian_kl(flat_q, 0.5, np.zeros(3), 1.0), rel=1e-15)
    rows = np.array([[0.0, 0.0], [1.0, -1.0]])
    np.testing.assert_allclose(
        gaussian_kl(rows, 1.0, 0.0, 1.0, axis=-1),
        [0.0, gaussian_kl([1.0, -1.0], 1.0, 0.0, 1.0)],
        rtol=1e-15,
    )


def test_kl_pairs_a_flat_array_with_a_per_layer_list_by_position():
    layers_q = [np.array([[1.0, 2.0]]), np.array([3.0])]
    assert gaussian_kl(layers_q, [0.5, 0.25, 2.0], np.zeros(3), 1.0) == pytest.approx(
        gaussian_kl([1.0, 2.0, 3.0], [0.5, 0.25, 2.0], 0.0, 1.0), rel=1e-15)


@pytest.mark.parametrize("args, message", [
    # Same total size (10 parameters), layers shaped differently.
    (([np.zeros((2, 3)), np.zeros(4)], [np.ones((3, 2)), np.ones(4)],
      [np.zeros(4), np.zeros((2, 3))], 1.0),
     r"Arguments `mean_q` and `var_q` are both per-layer lists and must have "
     r"the same layers.*Received: layer shapes mean_q=\[\(2, 3\), \(4,\)\], "
     r"var_q=\[\(3, 2\), \(4,\)\]$"),
    # A transposed layer.
    (([np.zeros((2, 3))], 1.0, [np.zeros((3, 2))], 1.0),
     r"`mean_q` and `mean_p`.*Received: layer shapes mean_q=\[\(2, 3\)\], "
     r"mean_p=\[\(3, 2\)\]$"),
    # Two layers against one.
    (([np.zeros(2), np.zeros(2)], 1.0, 0.0, [np.ones(4)]),
     r"`mean_q` and `var_p`.*mean_q=\[\(2,\), \(2,\)\], var_p=\[\(4,\)\]$"),
])
def test_kl_refuses_per_layer_lists_whose_layers_differ(args, message):
    with pytest.raises(ValueError, match=message):
        gaussian_kl(*args)


@pytest.mark.parametrize(
    "args, message",
    [
        ((0.0, 0.0, 0.0, 1.0), r"var_q must|Received: var_q=0.0"),
        ((0.0, 1.0, 0.0, -1.0), "Received: var_p=-1.0"),
        ((0.0, [1.0, np.inf], 0.0, 1.0), r"var_q\[1\]=inf"),
        ((np.nan, 1.0, 0.0, 1.0), "mean_q"),
        (([0.0, 1.0], [1.0, 1.0, 1.0], 0.0, 1.0), "broadcast"),
    ],
)
def test_kl_rejects_bad_arguments(args, message):
    with pytest.raises(ValueError, match=message):
        gaussian_kl(*args)


def test_kl_refuses_an_axis_for_a_list_of_rows():
    # A list of arrays is per-layer and flattened: axis=-1 would have summed
    # both rows (KL 0 and 1) into 1.0.
    rows = [[0.0, 0.0], [1.0, 1.0]]
    with pytest.raises(ValueError, match=r"`axis` needs arrays: `mean_q` is a list of "
                                         r"arrays.*Received: axis=-1$"):
        gaussian_kl(rows, 1.0, 0.0, 1.0, axis=-1)
    np.testing.assert_array_equal(gaussian_kl(np.asarray(rows), 1.0, 0.0, 1.0, axis=-1),
                                  [0.0, 1.0])


def test_kl_rejects_a_boolean_axis():
    with pytest.raises(ValueError, match="Received: axis=True"):
        gaussian_kl(np.zeros((2, 3)), 1.0, 0.0, 1.0, axis=True)


# ---------------------------------------------------------------------------
# kl_bernoulli
# ---------------------------------------------------------------------------


def test_binary_kl_by_hand():
    # kl(1/2 || 1/4) = 1/2 ln(2) + 1/2 ln(2/3) = 1/2 ln(4/3)
    assert kl_bernoulli(0.5, 0.25) == pytest.approx(0.5 * math.log(4 / 3), rel=1e-14)


@pytest.mark.parametrize("q, p", [(0.5, 1e-300), (1e-6, 1e-300), (0.5, 1e-12),
                                  (0.3, 1.0 - 1e-12), (0.999, 1e-9)])
def test_binary_kl_far_from_q_by_hand(q, p):
    # Logs of the probabilities themselves: p rebuilt as q + (p - q) rounds
    # to 0 or loses digits.
    expected = q * (math.log(q) - math.log(p)) + (1 - q) * (
        math.log1p(-q) - math.log1p(-p))
    assert kl_bernoulli(q, p) == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("q", [0.3, 0.9])
@pytest.mark.parametrize("d", [2.0**-40, -(2.0**-40)])
def test_binary_kl_of_nearly_equal_probabilities_keeps_every_digit(q, d):
    # p = q + d exactly. kl(q || q + d) = d^2/2 (1/q + 1/(1-q))
    # + d^3/3 (1/(1-q)^2 - 1/q^2) + O(d^4), the O(d^4) part below 1e-23 of
    # the rest; x - log1p(x) for the two halves would leave 2e-5 to 4e-5 of
    # it wrong.
    assert (q + d) - q == d
    expected = d**2 / (2 * q * (1 - q)) + d**3 / 3 * (1 / (1 - q) ** 2 - 1 / q**2)
    assert kl_bernoulli(q, q + d) == pytest.approx(expected, rel=1e-15, abs=0)


def test_binary_kl_edges():
    assert kl_bernoulli(0.0, 0.3) == pytest.approx(-math.log(0.7), rel=1e-15)
    assert kl_bernoulli(1.0, 0.3) == pytest.approx(-math.log(0.3), rel=1e-15)
    assert kl_bernoulli(0.0, 0.0) == 0.0 and kl_bernoulli(1.0, 1.0) == 0.0
    # +0.0, not -0.0 (-ln 1), which printed as "-0.0".
    assert math.copysign(1.0, kl_bernoulli(1.0, 1.0)) == 1.0
    assert kl_bernoulli(0.2, 0.0) == math.inf and kl_bernoulli(0.2, 1.0) == math.inf
    assert kl_bernoulli(0.0, 1.0) == math.inf and kl_bernoulli(1.0, 0.0) == math.inf


@SETTINGS
@given(interior, interior)
def test_binary_kl_equals_the_textbook_formula(q, p):
    textbook = q * math.log(q / p) + (1 - q) * math.log((1 - q) / (1 - p))
    assert kl_bernoulli(q, p) == pytest.approx(textbook, rel=1e-8, abs=1e-12)


@SETTINGS
@given(probabilities, probabilities)
def test_binary_kl_satisfies_pinsker(q, p):
    # kl(q || p) >= 2 (p - q)^2, with equality only at p = q.
    assert kl_bernoulli(q, p) >= 2 * (p - q) ** 2 * (1 - 1e-9)


def test_binary_kl_rejects_probabilities_outside_the_unit_interval():
    with pytest.raises(ValueError, match=r"Received: q=1.5"):
        kl_bernoulli(1.5, 0.5)
    with pytest.raises(ValueError, match=r"p\[1\]=-0.1"):
        kl_bernoulli(0.5, [0.5, -0.1])


# ---------------------------------------------------------------------------
# kl_inverse
# ---------------------------------------------------------------------------

GRID_STEP = 1e-5
GRID = np.arange(0.0, 1.0 + GRID_STEP / 2, GRID_STEP)


@SETTINGS
@given(st.floats(0.0, 0.95), st.floats(1e-4, 3.0))
def test_kl_inverse_matches_a_brute_force_grid_search(q, budget):
    candidates = GRID[GRID >= q]
    feasible = candidates[kl_bernoulli(q, candidates) <= budget]
    grid_answer = feasible.max() if feasible.size else q
    assert grid_answer - 1e-12 <= kl_inverse(q, budget) <= grid_answer + GRID_STEP


@SETTINGS
@given(st.floats(0.0, 0.99), st.floats(1e-6, 5.0))
def test_kl_inverse_exhausts_the_budget(q, budget):
    p = kl_inverse(q, budget)
    assume(p < 1 - 1e-9)
    # At the solution kl(q || p) = budget; the returned p sits at most tol above it.
    assert kl_bernoulli(q, p) >= budget
    assert kl_bernoulli(q, p - 2e-12) <= budget * (1 + 1e-9)


@pytest.mark.parametrize("budget", [1e-6, 0.01, 0.18, 1.0, 10.0])
def test_kl_inverse_at_zero_risk_is_one_minus_exp_of_minus_budget(budget):
    # kl(0 || p) = -ln(1 - p)  =>  p = 1 - exp(-budget); never below it.
    exact = -math.expm1(-budget)
    got = kl_inverse(0.0, budget)
    assert exact - 1e-16 <= got <= exact + 1e-12


@pytest.mark.parametrize("q", [0.0, 0.01, 0.3, 0.5, 0.999])
def test_kl_inverse_with_no_budget_is_the_empirical_risk(q):
    assert q <= kl_inverse(q, 0.0) <= q + 1e-12


def test_kl_inverse_saturates_at_one():
    assert kl_inverse(1.0, 0.5) == 1.0
    assert kl_inverse(0.2, math.inf) == 1.0


def test_kl_inverse_is_vectorised():
    q = np.array([0.0, 0.1, 0.5, 1.0])
    budget = np.array([0.1, 0.5, 0.01, 0.2])
    expected = [kl_inverse(a, b) for a, b in zip(q, budget)]
    np.testing.assert_array_equal(kl_inverse(q, budget), expected)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((1.2, 0.1), {}, "Received: empirical_risk=1.2"),
        ((0.1, -0.1), {}, "Received: bound=-0.1"),
        ((0.1, 0.1), dict(tol=0.0), "Received: tol=0.0"),
    ],
)
def test_kl_inverse_rejects_bad_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        kl_inverse(*args, **kwargs)


# ---------------------------------------------------------------------------
# mcallester_bound, seeger_bound
# ---------------------------------------------------------------------------


def test_mcallester_bound_by_hand():
    assert mcallester_bound(0.1, KL, N, DELTA) == pytest.approx(0.1 + 0.3, rel=1e-13)


def test_mcallester_bound_default_delta_by_hand():
    # n = 1000, KL = 10, delta = 0.05: ln(2 sqrt(1000) / 0.05) = ln(1264.91...)
    log_term = math.log(2 * math.sqrt(1000) / 0.05)
    assert mcallester_bound(0.2, 10.0, 1000) == pytest.approx(
        0.2 + math.sqrt((10 + log_term) / 2000), rel=1e-14
    )


def test_mcallester_bound_is_unclipped_unless_asked():
    assert mcallester_bound(0.9, 1000.0, 10) > 1
    assert mcallester_bound(0.9, 1000.0, 10, clip=True) == 1.0


def test_seeger_bound_by_hand_at_zero_risk():
    assert seeger_bound(0.0, KL, N, DELTA) == pytest.approx(
        -math.expm1(-0.18), abs=1e-12
    )


def test_seeger_bound_by_hand_at_positive_risk():
    # The budget is 0.18 at q = 0.1; the bound p solves kl(0.1 || p) = 0.18.
    p = seeger_bound(0.1, KL, N, DELTA)
    assert 0.1 * math.log(0.1 / p) + 0.9 * math.log(0.9 / (1 - p)) == pytest.approx(
        0.18, abs=1e-10
    )
    assert p < mcallester_bound(0.1, KL, N, DELTA)


@SETTINGS
@given(probabilities, kls, sizes, deltas)
def test_seeger_bound_lies_between_the_empirical_risk_and_mcallester(q, kl, n, delta):
    seeger = seeger_bound(q, kl, n, delta)
    assert q <= seeger <= 1.0
    assert seeger <= mcallester_bound(q, kl, n, delta)


@pytest.mark.parametrize("n", [10**9, 10**12, 10**15])
def test_seeger_bound_stays_below_mcallester_where_they_nearly_meet(n):
    # At q = 1/2, kl(q || q + e) = -ln(1 - 4 e^2) / 2 = 2 e^2 + 4 e^4 + ...: the
    # exact kl inverse is below q + sqrt(budget / 2) by about e^3, 6e-13 at
    # n = 1e9 and less after, within the bisection's tolerance of 1e-12.
    assert seeger_bound(0.5, 0.0, n) <= mcallester_bound(0.5, 0.0, n)


@SETTINGS
@given(probabilities, kls, kls, sizes, deltas)
def test_bounds_grow_with_the_kl(q, kl_a, kl_b, n, delta):
    low, high = sorted((kl_a, kl_b))
    assert mcallester_bound(q, low, n, delta) <= mcallester_bound(q, high, n, delta)
    assert seeger_bound(q, low, n, delta) <= seeger_bound(q, high, n, delta) + 1e-12


@SETTINGS
@given(probabilities, kls, sizes, sizes, deltas)
def test_bounds_shrink_with_more_data(q, kl, n_a, n_b, delta):
    # (KL + ln 2 + ln(n)/2 - ln delta) / n decreases in n because ln(2/delta) > 1/2.
    small, large = sorted((n_a, n_b))
    assert mcallester_bound(q, kl, large, delta) <= mcallester_bound(
        q, kl, small, delta
    )
    assert (
        seeger_bound(q, kl, large, delta) <= seeger_bound(q, kl, small, delta) + 1e-12
    )


@SETTINGS
@given(probabilities, probabilities, kls, sizes, deltas)
def test_bounds_grow_with_the_empirical_risk(q_a, q_b, kl, n, delta):
    low, high = sorted((q_a, q_b))
    assert mcallester_bound(low, kl, n, delta) <= mcallester_bound(high, kl, n, delta)
    assert seeger_bound(low, kl, n, delta) <= seeger_bound(high, kl, n, delta) + 1e-12


@pytest.mark.parametrize("bound", [mcallester_bound, seeger_bound])
@pytest.mark.parametrize(
    "args, error, message",
    [
        ((1.2, 1.0, 100), ValueError, "0-1 .*Received: empirical_risk=1.2"),
        ((-0.1, 1.0, 100), ValueError, "empirical_risk=-0.1"),
        ((0.1, -1.0, 100), ValueError, "Received: kl=-1.0"),
        ((0.1, 1.0, 0), ValueError, "Received: n=0"),
        ((0.1, 1.0, 10.5), TypeError, "Received: n=10.5"),
        ((0.1, 1.0, 100, 0.0), ValueError, r"\(0, 1\). Received: delta=0.0"),
        ((0.1, 1.0, 100, 1.0), ValueError, "delta=1.0"),
    ],
)
def test_bounds_reject_bad_arguments(bound, args, error, message):
    with pytest.raises(error, match=message):
        bound(*args)


# ---------------------------------------------------------------------------
# expected_loss_under_posterior
# ---------------------------------------------------------------------------


def test_expected_loss_by_hand():
    # 0.5 + 1/2 (2 * 0.1 + 10 * 0.01)
    assert expected_loss_under_posterior(
        0.5, [2.0, 10.0], [0.1, 0.01]
    ) == pytest.approx(0.65, rel=1e-15)


def test_expected_loss_is_exact_for_a_quadratic_with_diagonal_posterior():
    # L(w) = 1/2 w' H w with a full H; Q = N(w, diag s):
    # E_Q L = L(w) + 1/2 sum_i H_ii s_i.
    rng = np.random.default_rng(1)
    root = rng.normal(size=(3, 3))
    hessian = root @ root.T
    w, s = np.array([0.5, -1.0, 2.0]), np.array([0.02, 0.1, 0.05])
    samples = w + np.sqrt(s) * rng.normal(size=(400_000, 3))
    losses = 0.5 * np.einsum("ni,ij,nj->n", samples, hessian, samples)
    standard_error = losses.std(ddof=1) / math.sqrt(len(losses))
    predicted = expected_loss_under_posterior(
        0.5 * w @ hessian @ w, np.diag(hessian), s
    )
    assert abs(losses.mean() - predicted) < 5 * standard_error


def test_expected_loss_along_eigendirections_is_half_the_trace_of_h_sigma():
    rng = np.random.default_rng(2)
    basis, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    eigenvalues, widths = np.array([5.0, 1.0, 0.1, -0.2]), np.array(
        [0.01, 0.1, 1.0, 0.5]
    )
    hessian = basis @ np.diag(eigenvalues) @ basis.T
    covariance = basis @ np.diag(widths) @ basis.T
    got = expected_loss_under_posterior(1.0, eigenvalues, widths)
    assert got == pytest.approx(1.0 + 0.5 * np.trace(hessian @ covariance), rel=1e-12)


def test_expected_loss_sums_over_the_last_axis_per_epoch():
    got = expected_loss_under_posterior(
        [1.0, 2.0], [[1.0, 1.0], [2.0, 0.0]], [[0.2, 0.4], [1.0, 5.0]]
    )
    np.testing.assert_allclose(got, [1.0 + 0.3, 2.0 + 1.0], rtol=1e-15)


def test_expected_loss_rejects_negative_variances():
    with pytest.raises(ValueError, match=r"posterior_variance\[1\]=-0.1"):
        expected_loss_under_posterior(0.0, [1.0, 1.0], [0.1, -0.1])


# ---------------------------------------------------------------------------
# time_resolved_bound
# ---------------------------------------------------------------------------


def test_time_resolved_bound_composes_kl_and_bound_per_epoch():
    rng = np.random.default_rng(3)
    epochs, params = 5, 7
    risks = rng.uniform(0.0, 0.5, epochs)
    weights = rng.normal(size=(epochs, params))
    variances = rng.uniform(0.01, 1.0, size=(epochs, params))
    w0 = rng.normal(size=params)
    for kind, bound in (("seeger", seeger_bound), ("mcallester", mcallester_bound)):
        result = time_resolved_bound(
            risks, variances, weights, w0, 0.5, n=1000, delta=0.1, kind=kind
        )
        expected_kl = [gaussian_kl(w, v, w0, 0.5) for w, v in zip(weights, variances)]
        np.testing.assert_allclose(result.kl, expected_kl, rtol=1e-14)
        np.testing.assert_allclose(
            result.bound,
            [bound(r, k, 1000, 0.1) for r, k in zip(risks, expected_kl)],
            rtol=1e-14,
        )


def test_time_resolved_bound_jumps_when_the_cloud_collapses():
    # Means at the prior mean, variance sigma_0^2 then sigma_0^2 / 10 over P
    # parameters: KL goes from 0 to P/2 (1/10 - 1 + ln 10).
    params, prior = 1000, 0.01
    result = time_resolved_bound(
        [0.1, 0.1],
        [prior, prior / 10],
        np.zeros((2, params)),
        np.zeros(params),
        prior,
        n=1000,
    )
    assert result.kl[0] == 0.0
    assert result.kl[1] == pytest.approx(
        params / 2 * (0.1 - 1 + math.log(10)), rel=1e-12
    )
    assert result.bound[0] == pytest.approx(seeger_bound(0.1, 0.0, 1000), abs=1e-15)
    assert result.bound[1] > result.bound[0] + 0.3


def test_time_resolved_bound_accepts_isotropic_variances_and_per_layer_weights():
    weights = [
        [np.array([[0.1, 0.2]]), np.array([0.3])],
        [np.array([[0.0, 0.4]]), np.array([-0.3])],
    ]
    flat = np.array([[0.1, 0.2, 0.3], [0.0, 0.4, -0.3]])
    initial = [np.zeros((1, 2)), np.zeros(1)]
    a = time_resolved_bound(
        [0.2, 0.1], np.array([0.5, 0.05]), weights, initial, 1.0, n=100
    )
    b = time_resolved_bound(
        [0.2, 0.1], np.array([[0.5] * 3, [0.05] * 3]), flat, np.zeros(3), 1.0, n=100
    )
    np.testing.assert_allclose(a.kl, b.kl, rtol=1e-15)
    np.testing.assert_allclose(a.bound, b.bound, rtol=1e-15)


@pytest.mark.parametrize("kwargs, message", [
    (dict(weights=[[np.zeros((2, 3)), np.zeros(4)], [np.zeros((3, 2)), np.zeros(4)]]),
     r"Arguments `initial_weights` and `weights\[1\]`.*Received: layer shapes "
     r"initial_weights=\[\(2, 3\), \(4,\)\], weights\[1\]=\[\(3, 2\), \(4,\)\]$"),
    (dict(posterior_variances=[[np.ones(4), np.ones((2, 3))]] * 2),
     r"`initial_weights` and `posterior_variances\[0\]`.*posterior_variances\[0\]="
     r"\[\(4,\), \(2, 3\)\]$"),
])
def test_time_resolved_bound_refuses_per_layer_lists_whose_layers_differ(
        kwargs, message):
    # Every entry has the 10 parameters of initial_weights, in other layers.
    args = dict(
        empirical_risks=[0.1, 0.2],
        posterior_variances=[[np.ones((2, 3)), np.ones(4)]] * 2,
        weights=[[np.zeros((2, 3)), np.zeros(4)]] * 2,
        initial_weights=[np.zeros((2, 3)), np.zeros(4)],
        prior_variance=1.0,
        n=100,
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        time_resolved_bound(**args)


def test_time_resolved_bound_names_a_non_sequence_by_its_type():
    with pytest.raises(TypeError, match="Received: weights of type int"):
        time_resolved_bound([0.1], np.ones((1, 4)), 5, np.zeros(4), 1.0, n=100)


@pytest.mark.parametrize("call, message", [
    (lambda: mcallester_bound([0.1, 0.2], [1.0, 2.0, 3.0], 100),
     r"`empirical_risk`, `kl` must broadcast.*empirical_risk=\(2,\), kl=\(3,\)"),
    (lambda: seeger_bound([0.1, 0.2], [1.0, 2.0, 3.0], 100), "`empirical_risk`, `kl`"),
    (lambda: kl_bernoulli([0.1, 0.2], [0.3, 0.4, 0.5]), r"`q`, `p` must broadcast"),
    # NumPy's "shape mismatch: objects cannot be broadcast" before.
    (lambda: kl_inverse([0.1, 0.2], [0.1, 0.2, 0.3]),
     r"`empirical_risk`, `bound` must broadcast.*empirical_risk=\(2,\), bound=\(3,\)"),
])
def test_shapes_that_do_not_broadcast_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("value", [None, "0.1", np.array(["0.1"]), 0.1 + 0.2j])
def test_a_risk_that_is_not_a_number_is_a_type_error(value):
    with pytest.raises(TypeError, match="`empirical_risk` must be a real number"):
        mcallester_bound(value, 1.0, 100)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind="catoni"), "kind='catoni'"),
        (dict(empirical_risks=[0.1, 1.5]), r"empirical_risks\[1\]=1.5"),
        (dict(weights=np.zeros((3, 4))), "one entry per epoch"),
        (dict(posterior_variances=np.zeros((2, 4))),
         r"`posterior_variances`.*Received: posterior_variances\[0, 0\]=0.0"),
        (dict(weights=np.full((2, 4), np.inf)), r"`weights`.*Received: weights\[0, 0\]=inf"),
        (dict(initial_weights=np.zeros(5)), "one entry per parameter"),
        (dict(prior_variance=0.0), r"`prior_variance`.*Received: prior_variance=0.0"),
        (dict(prior_variance=np.ones(3)),
         r"`prior_variance` must be a scalar or have one entry per parameter \(4\). "
         r"Received: prior_variance with shape \(3,\)"),
        # These broadcast against the 4 parameters, and their KL was summed
        # over entries that are no parameters: 0 for the empty one.
        (dict(prior_variance=np.ones(0)), r"Received: prior_variance with shape \(0,\)"),
        (dict(prior_variance=np.ones((2, 4))), r"Received: prior_variance with shape \(2, 4\)"),
        (dict(n=0), "n=0"),
        (dict(delta=1.5), "delta=1.5"),
    ],
)
def test_time_resolved_bound_rejects_bad_arguments(kwargs, message):
    args = dict(
        empirical_risks=[0.1, 0.2],
        posterior_variances=np.ones((2, 4)),
        weights=np.zeros((2, 4)),
        initial_weights=np.zeros(4),
        prior_variance=1.0,
        n=100,
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        time_resolved_bound(**args)


def test_a_bfloat16_risk_is_a_number():
    # What a mixed-precision JAX array converts to (ml_dtypes' bfloat16).
    ml_dtypes = pytest.importorskip("ml_dtypes")
    risk = np.array([0.125], dtype=ml_dtypes.bfloat16)
    assert mcallester_bound(risk, 1.0, 100) == pytest.approx(mcallester_bound(0.125, 1.0, 100))
