"""Specification of `robustlab.posterior`: the heavy-ball theory
(`robustlab.heavy_ball`) and the measured statistics
(`robustlab.iterate_statistics`) it re-exports.

Expected values come from first principles: closed forms of the AR(1)/AR(2)
process, the discrete Lyapunov equation solved by linear algebra, explicit
2x2 matrix products, eigenvalues of the transition matrix, brute-force
enumeration of minibatches, `np.var` of stacked iterates, and Monte-Carlo
simulations of the scalar process (with the stated sampling error).
"""

import io
import itertools
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from robustlab import heavy_ball
from robustlab import iterate_statistics
from robustlab import posterior
from robustlab.posterior import (
    IterateStatistics,
    covariance_recursion,
    is_stable,
    minibatch_noise_variance,
    relaxation_steps,
    replica_variance,
    shuffled_pass_variance,
    spectral_radius,
    split_gradient_noise,
    stability_margin,
    stationary_covariance,
    stationary_variance,
)

SETTINGS = settings(max_examples=60, deadline=None)


def transition_matrix(lr, momentum, curvature):
    return np.array([[1 + momentum - lr * curvature, -momentum], [1.0, 0.0]])


def lyapunov_stationary_covariance(lr, momentum, curvature, minibatch_noise):
    """Solve P = A P A^T + Q for P by vectorisation: (I - A kron A) vec P = vec Q."""
    a = transition_matrix(lr, momentum, curvature)
    q = np.array([[lr**2 * minibatch_noise, 0.0], [0.0, 0.0]])
    return np.linalg.solve(np.eye(4) - np.kron(a, a), q.ravel()).reshape(2, 2)


def matrix_recursion(lrs, momentum, curvature, minibatch_noise, initial=None):
    """The covariance recursion with explicit 2x2 matrices, one step at a time."""
    p = np.zeros((2, 2)) if initial is None else np.array(initial, dtype=float)
    rows = []
    for lr in lrs:
        a = transition_matrix(lr, momentum, curvature)
        p = a @ p @ a.T + np.array([[lr**2 * minibatch_noise, 0.0], [0.0, 0.0]])
        rows.append(p.copy())
    return np.array(rows)


stable_settings = st.tuples(
    st.floats(0.0, 0.99),  # momentum
    st.floats(0.01, 0.99),  # eta lambda as a fraction of 2 (1 + beta)
    st.floats(0.1, 10.0),  # curvature
)


# ---------------------------------------------------------------------------
# stationary_variance, stationary_covariance
# ---------------------------------------------------------------------------


def test_stationary_variance_of_plain_sgd_is_the_ar1_variance():
    # beta = 0: x' = (1 - eta lambda) x - eta xi, so Var = eta^2 s^2/B / (1 - a^2).
    lr, lam, s2, batch = 0.5, 1.0, 3.0, 1
    a = 1 - lr * lam
    assert stationary_variance(lr, 0.0, lam, s2, batch) == pytest.approx(
        lr**2 * s2 / batch / (1 - a**2), rel=1e-14
    )


def test_stationary_variance_by_hand_with_momentum():
    # 0.1 * 64 * 1.9 / (64 * 1 * 0.1 * (3.8 - 0.1)) = 0.19 / 0.37
    assert stationary_variance(0.1, 0.9, 1.0, 64.0, 64) == pytest.approx(
        0.19 / 0.37, rel=1e-13
    )


@SETTINGS
@given(stable_settings, st.floats(0.01, 10.0), st.integers(1, 512))
def test_stationary_covariance_solves_the_lyapunov_equation(setting, s2, batch):
    momentum, fraction, lam = setting
    lr = fraction * 2 * (1 + momentum) / lam
    p = lyapunov_stationary_covariance(lr, momentum, lam, s2 / batch)
    var, cov, prev = stationary_covariance(lr, momentum, lam, s2, batch)
    scale = p[0, 0]
    assert stationary_variance(lr, momentum, lam, s2, batch) == pytest.approx(
        p[0, 0], rel=1e-6
    )
    assert var == pytest.approx(p[0, 0], rel=1e-6)
    assert cov == pytest.approx(p[0, 1], rel=1e-6, abs=1e-9 * scale)
    assert prev == pytest.approx(p[1, 1], rel=1e-6)


def test_stationary_variance_small_lr_limit():
    # eta s^2 / (2 B lambda (1 - beta)) is the limit; the exact ratio is
    # 2 (1 + beta) / (2 (1 + beta) - eta lambda) -> 1.
    momentum, lam, s2, batch = 0.9, 2.0, 5.0, 32
    for lr in (1e-3, 1e-5, 1e-7):
        limit = lr * s2 / (2 * batch * lam * (1 - momentum))
        ratio = stationary_variance(lr, momentum, lam, s2, batch) / limit
        assert ratio == pytest.approx(3.8 / (3.8 - lr * lam), rel=1e-12)
        assert abs(ratio - 1) < 1e-6 * lr / 1e-6


def test_stationary_variance_broadcasts_over_directions():
    lam = np.array([0.5, 1.0, 2.0])
    s2 = np.array([[1.0], [4.0]])
    result = stationary_variance(0.1, 0.5, lam, s2, 8)
    assert result.shape == (2, 3)
    expected = [[stationary_variance(0.1, 0.5, l, s, 8) for l in lam] for s in s2[:, 0]]
    np.testing.assert_allclose(result, expected, rtol=1e-15)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(curvature=0.0), "curvature"),
        (dict(curvature=-1.0), "curvature"),
        (dict(curvature=[1.0, -2.0]), r"curvature\[1\]=-2.0"),
        (dict(lr=0.0), "stability interval"),
        (dict(lr=3.8), "stability interval"),
        (dict(lr=-0.1), r"Received: lr=-0.1"),
        (dict(momentum=1.0), r"\[0, 1\). Received: momentum=1.0"),
        (dict(momentum=-0.1), "momentum"),
        (dict(noise_variance=-1.0), "noise_variance"),
        (dict(noise_variance=np.nan), "noise_variance"),
        (dict(batch_size=0), "batch_size"),
    ],
)
def test_stationary_variance_rejects_settings_without_a_stationary_state(
    kwargs, message
):
    args = dict(lr=0.1, momentum=0.9, curvature=1.0, noise_variance=1.0, batch_size=1)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        stationary_variance(**args)


def test_stationary_variance_rejects_a_non_integer_batch_size():
    with pytest.raises(TypeError, match="Received: batch_size=2.5"):
        stationary_variance(0.1, 0.9, 1.0, 1.0, 2.5)


# ---------------------------------------------------------------------------
# covariance_recursion against a simulated process
# ---------------------------------------------------------------------------

CHAINS = 20_000
DROP_SCHEDULE = np.r_[np.full(120, 0.2), np.full(120, 0.02)]
MOMENTUM, CURVATURE, NOISE, BATCH = 0.9, 0.5, 64.0, 64  # minibatch noise s^2/B = 1
CHECK_STEPS = [4, 20, 119, 121, 125, 140, 239]


def simulate_heavy_ball(lrs, noise):
    """x_{t+1} = x_t - eta_t (lambda x_t + xi_t) + beta (x_t - x_{t-1}), from x = 0."""
    x = np.zeros(noise.shape[1])
    x_prev = np.zeros_like(x)
    path = []
    for eta, xi in zip(lrs, noise):
        x, x_prev = x - eta * (CURVATURE * x + xi) + MOMENTUM * (x - x_prev), x
        path.append(x)
    return np.array(path)


def simulate_keras_sgd(lrs, noise):
    """keras.optimizers.SGD(momentum=beta): v = beta v - eta g; w = w + v."""
    w = np.zeros(noise.shape[1])
    v = np.zeros_like(w)
    path = []
    for eta, xi in zip(lrs, noise):
        g = CURVATURE * w + xi
        v = MOMENTUM * v - eta * g
        w = w + v
        path.append(w)
    return np.array(path)


def simulate_pytorch_sgd(lrs, noise):
    """torch.optim.SGD(momentum=beta): buf = beta buf + g; w = w - eta buf."""
    w = np.zeros(noise.shape[1])
    buf = np.zeros_like(w)
    path = []
    for eta, xi in zip(lrs, noise):
        buf = MOMENTUM * buf + (CURVATURE * w + xi)
        w = w - eta * buf
        path.append(w)
    return np.array(path)


@pytest.fixture(scope="module")
def drop_noise():
    rng = np.random.default_rng(20240601)
    return rng.normal(0.0, math.sqrt(NOISE / BATCH), size=(len(DROP_SCHEDULE), CHAINS))


def assert_variance_within_sampling_error(paths, predicted, steps):
    # The chains start at 0 and the noise has mean 0, so x_t is Gaussian with
    # mean exactly 0: mean(x^2) estimates Var with standard error
    # sqrt(2 / N) Var (chi-square with N degrees of freedom).
    for t in steps:
        estimate = np.mean(paths[t] ** 2)
        standard_error = math.sqrt(2.0 / paths.shape[1]) * predicted[t]
        assert abs(estimate - predicted[t]) < 5 * standard_error, (
            t,
            estimate,
            predicted[t],
        )


def test_recursion_matches_simulated_heavy_ball_through_a_learning_rate_drop(
    drop_noise,
):
    predicted = covariance_recursion(DROP_SCHEDULE, MOMENTUM, CURVATURE, NOISE, BATCH)
    paths = simulate_heavy_ball(DROP_SCHEDULE, drop_noise)
    assert_variance_within_sampling_error(paths, predicted, CHECK_STEPS)
    # The drop is visible: the cloud shrinks by about the drop factor, but
    # only after a transient in which it first widens (~2.7x here): the
    # velocity spread built up at the high rate meets a 10x weaker restoring
    # force. The simulation confirms the overshoot at steps 121-140.
    assert predicted[119] / predicted[239] == pytest.approx(10, rel=0.05)
    assert predicted[125] > 2.5 * predicted[119]


def test_keras_sgd_form_is_the_heavy_ball_process_across_the_drop(drop_noise):
    keras_paths = simulate_keras_sgd(DROP_SCHEDULE, drop_noise)
    heavy_ball = simulate_heavy_ball(DROP_SCHEDULE, drop_noise)
    np.testing.assert_allclose(keras_paths, heavy_ball, rtol=0, atol=1e-11)
    predicted = covariance_recursion(DROP_SCHEDULE, MOMENTUM, CURVATURE, NOISE, BATCH)
    assert_variance_within_sampling_error(keras_paths, predicted, CHECK_STEPS)


def test_pytorch_sgd_form_departs_from_heavy_ball_only_at_the_drop(drop_noise):
    # Its velocity is rescaled by eta_t / eta_{t-1} at a change: the same
    # process while eta is constant, a different one across the drop.
    torch_paths = simulate_pytorch_sgd(DROP_SCHEDULE, drop_noise[:, :100])
    heavy_ball = simulate_heavy_ball(DROP_SCHEDULE, drop_noise[:, :100])
    np.testing.assert_allclose(torch_paths[:120], heavy_ball[:120], rtol=0, atol=1e-11)
    assert np.max(np.abs(torch_paths[121] - heavy_ball[121])) > 0.1


def test_recursion_with_sampling_correction_scales_the_noise():
    lrs = np.r_[np.full(30, 0.1), np.full(30, 0.01)]
    n, batch = 1000, 64
    corrected = covariance_recursion(lrs, 0.9, 1.0, 2.0, batch, sampling_correction=n)
    scaled = covariance_recursion(lrs, 0.9, 1.0, 2.0 * (n - batch) / (n - 1), batch)
    np.testing.assert_allclose(corrected, scaled, rtol=1e-14)
    full_batch = covariance_recursion(lrs, 0.9, 1.0, 2.0, 10, sampling_correction=10)
    np.testing.assert_array_equal(full_batch, 0.0)


# ---------------------------------------------------------------------------
# covariance_recursion: closed forms and brute force
# ---------------------------------------------------------------------------


def test_recursion_of_plain_sgd_matches_the_geometric_sum():
    # beta = 0 from zero: Var x_t = q (1 - a^{2t}) / (1 - a^2), t = 1, 2, ...
    lr, lam, s2 = 0.3, 2.0, 5.0
    a, q = 1 - lr * lam, lr**2 * s2
    t = np.arange(1, 41)
    expected = q * (1 - a ** (2 * t)) / (1 - a**2)
    np.testing.assert_allclose(
        covariance_recursion(np.full(40, lr), 0.0, lam, s2, 1), expected, rtol=1e-13
    )


@SETTINGS
@given(
    st.floats(0.0, 0.99),
    st.floats(0.1, 10.0),
    st.lists(st.floats(0.0, 0.99), min_size=1, max_size=30),
    st.floats(0.0, 10.0),
)
def test_recursion_equals_explicit_matrix_products(momentum, lam, fractions, noise):
    lrs = np.array(fractions) * 2 * (1 + momentum) / lam
    full = covariance_recursion(lrs, momentum, lam, noise, 1, return_full=True)
    expected = matrix_recursion(lrs, momentum, lam, noise)
    scale = 1.0 + np.max(np.abs(expected))
    np.testing.assert_allclose(
        full.variance, expected[:, 0, 0], rtol=1e-9, atol=1e-12 * scale
    )
    np.testing.assert_allclose(
        full.covariance, expected[:, 0, 1], rtol=1e-9, atol=1e-12 * scale
    )
    np.testing.assert_allclose(
        full.previous_variance, expected[:, 1, 1], rtol=1e-9, atol=1e-12 * scale
    )
    # A covariance matrix stays positive semi-definite.
    assert np.all(full.variance >= 0)
    assert np.all(
        full.covariance**2
        <= full.variance * full.previous_variance * (1 + 1e-9) + 1e-300
    )


def test_recursion_converges_to_the_stationary_variance():
    lr, momentum, lam = 0.05, 0.9, 3.0
    steps = int(40 * relaxation_steps(lr, momentum, lam))
    var = covariance_recursion(np.full(steps, lr), momentum, lam, 2.0, 16)
    assert var[-1] == pytest.approx(
        stationary_variance(lr, momentum, lam, 2.0, 16), rel=1e-10
    )


def test_stationary_start_is_a_fixed_point_under_a_constant_rate():
    lam = np.array([0.5, 2.0, 30.0])
    full = covariance_recursion(
        np.full(50, 0.1), 0.9, lam, 1.0, 1, initial="stationary", return_full=True
    )
    expected = stationary_covariance(0.1, 0.9, lam, 1.0, 1)
    for got, want in zip(full, expected):
        np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), rtol=1e-11)


def test_a_stationary_start_of_an_empty_schedule_says_the_schedule_is_empty():
    # It named lr*curvature = 0.0, a rate the user never gave.
    with pytest.raises(ValueError, match=r"first learning rate, and `lrs` is empty. "
                       r"Received: lrs=\[\]$"):
        covariance_recursion([], 0.9, 1.0, 1.0, 1, initial="stationary")


def test_stationary_start_follows_an_equilibrated_cloud_through_a_drop():
    # Started at the stationary covariance of lrs[0] = 0.1, the cloud stays
    # there until the drop and relaxes to the stationary variance at 0.01:
    # 10 * (3.8 - 0.01) / (3.8 - 0.1) narrower.
    lrs = np.r_[np.full(10, 0.1), np.full(2000, 0.01)]
    var = covariance_recursion(lrs, 0.9, 1.0, 1.0, 1, initial="stationary")
    assert var[9] == pytest.approx(
        stationary_variance(0.1, 0.9, 1.0, 1.0, 1), rel=1e-12
    )
    assert var[-1] == pytest.approx(
        stationary_variance(0.01, 0.9, 1.0, 1.0, 1), rel=1e-10
    )
    assert var[9] / var[-1] == pytest.approx(10 * 3.79 / 3.7, rel=1e-10)


def test_recursion_continues_from_a_returned_state():
    lrs = np.r_[np.full(25, 0.2), np.full(25, 0.02)]
    lam = np.array([0.1, 1.0, 5.0])
    whole = covariance_recursion(lrs, 0.9, lam, 1.0, 4, return_full=True)
    first = covariance_recursion(lrs[:17], 0.9, lam, 1.0, 4, return_full=True)
    rest = covariance_recursion(
        lrs[17:], 0.9, lam, 1.0, 4, initial=[x[-1] for x in first], return_full=True
    )
    np.testing.assert_allclose(rest.variance, whole.variance[17:], rtol=1e-12)


def test_vectorised_recursion_equals_a_loop_over_directions():
    rng = np.random.default_rng(0)
    lam = rng.uniform(0.01, 30.0, size=40)
    s2 = rng.uniform(0.0, 3.0, size=40)
    lrs = np.r_[np.full(60, 0.1), np.full(40, 0.01)]
    together = covariance_recursion(lrs, 0.9, lam, s2, 8, sampling_correction=1000)
    one_by_one = np.stack(
        [
            covariance_recursion(lrs, 0.9, l, s, 8, sampling_correction=1000)
            for l, s in zip(lam, s2)
        ],
        axis=1,
    )
    np.testing.assert_allclose(together, one_by_one, rtol=1e-13)


@pytest.mark.parametrize(
    "curvature, noise, shape",
    [
        (1.0, 1.0, (7,)),
        ([1.0, 2.0], 1.0, (7, 2)),
        ([[1.0], [2.0]], [1.0, 2.0, 3.0], (7, 2, 3)),
    ],
)
def test_recursion_output_has_one_row_per_step_then_the_directions_shape(
    curvature, noise, shape
):
    assert (
        covariance_recursion(np.full(7, 0.1), 0.5, curvature, noise, 1).shape == shape
    )


def test_record_at_keeps_only_the_requested_steps():
    lrs = np.linspace(0.1, 0.01, 30)
    lam = np.array([0.5, 2.0])
    every = covariance_recursion(lrs, 0.9, lam, 1.0, 1, return_full=True)
    some = covariance_recursion(
        lrs, 0.9, lam, 1.0, 1, return_full=True, record_at=[0, 9, 29]
    )
    for got, want in zip(some, every):
        np.testing.assert_array_equal(got, want[[0, 9, 29]])


def test_recursion_over_many_directions_is_each_direction_on_its_own():
    # Vectorised over directions (its speed is bench_probes.py's business):
    # every direction's variance is the one the recursion gives it alone.
    rng = np.random.default_rng(1)
    lam = rng.uniform(0.0, 30.0, size=10_000)
    s2 = rng.uniform(0.0, 1.0, size=10_000)
    lrs = np.r_[np.full(500, 0.1), np.full(500, 0.01)]
    var = covariance_recursion(lrs, 0.9, lam, s2, 64, record_at=[999])
    assert var.shape == (1, 10_000)
    for i in rng.choice(10_000, size=5, replace=False):
        alone = covariance_recursion(lrs, 0.9, lam[i:i + 1], s2[i:i + 1], 64, record_at=[999])
        np.testing.assert_allclose(var[0, i], alone[0, 0], rtol=1e-12)


# ---------------------------------------------------------------------------
# Stability
# ---------------------------------------------------------------------------

# momentum 0.5: the edge 2 (1 + beta) = 3 and the products below are exact.
EDGE_MOMENTUM, EDGE_CURVATURE, EDGE_LR = 0.5, 1.5, 2.0  # 2.0 * 1.5 == 3.0


def test_stability_edges_are_exact():
    below = np.nextafter(EDGE_LR, 0.0)
    assert not is_stable(EDGE_LR, EDGE_MOMENTUM, EDGE_CURVATURE)
    assert is_stable(below, EDGE_MOMENTUM, EDGE_CURVATURE)
    assert not is_stable(0.0, EDGE_MOMENTUM, EDGE_CURVATURE)
    assert is_stable(1e-300, EDGE_MOMENTUM, EDGE_CURVATURE)
    assert not is_stable(0.1, EDGE_MOMENTUM, -1.0)
    assert stability_margin(EDGE_LR, EDGE_MOMENTUM, EDGE_CURVATURE) == 0.0
    assert stability_margin(1.0, EDGE_MOMENTUM, EDGE_CURVATURE) == pytest.approx(0.5)
    assert stability_margin(2.0, EDGE_MOMENTUM, 3.0) == pytest.approx(-1.0)


def test_recursion_flags_the_first_step_at_the_stability_edge():
    lrs = np.array([0.1, 0.1, EDGE_LR, 0.1, EDGE_LR])
    with pytest.raises(ValueError, match=r"Step 2 .* >= 2\*\(1\+momentum\) = 3"):
        covariance_recursion(lrs, EDGE_MOMENTUM, [0.1, EDGE_CURVATURE], 1.0, 1)


def test_recursion_accepts_a_step_just_inside_the_edge():
    lrs = np.full(5, np.nextafter(EDGE_LR, 0.0))
    assert np.all(
        np.isfinite(covariance_recursion(lrs, EDGE_MOMENTUM, EDGE_CURVATURE, 1.0, 1))
    )


def test_recursion_flags_negative_curvature():
    with pytest.raises(ValueError, match="negative curvature"):
        covariance_recursion(np.full(3, 0.1), 0.9, [1.0, -0.5], 1.0, 1)


def test_recursion_allows_flat_directions_and_zero_rates():
    # Marginal, not divergent: with lambda = 0 the velocity is an AR(1)
    # process and the position a random walk, so the variance keeps growing.
    var = covariance_recursion(np.r_[0.0, np.full(50, 0.1)], 0.9, 0.0, 1.0, 1)
    assert var[0] == 0.0
    assert np.all(np.diff(var[1:]) > 0)


def test_allow_unstable_computes_the_diverging_recursion():
    lrs = np.full(20, EDGE_LR * 1.1)
    var = covariance_recursion(
        lrs, EDGE_MOMENTUM, EDGE_CURVATURE, 1.0, 1, allow_unstable=True
    )
    expected = matrix_recursion(lrs, EDGE_MOMENTUM, EDGE_CURVATURE, 1.0)[:, 0, 0]
    np.testing.assert_allclose(var, expected, rtol=1e-9)
    assert var[-1] > 1e3 * var[0]


@SETTINGS
@given(st.floats(0.0, 0.99), st.floats(-1.0, 1.2), st.floats(0.1, 10.0))
def test_spectral_radius_is_the_largest_eigenvalue_modulus(momentum, fraction, lam):
    lr = abs(fraction) * 2 * (1 + momentum) / lam
    lam = lam if fraction >= 0 else -lam
    expected = np.max(np.abs(np.linalg.eigvals(transition_matrix(lr, momentum, lam))))
    # Eigenvalues of the defective (double-root) case are only accurate to sqrt(eps).
    assert spectral_radius(lr, momentum, lam) == pytest.approx(
        expected, rel=1e-7, abs=1e-7
    )


def test_spectral_radius_is_one_on_both_edges():
    assert spectral_radius(0.0, 0.9, 3.0) == 1.0
    assert spectral_radius(EDGE_LR, EDGE_MOMENTUM, EDGE_CURVATURE) == 1.0


def test_relaxation_steps_small_lr_limit():
    # The slow root is 1 - eta lambda / (1 - beta) + O((eta lambda)^2).
    for momentum in (0.0, 0.5, 0.9):
        for eta_lambda in (1e-6, 1e-8):
            steps = relaxation_steps(eta_lambda, momentum, 1.0)
            assert steps == pytest.approx((1 - momentum) / eta_lambda, rel=1e-4)


def test_relaxation_steps_of_plain_sgd_is_the_e_folding_time_of_the_mean():
    # beta = 0: the mean is (1 - eta lambda)^t x_0.
    lr, lam = 0.01, 2.0
    steps = relaxation_steps(lr, 0.0, lam)
    assert (1 - lr * lam) ** steps == pytest.approx(math.exp(-1), rel=1e-12)


def test_relaxation_steps_has_a_momentum_floor():
    # Complex roots have modulus sqrt(beta) whatever the curvature.
    for lam in (1.0, 10.0, 30.0):
        assert relaxation_steps(0.1, 0.9, lam) == pytest.approx(
            -2 / math.log(0.9), rel=1e-12
        )


def test_relaxation_steps_is_infinite_where_nothing_relaxes():
    steps = relaxation_steps(
        np.array([0.0, 0.1, 0.1, EDGE_LR]),
        EDGE_MOMENTUM,
        np.array([1.0, 0.0, -1.0, EDGE_CURVATURE]),
    )
    assert np.all(np.isinf(steps))


# ---------------------------------------------------------------------------
# covariance_recursion: bad input
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(lrs=0.1), ValueError, "1-D array with one learning rate per step"),
        (dict(lrs=[0.1, -0.1]), ValueError, r"Received: lrs\[1\]=-0.1"),
        (dict(lrs=[0.1, np.inf]), ValueError, r"lrs\[1\]=inf"),
        (dict(curvature=[1.0, np.nan]), ValueError, r"curvature\[1\]=nan"),
        (
            dict(curvature=[1.0, 2.0], noise_variance=[1.0, 2.0, 3.0]),
            ValueError,
            "broadcast",
        ),
        (dict(momentum=1.0), ValueError, "momentum=1.0"),
        (dict(batch_size=0), ValueError, "batch_size=0"),
        (dict(batch_size=True), TypeError, "batch_size"),
        (dict(sampling_correction=32), ValueError, "sampling_correction=32"),
        (dict(sampling_correction=1), ValueError, "sampling_correction=1"),
        (dict(initial="equilibrium"), ValueError, "initial='equilibrium'"),
        (dict(initial=(1.0, 2.0)), ValueError, "triple"),
        (dict(initial=(1.0, 2.0, 1.0)), ValueError, "positive semi-definite"),
        (dict(initial=(-1.0, 0.0, 1.0)), ValueError, "initial.variance"),
        (dict(record_at=[3]), ValueError, r"record_at\[0\]=3"),
        (dict(record_at=[1, 1]), ValueError, "strictly increasing"),
        (dict(curvature="sharp"), TypeError, "curvature"),
        (dict(lrs=[0.1, True]), TypeError,
         r"`lrs` must be .*, not booleans\. Received: lrs=\[0\.1, True\]$"),
        (dict(return_full="no"), TypeError,
         r"`return_full` must be True or False\. Received: return_full='no'$"),
    ],
)
def test_recursion_rejects_bad_arguments(kwargs, error, message):
    args = dict(
        lrs=[0.1, 0.1, 0.1],
        momentum=0.9,
        curvature=1.0,
        noise_variance=1.0,
        batch_size=64,
    )
    args.update(kwargs)
    lrs = args.pop("lrs")
    with pytest.raises(error, match=message):
        covariance_recursion(lrs, **args)


# ---------------------------------------------------------------------------
# shuffled_pass_variance
# ---------------------------------------------------------------------------


def heavy_ball_final_positions(lrs, momentum, curvature, batch_size, gradients, orders):
    """x_T of the scalar heavy-ball process from x = 0, driven by the batch
    means of `gradients` taken in each order (one row of indices per run)."""
    finals = []
    for order in orders:
        x = previous = 0.0
        for t, lr in enumerate(lrs):
            batch = gradients[order[t * batch_size:(t + 1) * batch_size]]
            x, previous = x - lr * (curvature * x + np.mean(batch)) + momentum * (x - previous), x
        finals.append(x)
    return np.array(finals)


@SETTINGS
@given(
    st.lists(st.floats(-3.0, 3.0), min_size=4, max_size=6),
    st.sampled_from([(1, 1), (1, 2), (1, 3), (2, 1), (2, 2)]),  # (B, T), T * B <= n
    st.floats(0.0, 0.95),
    st.floats(0.0, 4.0),
    st.floats(0.01, 0.5),
)
def test_shuffled_pass_equals_enumerating_every_order(values, shape, momentum, lam, lr):
    gradients = np.array(values)
    n = len(gradients)
    batch, steps = shape
    lrs = np.full(steps, lr)
    if lr * lam >= 2 * (1 + momentum):
        return
    orders = np.array(list(itertools.permutations(range(n))))  # every order equally likely
    expected = np.var(heavy_ball_final_positions(lrs, momentum, lam, batch, gradients, orders))
    got = shuffled_pass_variance(lrs, momentum, lam, np.var(gradients), batch, n)
    assert got == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_a_whole_pass_of_plain_sgd_on_a_flat_direction_has_no_spread():
    # x_T = -eta times the sum over all n examples of their deviations: zero.
    assert shuffled_pass_variance(np.full(5, 0.3), 0.0, 0.0, 2.0, 4, 20) == 0.0


def test_one_step_is_the_recursion_with_the_finite_population_factor():
    one = shuffled_pass_variance([0.1], 0.9, 2.0, 3.0, 8, 50)
    assert one == pytest.approx(
        covariance_recursion([0.1], 0.9, 2.0, 3.0, 8, sampling_correction=50)[-1], rel=1e-14)


def test_draw_noise_alone_is_the_recursion_with_independent_batches():
    lrs = np.r_[np.full(6, 0.2), np.full(6, 0.02)]
    got = shuffled_pass_variance(lrs, 0.9, 3.0, 0.0, 8, 100, independent_variance=5.0)
    np.testing.assert_allclose(got, covariance_recursion(lrs, 0.9, 3.0, 5.0, 8)[-1],
                               rtol=1e-12)


def test_a_large_training_set_forgets_the_anticorrelation():
    lrs = np.full(15, 0.02)
    got = shuffled_pass_variance(lrs, 0.9, 3.0, 1.0, 64, 10**12)
    assert got == pytest.approx(covariance_recursion(lrs, 0.9, 3.0, 1.0, 64)[-1], rel=1e-9)


def test_after_a_drop_the_pass_halves_the_independent_noise_prediction():
    # The quick setting's fork after the drop: eta 0.02, lambda 3.2, 15
    # batches of 64 out of 1000. The responses h_t keep one sign over the
    # window, so the anticorrelated noises cancel: by the formula, 0.544 of
    # the recursion's (n - B) / (n - 1) prediction; before the drop (eta 0.2,
    # fast rotation) 1.058.
    after = shuffled_pass_variance(np.full(15, 0.02), 0.9, 3.2, 1.0, 64, 1000)
    before = shuffled_pass_variance(np.full(15, 0.2), 0.9, 2.7, 1.0, 64, 1000)
    iid_after = covariance_recursion(np.full(15, 0.02), 0.9, 3.2, 1.0, 64,
                                     sampling_correction=1000)[-1]
    iid_before = covariance_recursion(np.full(15, 0.2), 0.9, 2.7, 1.0, 64,
                                      sampling_correction=1000)[-1]
    assert after / iid_after == pytest.approx(0.5438, abs=1e-4)
    assert before / iid_before == pytest.approx(1.0580, abs=1e-4)


def test_shuffled_pass_is_computed_per_direction():
    lrs = np.full(4, 0.1)
    got = shuffled_pass_variance(lrs, 0.5, [1.0, 2.0], [3.0, 1.0], 2, 10,
                                 independent_variance=[0.0, 0.5])
    each = [shuffled_pass_variance(lrs, 0.5, 1.0, 3.0, 2, 10),
            shuffled_pass_variance(lrs, 0.5, 2.0, 1.0, 2, 10, independent_variance=0.5)]
    np.testing.assert_allclose(got, each, rtol=1e-14)


@pytest.mark.parametrize("args, kwargs, message", [
    (([0.1] * 3, 0.9, 1.0, 1.0, 4, 11), {}, r"`n` must be at least len\(lrs\) \* batch_size.*Received: n=11"),
    (([0.1], 0.9, 1.0, -1.0, 4, 10), {}, r"`example_variance`.*Received"),
    (([0.1], 0.9, 1.0, 1.0, 4, 10), dict(independent_variance=-0.1), r"`independent_variance`.*Received"),
    (([0.1], 1.0, 1.0, 1.0, 4, 10), {}, r"`momentum`.*Received"),
    (([0.1], 0.9, 1.0, 1.0, 0, 10), {}, r"`batch_size`.*Received"),
    (([0.1], 0.9, 1.0, 1.0, 1, 1), {}, r"`n`.*Received"),
    (([4.0], 0.9, 1.0, 1.0, 1, 10), {}, r"unstable.*Received"),
    (([0.1], 0.9, [1.0, 2.0], [1.0, 2.0, 3.0], 1, 10), {}, r"must broadcast to one shape"),
])
def test_shuffled_pass_rejects_bad_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        shuffled_pass_variance(*args, **kwargs)


@pytest.mark.parametrize("function", [heavy_ball.is_stable, heavy_ball.stability_margin,
                                      heavy_ball.spectral_radius, heavy_ball.relaxation_steps])
def test_stability_functions_name_shapes_that_do_not_broadcast(function):
    with pytest.raises(ValueError, match=r"`lr`, `curvature` must broadcast.*"
                                         r"lr=\(2,\), curvature=\(3,\)"):
        function([0.1, 0.2], 0.9, [1.0, 2.0, 3.0])


def test_stationary_variance_names_shapes_that_do_not_broadcast():
    with pytest.raises(ValueError, match="`lr`, `curvature`, `noise_variance` must broadcast"):
        heavy_ball.stationary_variance([0.1, 0.2], 0.9, 1.0, [1.0, 2.0, 3.0], 4)


@pytest.mark.parametrize("momentum", ["0.9", True, None])
def test_a_momentum_that_is_not_a_number_is_a_type_error(momentum):
    with pytest.raises(TypeError, match="`momentum` must be a number in"):
        heavy_ball.spectral_radius(0.1, momentum, 1.0)


def test_one_string_is_not_a_list_of_layer_names():
    with pytest.raises(TypeError, match="`names` must be a list of layer names.*Received: names='ab'"):
        iterate_statistics.IterateStatistics(names="ab")


def test_names_that_are_no_sequence_are_named():
    # list(3) raised "'int' object is not iterable".
    with pytest.raises(TypeError, match=r"`names` must be a list of layer names. Received: names=3$"):
        iterate_statistics.IterateStatistics(names=3)


def test_arguments_of_the_wrong_type_are_named_by_their_type_not_as_a_value():
    # "Received: replica_weights='float'" read as if the string 'float' was given.
    with pytest.raises(TypeError, match=r"Received: replica_weights of type float$"):
        replica_variance(-0.1)
    with pytest.raises(TypeError, match=r"Received: directions of type list$"):
        iterate_statistics.IterateStatistics(directions=[1, 2])


@pytest.mark.parametrize("direction, error, match", [
    (np.zeros(3), ValueError, r"`directions\['u'\]` must be finite and non-zero.*"
                              r"Received: directions\['u'\] with squared norm 0\.0$"),
    ("abc", TypeError, r"`directions\['u'\]`.*Received: directions\['u'\]=")])
def test_a_bad_direction_given_at_construction_is_named_by_its_entry(direction, error, match):
    # The error named `direction`, an argument the call did not have.
    with pytest.raises(error, match=match):
        iterate_statistics.IterateStatistics(directions={"u": direction})


# ---------------------------------------------------------------------------
# split_gradient_noise
# ---------------------------------------------------------------------------


def test_split_of_two_draws_by_hand():
    split = split_gradient_noise([1.5, -1.5, 0.0], [0.5, -0.5, 1.0])
    # means 0 and 1/3; cross term ((1.5)(1/6) + (-1.5)(-5/6) + 0) / 3
    assert split.example_variance == pytest.approx((1.5 / 6 + 1.5 * 5 / 6) / 3, rel=1e-14)
    assert split.draw_variance == pytest.approx((1.0 + 1.0 + 1.0) / 3 / 2, rel=1e-14)


def test_split_recovers_both_parts_of_a_simulated_noise():
    rng = np.random.default_rng(0)
    g = rng.normal(0.0, 2.0, size=200_000)  # between examples: variance 4
    a = g + rng.normal(0.0, 1.0, size=g.size)  # each draw: variance 1
    b = g + rng.normal(0.0, 1.0, size=g.size)
    split = split_gradient_noise(a, b)
    # standard errors about 0.02 and 0.004
    assert split.example_variance == pytest.approx(np.var(g), abs=0.06)
    assert split.draw_variance == pytest.approx(1.0, abs=0.012)


def test_split_of_identical_draws_is_all_between_examples():
    split = split_gradient_noise(POPULATION, POPULATION)
    assert split.example_variance == pytest.approx(np.var(POPULATION), rel=1e-14)
    assert split.draw_variance == 0.0


def test_split_is_computed_per_direction_along_axis_1():
    a = np.stack([POPULATION, 2 * POPULATION], axis=1)
    b = np.stack([POPULATION[::-1], POPULATION], axis=1)
    split = split_gradient_noise(a, b)
    for k in range(2):
        one = split_gradient_noise(a[:, k], b[:, k])
        assert split.example_variance[k] == pytest.approx(one.example_variance, rel=1e-14)
        assert split.draw_variance[k] == pytest.approx(one.draw_variance, rel=1e-14)


@pytest.mark.parametrize("a, b, message", [
    ([1.0, 2.0], [1.0], r"`second_draw` must have the shape of `first_draw`.*Received"),
    ([], [], r"`first_draw` must have shape.*Received"),
    ([1.0, np.nan], [1.0, 2.0], r"`first_draw`.*Received"),
])
def test_split_rejects_bad_arguments(a, b, message):
    with pytest.raises(ValueError, match=message):
        split_gradient_noise(a, b)


# ---------------------------------------------------------------------------
# minibatch_noise_variance
# ---------------------------------------------------------------------------

POPULATION = np.array([0.3, -1.2, 2.5, 0.0, 4.1, -0.7])


def test_noise_without_replacement_matches_enumerating_every_minibatch():
    for batch in (1, 2, 3, 6):
        means = [np.mean(c) for c in itertools.combinations(POPULATION, batch)]
        expected = np.var(means)  # all subsets are equally likely
        got = minibatch_noise_variance(POPULATION, batch, n=len(POPULATION))
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_noise_with_replacement_matches_enumerating_every_ordered_draw():
    for batch in (1, 2, 3):
        means = [np.mean(c) for c in itertools.product(POPULATION, repeat=batch)]
        assert minibatch_noise_variance(POPULATION, batch) == pytest.approx(
            np.var(means), rel=1e-12
        )


def test_noise_is_computed_per_direction_along_axis_1():
    g = np.stack([POPULATION, 2 * POPULATION], axis=1)
    got = minibatch_noise_variance(g, 2, n=6)
    np.testing.assert_allclose(
        got, np.array([1, 4]) * minibatch_noise_variance(POPULATION, 2, n=6), rtol=1e-14
    )


def test_noise_plugs_into_the_recursion_with_batch_size_one():
    lrs = np.full(20, 0.05)
    via_noise = covariance_recursion(
        lrs, 0.9, 2.0, minibatch_noise_variance(POPULATION, 2, n=6), 1
    )
    via_args = covariance_recursion(
        lrs, 0.9, 2.0, np.var(POPULATION), 2, sampling_correction=6
    )
    np.testing.assert_allclose(via_noise, via_args, rtol=1e-14)


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((POPULATION, 7, 6), ValueError, "n=6"),
        ((POPULATION, 2, 5), ValueError, "number of examples given"),
        ((POPULATION, 0, None), ValueError, "batch_size=0"),
        ((POPULATION, 2, 1), ValueError, "n=1"),
        (([], 2, None), ValueError, "at least one example"),
        (([1.0, np.nan], 1, None), ValueError, r"per_example_projections\[1\]=nan"),
        ((np.zeros((2, 2, 2)), 1, None), ValueError, "shape"),
    ],
)
def test_noise_rejects_bad_arguments(args, error, message):
    with pytest.raises(error, match=message):
        minibatch_noise_variance(*args)


# ---------------------------------------------------------------------------
# IterateStatistics
# ---------------------------------------------------------------------------

layer_shapes = st.lists(
    hnp.array_shapes(min_dims=0, max_dims=2, max_side=3), min_size=1, max_size=3
)
values = st.floats(-1e3, 1e3, allow_subnormal=False)


@st.composite
def iterate_sequences(draw):
    shapes = draw(layer_shapes)
    count = draw(st.integers(1, 8))
    offsets = [draw(hnp.arrays(np.float64, shape, elements=values)) for shape in shapes]
    return [
        [
            offset + draw(hnp.arrays(np.float64, shape, elements=values))
            for shape, offset in zip(shapes, offsets)
        ]
        for _ in range(count)
    ]


def stacked(iterates, layer):
    return np.stack([it[layer] for it in iterates])


def feed(stats, iterates):
    for weights in iterates:
        stats.update(weights)
    return stats


@SETTINGS
@given(iterate_sequences())
def test_running_mean_and_variance_equal_numpy_on_the_stacked_iterates(iterates):
    stats = feed(IterateStatistics(), iterates)
    assert stats.count == len(iterates)
    for layer, (mean, variance) in enumerate(zip(stats.mean(), stats.variance())):
        x = stacked(iterates, layer)
        # Arrays of the layer's shape, a 0-d layer's included (its variance
        # was a NumPy scalar).
        for result in (mean, variance):
            assert isinstance(result, np.ndarray) and result.shape == x.shape[1:]
        scale = 1.0 + np.max(np.abs(x)) ** 2
        np.testing.assert_allclose(
            mean, x.mean(axis=0), rtol=1e-12, atol=1e-12 * math.sqrt(scale)
        )
        np.testing.assert_allclose(
            variance, x.var(axis=0), rtol=1e-9, atol=1e-12 * scale
        )
        if len(iterates) > 1:
            np.testing.assert_allclose(
                stats.variance(ddof=1)[layer],
                x.var(axis=0, ddof=1),
                rtol=1e-9,
                atol=1e-12 * scale,
            )


@SETTINGS
@given(iterate_sequences(), st.integers(0, 2**32 - 1))
def test_projected_variance_equals_the_variance_of_direct_projections(iterates, seed):
    rng = np.random.default_rng(seed)
    direction = [rng.normal(size=np.shape(w)) + 0.1 for w in iterates[0]]
    flat = np.concatenate([d.ravel() for d in direction])
    stats = feed(
        IterateStatistics(directions={"layers": direction, "flat": 7.0 * flat}),
        iterates,
    )
    unit = flat / np.linalg.norm(flat)
    projections = [np.concatenate([w.ravel() for w in it]) @ unit for it in iterates]
    scale = 1.0 + max(abs(p) for p in projections) ** 2
    for name in ("layers", "flat"):
        assert stats.projected_variance(name) == pytest.approx(
            np.var(projections), rel=1e-8, abs=1e-11 * scale
        )
        assert stats.projected_mean(name) == pytest.approx(
            np.mean(projections), rel=1e-10, abs=1e-10 * math.sqrt(scale)
        )


def test_projected_variance_sees_correlations_a_diagonal_misses():
    # Two weights moving in opposition: each varies, their sum does not.
    stats = IterateStatistics(
        directions={"sum": [np.array([1.0, 1.0])], "diff": [np.array([1.0, -1.0])]}
    )
    feed(stats, [[np.array([t, -t])] for t in (0.0, 1.0, 2.0, 3.0)])
    assert stats.projected_variance("sum") == pytest.approx(0.0, abs=1e-15)
    assert stats.projected_variance("diff") == pytest.approx(
        2 * np.var([0.0, 1, 2, 3]), rel=1e-14
    )


def test_welford_keeps_precision_for_a_tiny_spread_far_from_zero():
    # E[w^2] - E[w]^2 would lose every digit here (1e12 vs a variance of 1e-6).
    rng = np.random.default_rng(3)
    iterates = [[1e6 + 1e-3 * rng.normal(size=5)] for _ in range(200)]
    stats = feed(IterateStatistics(), iterates)
    np.testing.assert_allclose(
        stats.variance()[0], stacked(iterates, 0).var(axis=0), rtol=1e-6
    )


def test_float32_weights_are_accumulated_in_float64():
    iterates = [
        [np.array([1.0, 2.0], np.float32) + np.float32(t) * np.float32(1e-4)]
        for t in range(10)
    ]
    stats = feed(IterateStatistics(), iterates)
    assert stats.mean()[0].dtype == np.float64
    np.testing.assert_allclose(
        stats.variance()[0],
        stacked(iterates, 0).astype(np.float64).var(axis=0),
        rtol=1e-9,
    )


@pytest.mark.parametrize("accumulator", ["float64", "float32"])
@pytest.mark.parametrize("weights", [np.float32, np.float64, np.int64])
def test_update_is_welfords_arithmetic_bit_for_bit(accumulator, weights):
    # `update` works in buffers it reuses across layers and updates; the
    # numbers must be those of the plain expressions, in the dtype of
    # w - mean, rounded into the accumulators (a small layer after a large
    # one, and a large one again, reuse the same buffers). Float32
    # accumulators take the weights rounded to float32.
    rng = np.random.default_rng(11)
    shapes = [(40, 30), (3,), (7, 5, 2), ()]
    iterates = [[(rng.normal(size=s) * 50).astype(weights) for s in shapes]
                for _ in range(6)]
    stats = feed(IterateStatistics(dtype=accumulator), iterates)
    means = [np.zeros(s, accumulator) for s in shapes]
    m2s = [np.zeros(s, accumulator) for s in shapes]
    for n, iterate in enumerate(iterates, start=1):
        for w, mean, m2 in zip(iterate, means, m2s):
            if accumulator == "float32":
                w = w.astype(np.float32)
            delta = w - mean
            mean += delta / n
            delta *= w - mean
            m2 += delta
    for got, want in zip(stats.mean(), means):
        np.testing.assert_array_equal(got, want.astype(np.float64))
    for got, m2 in zip(stats.variance(), m2s):
        np.testing.assert_array_equal(got, m2.astype(np.float64) / len(iterates))


@pytest.mark.parametrize("accumulator", ["float64", "float32"])
def test_bfloat16_weights_are_taken_as_their_float32_values(accumulator):
    # What the variables of a Keras "bfloat16" policy convert to; ml_dtypes'
    # bfloat16 is no NumPy floating type. Its values are float32 values.
    import ml_dtypes

    w = np.array([0.5, 1.5], ml_dtypes.bfloat16)
    stats = feed(IterateStatistics(dtype=accumulator), [[w], [w * 2]])
    np.testing.assert_array_equal(stats.mean()[0], [0.75, 2.25])
    np.testing.assert_array_equal(stats.variance()[0], [0.0625, 0.5625])


def test_float32_accumulators_fed_float64_weights_give_the_rounded_iterates_variance():
    # A cloud 16 float32 spacings wide around 0.7, the width a learning-rate
    # drop leaves. Welford's first delta is w itself: met in float64 by a
    # mean rounded to float32, it once left M2 an error of |w| times half a
    # spacing, and half the variances came out negative.
    rng = np.random.default_rng(0)
    iterates = 0.7 + 1e-6 * rng.standard_normal((100, 1000))
    stats = feed(IterateStatistics(dtype="float32"), [[w] for w in iterates])
    rounded = iterates.astype(np.float32).astype(np.float64).var(axis=0)
    assert np.all(stats.variance()[0] >= 0)
    # Float32 accumulators resolve about 1e-7 of |w|: a few percent of
    # this spread per parameter, 1% on the mean over parameters.
    np.testing.assert_allclose(stats.variance()[0], rounded, rtol=0.2)
    assert stats.summary()["overall"] == pytest.approx(rounded.mean(), rel=0.02)


def test_summary_reports_per_layer_overall_and_projected_variances():
    iterates = [
        [np.array([[0.0, 1.0]]), np.array([5.0])],
        [np.array([[2.0, 1.0]]), np.array([9.0])],
    ]
    stats = feed(
        IterateStatistics(names=["kernel", "bias"], directions={"u": [1.0, 0.0, 0.0]}),
        iterates,
    )
    summary = stats.summary()
    # Per-parameter variances: kernel (1, 0), bias 4.
    assert summary == {
        "count": 2,
        "per_layer": {"kernel": 0.5, "bias": 4.0},
        "overall": pytest.approx(5.0 / 3.0),
        "projected": {"u": 1.0},
    }
    assert stats.summary(ddof=1)["overall"] == pytest.approx(10.0 / 3.0)


def test_state_round_trips_through_npz_and_updates_continue():
    rng = np.random.default_rng(4)
    iterates = [[rng.normal(size=(2, 3)), rng.normal(size=3)] for _ in range(9)]
    direction = [rng.normal(size=(2, 3)), rng.normal(size=3)]
    uninterrupted = feed(
        IterateStatistics(names=["k", "b"], directions={"u": direction}), iterates
    )
    first = feed(
        IterateStatistics(names=["k", "b"], directions={"u": direction}), iterates[:4]
    )
    buffer = io.BytesIO()
    np.savez(buffer, **first.get_state())
    buffer.seek(0)
    restored = IterateStatistics()
    restored.set_state(np.load(buffer))
    feed(restored, iterates[4:])
    assert restored.count == 9 and restored.names == ["k", "b"]
    for got, want in zip(restored.variance(), uninterrupted.variance()):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    assert restored.projected_variance("u") == pytest.approx(
        uninterrupted.projected_variance("u"), rel=1e-12
    )


@pytest.mark.parametrize("spoil", ["direction of another size", "direction of zeros",
                                   "direction stats of three numbers"])
def test_a_refused_state_leaves_the_statistics_as_they_were(spoil):
    rng = np.random.default_rng(4)
    iterates = [[rng.normal(size=(2, 3)), rng.normal(size=3)] for _ in range(3)]
    stats = feed(IterateStatistics(names=["k", "b"], directions={"u": [np.ones((2, 3)),
                                                                         np.ones(3)]}),
                 iterates)
    before = stats.get_state()
    other = IterateStatistics(names=["k", "b"], directions={"v": np.arange(1.0, 10.0)})
    state = dict(feed(other, iterates[:2]).get_state())
    if spoil == "direction of another size":
        state["direction_0"] = np.ones(4)
    elif spoil == "direction of zeros":
        state["direction_0"] = np.zeros(9)
    else:
        state["direction_0_stats"] = np.zeros(3)
    with pytest.raises(ValueError):
        stats.set_state(state)
    after = stats.get_state()
    assert after.keys() == before.keys()
    for key in before:
        np.testing.assert_array_equal(after[key], before[key])
    feed(stats, iterates[:1])  # and it goes on
    assert stats.count == 4


def test_state_values_are_plain_numpy_arrays():
    stats = feed(
        IterateStatistics(directions={"u": [1.0, 1.0]}), [[np.zeros(2)], [np.ones(2)]]
    )
    assert all(isinstance(v, np.ndarray) for v in stats.get_state().values())


def test_reset_starts_a_new_window_and_keeps_directions():
    stats = IterateStatistics(names=["w"], directions={"u": [1.0, 0.0]})
    feed(stats, [[np.array([0.0, 0.0])], [np.array([10.0, 0.0])]])
    stats.reset()
    assert stats.count == 0
    feed(stats, [[np.array([0.0, 5.0])], [np.array([2.0, 5.0])]])
    assert stats.projected_variance("u") == pytest.approx(1.0)
    np.testing.assert_allclose(stats.variance()[0], [1.0, 0.0])


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda s: s.update(np.zeros(3)), TypeError, "list of arrays"),
        (lambda s: s.update([]), ValueError, "at least one array"),
        (
            lambda s: (s.update([np.zeros(3)]), s.update([np.zeros(4)])),
            ValueError,
            "shapes",
        ),
        (lambda s: s.update([np.array([1.0, np.nan, 0.0])]), ValueError, "non-finite"),
        (lambda s: s.update([np.array(["a", "b"])]), TypeError, "dtype"),
        (
            lambda s: (s.update([np.zeros(3)]), s.track_direction("v", np.ones(3))),
            RuntimeError,
            "count=1",
        ),
        (lambda s: s.track_direction("v", np.zeros(3)), ValueError, "non-zero"),
        (
            lambda s: (s.track_direction("v", np.ones(4)), s.update([np.zeros(3)])),
            ValueError,
            "one entry per parameter",
        ),
        (lambda s: s.variance(), ValueError, "count=0"),
        (lambda s: (s.update([np.zeros(3)]), s.variance(ddof=1)), ValueError, "ddof=1"),
        (
            lambda s: (s.update([np.zeros(3)]), s.projected_variance("nope")),
            ValueError,
            "name='nope'",
        ),
    ],
)
def test_iterate_statistics_rejects_bad_use(make, error, message):
    with pytest.raises(error, match=message):
        make(IterateStatistics())


def test_a_direction_of_transposed_layers_is_refused():
    # Of the iterate's size, but its entries would meet the wrong weights.
    stats = IterateStatistics(directions={"u": [np.ones((3, 2))]})
    with pytest.raises(ValueError, match=r"^Direction 'u' must match the iterate's layers "
                                         r"\[\(2, 3\)\]\. Received: direction with "
                                         r"shapes \[\(3, 2\)\]$"):
        stats.update([np.zeros((2, 3))])


def test_a_failed_update_leaves_the_statistics_unchanged():
    stats = feed(IterateStatistics(), [[np.zeros(2)], [np.ones(2)]])
    with pytest.raises(ValueError):
        stats.update([np.array([np.inf, 0.0])])
    assert stats.count == 2
    np.testing.assert_allclose(stats.variance()[0], [0.25, 0.25])


def test_names_must_match_the_number_of_layers():
    with pytest.raises(ValueError, match="one array per name"):
        IterateStatistics(names=["a", "b"]).update([np.zeros(2)])
    with pytest.raises(ValueError, match="distinct strings"):
        IterateStatistics(names=["a", "a"])


# ---------------------------------------------------------------------------
# replica_variance
# ---------------------------------------------------------------------------


def test_replica_variance_matches_numpy():
    rng = np.random.default_rng(5)
    replicas = rng.normal(size=(16, 12))
    direction = rng.normal(size=12)
    spread = replica_variance(replicas, direction=direction)
    expected = np.var(replicas, axis=0, ddof=1)
    np.testing.assert_allclose(spread.per_parameter, expected, rtol=1e-14)
    assert spread.overall == pytest.approx(expected.mean(), rel=1e-14)
    unit = direction / np.linalg.norm(direction)
    assert spread.projected == pytest.approx(np.var(replicas @ unit, ddof=1), rel=1e-12)
    assert replica_variance(replicas, ddof=0).overall == pytest.approx(
        np.var(replicas, axis=0).mean()
    )
    assert replica_variance(replicas).projected is None


def test_replicas_given_as_per_layer_lists_are_flattened_in_order():
    rng = np.random.default_rng(6)
    flat = rng.normal(size=(5, 10))
    as_layers = [[row[:6].reshape(2, 3), row[6:]] for row in flat]
    direction = rng.normal(size=10)
    a = replica_variance(
        as_layers, direction=[direction[:6].reshape(2, 3), direction[6:]]
    )
    b = replica_variance(flat, direction=direction)
    np.testing.assert_allclose(a.per_parameter, b.per_parameter, rtol=1e-14)
    assert a.projected == pytest.approx(b.projected, rel=1e-14)


def test_replica_variance_refuses_a_direction_of_transposed_layers():
    replicas = [[np.full((2, 3), float(i))] for i in range(3)]
    with pytest.raises(ValueError, match=r"^Argument `direction` must match a replica's "
                                         r"layers \[\(2, 3\)\]\. Received: direction "
                                         r"with shapes \[\(3, 2\)\]$"):
        replica_variance(replicas, direction=[np.ones((3, 2))])


def test_replicas_of_transposed_layers_are_refused():
    # The same size, but the flattened entries of the second replica are
    # other weights than the first's.
    replicas = [[np.zeros((2, 3))], [np.ones((3, 2))], [np.ones((2, 3))]]
    with pytest.raises(ValueError, match=r"^Argument `replica_weights` must hold replicas "
                                         r"of one layer layout\. Received: replica_weights "
                                         r"with layer shapes \[\[\(2, 3\)\], \[\(3, 2\)\]\]$"):
        replica_variance(replicas)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (([[0.0, 1.0], [1.0]],), {}, "sizes"),
        (([[0.0, 1.0]],), {}, "more than ddof=1"),
        (
            (np.zeros((3, 2)),),
            dict(direction=[1.0, 0.0, 0.0]),
            "one entry per parameter",
        ),
        ((np.zeros((3, 2)),), dict(direction=[0.0, 0.0]), "non-zero"),
        ((np.array([[0.0, np.nan], [1.0, 1.0]]),), {}, r"replica_weights\[0, 1\]=nan"),
        ((np.zeros((3, 2)),), dict(ddof=-1), "ddof"),
    ],
)
def test_replica_variance_rejects_bad_arguments(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        replica_variance(*args, **kwargs)


@pytest.mark.parametrize(
    "module", ["posterior", "heavy_ball", "iterate_statistics", "validation", "bounds",
               "spectral", "summary_statistics"])
def test_the_maths_modules_import_no_framework(module):
    # In a fresh interpreter, the module alone (the package's __init__, which
    # imports Keras for the rest of robustlab, is bypassed): what it imports,
    # directly or through the modules it uses, must not include a framework.
    package = os.path.dirname(os.path.abspath(posterior.__file__))
    code = (
        "import sys, types\n"
        "package = types.ModuleType('robustlab')\n"
        f"package.__path__ = [{package!r}]\n"
        "sys.modules['robustlab'] = package\n"
        f"import robustlab.{module}\n"
        "print(sorted(m for m in ('keras', 'tensorflow', 'jax', 'torch') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "[]"


def test_posterior_re_exports_the_theory_and_the_measurements():
    assert sorted(posterior.__all__) == [
        "CovarianceTrajectory", "GradientNoiseSplit", "IterateStatistics",
        "ReplicaVariance", "covariance_recursion", "is_stable",
        "minibatch_noise_variance", "relaxation_steps", "replica_variance",
        "shuffled_pass_variance", "spectral_radius", "split_gradient_noise",
        "stability_margin", "stationary_covariance", "stationary_variance",
    ]
    homes = {name: module for module in (heavy_ball, iterate_statistics)
             for name in module.__all__}
    assert sorted(homes) == sorted(posterior.__all__)
    for name, module in homes.items():
        assert getattr(posterior, name) is getattr(module, name), name
