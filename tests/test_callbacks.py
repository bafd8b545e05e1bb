"""HessianProbe, PosteriorTracker and BoundTracker inside `fit`.

Each logged number is recomputed by a second route from quantities a plain
test callback collects during the same fit (the weights after every step,
at every epoch's start and end): the curvature functions called directly,
np.var of the stacked iterates, the posterior / bounds functions. One shared
4-epoch run (small CNN, PGD training, a learning-rate drop at epoch 2) serves
most tests; the resume test adds an interrupted and a resumed fit.
"""

import csv
import functools
import math
import warnings

import keras
import numpy as np
import pytest

import robustlab
from robustlab import attacks
from robustlab import bounds
from robustlab import curvature
from robustlab import posterior
from robustlab.callbacks import bound_tracker as bound_tracker_module
from robustlab.callbacks.bound_tracker import BoundTracker
from robustlab.callbacks.hessian_probe import HessianProbe
from robustlab.callbacks.posterior_tracker import PosteriorTracker
from robustlab.callbacks.posterior_tracker import expected_window_variance
from robustlab.callbacks.posterior_tracker import per_example_directional_derivatives
from robustlab.callbacks.robust_evaluation import RobustEvaluation
from tests.test_adversarial_model import InterruptAt

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
EPOCHS, BATCH, N_TRAIN, L2 = 4, 64, 192, 2.5e-4
SCHEDULE = robustlab.schedules.PiecewiseConstant(0.1, drop_epochs=(2,))


def small_cnn_model(optimizer=None):
    net = robustlab.models.small_cnn(filters=(4, 8), dense=32, seed=0,
                                     weight_decay=2 * L2)
    model = robustlab.AdversarialModel(
        net, attack=robustlab.PGD(0.1, steps=3),
        eval_attack=robustlab.PGD(0.1, step_size=0.025, steps=5), seed=0)
    model.compile(optimizer or keras.optimizers.SGD(0.1, momentum=0.9), LOSS,
                  metrics=["accuracy"])
    return model


def instruments(x, y, probe_dir=None, bound_dir=None):
    probe = HessianProbe(x[:64], y[:64], epochs=[0, 1, 2], clean=True,
                         iterations=10, trace_probes=3, batch_size=64,
                         state_dir=probe_dir)
    tracker = PosteriorTracker(probe, batch_size=BATCH, train_size=N_TRAIN,
                               schedule=SCHEDULE, per_layer=True)
    bound = BoundTracker(N_TRAIN, prior_variance=1e-2, tracker=tracker,
                         state_dir=bound_dir)
    return probe, tracker, bound


class Collector(keras.callbacks.Callback):
    """Collects what the second routes need, without touching the callbacks'
    state (only their public results)."""

    def __init__(self, probe, tracker):
        super().__init__()
        self.probe, self.tracker = probe, tracker
        self.iterates, self.start, self.end, self.results = {}, {}, {}, {}
        self.predictions, self.direct = {}, {}

    def weights(self):
        return [np.array(v, np.float64) for v in self.model.model.get_weights()]

    def on_train_begin(self, logs=None):
        self.initial = self.weights()

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.start[epoch] = self.weights()
        self.iterates[epoch] = []

    def on_train_batch_end(self, batch, logs=None):
        self.iterates[self.epoch].append(self.weights())

    def on_epoch_end(self, epoch, logs=None):
        self.end[epoch] = self.weights()
        if self.probe.latest is not None and self.probe.latest.epoch == epoch:
            self.results[epoch] = (self.probe.latest, self.probe.latest_clean)
            self.direct[epoch] = self.direct_eigenvalue(epoch)
        prediction = self.tracker.last_prediction
        if prediction is not None and prediction["epoch"] == epoch:
            self.predictions[epoch] = dict(prediction)

    def direct_eigenvalue(self, epoch):
        """top_hessian_eigenvalue called directly at the same weights, with
        the probe's documented inputs (attack seed and start: seed + epoch,
        warm start from the previous result)."""
        net = self.model.model
        x, y = self.probe.x, self.probe.y
        x_adv = attacks.run_attack(net, x, y, self.model.eval_attack, loss=LOSS,
                                   batch_size=64, seed=epoch)
        previous = self.results.get(epoch - 1)
        direct = {}
        for kind, inputs, index in (("robust", x_adv, 0), ("clean", x, 1)):
            direct[kind] = curvature.top_hessian_eigenvalue(
                net, inputs, y, loss=LOSS, iterations=10, tol=1e-3, batch_size=64,
                seed=epoch, initial_vector=None if previous is None
                else previous[index].eigenvector)
        direct["trace"] = curvature.hessian_trace(net, x_adv, y, probes=3, loss=LOSS,
                                                  batch_size=64, seed=epoch)
        return direct


def fit(model, x, y, *callbacks):
    return model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0,
                     callbacks=[SCHEDULE.callback(), RobustEvaluation(x[:64], y[:64]),
                                *callbacks]).history


@pytest.fixture(scope="module")
def run(digits, tmp_path_factory):
    x, y = digits.x_train[:N_TRAIN], digits.y_train[:N_TRAIN]
    probe, tracker, bound = instruments(x, y)
    collector = Collector(probe, tracker)
    csv_path = tmp_path_factory.mktemp("csv") / "history.csv"
    model = small_cnn_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = fit(model, x, y, probe, tracker, bound, collector,
                      keras.callbacks.CSVLogger(str(csv_path)))
    return dict(x=x, y=y, model=model, probe=probe, tracker=tracker, bound=bound,
                collector=collector, history=history, csv=csv_path, warnings=caught)


# -- keys in History and CSVLogger ---------------------------------------------------


def test_every_key_is_logged_at_every_epoch_and_reaches_the_csv(run):
    history = run["history"]
    keys = run["probe"].log_keys() + run["tracker"].log_keys() + run["bound"].log_keys()
    assert {"hessian_top_eig", "hessian_top_eig_clean", "hessian_trace",
            "hessian_trace_stderr", "hessian_iterations", "hessian_converged",
            "posterior_var", "posterior_var/conv1", "posterior_var_top",
            "posterior_var_top_predicted", "posterior_var_top_stationary",
            "posterior_unstable", "pac_bayes_kl", "pac_bayes_bound",
            "pac_bayes_bound_mcallester"} <= set(keys)
    for key in keys:
        assert len(history[key]) == EPOCHS, key
    # The probe runs at the end of epochs 0-2 only; no direction for window 0.
    assert np.isnan(history["hessian_top_eig"][3])
    assert np.all(np.isfinite(history["hessian_top_eig"][:3]))
    assert np.isnan(history["posterior_var_top"][0])
    assert np.all(np.isfinite(history["posterior_var_top"][1:]))
    with open(run["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == EPOCHS
    for key in keys:
        column = np.array([float(row[key]) for row in rows])
        np.testing.assert_allclose(column, history[key], rtol=1e-6, err_msg=key)


# -- HessianProbe ---------------------------------------------------------------------


def test_probe_eigenvalue_equals_a_direct_call_at_the_same_weights(run):
    collector, history = run["collector"], run["history"]
    for epoch in (0, 1):  # a cold start, then a warm start from epoch 0
        results = dict(zip(("robust", "clean"), collector.results[epoch]))
        for kind, suffix in (("robust", ""), ("clean", "_clean")):
            result, direct = results[kind], collector.direct[epoch][kind]
            assert result.eigenvalue == pytest.approx(direct.eigenvalue, rel=1e-6)
            assert result.iterations == direct.iterations
            for a, b in zip(result.eigenvector, direct.eigenvector):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)
            assert history[f"hessian_top_eig{suffix}"][epoch] == pytest.approx(
                result.eigenvalue)
            assert history[f"hessian_iterations{suffix}"][epoch] == result.iterations
            assert history[f"hessian_converged{suffix}"][epoch] == float(
                result.converged)
        trace = collector.direct[epoch]["trace"]
        assert history["hessian_trace"][epoch] == pytest.approx(trace.trace, rel=1e-6)
        assert history["hessian_trace_stderr"][epoch] == pytest.approx(
            trace.stderr, rel=1e-5)


def test_probe_keeps_unit_eigenvectors_aligned_with_the_weights(run):
    probe, model = run["probe"], run["model"]
    assert probe.latest.epoch == 2 and probe.latest.kind == "robust"
    assert probe.latest_clean.kind == "clean"
    assert probe.latest_before(3) is probe.latest
    assert probe.latest_before(2) is None  # only results older than the window
    vector = probe.latest.eigenvector
    assert [v.shape for v in vector] == [tuple(v.shape) for v in
                                         model.model.trainable_variables]
    assert sum(float(np.sum(v * v)) for v in vector) == pytest.approx(1.0)


def _probe_with_state(run, state_dir):
    """A HessianProbe of the shared run's model, probing epochs 0-2 and
    keeping its state in `state_dir`, as a fresh fit would start it."""
    model, x, y = run["model"], run["x"][:16], run["y"][:16]
    instance = HessianProbe(x, y, epochs=[0, 1, 2], iterations=2, state_dir=state_dir)
    instance.set_model(model)
    instance.set_params({"epochs": EPOCHS, "steps": None, "verbose": 0})
    instance.on_train_begin()
    return instance


def test_probe_state_resumes_from_the_newest_result_before_the_resume_epoch(
        run, tmp_path):
    probe = functools.partial(_probe_with_state, run, tmp_path)
    writer, saved = probe(), {}
    for epoch in (0, 1, 2):
        writer.on_epoch_end(epoch, {})
        saved[epoch] = writer.latest
    # Killed after the probe saved epoch 2 but before the backup of epoch 2:
    # the fit resumes at epoch 2 and must see epoch 1's result, as it did.
    for resume_epoch, expected in ((2, 1), (3, 2)):
        restored = probe().latest_before(resume_epoch)
        assert restored.epoch == expected
        assert restored.eigenvalue == saved[expected].eigenvalue
        for a, b in zip(restored.eigenvector, saved[expected].eigenvector):
            np.testing.assert_array_equal(a, b)
    assert probe().latest_before(1) is None  # only epoch 0 older, and it is gone


def test_probe_state_resumed_twice_at_a_probed_epoch_keeps_the_result_it_resumed_from(
        run, tmp_path):
    probe = functools.partial(_probe_with_state, run, tmp_path)
    writer = probe()
    for epoch in (0, 1, 2):
        writer.on_epoch_end(epoch, {})
        if epoch == 1:
            epoch_1 = writer.latest
    # Killed after the probe saved epoch 2 but before the backup of epoch 2;
    # the resumed fit probes epoch 2 again and is killed at the same moment.
    resumed = probe()
    resumed.on_epoch_begin(2)
    resumed.on_epoch_end(2, {})
    restored = probe().latest_before(2)
    assert restored is not None and restored.epoch == 1
    assert restored.eigenvalue == epoch_1.eigenvalue
    for a, b in zip(restored.eigenvector, epoch_1.eigenvector):
        np.testing.assert_array_equal(a, b)


# -- PosteriorTracker -------------------------------------------------------------


def stacked(iterates):
    return np.stack([np.concatenate([w.ravel() for w in it]) for it in iterates])


def test_measured_variance_is_np_var_of_the_iterates(run):
    collector, history = run["collector"], run["history"]
    names = [v.path.split("/")[0] for v in run["model"].model.trainable_variables]
    for epoch in range(EPOCHS):
        iterates = collector.iterates[epoch]
        assert len(iterates) == N_TRAIN // BATCH
        flat = stacked(iterates)
        assert history["posterior_var"][epoch] == pytest.approx(
            float(np.var(flat, axis=0).mean()), rel=1e-4)
        layer_values = {}
        for i, name in enumerate(names):
            layer_values.setdefault(name, []).append(
                np.var(np.stack([it[i] for it in iterates]), axis=0).ravel())
        for name, parts in layer_values.items():
            assert history[f"posterior_var/{name}"][epoch] == pytest.approx(
                float(np.concatenate(parts).mean()), rel=1e-4), name


def test_projected_variance_is_np_var_of_the_projected_iterates(run):
    collector, history = run["collector"], run["history"]
    for epoch in (1, 2, 3):
        u_epoch = collector.predictions[epoch]["probe_epoch"]
        assert u_epoch == min(epoch - 1, 2)
        u = np.concatenate([v.ravel()
                            for v in collector.results[u_epoch][0].eigenvector])
        projections = stacked(collector.iterates[epoch]) @ u
        assert history["posterior_var_top"][epoch] == pytest.approx(
            float(np.var(projections)), rel=1e-4)


def test_prediction_is_fed_the_window_s_own_quantities(run):
    collector, history = run["collector"], run["history"]
    steps = N_TRAIN // BATCH
    model = run["model"]
    net = keras.models.clone_model(model.model)  # to hold a window's start weights
    for epoch in (1, 2, 3):
        p = collector.predictions[epoch]
        result = collector.results[p["probe_epoch"]][0]
        # learning rates of the window's steps and the one before it
        np.testing.assert_allclose(p["lrs"], np.full(steps, SCHEDULE(epoch)), rtol=1e-6)
        assert p["start_lr"] == pytest.approx(SCHEDULE(epoch - 1))
        assert p["momentum"] == pytest.approx(0.9)
        # curvature: the probe's eigenvalue + 2 l ||u||^2 (every variable has L2(l))
        assert p["regularization_curvature"] == pytest.approx(2 * L2, rel=1e-9)
        assert p["curvature"] == pytest.approx(result.eigenvalue + 2 * L2)
        # noise: variance over the probe set's training-attack examples, at
        # the window's start, of the per-example derivative along u
        net.set_weights([w.astype("float32") for w in collector.start[epoch]])
        x_adv = attacks.run_attack(net, run["probe"].x, run["probe"].y, model.attack,
                                   loss=LOSS, seed=epoch)
        g = per_example_directional_derivatives(net, x_adv, run["probe"].y,
                                                result.eigenvector, loss=LOSS)
        assert p["noise_variance"] == pytest.approx(float(np.var(g)), rel=1e-4)
        noise = posterior.minibatch_noise_variance(g, BATCH, N_TRAIN)  # 192 = 3 x 64
        np.testing.assert_allclose(p["minibatch_noise"], noise, rtol=1e-4)
        # the prediction and the stationary limit from those inputs
        initial = posterior.stationary_covariance(p["start_lr"], 0.9, p["curvature"],
                                                  noise, 1)
        assert history["posterior_var_top_predicted"][epoch] == pytest.approx(
            expected_window_variance(p["lrs"], 0.9, p["curvature"], noise,
                                     initial=initial), rel=1e-4)
        assert history["posterior_var_top_stationary"][epoch] == pytest.approx(
            posterior.stationary_variance(SCHEDULE(epoch), 0.9, p["curvature"],
                                          noise, 1), rel=1e-4)
        assert history["posterior_unstable"][epoch] == 0.0


def test_window_prediction_matches_covariance_recursion_and_a_simulation():
    rng = np.random.default_rng(0)
    beta, lam, steps, replicas = 0.9, 3.0, 16, 40_000
    lrs = np.r_[np.full(6, 0.2), np.full(steps - 6, 0.02)]  # a drop inside
    noise = np.r_[np.full(steps - 1, 0.05), 0.08]  # a smaller last batch
    initial = posterior.stationary_covariance(0.2, beta, lam, 0.05, 1)
    expected, trajectory = expected_window_variance(
        lrs, beta, lam, noise, initial=initial, return_trajectory=True)
    head = posterior.covariance_recursion(lrs[:-1], beta, lam, 0.05, 1,
                                          initial=initial, return_full=True)
    last = posterior.covariance_recursion(
        lrs[-1:], beta, lam, 0.08, 1,
        initial=[head.variance[-1], head.covariance[-1], head.previous_variance[-1]])
    np.testing.assert_allclose(trajectory, np.r_[head.variance, last], rtol=1e-12)
    # Monte Carlo: one run's ddof=0 variance over the window, averaged.
    var0, cov0, _ = initial
    cholesky = np.linalg.cholesky(np.array([[var0, cov0], [cov0, var0]]))
    x, x_prev = cholesky @ rng.standard_normal((2, replicas))
    path = []
    for eta, q in zip(lrs, noise):
        xi = rng.standard_normal(replicas) * np.sqrt(q)
        x, x_prev = x - eta * (lam * x + xi) + beta * (x - x_prev), x
        path.append(x)
    window_variance = np.var(np.array(path), axis=0)
    standard_error = window_variance.std() / np.sqrt(replicas)
    assert abs(window_variance.mean() - expected) < 4 * standard_error
    # Its stationary limit: a long window at one rate from the stationary cloud.
    long = expected_window_variance(np.full(4000, 0.02), beta, lam, 0.05,
                                    initial=posterior.stationary_covariance(
                                        0.02, beta, lam, 0.05, 1))
    limit = posterior.stationary_variance(0.02, beta, lam, 0.05, 1)
    assert long == pytest.approx(limit, rel=0.02)


def test_tracker_memory_is_two_float32_copies_of_the_parameters(run):
    tracker, model = run["tracker"], run["model"]
    parameter_bytes = sum(np.dtype(v.dtype).itemsize * math.prod(v.shape)
                          for v in model.model.trainable_variables)
    assert tracker.nbytes == 2 * parameter_bytes
    assert tracker.statistics.dtype == np.float32
    assert tracker.window_epoch == EPOCHS - 1


# -- BoundTracker ---------------------------------------------------------------------


def test_bound_equals_the_bounds_functions_fed_the_same_inputs(run):
    collector, history, bound = run["collector"], run["history"], run["bound"]
    w0 = collector.initial
    for a, b in zip(bound.initial_weights, w0):
        np.testing.assert_array_equal(a, b)
    for epoch in range(EPOCHS):
        iterates = collector.iterates[epoch]
        variance = [np.maximum(np.var(np.stack([it[i] for it in iterates]), axis=0),
                            bound.variance_floor) for i in range(len(w0))]
        kl = bounds.gaussian_kl(collector.end[epoch], variance, w0, 1e-2)
        risk = 1.0 - history["train_robust_accuracy"][epoch]
        assert history["pac_bayes_kl"][epoch] == pytest.approx(kl, rel=1e-3)
        kl_logged = history["pac_bayes_kl"][epoch]
        assert history["pac_bayes_bound"][epoch] == pytest.approx(
            bounds.seeger_bound(risk, kl_logged, N_TRAIN, 0.05), rel=1e-9)
        assert history["pac_bayes_bound_mcallester"][epoch] == pytest.approx(
            bounds.mcallester_bound(risk, kl_logged, N_TRAIN, 0.05), rel=1e-9)
    # The KL rises when the cloud collapses at the drop (epoch 2).
    assert history["pac_bayes_kl"][2] > history["pac_bayes_kl"][1]


def test_an_accuracy_key_outside_the_unit_interval_is_refused(digits):
    # A loss named by mistake is not clipped into a risk.
    x, y = digits.x_train[:128], digits.y_train[:128]
    tracker = PosteriorTracker()
    bound = BoundTracker(128, prior_variance=1e-2, tracker=tracker, accuracy_key="loss")
    with pytest.raises(ValueError, match=r"accuracy in \[0, 1\].*Received: accuracy_key='loss'"):
        small_cnn_model().fit(x, y, batch_size=64, epochs=1, verbose=0,
                              callbacks=[tracker, bound])


def test_an_isotropic_posterior_below_the_floor_counts_every_parameter(digits):
    x, y = digits.x_train[:128], digits.y_train[:128]
    tracker = PosteriorTracker()
    # A floor above any within-epoch variance: every parameter is raised to it.
    bound = BoundTracker(128, prior_variance=1.0, tracker=tracker, posterior="isotropic",
                         variance_floor=0.5, accuracy_key="robust_accuracy",
                         delta=np.float32(0.05))
    model = small_cnn_model()
    with pytest.warns(UserWarning, match="raised to it"):
        model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[tracker, bound])
    assert bound.last["floored"] == model.model.count_params()


def test_the_floor_warning_comes_once_in_each_run_also_for_the_same_run_again(digits):
    # Python's default filter shows a word-for-word repeated warning from one
    # line once per process; the README promises one each run.
    x, y = digits.x_train[:128], digits.y_train[:128]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for _ in range(2):
            tracker = PosteriorTracker()
            bound = BoundTracker(128, prior_variance=1.0, tracker=tracker,
                                 posterior="isotropic", variance_floor=0.5,
                                 accuracy_key="robust_accuracy")
            small_cnn_model().fit(x, y, batch_size=64, epochs=2, verbose=0,
                                  callbacks=[tracker, bound])
    floor = [w for w in caught if "raised to it" in str(w.message)]
    assert len(floor) == 2
    assert {w.filename for w in floor} == {bound_tracker_module.__file__}


# -- epochs without a measurement, and keys of their own -----------------------------


def _tiny_model():
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                            keras.layers.Dense(3)])
    model = robustlab.AdversarialModel(net, robustlab.PGD(0.1, steps=2))
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS, metrics=["accuracy"])
    return model


def _tiny_data(n=64):
    return np.random.default_rng(0).random((n, 4), dtype="float32"), np.arange(n) % 3


def test_robust_evaluation_logs_nan_on_the_epochs_it_skips():
    x, y = _tiny_data()
    history = _tiny_model().fit(x, y, batch_size=16, epochs=3, verbose=0,
                                callbacks=[RobustEvaluation(x[:16], y[:16], every=2)])
    accuracy = history.history["train_robust_accuracy"]
    assert len(accuracy) == 3
    assert math.isnan(accuracy[0]) and np.isfinite(accuracy[1:]).all()


def test_robust_evaluation_evaluates_the_epoch_where_training_stops_early():
    # An EarlyStopping placed before it ends the fit: that epoch is the last,
    # and "always at the end of the last one" held only for params["epochs"].
    x, y = _tiny_data()
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=1e9)
    history = _tiny_model().fit(
        x, y, batch_size=16, epochs=10, verbose=0,
        callbacks=[stop, RobustEvaluation(x[:16], y[:16], every=5)])
    accuracy = history.history["train_robust_accuracy"]
    assert len(accuracy) == 2
    assert math.isnan(accuracy[0]) and np.isfinite(accuracy[1])


def test_robust_evaluation_names_a_model_that_is_not_adversarial():
    # It failed with "'Sequential' object has no attribute '_check_arrays'".
    x, y = _tiny_data()
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    net.compile("sgd", LOSS)
    with pytest.raises(TypeError, match=r"needs a robustlab.AdversarialModel.*"
                       r"Received: model=Sequential$"):
        net.fit(x, y, epochs=1, verbose=0, callbacks=[RobustEvaluation(x[:16], y[:16])])


def test_a_bound_on_an_epoch_robust_evaluation_skips_is_nan():
    x, y = _tiny_data()
    tracker = PosteriorTracker()
    bound = BoundTracker(64, prior_variance=1e-2, tracker=tracker)
    history = _tiny_model().fit(
        x, y, batch_size=16, epochs=2, verbose=0,
        callbacks=[RobustEvaluation(x[:16], y[:16], every=2), tracker, bound])
    assert math.isnan(history.history["pac_bayes_bound"][0])
    assert np.isfinite(history.history["pac_bayes_bound"][1])


@pytest.mark.parametrize("prefix, taken", [("val_", "val_loss"), ("robust_", "robust_loss")])
def test_a_robust_evaluation_prefix_that_would_overwrite_a_log_is_refused(prefix, taken):
    x, y = _tiny_data()
    with pytest.raises(ValueError, match=rf"overwrite \[.*'{taken}'.*"
                                         rf"Received: prefix='{prefix}'$"):
        _tiny_model().fit(x, y, batch_size=16, epochs=1, verbose=0,
                          validation_data=(x[:16], y[:16]),
                          callbacks=[RobustEvaluation(x[:16], y[:16], prefix=prefix)])


@pytest.mark.parametrize("read", ["in-step", "batch-by-batch"])
@pytest.mark.parametrize("drop_first", [True, False], ids=["drop-first", "drop-last"])
def test_the_prediction_starts_from_the_rate_of_the_last_step_before_the_window(
        read, drop_first, monkeypatch):
    # ReduceLROnPlateau lowers the rate at the end of epoch 1; the window of
    # epoch 2 starts from the rate epoch 1 trained with, wherever the drop
    # stands in the callback list.
    if read == "batch-by-batch":
        monkeypatch.setattr(robustlab.AdversarialModel, "observe_iterates",
                            lambda self, observer, variables: False)
    x, y = _tiny_data()
    probe = HessianProbe(x[:32], y[:32], epochs=[1], iterations=5)
    tracker = PosteriorTracker(probe, batch_size=16, train_size=64, epochs=[2])
    drop = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.1, patience=0,
                                             min_delta=1e9, min_lr=0)
    callbacks = [drop, probe, tracker] if drop_first else [probe, tracker, drop]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the window's few steps, an unstable rate
        _tiny_model().fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=callbacks)
    assert tracker.last_prediction["epoch"] == 2
    assert tracker.last_prediction["lrs"][0] == pytest.approx(0.005)
    assert tracker.last_prediction["start_lr"] == pytest.approx(0.05)


# -- the probe of the fit, and the layers of the model -------------------------------


def test_a_probe_missing_from_the_fits_callbacks_is_refused():
    x, y = _tiny_data()
    tracker = PosteriorTracker(HessianProbe(x[:32], y[:32], every=1, iterations=2),
                               batch_size=16)
    with pytest.raises(ValueError, match=r"^Argument `probe` must be a HessianProbe that is "
                                         r"also in the callbacks of this fit.*"
                                         r"Received: probe=<.*HessianProbe object at .*>$"):
        _tiny_model().fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[tracker])


def test_a_probe_left_out_of_a_later_fit_is_refused():
    # The probe has a model and a result from the first fit; the second fit
    # would never probe again.
    x, y = _tiny_data()
    probe = HessianProbe(x[:32], y[:32], every=1, iterations=2)
    tracker = PosteriorTracker(probe, batch_size=16)
    model = _tiny_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a window of a few steps may be unstable
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[probe, tracker])
    with pytest.raises(ValueError, match=r"^Argument `probe` must be a HessianProbe that is "
                                         r"also in the callbacks of this fit"):
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[tracker])


def test_a_probe_placed_after_the_tracker_is_read_at_the_next_window():
    x, y = _tiny_data()
    probe = HessianProbe(x[:32], y[:32], epochs=[0], iterations=2)
    tracker = PosteriorTracker(probe, batch_size=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a window of a few steps may be unstable
        history = _tiny_model().fit(x, y, batch_size=16, epochs=2, verbose=0,
                                    callbacks=[tracker, probe]).history
    assert tracker.last_prediction["probe_epoch"] == 0
    assert math.isnan(history["posterior_var_top"][0])
    assert history["posterior_var_top"][1] > 0


def _two_blocks_with_one_layer_name():
    # Two functional sub-models, each with a layer "dense": the trainable
    # variables' paths are dense/kernel, dense/bias, dense/kernel, dense/bias.
    def block(inputs, units):
        x = keras.Input((inputs,))
        return keras.Model(x, keras.layers.Dense(units, name="dense")(x))

    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4,)), block(4, 5), block(5, 3)])
    model = robustlab.AdversarialModel(net, robustlab.PGD(0.1, steps=2))
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
    return model


class _Iterates(keras.callbacks.Callback):
    """The classifier's weights after every step (float64)."""

    def on_train_begin(self, logs=None):
        self.iterates = []

    def on_train_batch_end(self, batch, logs=None):
        self.iterates.append([np.array(w, np.float64)
                              for w in self.model.model.get_weights()])


def test_variables_that_share_a_path_are_numbered_in_order():
    x, y = _tiny_data()
    model = _two_blocks_with_one_layer_name()
    assert [v.path for v in model.model.trainable_variables] == [
        "dense/kernel", "dense/bias", "dense/kernel", "dense/bias"]
    tracker = PosteriorTracker(per_layer=True)
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[tracker])
    assert tracker.statistics.names == [
        "dense/kernel", "dense/bias", "dense#2/kernel", "dense#2/bias"]
    assert tracker.log_keys() == [
        "posterior_var", "posterior_var/dense", "posterior_var/dense#2"]
    assert set(tracker.log_keys()) <= set(history.history)


def test_layers_that_share_a_path_are_measured_apart():
    x, y = _tiny_data()
    iterates = _Iterates()
    history = _two_blocks_with_one_layer_name().fit(
        x, y, batch_size=16, epochs=1, verbose=0,
        callbacks=[PosteriorTracker(per_layer=True), iterates]).history
    for key, block in (("posterior_var/dense", slice(0, 2)),
                       ("posterior_var/dense#2", slice(2, 4))):
        flat = stacked([it[block] for it in iterates.iterates])
        assert history[key][0] == pytest.approx(
            float(np.var(flat, axis=0).mean()), rel=1e-4), key


def test_per_layer_keys_before_the_tracker_has_a_model_say_when_they_are_known():
    with pytest.raises(RuntimeError, match=r"^PosteriorTracker\(per_layer=True\) names its "
                                           r"per-layer keys after the model's layers, which "
                                           r"are known once it has a built model.*"
                                           r"Received: no model$"):
        PosteriorTracker(per_layer=True).log_keys()


def test_per_layer_keys_are_the_variable_paths_without_their_last_part():
    # As the docstring says: a layer conv1 of a Sequential named "net" logs
    # posterior_var/net/conv1.
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="conv1"),
                            keras.layers.Dense(2, name="logits")], name="net")
    tracker = PosteriorTracker(per_layer=True)
    tracker.set_model(net)
    assert tracker.log_keys() == [
        "posterior_var", "posterior_var/net/conv1", "posterior_var/net/logits"]


# -- kill and resume ------------------------------------------------------------------


def test_a_resumed_fit_logs_the_history_of_an_uninterrupted_one(run, tmp_path):
    x, y = run["x"], run["y"]
    backup = str(tmp_path / "backup")

    def attempt(*extra):
        probe, tracker, bound = instruments(x, y, probe_dir=backup, bound_dir=backup)
        return fit(small_cnn_model(), x, y, probe, tracker, bound,
                   keras.callbacks.BackupAndRestore(backup), *extra)

    with pytest.raises(RuntimeError, match="interrupted"):
        attempt(InterruptAt(at_epoch=2))
    resumed = attempt()
    uninterrupted = run["history"]
    assert len(resumed["loss"]) == EPOCHS - 2
    for key, values in resumed.items():
        np.testing.assert_allclose(values, uninterrupted[key][2:], rtol=1e-5,
                                   err_msg=key)


def test_a_resumed_fit_without_w0_refuses_to_guess_it(digits, tmp_path):
    x, y = digits.x_train[:N_TRAIN], digits.y_train[:N_TRAIN]
    tracker = PosteriorTracker()
    bound = BoundTracker(N_TRAIN, prior_variance=1e-2, tracker=tracker,
                         accuracy_key="robust_accuracy")
    model = small_cnn_model()
    with pytest.raises(RuntimeError, match="initial weights w_0"):
        model.fit(x, y, batch_size=BATCH, epochs=2, initial_epoch=1, verbose=0,
                  callbacks=[tracker, bound])


# -- directional derivatives -----------------------------------------------------


def test_directional_derivatives_match_per_example_gradients_and_differences():
    rng = np.random.default_rng(0)
    kernel, bias = rng.normal(size=(5, 3)), rng.normal(size=3)
    x = rng.random((7, 5)).astype("float32")
    y = rng.integers(0, 3, 7)
    net = keras.Sequential([keras.Input((5,)), keras.layers.Dense(3)])
    net.set_weights([kernel.astype("float32"), bias.astype("float32")])
    u = [rng.normal(size=(5, 3)), rng.normal(size=3)]
    derivatives, losses = per_example_directional_derivatives(
        net, x, y, u, loss=LOSS, batch_size=4, return_losses=True)

    def per_example_loss(k, b):
        z = x.astype(np.float64) @ k + b
        z = z - z.max(axis=1, keepdims=True)
        return np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]

    # Per-example gradients in closed form: x_i (p_i - e_y)^T and p_i - e_y.
    z = x.astype(np.float64) @ kernel + bias
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1.0
    closed = np.einsum("ni,nj,ij->n", x, p, u[0]) + p @ u[1]
    h = 1e-6
    differences = (per_example_loss(kernel + h * u[0], bias + h * u[1])
                   - per_example_loss(kernel - h * u[0], bias - h * u[1])) / (2 * h)
    np.testing.assert_allclose(derivatives, closed, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(derivatives, differences, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(losses, per_example_loss(kernel, bias), rtol=1e-5)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(model="net"), TypeError, r"`model` must be a keras.Model. "
                                   r"Received: model of type str"),
    (dict(loss=3), ValueError, r"`loss` must be a Keras loss.*Received: loss=3"),
    (dict(loss=None), ValueError, r"`loss` is required.*Received: loss=None"),
])
def test_directional_derivatives_name_a_bad_model_or_loss(kwargs, error, match):
    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    arguments = dict(model=net, loss=LOSS)
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        per_example_directional_derivatives(
            arguments.pop("model"), np.zeros((3, 2), "float32"), np.zeros(3, int),
            [np.zeros((2, 2)), np.zeros(2)], **arguments)


@pytest.mark.parametrize("direction", [3.0, "u", None])
def test_directional_derivatives_name_a_direction_that_is_not_a_list(direction):
    # list(3.0) raised "'float' object is not iterable", naming nothing.
    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    with pytest.raises(TypeError, match=r"`direction` must be a list of arrays shaped like "
                                        rf"model.trainable_variables\. Received: direction="):
        per_example_directional_derivatives(net, np.eye(2, dtype="float32"), np.array([0, 1]),
                                            direction, loss=LOSS)


def test_directional_derivatives_take_a_flat_direction_as_its_arrays():
    # A probe's eigenvector is flat: list() split it into 9 numbers, and the
    # error listed 9 empty shapes.
    from robustlab.curvature import flatten_weights

    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    x, y = np.eye(2, dtype="float32"), np.array([0, 2])
    u = [np.arange(6.0).reshape(2, 3) / 10, np.array([1.0, -1.0, 0.5])]
    np.testing.assert_array_equal(
        per_example_directional_derivatives(net, x, y, flatten_weights(u), loss=LOSS),
        per_example_directional_derivatives(net, x, y, u, loss=LOSS))
    with pytest.raises(ValueError, match=r"or a flat vector of their 9 values\. Received: "
                                         r"direction with 12 entries of shapes \[\(\)\]$"):
        per_example_directional_derivatives(net, x, y, np.zeros(12), loss=LOSS)


def test_equal_keras_losses_written_afresh_share_one_compiled_derivative():
    # Keyed by the loss's identity, each call compiled and kept another.
    from robustlab.callbacks import posterior_tracker

    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    for _ in range(3):
        per_example_directional_derivatives(
            net, np.eye(2, dtype="float32"), np.array([0, 1]), [np.ones((2, 2)), np.ones(2)],
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    assert len(posterior_tracker._DIRECTIONAL[net]) == 1


def test_directional_derivatives_refuse_labels_outside_the_models_classes():
    # JAX's one-hot of label 5 with 2 classes is all zeros (a zero loss and
    # derivative); TensorFlow failed inside its graph.
    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"^Labels `y` must be class indices in \[0, 1\] to "
                                         r"fit the model's 2 outputs. Received: y with "
                                         r"values in \[0, 5\]$"):
        per_example_directional_derivatives(
            net, np.eye(2, dtype="float32"), np.array([0, 5]),
            [np.zeros((2, 2)), np.zeros(2)], loss=LOSS)


# -- bad input ---------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(x=np.full((4, 8, 8, 1), np.nan)), ValueError, r"`x` must be finite"),
    (dict(x=np.zeros((0, 8, 8, 1)), y=np.zeros(0, int)), ValueError,
     r"`x` must hold at least one example"),
    (dict(y=np.zeros(3, int)), ValueError, r"same number of examples"),
    (dict(iterations=0), ValueError, r"`iterations` must be an integer >= 1"),
    (dict(tol=0.0), ValueError, r"`tol` must be a finite number > 0"),
    (dict(every=0), ValueError, r"`every` must be an integer >= 1"),
    (dict(epochs=[-1]), ValueError, r"`epochs` must be None or a non-empty list"),
    (dict(robust=False), ValueError, r"needs something to measure"),
    (dict(trace_probes=-1), ValueError, r"`trace_probes` must be an integer >= 0"),
    (dict(state_dir=1), TypeError, r"^Argument `state_dir` must be None or a folder path "
                                   r"\(a str or an os.PathLike\). Received: state_dir=1$"),
    # An empty path was taken for the current folder: the state went there.
    (dict(state_dir=""), ValueError, r"`state_dir` must be a folder.*Received: state_dir=''"),
])
def test_bad_probe_arguments_are_rejected(kwargs, error, match):
    arguments = dict(x=np.zeros((4, 8, 8, 1)), y=np.zeros(4, int))
    arguments.update(kwargs)
    x, y = arguments.pop("x"), arguments.pop("y")
    with pytest.raises(error, match=match):
        HessianProbe(x, y, **arguments)


def test_noise_examples_without_a_probe_are_refused():
    # Without a probe nothing is predicted: the examples were silently unused.
    x, y = np.zeros((4, 8, 8, 1)), np.zeros(4, int)
    with pytest.raises(ValueError, match=r"`x` and `y` are the examples of the gradient noise .*"
                                         r"without a probe there is none.*Received: probe=None"):
        PosteriorTracker(x=x, y=y)
    tracker = PosteriorTracker(HessianProbe(x, y), x=x, y=y, batch_size=2)
    assert tracker.x.shape == x.shape


def test_bad_tracker_and_bound_arguments_are_rejected():
    probe = HessianProbe(np.zeros((4, 8, 8, 1)), np.zeros(4, int))
    with pytest.raises(ValueError, match=r"pass the training `batch_size`"):
        PosteriorTracker(probe)
    with pytest.raises(ValueError, match=r"`every` must be an integer >= 1"):
        PosteriorTracker(every=0)
    with pytest.raises(ValueError, match=r"`dtype` must be"):
        PosteriorTracker(dtype="float16")
    with pytest.raises(TypeError, match=r"`probe` must be a HessianProbe"):
        PosteriorTracker(probe="top")
    tracker = PosteriorTracker()
    with pytest.raises(ValueError, match=r"`prior_variance` must be a finite number"):
        BoundTracker(10, prior_variance=0.0, tracker=tracker)
    with pytest.raises(ValueError, match=r"`delta` must be a number in \(0, 1\)"):
        BoundTracker(10, prior_variance=1.0, tracker=tracker, delta=1.5)
    with pytest.raises(ValueError, match=r"`variance_floor` must be a finite number > 0. "
                                         r"Received: variance_floor=0.0"):
        BoundTracker(10, prior_variance=1.0, tracker=tracker, variance_floor=0.0)
    with pytest.raises(TypeError, match=r"`state_dir` must be None or a folder path .*"
                                        r"Received: state_dir=1"):
        BoundTracker(10, prior_variance=1.0, tracker=tracker, state_dir=1)
    with pytest.raises(ValueError, match=r"`state_dir` must be a folder.*Received: state_dir=''"):
        BoundTracker(10, prior_variance=1.0, tracker=tracker, state_dir="")
    with pytest.raises(TypeError, match=r"`tracker` must be the PosteriorTracker"):
        BoundTracker(10, prior_variance=1.0, tracker=None)


def test_any_finite_variance_floor_above_zero_is_accepted():
    # gaussian_kl takes the log of each variance: no floor > 0 makes the KL inf.
    bound = BoundTracker(10, prior_variance=1.0, tracker=PosteriorTracker(),
                         variance_floor=1e-300)
    assert bound.variance_floor == 1e-300


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(every=0), ValueError, r"`every` must be an integer >= 1. Received: every=0"),
    (dict(batch_size=0), ValueError, r"`batch_size` must be an integer >= 1. "
                                     r"Received: batch_size=0"),
    (dict(batch_size=2.5), TypeError, r"`batch_size` must be an integer >= 1. "
                                      r"Received: batch_size=2.5"),
])
def test_bad_robust_evaluation_arguments_are_rejected(kwargs, error, match):
    with pytest.raises(error, match=match):
        RobustEvaluation(np.zeros((4, 8, 8, 1)), np.zeros(4, int), **kwargs)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(curvature=True), TypeError,
     r"^Argument `curvature` must be a finite real number \(one direction\). "
     r"Received: curvature=True$"),
    (dict(curvature="2"), TypeError,
     r"^Argument `curvature` must be a finite real number \(one direction\). "
     r"Received: curvature='2'$"),
    (dict(minibatch_noise=[-1.0, 1.0]), ValueError,
     r"^Argument `minibatch_noise` must be finite and >= 0. "
     r"Received: minibatch_noise\[0\]=-1.0$"),
    (dict(lrs=["0.1", "0.1"]), TypeError,
     r"^Argument `lrs` must be a real number or an array of real numbers. "
     r"Received: lrs=\['0.1', '0.1'\]$"),
], ids=["curvature-bool", "curvature-text", "negative-noise", "lrs-text"])
def test_bad_window_variance_arguments_are_refused_by_their_own_name(kwargs, error, match):
    arguments = dict(lrs=[0.1, 0.1], momentum=0.9, curvature=2.0, minibatch_noise=1.0)
    arguments.update(kwargs)
    with pytest.raises(error, match=match):
        expected_window_variance(**arguments)


def test_fits_that_cannot_be_measured_say_so(digits):
    x, y = digits.x_train[:128], digits.y_train[:128]
    probe = HessianProbe(x[:16], y[:16], every=5, iterations=2)
    tracker = PosteriorTracker(probe, batch_size=64)
    adam = small_cnn_model(keras.optimizers.Adam(1e-3))
    with pytest.raises(ValueError, match=r"heavy-ball.*Received: optimizer=Adam"):
        adam.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[probe, tracker])
    model = small_cnn_model()
    with pytest.raises(ValueError, match=r"fewer than 2 steps.*steps per epoch=1"):
        model.fit(x, y, batch_size=128, epochs=1, verbose=0,
                  callbacks=[PosteriorTracker()])
    with pytest.warns(UserWarning, match=r"every=5 is larger than the fit's epochs=1"):
        model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[probe])
    bound = BoundTracker(128, prior_variance=1e-2, tracker=PosteriorTracker())
    with pytest.raises(ValueError, match=r"logs\['train_robust_accuracy'\].*"
                                         r"RobustEvaluation"):
        model.fit(x, y, batch_size=64, epochs=1, verbose=0,
                  callbacks=[bound.tracker, bound])


def test_an_unstable_schedule_is_flagged_and_warned(digits):
    x, y = digits.x_train[:128], digits.y_train[:128]
    probe = HessianProbe(x[:16], y[:16], epochs=[0], iterations=2)
    # lr * lambda >= 2 (1 + momentum) = 3.8 as soon as lambda >= 38 / lr
    tracker = PosteriorTracker(probe, batch_size=64, regularization_curvature=100.0)
    with pytest.warns(UserWarning, match=r"unstable along the top direction"):
        history = small_cnn_model().fit(
            x, y, batch_size=64, epochs=2, verbose=0, callbacks=[probe, tracker]
        ).history
    assert np.isnan(history["posterior_unstable"][0])  # no direction yet
    assert history["posterior_unstable"][1] == 1.0
    assert np.isnan(history["posterior_var_top_predicted"][1])
    assert np.isfinite(history["posterior_var_top"][1])


def test_float32_accumulators_agree_with_float64():
    rng = np.random.default_rng(0)
    iterates = [[0.05 + 1e-5 * rng.standard_normal((30, 7)).astype("float32")]
                for _ in range(20)]
    single = posterior.IterateStatistics(dtype="float32")
    double = posterior.IterateStatistics()
    for w in iterates:
        single.update(w)
        double.update(w)
    assert single.nbytes * 2 == double.nbytes
    np.testing.assert_allclose(single.variance()[0], double.variance()[0], rtol=1e-3)
    np.testing.assert_allclose(single.variance()[0],
                               np.var(np.stack([w[0] for w in iterates]), axis=0),
                               rtol=1e-3)


# -- instruments observe only ------------------------------------------------------


def _bare_fit(digits, *callbacks):
    x, y = digits.x_train[:N_TRAIN], digits.y_train[:N_TRAIN]
    model = small_cnn_model()
    history = model.fit(x, y, batch_size=BATCH, epochs=3, verbose=0,
                        validation_data=(digits.x_test[:96], digits.y_test[:96]),
                        callbacks=[SCHEDULE.callback(), *callbacks]).history
    return model, history


@pytest.fixture(scope="module")
def bare_fit(digits):
    return _bare_fit(digits)


@pytest.mark.parametrize("name", ["RobustEvaluation", "HessianProbe",
                                  "PosteriorTracker", "BoundTracker"])
def test_an_instrument_changes_no_weight_and_no_other_logged_number(
        digits, bare_fit, name):
    x, y = digits.x_train[:64], digits.y_train[:64]
    probe = HessianProbe(x, y, every=1, iterations=5, batch_size=64)
    tracker = PosteriorTracker(probe, batch_size=BATCH, train_size=N_TRAIN,
                               schedule=SCHEDULE)
    chosen = {
        "RobustEvaluation": [RobustEvaluation(x, y)],
        "HessianProbe": [probe],
        "PosteriorTracker": [probe, tracker],
        "BoundTracker": [probe, tracker, BoundTracker(N_TRAIN, prior_variance=1e-2,
                                                      accuracy_key="robust_accuracy",
                                                      tracker=tracker)],
    }[name]
    bare_model, bare_history = bare_fit
    model, history = _bare_fit(digits, *chosen)
    for key, values in bare_history.items():
        np.testing.assert_array_equal(
            history[key], values, err_msg=f"{name} changed the logged {key!r}")
    for a, b in zip(model.get_weights(), bare_model.get_weights()):
        np.testing.assert_array_equal(a, b, err_msg=f"{name} changed a weight")


# -- iterates handed over from inside the compiled step ---------------------------


def _instrumented_history(x, y, steps_per_execution=1):
    model = small_cnn_model()
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), LOSS, metrics=["accuracy"],
                  steps_per_execution=steps_per_execution)
    probe, tracker, bound = instruments(x, y)
    return model, fit(model, x, y, probe, tracker, bound)


def test_iterates_from_the_compiled_step_log_what_reading_every_batch_logs(
        digits, monkeypatch):
    # AdversarialModel hands each iterate (and its step's learning rate) to
    # the tracker from inside the step; the same values read by a per-batch
    # callback (the route of any other model) must give the same numbers,
    # also when all of an epoch's 3 steps run in one compiled call.
    x, y = digits.x_train[:N_TRAIN], digits.y_train[:N_TRAIN]
    in_step = {k: _instrumented_history(x, y, k)[1] for k in (1, 3)}
    with monkeypatch.context() as patch:
        patch.setattr(robustlab.AdversarialModel, "observe_iterates",
                      lambda self, observer, variables: False)
        read_after_each_batch = _instrumented_history(x, y)[1]
    assert np.isfinite(read_after_each_batch["posterior_var_top"][1:]).all()
    for steps, history in in_step.items():
        assert history.keys() == read_after_each_batch.keys()
        for key, values in read_after_each_batch.items():
            np.testing.assert_array_equal(
                history[key], values, err_msg=f"{key} (steps_per_execution={steps})")


def test_the_observers_of_a_fit_leave_with_it_even_when_it_raises(digits):
    x, y = digits.x_train[:N_TRAIN], digits.y_train[:N_TRAIN]
    model, _ = _instrumented_history(x, y)
    assert not model.iterate_observers
    # The next fit runs the step without the hand-off (kept, not traced again).
    assert model.train_function is not model._kept_train_functions.get(True)

    class Fail(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        fit(model, x, y, PosteriorTracker(), Fail())
    assert not model.iterate_observers


def test_a_model_read_batch_by_batch_needs_one_step_a_call(digits):
    x, y = digits.x_train[:128], digits.y_train[:128]
    net = robustlab.models.small_cnn(filters=(4, 8), dense=32, seed=0)
    net.compile(keras.optimizers.SGD(0.1), LOSS, steps_per_execution=2)
    with pytest.raises(ValueError, match=r"steps_per_execution=1.*"
                                         r"Received: steps_per_execution=2"):
        net.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[PosteriorTracker()])
    net.compile(keras.optimizers.SGD(0.1), LOSS)
    tracker = PosteriorTracker()
    history = net.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[tracker])
    assert tracker.statistics.count == 4 and history.history["posterior_var"][0] > 0


@pytest.mark.parametrize("setting", [
    dict(gradient_accumulation_steps=2), dict(clipnorm=1e-3), dict(clipvalue=0.1),
    dict(global_clipnorm=1.0)], ids=lambda s: next(iter(s)))
def test_a_tracker_with_a_probe_refuses_steps_its_heavy_ball_model_does_not_take(digits, setting):
    # The weights moved every second step, or not linearly in the gradient:
    # measured 0.0022 against 0.118 predicted, 7e-6 against 0.11, no warning.
    x, y = digits.x_train[:128], digits.y_train[:128]
    probe = HessianProbe(x[:16], y[:16], every=5, iterations=2)
    tracker = PosteriorTracker(probe, batch_size=64)
    model = small_cnn_model(keras.optimizers.SGD(0.1, momentum=0.9, **setting))
    (name, value), = setting.items()
    with pytest.raises(ValueError, match=rf"compile the SGD without `{name}`.*"
                       rf"Received: {name}={value!r}$"):
        model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[probe, tracker])


def test_a_tracker_with_a_probe_refuses_a_loss_summed_over_the_batch(digits):
    # The steps moved B times as far as the mean loss's recursion: measured
    # 3.6e-3 against 5e-5 predicted with reduction="sum", no warning.
    x, y = digits.x_train[:128], digits.y_train[:128]
    probe = HessianProbe(x[:16], y[:16], every=5, iterations=2)
    tracker = PosteriorTracker(probe, batch_size=64)
    model = small_cnn_model()
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction="sum"))
    with pytest.raises(ValueError, match=r"steps on the batch's mean loss.*"
                       r"Received: loss with reduction='sum'$"):
        model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[probe, tracker])


def test_a_window_with_steps_a_loss_scale_optimizer_skipped_has_no_prediction(digits):
    # Each skipped step was counted as a heavy-ball step: measured 0.0
    # against 0.0024 predicted, no warning. A loss scale of 2**30 overflows
    # float16 gradients at every step of these three epochs.
    x, y = digits.x_train[:64], digits.y_train[:64]
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = robustlab.AdversarialModel(robustlab.models.mlp(hidden=(16,), seed=0),
                                           robustlab.PGD(0.1, steps=2), seed=0)
        model.compile(keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(0.05, momentum=0.9), initial_scale=2.0**30), LOSS)
        probe = HessianProbe(x[:32], y[:32], every=1, iterations=5, batch_size=32)
        tracker = PosteriorTracker(probe, batch_size=16, train_size=64)
        with pytest.warns(UserWarning, match=r"the optimizer skipped 4 of the 4 steps of epoch 1's "
                                             r"window .* Received: 0 steps applied"):
            history = model.fit(x, y, batch_size=16, epochs=2, verbose=0,
                                callbacks=[probe, tracker]).history
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 0
    assert math.isnan(history["posterior_var_top_predicted"][1])
    assert history["posterior_var_top"][1] == 0.0


def test_a_bound_whose_tracker_is_not_in_the_fit_says_so():
    # Its tracker never measured: every bound was NaN without a word.
    x, y = _tiny_data()
    bound = BoundTracker(64, prior_variance=1e-2, tracker=PosteriorTracker(),
                         accuracy_key="robust_accuracy")
    with pytest.raises(ValueError, match=r"`tracker` must be a PosteriorTracker that is also "
                       r"in the callbacks of this fit"):
        _tiny_model().fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[bound])


def test_initial_weights_that_are_not_a_list_of_arrays_are_named():
    # 0.0 failed with "'float' object is not iterable".
    with pytest.raises(TypeError, match=r"`initial_weights` must be a list of arrays.*"
                       r"Received: initial_weights=0.0$"):
        BoundTracker(10, prior_variance=1.0, tracker=PosteriorTracker(), initial_weights=0.0)
