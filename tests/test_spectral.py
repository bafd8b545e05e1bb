"""The spectral algorithms on explicit symmetric matrices Q diag(lambda) Q^T
with chosen spectra, whose eigenvalues, trace and density are known exactly."""

import numpy as np
import pytest

from robustlab import spectral

integral = getattr(np, "trapezoid", None) or np.trapz


def symmetric_with_spectrum(eigenvalues, seed=0):
    eigenvalues = np.asarray(eigenvalues, dtype=np.float64)
    q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal(
        (eigenvalues.size, eigenvalues.size)))
    return (q * eigenvalues) @ q.T


def dominant(eigenvalues):
    return eigenvalues[np.argmax(np.abs(eigenvalues))]


SPECTRUM = np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.0, -0.5, -1.0])
NEGATIVE_DOMINANT = np.array([-6.0, 4.0, 2.0, 1.0, 0.3, -0.2, -1.0])


@pytest.mark.parametrize("spectrum", [SPECTRUM, NEGATIVE_DOMINANT])
def test_power_iteration_finds_largest_magnitude(spectrum):
    a = symmetric_with_spectrum(spectrum)
    result = spectral.power_iteration(
        lambda v: a @ v, np.ones(spectrum.size), iterations=500, tol=1e-12
    )
    assert result.converged
    assert result.eigenvalue == pytest.approx(dominant(spectrum), rel=1e-6)
    assert np.linalg.norm(result.eigenvector) == pytest.approx(1.0)
    residual = a @ result.eigenvector - result.eigenvalue * result.eigenvector
    assert np.linalg.norm(residual) < 1e-4


def test_power_iteration_largest_algebraic_uses_a_shift():
    a = symmetric_with_spectrum(NEGATIVE_DOMINANT, seed=3)
    result = spectral.power_iteration(
        lambda v: a @ v, np.ones(7), 1000, 1e-12, which="largest_algebraic"
    )
    assert result.eigenvalue == pytest.approx(4.0, rel=1e-6)
    positive = spectral.power_iteration(
        lambda v: -a @ v, np.ones(7), 1000, 1e-12, which="largest_algebraic"
    )  # spectrum of -a: 6 dominant and largest: no shift needed
    assert positive.eigenvalue == pytest.approx(6.0, rel=1e-6)


def test_a_capped_power_iteration_returns_the_quotient_of_its_vector():
    a = np.diag([1.0, 0.9, 0.1])
    capped = spectral.power_iteration(lambda v: a @ v, np.array([0.1, 1.0, 1.0]), 3, 1e-12)
    assert not capped.converged
    v = capped.eigenvector
    assert capped.eigenvalue == pytest.approx(v @ a @ v, rel=1e-14)
    # Three steps from v0: v is a^3 v0 normalised.
    expected = a @ a @ a @ np.array([0.1, 1.0, 1.0])
    np.testing.assert_allclose(v, expected / np.linalg.norm(expected), rtol=1e-14)


def test_power_iteration_stops_at_tolerance_and_cap():
    a = symmetric_with_spectrum(SPECTRUM)
    capped = spectral.power_iteration(lambda v: a @ v, np.ones(8), 3, 1e-12)
    assert capped.iterations == 4 and not capped.converged  # 3 steps, then a quotient
    loose = spectral.power_iteration(lambda v: a @ v, np.ones(8), 500, 1e-2)
    tight = spectral.power_iteration(lambda v: a @ v, np.ones(8), 500, 1e-10)
    assert loose.converged and loose.iterations < tight.iterations
    null = spectral.power_iteration(lambda v: 0 * v, np.ones(3), 10, 1e-3)
    assert null.eigenvalue == 0.0 and null.converged


def test_lanczos_full_steps_recover_the_spectrum_with_repeats():
    spectrum = np.array([4.0, 4.0, 1.0, 0.0, 0.0, 0.0, -2.0])
    a = symmetric_with_spectrum(spectrum, seed=4)
    decomposition = spectral.lanczos(lambda v: a @ v, np.ones(7), steps=50)
    assert decomposition.basis.shape == (7, 7)
    np.testing.assert_allclose(decomposition.basis @ decomposition.basis.T,
                               np.eye(7), atol=1e-12)
    values, _ = decomposition.ritz_pairs()
    np.testing.assert_allclose(values, np.sort(spectrum), atol=1e-10)


def test_lanczos_eigenpairs_top_k_by_magnitude():
    a = symmetric_with_spectrum(NEGATIVE_DOMINANT, seed=5)
    result = spectral.lanczos_eigenpairs(
        lambda v: a @ v, np.ones(7), k=3, steps=7, tol=1e-8
    )
    np.testing.assert_allclose(result.eigenvalues, [-6.0, 4.0, 2.0], rtol=1e-8)
    assert result.converged
    for value, vector in zip(result.eigenvalues, result.eigenvectors):
        assert np.linalg.norm(a @ vector - value * vector) < 1e-6
    np.testing.assert_allclose(result.eigenvectors @ result.eigenvectors.T,
                               np.eye(3), atol=1e-10)


def test_lanczos_eigenpairs_stops_early_on_a_large_operator():
    spectrum = np.concatenate([[10.0, -8.0, 6.0], np.linspace(-1, 1, 397)])
    a = symmetric_with_spectrum(spectrum, seed=6)
    result = spectral.lanczos_eigenpairs(
        lambda v: a @ v, np.random.default_rng(0).standard_normal(400), k=3,
        steps=200, tol=1e-6
    )
    assert result.converged and result.iterations < 100
    np.testing.assert_allclose(result.eigenvalues, [10.0, -8.0, 6.0], rtol=1e-8)


@pytest.mark.parametrize("spectrum, top", [
    ([5.0, 5.0, 1.0, 0.5, 0.2], [5.0, 5.0]),
    ([3.0, 2.0, 2.0, 1.0], [3.0, 2.0, 2.0]),
    ([-2.0, -2.0, 0.0, 1.0, 1.0, 1.0, 3.0], [3.0, -2.0, -2.0]),
])
def test_lanczos_eigenpairs_with_all_steps_finds_every_copy_of_a_repeat(spectrum, top):
    # From ones, the Krylov space holds one copy of each eigenvalue: the
    # others are found only after it is exhausted, from a restart.
    a = symmetric_with_spectrum(spectrum, seed=8)
    result = spectral.lanczos_eigenpairs(
        lambda v: a @ v, np.ones(len(spectrum)), k=len(top), steps=len(spectrum), tol=1e-8
    )
    np.testing.assert_allclose(result.eigenvalues, top, atol=1e-10)
    assert result.converged
    np.testing.assert_allclose(result.eigenvectors @ result.eigenvectors.T,
                               np.eye(len(top)), atol=1e-10)
    for value, vector in zip(result.eigenvalues, result.eigenvectors):
        assert np.linalg.norm(a @ vector - value * vector) < 1e-8


def test_lanczos_eigenpairs_from_an_eigenvector_still_finds_the_dominant():
    a = np.diag([5.0, 1.0, 0.1])
    result = spectral.lanczos_eigenpairs(
        lambda v: a @ v, np.array([0.0, 1.0, 0.0]), k=1, steps=3
    )
    np.testing.assert_allclose(result.eigenvalues, [5.0])
    assert result.converged and result.iterations == 3


def test_lanczos_eigenpairs_does_not_stop_at_the_first_restart():
    # From ones, the Krylov space has one vector per distinct eigenvalue
    # (5, 3, 1, 0.5); the restart lies in span(e0 - e1, e3 - e4), where the
    # Rayleigh quotient of this rng's draw is below 3, so stopping on the
    # next step would return [5, 3] with residuals 0.
    a = np.diag([5.0, 5.0, 3.0, 1.0, 1.0, 0.5])
    result = spectral.lanczos_eigenpairs(
        lambda v: a @ v, np.ones(6), k=2, steps=6, rng=np.random.default_rng(0)
    )
    np.testing.assert_allclose(result.eigenvalues, [5.0, 5.0])
    assert result.iterations == 6


def test_hutchinson_is_unbiased_on_a_known_matrix():
    a = symmetric_with_spectrum(SPECTRUM)
    estimate = spectral.hutchinson_trace(
        lambda v: a @ v, 8, probes=400, rng=np.random.default_rng(0)
    )
    assert abs(estimate.trace - SPECTRUM.sum()) <= 3 * estimate.stderr
    assert estimate.stderr == pytest.approx(
        np.std(estimate.samples, ddof=1) / np.sqrt(400))
    diagonal = spectral.hutchinson_trace(
        lambda v: SPECTRUM * v, 8, probes=2, rng=np.random.default_rng(0))
    assert diagonal.trace == pytest.approx(SPECTRUM.sum())  # exact for diagonals


def test_slq_on_a_diagonal_gives_uniform_weights_at_the_eigenvalues():
    spectrum = np.array([-1.0, 0.5, 2.0, 3.0, 7.0])
    result = spectral.slq_density(lambda v: spectrum * v, dim=5, steps=5,
                                   probes=3, rng=np.random.default_rng(0))
    np.testing.assert_allclose(result.nodes, np.tile(spectrum, (3, 1)), atol=1e-10)
    np.testing.assert_allclose(result.weights, 0.2, atol=1e-10)
    assert integral(result.density, result.grid) == pytest.approx(1.0)
    # the density is a mixture of Gaussians at the eigenvalues
    peaks = result.grid[np.argmin(np.abs(result.grid[:, None] - spectrum), axis=0)]
    assert np.all(np.interp(peaks, result.grid, result.density)
                  > 0.2 / (result.sigma * np.sqrt(2 * np.pi)) * 0.99)


def test_slq_with_few_steps_keeps_the_first_moment():
    a = symmetric_with_spectrum(np.linspace(-2, 5, 60), seed=7)
    result = spectral.slq_density(lambda v: a @ v, dim=60, steps=8, probes=20,
                                   rng=np.random.default_rng(1))
    np.testing.assert_allclose(result.weights.sum(axis=1), 1.0, atol=1e-12)
    # Gauss quadrature is exact for f(t) = t: sum_j w_j theta_j = z^T A z / dim
    first_moment = np.mean(np.sum(result.weights * result.nodes, axis=1))
    assert first_moment == pytest.approx(np.trace(a) / 60, abs=0.3)
    assert result.nodes.max() == pytest.approx(5.0, rel=0.05)
    assert result.nodes.min() == pytest.approx(-2.0, rel=0.05)


def test_operator_level_arguments_are_checked():
    identity = lambda v: v  # noqa: E731
    with pytest.raises(ValueError, match="Received: iterations=0"):
        spectral.power_iteration(identity, np.ones(2), iterations=0)
    with pytest.raises(ValueError, match="Received: tol=0"):
        spectral.power_iteration(identity, np.ones(2), tol=0)
    with pytest.raises(ValueError, match="`initial`"):
        spectral.lanczos(identity, np.zeros(2), steps=2)
    with pytest.raises(ValueError, match="Received: probes=0"):
        spectral.hutchinson_trace(identity, 2, 0, np.random.default_rng(0))
    with pytest.raises(ValueError, match="Received: k=3"):
        spectral.lanczos_eigenpairs(identity, np.ones(2), k=3, steps=3)


# The algorithms on an operator of size 3, each given its matvec.
ON_A_3_BY_3_OPERATOR = pytest.mark.parametrize("run", [
    lambda matvec: spectral.power_iteration(matvec, np.ones(3)),
    lambda matvec: spectral.lanczos_eigenpairs(matvec, np.ones(3), 1, 3),
    lambda matvec: spectral.hutchinson_trace(matvec, 3, 2, np.random.default_rng(0)),
], ids=["power", "lanczos", "hutchinson"])


@ON_A_3_BY_3_OPERATOR
def test_an_operator_that_returns_non_finite_values_is_refused(run):
    def matvec(v):
        return np.where(np.arange(3) == 1, np.nan, v)

    with pytest.raises(ValueError, match=r"`matvec` must return finite values.*"
                       r"Received: a product with 1 non-finite values of 3$"):
        run(matvec)


@ON_A_3_BY_3_OPERATOR
def test_an_operator_that_returns_a_vector_of_another_length_is_refused(run):
    # NumPy's matmul error ("mismatch in its core dimension 0, with gufunc
    # signature ...") named nothing given.
    with pytest.raises(ValueError, match=r"`matvec` must return a vector of its input's length "
                                         r"\(3\).*Received: a product of size 4$"):
        run(lambda v: np.ones(4))
