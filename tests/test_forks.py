"""Replica forks: each piece of the measurement recomputed by a second route,
and the fork leaves the run exactly as it was."""

import json

import keras
import numpy as np
import pytest

import robustlab
from robustlab import attacks
from robustlab import curvature
from robustlab import forks
from robustlab import posterior
from robustlab.callbacks.posterior_tracker import per_example_directional_derivatives

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
N, BATCH, WD = 128, 32, 5e-4


def trained_model(steps_per_execution=1):
    net = robustlab.models.small_cnn(filters=(4, 8), dense=16, seed=0, weight_decay=WD)
    model = robustlab.AdversarialModel(
        net, attack=robustlab.PGD(0.1, steps=2),
        eval_attack=robustlab.PGD(0.1, step_size=0.025, steps=3), seed=0)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS, metrics=["accuracy"],
                  steps_per_execution=steps_per_execution)
    return model


@pytest.fixture(scope="module")
def data(digits):
    return digits.x_train[:N], digits.y_train[:N]


@pytest.fixture(scope="module")
def forked(data):
    x, y = data
    model = trained_model()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    state = [keras.ops.convert_to_numpy(v.value).copy() for v in
             list(model.variables) + list(model.optimizer.variables)
             + list(model.attack_seed_variables)]
    result = forks.fork(model, x, y, batch_size=BATCH, learning_rate=0.02, replicas=3,
                        steps=2, weight_decay=WD, probe_examples=32, lanczos_iterations=10,
                        seed=5, epoch=1)
    return dict(model=model, state=state, result=result, x=x, y=y)


def test_a_fork_leaves_every_variable_as_it_was(forked):
    model = forked["model"]
    after = [keras.ops.convert_to_numpy(v.value) for v in
             list(model.variables) + list(model.optimizer.variables)
             + list(model.attack_seed_variables)]
    for a, b in zip(after, forked["state"]):
        np.testing.assert_array_equal(a, b)


# N // BATCH = 4 steps: an epoch a compiled call, as `experiments.run` trains.
@pytest.mark.parametrize("steps_per_execution", [1, 4])
def test_the_run_goes_on_as_without_the_fork(data, steps_per_execution):
    x, y = data
    plain, with_fork = (trained_model(steps_per_execution) for _ in range(2))
    for model, do_fork in ((plain, False), (with_fork, True)):
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
        if do_fork:
            forks.fork(model, x, y, batch_size=BATCH, learning_rate=0.02, replicas=2, steps=1,
                       probe_examples=32, lanczos_iterations=5, epoch=1)
        model.fit(x, y, batch_size=BATCH, epochs=2, initial_epoch=1, verbose=0)
    for a, b in zip(plain.get_weights(), with_fork.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert with_fork.steps_per_execution == steps_per_execution


def test_the_path_has_every_step_when_the_model_runs_several_steps_a_call(data):
    # A per-batch recorder sees one batch a compiled call: with 4 steps a
    # call the path used to have 2 rows, not 5.
    x, y = data
    results = {}
    for steps_per_execution in (1, 4):
        model = trained_model(steps_per_execution)
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
        results[steps_per_execution] = forks.fork(
            model, x, y, batch_size=BATCH, learning_rate=0.02, replicas=2, steps=4,
            probe_examples=32, lanczos_iterations=4, seed=5, epoch=1)
    assert results[4].path.shape == (2, 5, 2)
    np.testing.assert_array_equal(results[4].path, results[1].path)
    assert results[4].measured_top == results[1].measured_top


class StopAfterFirstEpoch(keras.callbacks.Callback):
    """As EarlyStopping or TerminateOnNaN stop a fit."""

    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


class ForkAtEpochEnd(keras.callbacks.Callback):
    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def on_epoch_end(self, epoch, logs=None):
        forks.fork(self.model, self.x, self.y, batch_size=BATCH, learning_rate=0.02,
                   replicas=2, steps=1, weight_decay=WD, probe_examples=32,
                   lanczos_iterations=10, seed=5, epoch=epoch + 1)


def test_a_fork_from_a_callback_keeps_an_early_stop_asked_for_before_it(data):
    # Each replica's fit sets `stop_training` to False when it starts.
    x, y = data
    model = trained_model()
    history = model.fit(x, y, batch_size=BATCH, epochs=3, verbose=0,
                        callbacks=[StopAfterFirstEpoch(), ForkAtEpochEnd(x, y)])
    assert len(history.history["loss"]) == 1


def test_the_prediction_is_the_recursion_fed_the_measured_curvature_and_noise(forked):
    model, x, y, result = forked["model"], forked["x"], forked["y"], forked["result"]
    net = model.model
    probe = curvature.top_hessian_eigenvalues(net, x[:32], y[:32], k=2, loss=LOSS,
                                              attack=model.eval_attack, iterations=10, seed=5)
    np.testing.assert_allclose(result.eigenvalues, probe.eigenvalues, rtol=1e-6)
    assert result.curvature == pytest.approx(probe.eigenvalues[0] + WD)
    x_adv = attacks.run_attack(net, x, y, model.attack, loss=LOSS, seed=5)
    g = per_example_directional_derivatives(net, x_adv, y, probe.eigenvectors[0], loss=LOSS)
    # s^2 / B * (n - B) / (n - 1), with s^2 the population variance over the n examples
    noise = np.var(g) / BATCH * (N - BATCH) / (N - 1)
    assert result.noise_variance == pytest.approx(noise, rel=1e-6)
    expected = posterior.covariance_recursion([0.02, 0.02], 0.9, probe.eigenvalues[0] + WD,
                                              noise, 1)[-1]
    assert result.predicted_top == pytest.approx(expected, rel=1e-6)
    assert (result.learning_rate, result.momentum, result.steps, result.replicas) == (
        0.02, pytest.approx(0.9), 2, 3)


def test_the_shuffled_prediction_is_fed_the_noise_of_two_attack_draws(forked):
    model, x, y, result = forked["model"], forked["x"], forked["y"], forked["result"]
    net = model.model
    probe = curvature.top_hessian_eigenvalues(net, x[:32], y[:32], k=2, loss=LOSS,
                                              attack=model.eval_attack, iterations=10, seed=5)
    u = probe.eigenvectors[0]
    second_seed = int(np.random.default_rng([5, 2]).integers(2**31 - 1))
    a = per_example_directional_derivatives(
        net, attacks.run_attack(net, x, y, model.attack, loss=LOSS, seed=5), y, u, loss=LOSS)
    b = per_example_directional_derivatives(
        net, attacks.run_attack(net, x, y, model.attack, loss=LOSS, seed=second_seed), y, u,
        loss=LOSS)
    # The attack's random start changes the gradients, so the draws differ.
    assert np.max(np.abs(a - b)) > 0
    example = np.mean((a - a.mean()) * (b - b.mean()))
    draw = np.mean((a - b) ** 2) / 2
    assert result.example_variance == pytest.approx(example, rel=1e-5)
    assert result.draw_variance == pytest.approx(draw, rel=1e-5)
    expected = posterior.shuffled_pass_variance([0.02, 0.02], 0.9, probe.eigenvalues[0] + WD,
                                                max(example, 0.0), BATCH, N,
                                                independent_variance=draw)
    assert result.predicted_top_shuffled == pytest.approx(expected, rel=1e-5)
    assert result.ratio_shuffled == pytest.approx(
        result.measured_top / result.predicted_top_shuffled)


def test_a_window_recorded_before_the_noise_was_split_loads_without_it(forked):
    old = {k: v for k, v in forked["result"].to_dict().items()
           if k not in ("example_variance", "draw_variance", "predicted_top_shuffled",
                        "ratio_shuffled", "batches")}
    window = forks.ForkResult.from_dict(old)
    assert window.predicted_top_shuffled is None and window.ratio_shuffled is None
    assert window.batches == "pass"  # the only sampling forks had then
    assert "ratio_shuffled" not in window.to_dict()
    assert window.ratio == pytest.approx(forked["result"].ratio)


def top_two_directions(model, x, y):
    """The fork's top two eigenvectors of the robust loss, flattened."""
    probe = curvature.top_hessian_eigenvalues(model.model, x[:32], y[:32], k=2, loss=LOSS,
                                              attack=model.eval_attack, iterations=10, seed=5)
    return np.stack([np.concatenate([np.ravel(a) for a in v]) for v in probe.eigenvectors])


def replica_replayed_by_hand(model, x, y, order, rng, directions):
    """Coordinates of w - w_fork along `directions` after training one
    replica by the documented protocol: its batches in `order`, its attack
    seed the next draw of `rng`, one window at learning rate 0.02 standing
    for epoch 1. The model is put back afterwards."""
    net = model.model

    def trainable():
        return np.concatenate([np.ravel(keras.ops.convert_to_numpy(v))
                               for v in net.trainable_variables])

    state = (list(model.variables) + list(model.optimizer.variables)
             + list(model.attack_seed_variables))
    saved = [keras.ops.convert_to_numpy(v.value).copy() for v in state]
    origin = trainable()
    model.attack_seed_variables[0].assign(
        keras.random.SeedGenerator(int(rng.integers(2**31 - 1))).state.value)
    model.optimizer.learning_rate.assign(0.02)
    model.fit(x[order], y[order], batch_size=BATCH, epochs=2, initial_epoch=1, shuffle=False,
              verbose=0)
    coordinates = directions @ (trainable() - origin)
    for v, value in zip(state, saved):
        v.assign(value)
    return coordinates


def test_the_measured_spread_is_a_replica_replayed_by_hand(forked):
    model, x, y, result = forked["model"], forked["x"], forked["y"], forked["result"]
    # Replica 1: one shuffled pass, then its attack seed.
    rng = np.random.default_rng([5, 1])
    order = rng.permutation(N)[: 2 * BATCH]
    coordinates = replica_replayed_by_hand(model, x, y, order, rng,
                                           top_two_directions(model, x, y))
    np.testing.assert_allclose(result.path[1, -1], coordinates, rtol=1e-4, atol=1e-9)
    assert result.path.shape == (3, 3, 2)
    np.testing.assert_array_equal(result.path[:, 0], 0.0)
    assert result.measured_top == pytest.approx(np.var(result.path[:, -1, 0], ddof=1))
    assert result.ratio == pytest.approx(result.measured_top / result.predicted_top)


def test_independent_batches_are_drawn_batch_by_batch(data):
    x, y = data
    model = trained_model()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0)
    result = forks.fork(model, x, y, batch_size=BATCH, learning_rate=0.02, replicas=2, steps=3,
                        weight_decay=WD, probe_examples=32, lanczos_iterations=10, seed=5,
                        epoch=1, batches="independent")
    assert result.batches == "independent" and result.predicted_top_shuffled is None
    # Replica 1: three batches of 32 distinct digits each, drawn one by one,
    # so a digit can come back in a later batch (in one pass of 3 x 32 of
    # the 128 digits none would).
    rng = np.random.default_rng([5, 1])
    order = np.concatenate([rng.choice(N, BATCH, replace=False) for _ in range(3)])
    assert len(np.unique(order)) < len(order)
    coordinates = replica_replayed_by_hand(model, x, y, order, rng,
                                           top_two_directions(model, x, y))
    np.testing.assert_allclose(result.path[1, -1], coordinates, rtol=1e-4, atol=1e-9)


def test_results_survive_a_round_trip_through_a_dict(forked):
    result = forked["result"]
    again = forks.ForkResult.from_dict(result.to_dict())
    assert again.to_dict() == result.to_dict()


def window(measured_top, predicted_top, predicted_top_shuffled=None):
    """A recorded window with these variances (the rest arbitrary)."""
    return forks.ForkResult(
        epoch=0, learning_rate=0.1, momentum=0.9, steps=1, replicas=2, batch_size=128,
        eigenvalues=np.array([2.0, 1.0]), curvature=2.0, noise_variance=0.0,
        measured_top=measured_top, predicted_top=predicted_top, measured_overall=1e-6,
        path=np.zeros((2, 2, 2)), predicted_top_shuffled=predicted_top_shuffled)


def test_a_spread_measured_where_none_is_predicted_has_an_infinite_ratio():
    # A full-batch window: no minibatch noise, no predicted spread.
    result = window(measured_top=1e-4, predicted_top=0.0, predicted_top_shuffled=0.0)
    assert result.ratio == np.inf
    assert result.ratio_shuffled == np.inf


def test_no_spread_measured_where_none_is_predicted_has_an_undefined_ratio():
    result = window(measured_top=0.0, predicted_top=0.0, predicted_top_shuffled=0.0)
    assert np.isnan(result.ratio)
    assert np.isnan(result.ratio_shuffled)


def test_a_ratio_that_is_not_finite_is_written_as_json_null():
    d = window(measured_top=1e-4, predicted_top=0.0, predicted_top_shuffled=0.0).to_dict()
    assert d["ratio"] is None and d["ratio_shuffled"] is None
    json.dumps(d, allow_nan=False)  # standard JSON, without Infinity or NaN
    assert forks.ForkResult.from_dict(json.loads(json.dumps(d))).ratio == np.inf


def test_a_null_figure_of_a_window_read_from_json_is_nan():
    # How `robustlab.run_checkpoint.write_json_atomically` writes a NaN.
    d = dict(window(measured_top=1e-4, predicted_top=2e-4).to_dict(), measured_overall=None)
    again = forks.ForkResult.from_dict(d)
    assert np.isnan(again.measured_overall)
    assert again.predicted_top_shuffled is None  # not predicted: stays None


@pytest.mark.parametrize("kwargs, match", [
    (dict(replicas=1), "Argument `replicas` must be an integer >= 2"),
    (dict(steps=10), "steps \\* batch_size <= 128"),
    (dict(learning_rate=-1.0), "Argument `learning_rate`"),
    (dict(batches="with replacement"),
     "Argument `batches` must be one of \\['pass', 'independent'\\]. "
     "Received: batches='with replacement'"),
])
def test_bad_fork_arguments_are_rejected(forked, kwargs, match):
    with pytest.raises(ValueError, match=match):
        forks.fork(forked["model"], forked["x"], forked["y"], batch_size=BATCH, **kwargs)


def test_a_batch_larger_than_the_data_is_named_not_the_steps_it_leaves(forked):
    # Before: "Argument `steps` must be an integer >= 1. Received: steps=0",
    # a steps the user never passed.
    with pytest.raises(ValueError, match=r"`batch_size` must be at most the 128 examples "
                                         r"of `x`.*Received: batch_size=256$"):
        forks.fork(forked["model"], forked["x"], forked["y"], batch_size=256)


def test_an_adversarial_model_not_compiled_is_refused_by_name(data):
    # Before: AttributeError: 'AdversarialModel' object has no attribute 'optimizer'.
    x, y = data
    model = robustlab.AdversarialModel(trained_model().model, attack=robustlab.PGD(0.1))
    with pytest.raises(ValueError, match=r"`model` must be a compiled robustlab.Adversarial"
                                         r"Model.*Received: an AdversarialModel that is not "
                                         r"compiled$"):
        forks.fork(model, x, y, batch_size=BATCH)


def test_only_sgd_is_predicted(data):
    x, y = data
    model = trained_model()
    model.compile(keras.optimizers.Adam(), LOSS)
    with pytest.raises(TypeError, match="keras.optimizers.SGD"):
        forks.fork(model, x, y, batch_size=BATCH)


@pytest.mark.parametrize("setting", [
    dict(nesterov=True), dict(gradient_accumulation_steps=2), dict(clipnorm=1e-4),
    dict(clipvalue=0.1), dict(global_clipnorm=1.0)], ids=lambda s: next(iter(s)))
def test_an_sgd_whose_steps_the_prediction_does_not_model_is_refused(data, setting):
    # Accepted before, with a prediction of another process: measured 3.6e-11
    # against 0.00144 predicted with clipnorm=1e-4, 7.3e-05 against 0.00136
    # with gradient_accumulation_steps=2.
    x, y = data
    model = trained_model()
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9, **setting), LOSS)
    before = [keras.ops.convert_to_numpy(v) for v in model.variables]
    (name, value), = setting.items()
    with pytest.raises(ValueError, match=rf"^fork's prediction models .*"
                                         rf"Received: {name}={value!r}"):
        forks.fork(model, x, y, batch_size=BATCH, replicas=2, steps=1)
    for variable, value_before in zip(model.variables, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value_before)


def test_a_loss_summed_over_the_batch_is_refused(data):
    # A summed loss steps B times as far as the mean loss the prediction models.
    x, y = data
    model = trained_model()
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum"))
    with pytest.raises(ValueError, match=r"^fork's prediction models steps on the batch's mean "
                                         r"loss.*Received: loss with reduction='sum'$"):
        forks.fork(model, x, y, batch_size=BATCH, replicas=2, steps=1)


def test_an_sgd_with_a_learning_rate_schedule_is_refused_by_name(data):
    # It failed inside with "'EagerTensor' object has no attribute 'assign'".
    x, y = data
    model = trained_model()
    model.compile(keras.optimizers.SGD(
        keras.optimizers.schedules.ExponentialDecay(0.05, 10, 0.9), momentum=0.9), LOSS)
    with pytest.raises(ValueError, match=r"fork runs its replicas at one constant learning rate.*"
                                         r"Received: optimizer with learning_rate=ExponentialDecay"):
        forks.fork(model, x, y, batch_size=BATCH, replicas=2, steps=1, learning_rate=0.01)


def test_a_model_that_is_not_an_adversarial_model_is_refused(data):
    x, y = data
    net = trained_model().model
    net.compile(keras.optimizers.SGD(0.05, momentum=0.9), LOSS)
    with pytest.raises(TypeError, match=r"`model` must be a compiled robustlab.Adversarial"
                                        r"Model. Received: model=Functional$"):
        forks.fork(net, x, y, batch_size=BATCH)


def _fit_forking_mid_epoch(data, how):
    """A 2-epoch run whose callback forks after the second batch of each
    epoch, through `Callback.model` or a reference held from outside it
    (on JAX the variables are detached there), or does not fork."""
    x, y = data
    model = trained_model()
    results = []

    def end(callback, batch):
        if batch == 1 and how is not None:
            forked_model = callback.model if how == "through" else model
            results.append(forks.fork(
                forked_model, x, y, batch_size=BATCH, learning_rate=0.02, replicas=2,
                steps=2, probe_examples=16, lanczos_iterations=4, seed=5))

    class ForkMidEpoch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            end(self, batch)

    model.fit(x, y, batch_size=BATCH, epochs=2, verbose=0, shuffle=False,
              callbacks=[ForkMidEpoch()])
    return results, model.get_weights(), model.history.history


def test_a_fork_from_a_callback_holding_the_model_acts_as_through_callback_model(data):
    (held, held_weights, held_history), (through, through_weights, through_history) = (
        _fit_forking_mid_epoch(data, how) for how in ("held", "through"))
    _, plain_weights, plain_history = _fit_forking_mid_epoch(data, None)
    assert len(held) == len(through) == 2
    for a, b in zip(held, through):
        np.testing.assert_array_equal(a.path, b.path)
        assert (a.measured_top, a.predicted_top) == (b.measured_top, b.predicted_top)
    assert held_history == through_history == plain_history
    for a, b, c in zip(held_weights, through_weights, plain_weights):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, c)


def test_replicas_of_a_model_never_fitted_all_start_without_momentum(data):
    # The optimizer of an unfitted model is built by the first replica's fit;
    # its momentum must not carry into the next replica. Forking twice must
    # then measure the same spread.
    x, y = data
    model = trained_model()
    first, second = (forks.fork(model, x, y, batch_size=BATCH, learning_rate=0.02,
                                replicas=2, steps=2, probe_examples=16,
                                lanczos_iterations=4, seed=5)
                     for _ in range(2))
    assert first.measured_top == second.measured_top
    assert first.measured_overall == second.measured_overall
