"""The hand-written baseline of `benchmarks/bench_main_job.py` does the work
the main job's instruments do: same eigenvalue, same directional
derivatives, same weight cloud, from its own TensorFlow code.

The benchmark's ratio is only meaningful if it is so; these tests keep it
so. TensorFlow only (the baseline is a TensorFlow loop)."""

import math

import keras
import numpy as np
import pytest

from robustlab import curvature
from robustlab import experiments
from robustlab import models
from robustlab import posterior
from robustlab.callbacks.posterior_tracker import per_example_directional_derivatives
from tests import benchmark_scripts

pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="the hand-written baseline is a Keras + TensorFlow loop",
)

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="module")
def by_hand():
    return benchmark_scripts.load("main_job_by_hand")


@pytest.fixture
def net_and_data():
    rng = np.random.default_rng(0)
    x = rng.random((48, 8, 8, 1), dtype="float32")
    y = (np.arange(48) % 10).astype("int64")
    net = models.small_cnn((8, 8, 1), 10, seed=3, weight_decay=5e-4)
    return net, x, y


def unit_vector(variables, seed):
    """A random unit vector of weight space (flat, float64)."""
    u = np.random.default_rng(seed).standard_normal(
        sum(math.prod(v.shape) for v in variables))
    return u / np.linalg.norm(u)


def hand_and_robustlab_eigenpairs(by_hand, net_and_data):
    """The script's power iteration and robustlab's, from the same start,
    with the script's cap and tolerance: ((eigenvalue, vector, products),
    robustlab's result)."""
    net, x, y = net_and_data
    compiled = by_hand.make_instruments(net, by_hand.experiments.QUICK)
    variables = list(net.trainable_variables)
    start = unit_vector(variables, 1)
    hand = by_hand.top_eigenpair(compiled["hvp"], variables, x, y, start)
    expected = curvature.top_hessian_eigenvalue(
        net, x, y, loss=LOSS, iterations=by_hand.POWER_ITERATIONS,
        tol=by_hand.POWER_TOL, batch_size=len(x),
        initial_vector=by_hand.unflat(start, variables, np.float64))
    return hand, expected


def test_power_iteration_finds_robustlabs_eigenvalue(by_hand, net_and_data):
    (eigenvalue, vector, products), expected = hand_and_robustlab_eigenpairs(
        by_hand, net_and_data)
    assert products == expected.iterations
    np.testing.assert_allclose(eigenvalue, expected.eigenvalue, rtol=1e-5)
    np.testing.assert_allclose(
        vector, by_hand.flat(expected.eigenvector), rtol=0, atol=1e-5)


def test_power_iteration_stopped_at_its_cap_makes_robustlabs_products(
        by_hand, net_and_data, monkeypatch):
    # A tolerance no run meets: both stop at the cap, where robustlab takes
    # one more product for the quotient of the vector it returns.
    monkeypatch.setattr(by_hand, "POWER_ITERATIONS", 3)
    monkeypatch.setattr(by_hand, "POWER_TOL", 1e-15)
    (eigenvalue, vector, products), expected = hand_and_robustlab_eigenpairs(
        by_hand, net_and_data)
    assert (products, expected.iterations, expected.converged) == (4, 4, False)
    np.testing.assert_allclose(eigenvalue, expected.eigenvalue, rtol=1e-5)
    np.testing.assert_allclose(
        vector, by_hand.flat(expected.eigenvector), rtol=0, atol=1e-5)


def test_directional_derivatives_match_robustlabs(by_hand, net_and_data):
    net, x, y = net_and_data
    compiled = by_hand.make_instruments(net, by_hand.experiments.QUICK)
    variables = list(net.trainable_variables)
    u = unit_vector(variables, 2)
    derivatives = compiled["directional"](
        x, y, by_hand.unflat(u, variables, np.float32)).numpy()
    expected = per_example_directional_derivatives(
        net, x, y, by_hand.unflat(u, variables, np.float64), loss=LOSS)
    np.testing.assert_allclose(derivatives, expected, rtol=1e-4, atol=1e-6)


def test_weight_cloud_in_the_step_is_the_variance_of_the_iterates(by_hand, net_and_data):
    net, x, y = net_and_data
    q = by_hand.experiments.QUICK
    optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
    optimizer.build(net.trainable_variables)
    cloud = by_hand.WeightCloud(net)
    u = unit_vector(net.trainable_variables, 4)
    cloud.reset(by_hand.unflat(u, net.trainable_variables, np.float64))
    train_step, _ = by_hand.make_steps(net, optimizer, q, cloud)
    iterates, projections = [], []
    for i in range(5):
        rows = slice(8 * i, 8 * i + 8)
        _, _, projection = train_step(x[rows], y[rows], np.array([0, i], np.int32))
        projections.append(float(projection))
        iterates.append(by_hand.flat(v.numpy() for v in net.trainable_variables))
    iterates = np.stack(iterates)
    np.testing.assert_allclose(
        by_hand.flat(cloud.variances()), np.var(iterates, axis=0), rtol=1e-3, atol=1e-12)
    np.testing.assert_allclose(projections, iterates @ u, rtol=1e-12)
    statistics = posterior.IterateStatistics()
    for row in iterates:
        statistics.update([row])
    overall = sum(v.sum() for v in cloud.variances()) / cloud.size
    np.testing.assert_allclose(overall, statistics.summary()["overall"], rtol=1e-3)


def test_instrumented_loop_logs_every_key_at_every_epoch(by_hand):
    history = by_hand.main_job(2, instruments=True)
    assert {len(values) for values in history.values()} == {2}
    assert {"hessian_top_eig", "posterior_var", "posterior_var_top",
            "posterior_var_top_predicted", "pac_bayes_bound"} <= set(history)
    assert all(v > 0 for v in history["posterior_var"])


def test_instrumented_loop_probes_and_predicts_at_the_epochs_the_main_job_does(
        by_hand, monkeypatch):
    # With the default probe every 5 epochs, a short run never probed, so
    # the loop's probe, noise and prediction were never run together: a loop
    # that skipped them would have passed, and flattered the benchmark.
    monkeypatch.setattr(by_hand, "PROBE_EVERY", 2)
    calls = {"top_eigenpair": 0, "window_prediction": 0}
    for name in calls:
        function = getattr(by_hand, name)

        def counted(*args, _function=function, _name=name, **kwargs):
            calls[_name] += 1
            return _function(*args, **kwargs)

        monkeypatch.setattr(by_hand, name, counted)
    hand = by_hand.main_job(4, instruments=True)
    main, _ = experiments.run("quick", None, verbose=0, epochs=4, probe_every=2)
    assert calls == {"top_eigenpair": 2, "window_prediction": 2}
    for key in ("hessian_top_eig", "posterior_var_top", "posterior_noise_top",
                "posterior_var_top_predicted", "pac_bayes_bound"):
        logged = [not math.isnan(v) for v in hand[key]]
        assert logged == [not math.isnan(v) for v in main[key]], key
    assert [not math.isnan(v) for v in hand["hessian_top_eig"]] == [False, True, False, True]
    assert [not math.isnan(v) for v in hand["posterior_var_top"]] == [False, False, True, True]
