"""Curvature probes against exact Hessians (the algorithms they run are
specified on known spectra in test_spectral.py).

The references are computed without robustlab and without autodiff:
- the analytic Hessian of softmax regression,
  H = (1/n) sum_i (x~_i x~_i^T) kron (diag p_i - p_i p_i^T), x~ = (x, 1);
- for a tanh MLP, central differences (float64) of a hand-written NumPy
  gradient of the mean cross-entropy.
"""

import keras
import numpy as np
import pytest

from robustlab import curvature
from robustlab import spectral

BACKEND = keras.backend.backend()
integral = getattr(np, "trapezoid", None) or np.trapz
# Keras on JAX computes some float64 ops (tanh, ops.mean) in float32: its type
# promotion maps 64-bit dtypes to 32-bit ones there. Exact-arithmetic checks
# use this relative accuracy instead of float64's.
FLOAT64_ACCURACY = 1e-10 if BACKEND == "tensorflow" else 1e-6


# ---------------------------------------------------------------------------
# References
# ---------------------------------------------------------------------------


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_regression_hessian(kernel, bias, x, y):
    """Hessian of the mean sparse cross-entropy w.r.t. (kernel, bias), in the
    order of flatten_weights([kernel, bias])."""
    p = softmax(x @ kernel + bias)
    x_tilde = np.hstack([x, np.ones((len(x), 1))])
    blocks = [
        np.kron(np.outer(xi, xi), np.diag(pi) - np.outer(pi, pi))
        for xi, pi in zip(x_tilde, p)
    ]
    return np.mean(blocks, axis=0)


def mlp_gradient(theta, x, y, shapes):
    """Gradient of the mean sparse cross-entropy of Dense(tanh) -> Dense."""
    w1, b1, w2, b2 = curvature._split(theta, shapes, "theta")
    h = np.tanh(x @ w1 + b1)
    dz = softmax(h @ w2 + b2)
    dz[np.arange(len(y)), y] -= 1.0
    dz /= len(y)
    da = (dz @ w2.T) * (1.0 - h**2)
    return curvature.flatten_weights([x.T @ da, da.sum(0), h.T @ dz, dz.sum(0)])


def central_difference_hessian(gradient, theta, step=1e-5):
    columns = []
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = step
        columns.append((gradient(theta + e) - gradient(theta - e)) / (2 * step))
    h = np.array(columns).T
    return (h + h.T) / 2


def relative_error(estimate, exact):
    return np.linalg.norm(np.asarray(estimate) - exact) / np.linalg.norm(exact)


def dominant(eigenvalues):
    return eigenvalues[np.argmax(np.abs(eigenvalues))]


# ---------------------------------------------------------------------------
# Fixtures: float64 models with exact Hessians
# ---------------------------------------------------------------------------


@pytest.fixture
def precise():
    """float64 everywhere (on JAX this needs jax_enable_x64); restored after."""
    # Keras caches its global dtype policy on first use: save and set it too,
    # or layers built later in the session would stay float64.
    previous_floatx = keras.config.floatx()
    previous_policy = keras.config.dtype_policy()
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    previous_x64 = None
    if BACKEND == "jax":
        import jax

        previous_x64 = jax.config.jax_enable_x64
        jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        keras.config.set_floatx(previous_floatx)
        keras.config.set_dtype_policy(previous_policy)
        if previous_x64 is not None:
            import jax

            jax.config.update("jax_enable_x64", previous_x64)


CROSS_ENTROPY = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class Problem:
    def __init__(self, model, x, y, exact_hessian):
        self.model, self.x, self.y, self.hessian = model, x, y, exact_hessian
        self.eigenvalues, self.eigenvectors = np.linalg.eigh(exact_hessian)
        self.dim = exact_hessian.shape[0]


@pytest.fixture
def mlp(precise):
    """Dense(3, tanh) -> Dense(3) logits on 8 examples: 27 parameters, an
    indefinite Hessian."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 4))
    y = rng.integers(0, 3, 8)
    model = keras.Sequential([
        keras.Input((4,), dtype="float64"),
        keras.layers.Dense(3, activation="tanh", dtype="float64"),
        keras.layers.Dense(3, dtype="float64"),
    ])
    weights = [0.8 * rng.standard_normal(v.shape) for v in model.trainable_variables]
    model.set_weights(weights)
    shapes = [w.shape for w in weights]
    exact = central_difference_hessian(
        lambda t: mlp_gradient(t, x, y, shapes), curvature.flatten_weights(weights)
    )
    return Problem(model, x, y, exact)


@pytest.fixture
def logistic(precise):
    """Softmax regression, compiled with its loss, on 10 examples."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((10, 3))
    y = rng.integers(0, 4, 10)
    kernel, bias = rng.standard_normal((3, 4)), rng.standard_normal(4)
    model = keras.Sequential([
        keras.Input((3,), dtype="float64"), keras.layers.Dense(4, dtype="float64")
    ])
    model.set_weights([kernel, bias])
    model.compile(loss=CROSS_ENTROPY)
    return Problem(model, x, y, softmax_regression_hessian(kernel, bias, x, y))


@pytest.mark.parametrize("name", [
    "EigenpairsEstimate", "EigenvalueEstimate", "LanczosDecomposition",
    "SpectralDensity", "TraceEstimate", "WHICH", "hutchinson_trace", "lanczos",
    "lanczos_eigenpairs", "power_iteration", "slq_density",
])
def test_the_spectral_algorithms_stay_importable_from_curvature(name):
    assert getattr(curvature, name) is getattr(spectral, name)


# ---------------------------------------------------------------------------
# Hessian-vector products on models
# ---------------------------------------------------------------------------


def test_hvp_matches_the_central_difference_hessian(mlp):
    v = np.random.default_rng(0).standard_normal(mlp.dim)
    flat = curvature.hessian_vector_product(mlp.model, mlp.x, mlp.y, v,
                                            loss=CROSS_ENTROPY)
    assert isinstance(flat, np.ndarray) and flat.dtype == np.float64
    assert relative_error(flat, mlp.hessian @ v) <= 1e-5
    as_list = curvature.hessian_vector_product(
        mlp.model, mlp.x, mlp.y, curvature.unflatten_weights(v, mlp.model),
        loss=CROSS_ENTROPY,
    )
    assert [a.shape for a in as_list] == [tuple(w.shape) for w in
                                          mlp.model.trainable_variables]
    np.testing.assert_array_equal(curvature.flatten_weights(as_list), flat)


def test_hvp_matches_the_analytic_softmax_regression_hessian(logistic):
    v = np.random.default_rng(1).standard_normal(logistic.dim)
    hv = curvature.hessian_vector_product(  # loss=None: the compiled loss
        logistic.model, logistic.x, logistic.y, v)
    assert relative_error(hv, logistic.hessian @ v) <= 1e-10


def test_hvp_of_a_float32_model_is_close(logistic):
    kernel, bias = (w.astype("float32") for w in logistic.model.get_weights())
    model = keras.Sequential([keras.Input((3,)),
                              keras.layers.Dense(4, dtype="float32")])
    model.set_weights([kernel, bias])
    v = np.random.default_rng(1).standard_normal(logistic.dim)
    hv = curvature.hessian_vector_product(
        model, logistic.x.astype("float32"), logistic.y, v, loss=CROSS_ENTROPY)
    assert relative_error(hv, logistic.hessian @ v) <= 1e-5


@pytest.mark.parametrize("batch_size", [1, 3, 8, 100])
def test_hvp_over_batches_equals_one_batch(mlp, batch_size):
    v = np.random.default_rng(3).standard_normal(mlp.dim)
    whole = curvature.hessian_vector_product(mlp.model, mlp.x, mlp.y, v,
                                             loss=CROSS_ENTROPY)
    batched = curvature.hessian_vector_product(
        mlp.model, mlp.x, mlp.y, v, loss=CROSS_ENTROPY, batch_size=batch_size)
    np.testing.assert_allclose(batched, whole, rtol=1e-12, atol=1e-14)


def test_per_example_losses_with_extra_axes_are_averaged(precise):
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((6, 2)), rng.standard_normal((6, 3))
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    v = rng.standard_normal(9)
    # Mean squared error of a linear model: H = (2 / (n * 3)) sum_i x~ x~^T kron I_3
    x_tilde = np.hstack([x, np.ones((6, 1))])
    exact = 2.0 / (6 * 3) * np.kron(x_tilde.T @ x_tilde, np.eye(3))

    def squared_errors(y_true, y_pred):  # shape (batch, 3): averaged over axis 1
        return keras.ops.square(y_true - y_pred)

    hv = curvature.hessian_vector_product(model, x, y, v, loss=squared_errors,
                                          batch_size=4)
    assert relative_error(hv, exact @ v) <= 1e-10
    hv_mse = curvature.hessian_vector_product(model, x, y, v, loss="mse")
    assert relative_error(hv_mse, exact @ v) <= FLOAT64_ACCURACY


def batchnorm_model():
    rng = np.random.default_rng(5)
    model = keras.Sequential([
        keras.Input((4,)),
        keras.layers.Dense(5),
        keras.layers.BatchNormalization(),
        keras.layers.Activation("tanh"),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(3),
    ])
    weights = [rng.standard_normal(w.shape) * 0.7 + (w.ndim == 1) * 0.5
               for w in model.get_weights()]
    # A negative moving variance made every product NaN (and NaN compared
    # equal to NaN below).
    weights[5] = np.abs(weights[5]) + 0.1
    model.set_weights(weights)
    assert [v.path.split("/")[-1] for v in model.weights][5] == "moving_variance"
    return model


def test_batchnorm_runs_in_inference_mode(precise):
    model = batchnorm_model()
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((9, 4)), rng.integers(0, 3, 9)
    stats_before = [np.array(v) for v in model.non_trainable_variables]
    v = rng.standard_normal(sum(int(np.prod(w.shape)) for w in
                                model.trainable_variables))
    whole = curvature.hessian_vector_product(model, x, y, v, loss=CROSS_ENTROPY)
    order = rng.permutation(9)
    other = curvature.hessian_vector_product(
        model, x[order], y[order], v, loss=CROSS_ENTROPY, batch_size=4)
    # On JAX, Keras's BatchNormalization computes in float32 even for
    # float64 inputs (keras.backend.result_type("float64", "float32") is
    # "float32" there, "float64" on TensorFlow): its products agree with an
    # exact float64 one to about 2e-5 relative, and the batch split moves
    # the last float32 digits.
    rtol = 1e-6 if BACKEND == "jax" else 1e-10
    assert np.all(np.isfinite(whole))
    np.testing.assert_allclose(other, whole, rtol=rtol, atol=1e-13)
    curvature.top_hessian_eigenvalue(model, x, y, loss=CROSS_ENTROPY, iterations=5)
    for before, variable in zip(stats_before, model.non_trainable_variables):
        np.testing.assert_array_equal(np.array(variable), before)
    # Dropout is off: repeated products agree exactly.
    again = curvature.hessian_vector_product(model, x, y, v, loss=CROSS_ENTROPY)
    np.testing.assert_array_equal(again, whole)


# ---------------------------------------------------------------------------
# Eigenvalues, trace, density on models against the exact Hessian
# ---------------------------------------------------------------------------


def test_top_eigenvalue_matches_eigh(mlp):
    result = curvature.top_hessian_eigenvalue(
        mlp.model, mlp.x, mlp.y, loss=CROSS_ENTROPY, iterations=2000, tol=1e-10)
    assert result.converged
    exact = dominant(mlp.eigenvalues)
    assert abs(result.eigenvalue - exact) <= 1e-3 * abs(exact)
    u = curvature.flatten_weights(result.eigenvector)
    assert np.linalg.norm(u) == pytest.approx(1.0)
    assert np.linalg.norm(mlp.hessian @ u - result.eigenvalue * u) <= 1e-3 * abs(exact)


def test_top_eigenvalue_largest_algebraic_on_the_mlp(mlp):
    result = curvature.top_hessian_eigenvalue(
        mlp.model, mlp.x, mlp.y, loss=CROSS_ENTROPY, iterations=3000, tol=1e-12,
        which="largest_algebraic")
    exact = mlp.eigenvalues[-1]
    assert abs(result.eigenvalue - exact) <= 1e-3 * abs(exact)


def test_top_eigenvalue_with_few_iterations_reports_no_convergence(mlp):
    result = curvature.top_hessian_eigenvalue(
        mlp.model, mlp.x, mlp.y, loss=CROSS_ENTROPY, iterations=2, tol=1e-12)
    assert result.iterations == 3 and not result.converged  # 2 steps and a quotient


def test_top_k_eigenvalues_match_eigh(mlp):
    k = 4
    result = curvature.top_hessian_eigenvalues(
        mlp.model, mlp.x, mlp.y, k, loss=CROSS_ENTROPY, iterations=mlp.dim,
        tol=1e-6)
    exact = mlp.eigenvalues[np.argsort(-np.abs(mlp.eigenvalues), kind="stable")][:k]
    np.testing.assert_allclose(result.eigenvalues, exact, rtol=1e-3)
    assert np.all(np.diff(np.abs(result.eigenvalues)) <= 0)
    vectors = np.array([curvature.flatten_weights(u) for u in result.eigenvectors])
    np.testing.assert_allclose(vectors @ vectors.T, np.eye(k), atol=1e-8)
    for value, u in zip(result.eigenvalues, vectors):
        assert np.linalg.norm(mlp.hessian @ u - value * u) <= 1e-3 * abs(value)


def test_hessian_trace_within_three_standard_errors(mlp):
    estimate = curvature.hessian_trace(mlp.model, mlp.x, mlp.y, probes=300,
                                       loss=CROSS_ENTROPY, seed=1)
    exact = np.trace(mlp.hessian)
    assert estimate.stderr > 0
    assert abs(estimate.trace - exact) <= 3 * estimate.stderr
    # and exactly the Hutchinson estimate built from the exact matrix
    reference = spectral.hutchinson_trace(
        lambda v: mlp.hessian @ v, mlp.dim, 300, np.random.default_rng(1))
    assert estimate.trace == pytest.approx(reference.trace, rel=1e-6)


def test_spectral_density_with_full_lanczos_puts_mass_on_the_eigenvalues(mlp):
    result = curvature.spectral_density(
        mlp.model, mlp.x, mlp.y, lanczos_steps=mlp.dim, probes=2,
        loss=CROSS_ENTROPY)
    scale = np.abs(mlp.eigenvalues).max()
    for nodes in result.nodes:
        np.testing.assert_allclose(nodes, mlp.eigenvalues,
                                   atol=FLOAT64_ACCURACY * scale)
    np.testing.assert_allclose(result.weights.sum(axis=1), 1.0, atol=1e-10)
    assert integral(result.density, result.grid) == pytest.approx(1.0)
    near = np.min(np.abs(result.grid[:, None] - mlp.eigenvalues), axis=1) \
        <= 3 * result.sigma
    assert integral(result.density * near, result.grid) >= 0.98


def test_spectral_density_with_few_steps_finds_the_extremes(mlp):
    result = curvature.spectral_density(
        mlp.model, mlp.x, mlp.y, lanczos_steps=15, probes=3,
        loss=CROSS_ENTROPY, grid=np.linspace(-1, 1, 2001), sigma=0.01)
    assert result.nodes.shape == (3, 15)
    spread = mlp.eigenvalues[-1] - mlp.eigenvalues[0]
    assert abs(result.nodes.max() - mlp.eigenvalues[-1]) <= 1e-3 * spread
    assert abs(result.nodes.min() - mlp.eigenvalues[0]) <= 1e-3 * spread
    assert integral(result.density, result.grid) == pytest.approx(1.0)
    assert result.sigma == 0.01


def test_same_inputs_give_the_same_numbers(mlp):
    def run():
        return curvature.top_hessian_eigenvalue(
            mlp.model, mlp.x, mlp.y, loss=CROSS_ENTROPY, iterations=10, seed=7)

    first, second = run(), run()
    assert first.eigenvalue == second.eigenvalue
    for a, b in zip(first.eigenvector, second.eigenvector):
        np.testing.assert_array_equal(a, b)
    traces = [curvature.hessian_trace(mlp.model, mlp.x, mlp.y, probes=5,
                                      loss=CROSS_ENTROPY, seed=3).trace
              for _ in range(2)]
    assert traces[0] == traces[1]


@pytest.mark.parametrize("measure", [
    lambda m, x, y: curvature.top_hessian_eigenvalue(m, x, y, loss=CROSS_ENTROPY),
    lambda m, x, y: curvature.top_hessian_eigenvalues(m, x, y, 2, loss=CROSS_ENTROPY),
    lambda m, x, y: curvature.hessian_trace(m, x, y, probes=3, loss=CROSS_ENTROPY),
    lambda m, x, y: curvature.spectral_density(m, x, y, probes=1, lanczos_steps=3,
                                               loss=CROSS_ENTROPY),
    lambda m, x, y: curvature.hessian_vector_product(m, x, y, np.ones(9),
                                                     loss=CROSS_ENTROPY),
], ids=["top", "top_k", "trace", "density", "hvp"])
def test_a_model_with_non_finite_weights_is_named_as_such(measure):
    # A diverged model gave NaN eigenvalues and traces without a word, or
    # np.linalg.eigh's "Eigenvalues did not converge".
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    weights = model.get_weights()
    weights[0][0, 0] = np.nan
    model.set_weights(weights)
    x = np.random.default_rng(0).standard_normal((4, 2)).astype("float32")
    with pytest.raises(ValueError, match=r"is not finite: the model's trainable weights "
                       r"hold 1 non-finite values \(a diverged run\?\)\. Received: "):
        measure(model, x, np.array([0, 1, 2, 0]))


def test_power_iteration_reuses_one_compiled_product(mlp):
    counts = []
    for _ in range(2):
        curvature.top_hessian_eigenvalue(mlp.model, mlp.x, mlp.y,
                                         loss=CROSS_ENTROPY, iterations=10,
                                         tol=1e-12, batch_size=3)
        (compiled,) = curvature._COMPILED[mlp.model].values()
        counts.append(compiled.trace_count)
    # 3 padded batches, 2 x 10 products: one trace of each compiled program
    # (TensorFlow: the product; JAX: the linearization and its application).
    assert counts == [1, 1] if BACKEND == "tensorflow" else [2, 2]


# -- JAX: the linearization is kept between products ---------------------------

jax_only = pytest.mark.skipif(BACKEND != "jax", reason="JAX's product keeps a linearization")


def _jvp_of_grad_product(operator, vector):
    """The product as `jax.jvp` of `jax.grad`, computed afresh (what the
    kept linearization must reproduce up to float64 rounding)."""
    import jax

    hvp = operator._hvp
    trainable, non_trainable = hvp._current_values()
    total = 0.0
    for x, y, weight in operator._batches:
        loss = hvp._loss_of_weights(non_trainable, x, y, weight)
        tangent = hvp._split(np.asarray(vector, operator._float_dtype))
        _, product = jax.jit(lambda t, v: jax.jvp(jax.grad(loss), (t,), (v,)))(trainable, tangent)
        total = total + np.asarray(hvp._concat(product, operator._float_dtype), "float64")
    return total


def _assert_equal_up_to_rounding(actual, expected):
    # The same tangent operations, compiled by XLA as two programs: bit for
    # bit equal on a CPU without AVX-512; on one with it, a few elements
    # differed in the last bits (relative 5e-15 in float64). A wrong product
    # differs in the leading digits.
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-14 * scale)


def _counting_linearizations(hvp):
    calls = []
    linearize = hvp._compiled

    def counted(*args):
        calls.append(1)
        return linearize(*args)

    hvp._compiled = counted
    return calls


@jax_only
def test_products_on_one_batch_linearize_once_and_equal_jvp_of_grad(mlp):
    operator = curvature.HessianOperator(mlp.model, mlp.x, mlp.y, loss=CROSS_ENTROPY)
    calls = _counting_linearizations(operator._hvp)
    rng = np.random.default_rng(0)
    for _ in range(4):
        v = rng.standard_normal(operator.dim)
        _assert_equal_up_to_rounding(operator.matvec(v), _jvp_of_grad_product(operator, v))
    assert len(calls) == 1


@jax_only
def test_new_weights_are_linearized_again(mlp):
    operator = curvature.HessianOperator(mlp.model, mlp.x, mlp.y, loss=CROSS_ENTROPY)
    calls = _counting_linearizations(operator._hvp)
    v = np.random.default_rng(0).standard_normal(operator.dim)
    before = operator.matvec(v)
    mlp.model.set_weights([1.1 * w for w in mlp.model.get_weights()])
    after = operator.matvec(v)
    assert len(calls) == 2
    _assert_equal_up_to_rounding(after, _jvp_of_grad_product(operator, v))
    assert not np.allclose(after, before)


@jax_only
def test_the_linearization_is_dropped_with_its_operator(mlp):
    import gc

    operator = curvature.HessianOperator(mlp.model, mlp.x, mlp.y, loss=CROSS_ENTROPY)
    hvp = operator._hvp
    operator.matvec(np.ones(operator.dim))
    assert hvp._linearization is not None
    del operator
    gc.collect()
    assert hvp._linearization is None


@pytest.fixture
def pooled_cnn(precise):
    """Conv2D(relu) -> 2x2 MaxPooling2D -> Dense, float64, on 6 images."""
    rng = np.random.default_rng(3)
    model = keras.Sequential([
        keras.Input((4, 4, 1), dtype="float64"),
        keras.layers.Conv2D(2, 3, padding="same", activation="relu", dtype="float64"),
        keras.layers.MaxPooling2D(2, dtype="float64"),
        keras.layers.Flatten(dtype="float64"),
        keras.layers.Dense(3, dtype="float64"),
    ])
    model.set_weights([rng.standard_normal(v.shape) for v in model.trainable_variables])
    return model, rng.standard_normal((6, 4, 4, 1)), rng.integers(0, 3, 6)


def _plain_jax_product(operator, vector):
    """The product by JAX's own rules: `jax.jvp` of `jax.grad` of the
    operator's loss written directly over `stateless_call`, without the
    tiled max pooling."""
    import jax

    hvp = operator._hvp
    (x, y, weight), = operator._batches
    trainable, non_trainable = hvp._current_values()
    model = hvp._model()

    def loss(weights):
        logits, _ = model.stateless_call(weights, non_trainable, x, training=False)
        return hvp._weighted_loss(y, logits, weight)

    tangent = hvp._split(np.asarray(vector, operator._float_dtype))
    _, product = jax.jit(lambda w, t: jax.jvp(jax.grad(loss), (w,), (t,)))(trainable, tangent)
    return np.asarray(hvp._concat(product, operator._float_dtype))


@jax_only
def test_products_through_max_pooling_are_jax_own_without_its_windowed_selects(pooled_cnn):
    import jax

    model, x, y = pooled_cnn
    operator = curvature.HessianOperator(model, x, y, loss=CROSS_ENTROPY)
    v = np.random.default_rng(0).standard_normal(operator.dim)
    _assert_equal_up_to_rounding(operator.matvec(v), _plain_jax_product(operator, v))
    hvp = operator._hvp
    (batch_x, batch_y, weight), = operator._batches
    traced = jax.make_jaxpr(hvp._traced)(*hvp._current_values(), batch_x, batch_y, weight)
    assert "select_and_scatter_add" not in str(traced)
    assert "select_and_gather_add" not in str(traced)


def _logits_cross_entropy():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def test_fresh_equal_keras_losses_share_one_compiled_product(logistic):
    # The inline loss of the HessianOperator example, in a re-run cell.
    operators = [curvature.HessianOperator(logistic.model, logistic.x, logistic.y,
                                           loss=_logits_cross_entropy())
                 for _ in range(3)]
    for operator in operators:
        operator.matvec(np.ones(operator.dim))
    (compiled,) = curvature._COMPILED[logistic.model].values()
    assert compiled.trace_count == (1 if BACKEND == "tensorflow" else 2)


def test_keras_losses_of_different_configs_get_their_own_products(logistic):
    for loss in (_logits_cross_entropy(),
                 keras.losses.SparseCategoricalCrossentropy(from_logits=False),
                 keras.losses.SparseCategoricalCrossentropy(from_logits=True,
                                                            reduction="sum")):
        curvature.HessianOperator(logistic.model, logistic.x, logistic.y, loss=loss)
    assert len(curvature._COMPILED[logistic.model]) == 3


class _LogitsCrossEntropy(keras.losses.Loss):
    def call(self, y_true, y_pred):
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)


def test_the_product_of_a_user_loss_lives_as_long_as_its_loss(logistic):
    import gc

    first, second = _LogitsCrossEntropy(), _LogitsCrossEntropy()
    for loss in (first, second, first):
        operator = curvature.HessianOperator(logistic.model, logistic.x, logistic.y,
                                             loss=loss)
    operator.matvec(np.ones(operator.dim))
    assert len(curvature._COMPILED[logistic.model]) == 2
    del operator, first, loss
    gc.collect()
    assert len(curvature._COMPILED[logistic.model]) == 1
    del second
    gc.collect()
    assert len(curvature._COMPILED[logistic.model]) == 0


def test_an_operator_outliving_its_inline_user_loss_still_multiplies(logistic):
    operator = curvature.HessianOperator(logistic.model, logistic.x, logistic.y,
                                         loss=_LogitsCrossEntropy())
    expected = curvature.HessianOperator(logistic.model, logistic.x, logistic.y,
                                         loss=_logits_cross_entropy())
    vector = np.linspace(-1.0, 1.0, operator.dim)
    np.testing.assert_array_equal(operator.matvec(vector), expected.matvec(vector))
    np.testing.assert_array_equal(operator.gradient(), expected.gradient())


def test_compiled_products_do_not_keep_models_alive():
    import gc
    import weakref

    def probe_once():
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        curvature.hessian_vector_product(model, np.ones((4, 3)), np.zeros(4, int),
                                         np.ones(8), loss=CROSS_ENTROPY)
        assert model in curvature._COMPILED
        return weakref.ref(model)

    reference = probe_once()
    gc.collect()
    assert reference() is None


# ---------------------------------------------------------------------------
# Robust loss
# ---------------------------------------------------------------------------


def test_robust_hvp_is_the_clean_hvp_at_fixed_adversarial_inputs(mlp):
    calls = []

    def shift_attack(model, x, y, seed=None):
        calls.append(seed)
        return x + 0.01

    v = np.random.default_rng(8).standard_normal(mlp.dim)
    robust = curvature.hessian_vector_product(
        mlp.model, mlp.x, mlp.y, v, loss=CROSS_ENTROPY, attack=shift_attack, seed=4)
    clean_at_adversarial = curvature.hessian_vector_product(
        mlp.model, mlp.x + 0.01, mlp.y, v, loss=CROSS_ENTROPY)
    np.testing.assert_array_equal(robust, clean_at_adversarial)
    assert calls == [4]
    calls.clear()
    result = curvature.top_hessian_eigenvalue(
        mlp.model, mlp.x, mlp.y, loss=CROSS_ENTROPY, attack=shift_attack,
        iterations=10)
    assert calls == [0] and result.iterations > 1  # crafted once, then fixed


def test_robust_hvp_with_pgd():
    import robustlab

    rng = np.random.default_rng(9)
    x = rng.random((12, 6)).astype("float32")
    y = rng.integers(0, 3, 12)
    model = keras.Sequential([keras.Input((6,)),
                              keras.layers.Dense(8, activation="tanh"),
                              keras.layers.Dense(3)])
    model.compile(loss=CROSS_ENTROPY)
    attack = robustlab.PGD(eps=0.1, steps=3)
    x_adv = attack(model, x, y, seed=5)
    assert np.abs(x_adv - x).max() > 0.01
    v = rng.standard_normal(sum(int(np.prod(w.shape)) for w in
                                model.trainable_variables))
    robust = curvature.hessian_vector_product(model, x, y, v, attack=attack, seed=5)
    clean_at_adversarial = curvature.hessian_vector_product(model, x_adv, y, v)
    np.testing.assert_allclose(robust, clean_at_adversarial, rtol=1e-6, atol=1e-9)
    clean = curvature.hessian_vector_product(model, x, y, v)
    assert relative_error(robust, clean) > 1e-3


def test_a_pgd_attack_ascends_the_loss_whose_hessian_is_measured():
    import robustlab

    rng = np.random.default_rng(10)
    x = rng.random((12, 6)).astype("float32")
    y = rng.integers(0, 3, 12)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    model.compile(loss=CROSS_ENTROPY)

    def margin(y_true, logits):  # another loss than the compiled one
        picked = keras.ops.take_along_axis(
            logits, keras.ops.cast(keras.ops.reshape(y_true, (-1, 1)), "int32"), axis=1)
        return keras.ops.max(logits, axis=1) - keras.ops.squeeze(picked, 1)

    attack = robustlab.PGD(eps=0.1, steps=3, random_start=False)
    operator = curvature.HessianOperator(model, x, y, loss=margin, attack=attack)
    np.testing.assert_array_equal(operator.inputs, attack(model, x, y, loss=margin))
    assert not np.array_equal(operator.inputs, attack(model, x, y))


# ---------------------------------------------------------------------------
# Bad inputs
# ---------------------------------------------------------------------------


def test_an_uncompiled_model_needs_a_loss(mlp):
    with pytest.raises(ValueError, match="`loss`.*Received: loss=None"):
        curvature.hessian_trace(mlp.model, mlp.x, mlp.y, probes=2)
    with pytest.raises(ValueError, match="`loss`"):
        curvature.hessian_trace(mlp.model, mlp.x, mlp.y, probes=2, loss="no_such")


@pytest.mark.parametrize(
    "function, kwargs, message",
    [
        ("top_hessian_eigenvalue", dict(iterations=0), "Received: iterations=0"),
        ("top_hessian_eigenvalue", dict(tol=0.0), "Received: tol=0.0"),
        ("top_hessian_eigenvalue", dict(tol=-1e-3), "Received: tol=-0.001"),
        ("top_hessian_eigenvalue", dict(which="smallest"), "Received: which="),
        ("top_hessian_eigenvalue", dict(batch_size=0), "Received: batch_size=0"),
        ("top_hessian_eigenvalues", dict(k=0), r"\[1, 27\].*Received: k=0"),
        ("top_hessian_eigenvalues", dict(k=28), r"\[1, 27\].*Received: k=28"),
        ("top_hessian_eigenvalues", dict(k=5, iterations=3),
         "Received: iterations=3"),
        ("hessian_trace", dict(probes=0), "Received: probes=0"),
        ("hessian_trace", dict(seed=-1), r"`seed`.*>= 0.*Received: seed=-1"),
        ("top_hessian_eigenvalue", dict(seed=-3), "Received: seed=-3"),
        ("spectral_density", dict(lanczos_steps=0), "Received: lanczos_steps=0"),
        ("spectral_density", dict(probes=0), "Received: probes=0"),
        ("spectral_density", dict(sigma=0.0), "Received: sigma=0.0"),
        ("spectral_density", dict(grid=[1.0, 0.0]), "`grid`"),
    ],
)
def test_bad_arguments_are_named(mlp, function, kwargs, message):
    kwargs = dict(kwargs)
    args = (mlp.model, mlp.x, mlp.y)
    if function == "top_hessian_eigenvalues":
        args += (kwargs.pop("k"),)
    with pytest.raises(ValueError, match=message):
        getattr(curvature, function)(*args, loss=CROSS_ENTROPY, **kwargs)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 5, np.nan, x),
                       y), "`x` must be finite"),
        (lambda x, y: (x[:0], y[:0]), "`x` must hold at least one example"),
        (lambda x, y: (x, y[:-1]), "`x` and `y` must hold the same number"),
        (lambda x, y: (x, np.full(y.shape, np.inf)), "`y` must be finite"),
    ],
)
def test_bad_probe_data_is_named(mlp, change, message):
    x, y = change(mlp.x, mlp.y)
    with pytest.raises(ValueError, match=message):
        curvature.hessian_vector_product(mlp.model, x, y, np.zeros(mlp.dim),
                                         loss=CROSS_ENTROPY)


def test_bad_vectors_are_named(mlp):
    with pytest.raises(ValueError, match="`vector`.*27 values.*Received"):
        curvature.hessian_vector_product(mlp.model, mlp.x, mlp.y, np.zeros(26),
                                         loss=CROSS_ENTROPY)
    with pytest.raises(ValueError, match="`vector`.*shaped like"):
        curvature.hessian_vector_product(mlp.model, mlp.x, mlp.y, [np.zeros(3)],
                                         loss=CROSS_ENTROPY)
    with pytest.raises(ValueError, match="`initial_vector` must be non-zero"):
        curvature.top_hessian_eigenvalue(mlp.model, mlp.x, mlp.y,
                                         loss=CROSS_ENTROPY,
                                         initial_vector=np.zeros(mlp.dim))
    with pytest.raises(ValueError, match="`attack` must return"):
        curvature.hessian_trace(mlp.model, mlp.x, mlp.y, loss=CROSS_ENTROPY,
                                attack=lambda model, x, y, seed=None: x[:1])


def test_no_seed_still_draws_a_start_vector(mlp):
    result = curvature.top_hessian_eigenvalue(mlp.model, mlp.x, mlp.y, loss=CROSS_ENTROPY,
                                              iterations=3000, tol=1e-10, seed=None)
    assert result.eigenvalue == pytest.approx(mlp.eigenvalues[np.argmax(np.abs(mlp.eigenvalues))],
                                              rel=1e-4)


@pytest.mark.parametrize("call, message", [
    # NumPy's "could not convert string to float: 'x'", naming no argument.
    (lambda net, x, y: curvature.hessian_vector_product(net, x, y, "x", loss=CROSS_ENTROPY),
     r"`vector` must be a real number or an array of real numbers. Received: vector='x'"),
    (lambda net, x, y: curvature.top_hessian_eigenvalue(net, x, y, loss=CROSS_ENTROPY,
                                                        initial_vector="x"),
     r"`initial_vector` must be a real number or an array.*Received: initial_vector='x'"),
    (lambda net, x, y: curvature.spectral_density(net, x, y, loss=CROSS_ENTROPY, grid="x"),
     r"`grid` must be a real number or an array.*Received: grid='x'"),
    (lambda net, x, y: curvature.unflatten_weights("x", net), r"Received: vector='x'"),
])
def test_a_vector_that_is_not_numbers_is_named(call, message):
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    x, y = np.zeros((4, 3), "float32"), np.array([0, 1, 0, 1])
    with pytest.raises(TypeError, match=message):
        call(net, x, y)


def test_weights_to_flatten_or_a_model_to_unflatten_for_are_named():
    # "object of type 'NoneType' has no len()" and an AttributeError before.
    with pytest.raises(TypeError, match=r"`arrays` must be a list of arrays .*"
                                        r"Received: arrays of type NoneType"):
        curvature.flatten_weights(None)
    with pytest.raises(TypeError, match=r"`model` must be a keras.Model. "
                                        r"Received: model of type NoneType"):
        curvature.unflatten_weights(np.zeros(3), None)


# -- the same inputs, the same bits, whatever came before ---------------------------


def _twin_tanh_models():
    def build():
        keras.utils.set_random_seed(0)
        return keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="tanh"),
                                 keras.layers.Dense(3)])
    return build(), build()


def test_a_product_depends_on_its_inputs_not_on_the_sizes_of_earlier_calls():
    # On TensorFlow, `reduce_retracing` generalised the compiled graph's batch
    # dimension once a second size was seen, and the general graph rounds
    # differently: a replica fork (another probe size) run from a callback
    # changed the tracker's logged numbers in their last bits.
    from robustlab.callbacks.posterior_tracker import per_example_directional_derivatives

    rng = np.random.default_rng(0)
    x, y = rng.random((64, 4), dtype="float32"), np.arange(64) % 3
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    fresh, used = _twin_tanh_models()
    tangents = [rng.standard_normal(v.shape) for v in fresh.trainable_variables]
    v = curvature.flatten_weights(tangents)
    curvature.hessian_vector_product(used, x, y, v, loss=loss)
    per_example_directional_derivatives(used, x, y, tangents, loss=loss)
    np.testing.assert_array_equal(
        curvature.hessian_vector_product(used, x[:16], y[:16], v, loss=loss),
        curvature.hessian_vector_product(fresh, x[:16], y[:16], v, loss=loss))
    np.testing.assert_array_equal(
        per_example_directional_derivatives(used, x[:16], y[:16], tangents, loss=loss),
        per_example_directional_derivatives(fresh, x[:16], y[:16], tangents, loss=loss))
