"""The model stays usable, and holds the state of its last completed step,
whatever ends a `fit`, `evaluate` or `predict` early, and a model reached
mid-epoch through a reference a callback holds (not `Callback.model`) acts
as through `Callback.model`.

Keras's JAX trainer detaches the variables' values while it loops, hands
them to each compiled step (which donates their buffers) and attaches the
state the steps return only at the end of an epoch (or on a read of
`Callback.model`); TensorFlow's variables hold their values throughout.
Each behaviour that applies to both backends is tested on both.
"""

import _thread
import random
import threading

import keras
import numpy as np
import pytest

import robustlab
from robustlab import curvature

JAX = keras.backend.backend() == "jax"
ONLY_JAX = pytest.mark.skipif(
    not JAX, reason="TensorFlow's variables are never detached or donated")

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
X = np.random.default_rng(0).random((64, 4), dtype="float32")
Y = np.arange(64) % 3
XV = np.random.default_rng(1).random((32, 4), dtype="float32")
YV = np.arange(32) % 3


def _model(awp=None, steps_per_execution=1, momentum=0.0):
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                            keras.layers.Dense(3)])
    model = robustlab.AdversarialModel(net, robustlab.PGD(0.05, steps=2), seed=0, awp=awp)
    model.compile(keras.optimizers.SGD(0.1, momentum=momentum), LOSS, metrics=["accuracy"],
                  steps_per_execution=steps_per_execution)
    return model


def _weights(model):
    return [np.array(w) for w in model.model.get_weights()]


def _assert_same(actual, expected):
    assert len(actual) == len(expected)
    for a, b in zip(actual, expected):
        np.testing.assert_array_equal(a, b)


def _momenta(model):
    # Not `iterations`: TensorFlow's step function counts the step whose
    # batch failed (the count does not wait for the batch), JAX's does not.
    return [np.array(v) for v in model.optimizer.variables
            if v is not model.optimizer.iterations]


class _Batches(keras.utils.PyDataset):
    """The 4 batches of 16 of (X, Y); once `armed`, reading batch `fail_at`
    raises `error` (or, for "out of range", gives inputs outside [0, 1])."""

    def __init__(self, error=None, fail_at=0, armed=True, inputs_only=False):
        super().__init__()
        self.error, self.fail_at, self.armed = error, fail_at, armed
        self.inputs_only = inputs_only

    def __len__(self):
        return 4

    def __getitem__(self, index):
        rows = slice(16 * index, 16 * (index + 1))
        x = X[rows]
        if self.armed and self.error is not None and index == self.fail_at:
            if self.error == "out of range":
                x = x + 5.0
            else:
                raise self.error("simulated")
        return x if self.inputs_only else (x, Y[rows])


class _ArmAtEpochEnd(keras.callbacks.Callback):
    def __init__(self, batches):
        super().__init__()
        self.batches = batches

    def on_epoch_end(self, epoch, logs=None):
        self.batches.armed = True


def _raised(error):
    # From a PyDataset inside a TensorFlow graph an error (a
    # KeyboardInterrupt too) comes out wrapped in one of TensorFlow's, with
    # the original's message.
    if error == "out of range":
        return ValueError, r"`x` must lie inside value_range"
    return BaseException, "simulated"


# -- an exception ends the call: the state of the last completed step ----------


@pytest.mark.parametrize("error", [RuntimeError, OSError, KeyboardInterrupt, "out of range"],
                         ids=["RuntimeError", "OSError", "KeyboardInterrupt", "out_of_range"])
def test_data_failing_at_the_first_batch_after_validation_leaves_the_last_steps_state(error):
    # Validation ends by dropping the state Keras keeps; the failing read
    # comes right after the next epoch detached the variables.
    reference = _model(momentum=0.9)
    reference.fit(_Batches(), epochs=1, validation_data=(XV, YV), shuffle=False, verbose=0)
    model = _model(momentum=0.9)
    batches = _Batches(error, fail_at=0, armed=False)
    kind, message = _raised(error)
    with pytest.raises(kind, match=message):
        model.fit(batches, epochs=2, validation_data=(XV, YV), shuffle=False, verbose=0,
                  callbacks=[_ArmAtEpochEnd(batches)])
    _assert_same(_weights(model), _weights(reference))
    _assert_same(_momenta(model), _momenta(reference))


def test_data_failing_inside_a_call_of_several_steps_leaves_the_last_steps_state():
    # 3 steps a call: batches 0 and 1 are trained on, batch 2 fails.
    reference = _model(momentum=0.9)
    reference.fit(_Batches(), epochs=1, steps_per_epoch=2, shuffle=False, verbose=0)
    model = _model(steps_per_execution=3, momentum=0.9)
    with pytest.raises(Exception, match="simulated"):
        model.fit(_Batches(RuntimeError, fail_at=2), epochs=1, shuffle=False, verbose=0)
    _assert_same(_weights(model), _weights(reference))
    _assert_same(_momenta(model), _momenta(reference))


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt],
                         ids=["RuntimeError", "KeyboardInterrupt"])
def test_evaluate_whose_data_fails_leaves_the_weights_as_before(error):
    model = _model()
    model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    before = _weights(model)
    kind, message = _raised(error)
    with pytest.raises(kind, match=message):
        model.evaluate(_Batches(error, fail_at=2), verbose=0)
    _assert_same(_weights(model), before)


def test_evaluate_stopped_by_a_callback_leaves_the_weights_as_before():
    class Stop(keras.callbacks.Callback):
        def on_test_batch_end(self, batch, logs=None):
            if batch == 1:
                raise KeyboardInterrupt("user stop")

    model = _model()
    model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    before = _weights(model)
    with pytest.raises(KeyboardInterrupt):
        model.evaluate(XV, YV, batch_size=8, verbose=0, callbacks=[Stop()])
    _assert_same(_weights(model), before)


@pytest.mark.parametrize("fail_at", [0, 2])
def test_predict_whose_data_fails_leaves_the_weights_as_before(fail_at):
    model = _model()
    model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    before = _weights(model)
    with pytest.raises(Exception, match="simulated"):
        model.predict(_Batches(RuntimeError, fail_at=fail_at, inputs_only=True), verbose=0)
    _assert_same(_weights(model), before)


@pytest.mark.parametrize("fail_at", [0, 2])
def test_predict_of_an_uncompiled_model_whose_data_fails_raises_the_datas_error(fail_at):
    # An uncompiled model has no `optimizer`: the state kept after the
    # failure is read without one.
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model = robustlab.AdversarialModel(net, robustlab.PGD(0.05, steps=2), seed=0)
    before = _weights(model)
    # TensorFlow wraps the data's error in one of its own, with its message.
    with pytest.raises(Exception, match="simulated") as raised:
        model.predict(_Batches(RuntimeError, fail_at=fail_at, inputs_only=True), verbose=0)
    assert not isinstance(raised.value, AttributeError)
    _assert_same(_weights(model), before)


@pytest.mark.parametrize("method", ["fit", "predict"])
def test_data_failing_at_the_first_batch_of_keras_own_functions_leaves_the_last_steps_state(
        method):
    # Without XLA (or under a Keras distribution) the model runs Keras's own
    # train, test and predict functions.
    def model():
        built = _model()
        built.compile(keras.optimizers.SGD(0.1), LOSS, metrics=["accuracy"], jit_compile=False)
        return built

    reference = model()
    reference.fit(_Batches(), epochs=1, validation_data=(XV, YV), shuffle=False, verbose=0)
    failing = model()
    if method == "fit":
        batches = _Batches(RuntimeError, fail_at=0, armed=False)
        with pytest.raises(Exception, match="simulated"):
            failing.fit(batches, epochs=2, validation_data=(XV, YV), shuffle=False,
                        verbose=0, callbacks=[_ArmAtEpochEnd(batches)])
    else:
        failing.fit(_Batches(), epochs=1, validation_data=(XV, YV), shuffle=False, verbose=0)
        with pytest.raises(Exception, match="simulated"):
            failing.predict(_Batches(RuntimeError, fail_at=0, inputs_only=True), verbose=0)
    _assert_same(_weights(failing), _weights(reference))


def _state_said_lost(model):
    """Whether reading `model` raises the error of a lost state: the one
    outcome of an interrupt other than a usable model, documented for the
    few lines of Keras between taking the state from the variables and the
    first step (on JAX; rare enough that a run of these tests may never see
    it). Any other error fails the test."""
    try:
        model.get_weights()
    except RuntimeError as error:
        if JAX and "were lost" in str(error):
            return True
        raise
    return False


def _interrupted(run, delays):
    """Run `run()` under a Ctrl-C (`KeyboardInterrupt` in the main thread)
    after each delay; yields after each interrupt that landed in it."""
    for delay in delays:
        timer = threading.Timer(delay, _thread.interrupt_main)
        try:
            timer.start()
            run()
        except KeyboardInterrupt:
            yield
        finally:
            timer.cancel()


@pytest.mark.parametrize("method", ["evaluate", "predict"])
def test_ctrl_c_during_evaluate_leaves_the_weights_as_before(method):
    # Before: on JAX, nearly every interrupted evaluate or predict left the
    # variables detached or holding deleted buffers.
    model = _model()
    model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    x, y = np.tile(X, (100, 1)), np.tile(Y, 100)  # 400 batches

    def once():
        if method == "evaluate":
            model.evaluate(x, y, batch_size=16, verbose=0)
        else:
            model.predict(x, batch_size=16, verbose=0)

    once()  # compiled
    before = _weights(model)
    delays = random.Random(0).sample([d / 1000 for d in range(0, 150, 5)], 6)

    def run():
        for _ in range(20):
            once()

    usable = 0
    for _ in _interrupted(run, delays):
        if _state_said_lost(model):
            continue
        usable += 1
        _assert_same(_weights(model), before)
        model.predict(X[:4], verbose=0)
    # Now and then TensorFlow swallows an interrupt (the evaluates go on).
    assert usable


def test_ctrl_c_during_fit_leaves_a_usable_model():
    # Before: on JAX, about 1 interrupted fit in 3 left the variables
    # holding deleted buffers or detached.
    model = _model()
    model.fit(X, Y, batch_size=16, epochs=1, validation_data=(XV, YV), verbose=0)
    delays = random.Random(1).sample([d / 1000 for d in range(0, 300, 5)], 10)
    weights_after = []
    for _ in _interrupted(lambda: model.fit(X, Y, batch_size=16, epochs=200, verbose=0,
                                            validation_data=(XV, YV)), delays):
        if _state_said_lost(model):
            model = _model()  # what the message says to do
            continue
        model.evaluate(XV, YV, verbose=0)
        weights_after.append(_weights(model))
    assert len(weights_after) >= len(delays) // 2
    assert all(np.all(np.isfinite(w)) for weights in weights_after for w in weights)


@ONLY_JAX
@pytest.mark.parametrize("steps_per_execution", [1, 3])
def test_the_functions_that_keep_the_state_give_keras_own_numbers(steps_per_execution):
    # 64 examples in batches of 24: with 3 steps a call, the call ends early,
    # on the short last batch.
    def run(keras_functions):
        model = _model(momentum=0.9, steps_per_execution=steps_per_execution)
        if keras_functions:
            for kind in ("train", "test", "predict"):
                setattr(model, f"make_{kind}_function",
                        lambda force=False, kind=kind: getattr(
                            keras.Model, f"make_{kind}_function")(model, force))
        history = model.fit(X, Y, batch_size=24, epochs=2, verbose=0, shuffle=False,
                            validation_data=(XV, YV)).history
        return history, _weights(model), model.predict(X, batch_size=24, verbose=0)

    (history, weights, predicted), (keras_history, keras_weights, keras_predicted) = (
        run(False), run(True))
    assert history == keras_history
    _assert_same(weights, keras_weights)
    np.testing.assert_array_equal(predicted, keras_predicted)


# -- a model reached through a reference a callback holds ------------------------


def _fit_with_callback(model, **hooks):
    model.fit(X, Y, batch_size=16, epochs=1, verbose=0, shuffle=False,
              callbacks=[keras.callbacks.LambdaCallback(**hooks)])


class _ThroughCallbackModel(keras.callbacks.Callback):
    """Calls `hook(self.model, batch, logs)` at the beginning or (`at`)
    the end of each batch."""

    def __init__(self, hook, at="end"):
        super().__init__()
        self.hook, self.at = hook, at

    def on_train_batch_begin(self, batch, logs=None):
        if self.at == "begin":
            self.hook(self.model, batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        if self.at == "end":
            self.hook(self.model, batch, logs)


def test_set_awp_gamma_from_a_callback_holding_the_model_applies_from_the_next_step():
    model = _model(awp=robustlab.AWP(gamma=0.01))
    logged = []

    def begin(batch, logs=None):
        if batch == 1:
            model.set_awp_gamma(0.5)

    _fit_with_callback(model, on_train_batch_begin=begin,
                       on_train_batch_end=lambda batch, logs: logged.append(
                           round(float(logs["awp_gamma"]), 4)))
    assert logged == [0.01, 0.5, 0.5, 0.5]
    assert float(np.asarray(model.awp_gamma.value)) == 0.5


@pytest.mark.parametrize("setter", ["set_weights", "load_weights"])
def test_weights_set_from_a_callback_holding_the_model_are_kept(setter, tmp_path):
    model = _model()
    before = model.get_weights()
    path = str(tmp_path / "before.weights.h5")
    model.save_weights(path)

    def end(batch, logs=None):
        if batch == 3:  # the epoch's last step
            if setter == "set_weights":
                model.set_weights(before)
            else:
                model.load_weights(path)

    _fit_with_callback(model, on_train_batch_end=end)
    _assert_same(model.get_weights(), before)


@pytest.mark.parametrize("reader", ["get_weights", "save_weights"])
def test_weights_read_from_a_callback_holding_the_model_are_the_last_steps(reader, tmp_path):
    copy = _model()

    def read(model):
        if reader == "get_weights":
            return model.get_weights()
        path = str(tmp_path / "read.weights.h5")
        model.save_weights(path)
        copy.load_weights(path)
        return copy.get_weights()

    model = _model()
    held, through = [], []

    def end(batch, logs=None):
        if batch == 1:
            held.append(read(model))

    model.fit(X, Y, batch_size=16, epochs=1, verbose=0, shuffle=False, callbacks=[
        keras.callbacks.LambdaCallback(on_train_batch_end=end),
        _ThroughCallbackModel(lambda m, batch, logs: batch == 1 and through.append(
            m.get_weights()))])
    _assert_same(held[0], through[0])


def test_metrics_read_from_a_callback_holding_the_model_are_callback_models():
    def run(held):
        model = _model()
        results = []

        def read(m, batch, logs):
            if batch == 1:
                results.append(m.get_metrics_result())

        if held:
            _fit_with_callback(model, on_train_batch_end=lambda b, logs: read(model, b, logs))
        else:
            model.fit(X, Y, batch_size=16, epochs=1, verbose=0, shuffle=False,
                      callbacks=[_ThroughCallbackModel(read)])
        return results

    assert run(held=True) == run(held=False)


def test_reset_metrics_from_a_callback_holding_the_model_acts_as_through_callback_model():
    def run(how):
        model = _model()

        def reset(m, batch, logs):
            if batch == 2:
                m.reset_metrics()

        if how == "held":
            callback = keras.callbacks.LambdaCallback(
                on_train_batch_begin=lambda b, logs: reset(model, b, logs))
        elif how == "callback.model":
            callback = _ThroughCallbackModel(reset, at="begin")
        else:
            callback = keras.callbacks.Callback()
        return model.fit(X, Y, batch_size=16, epochs=1, verbose=0, shuffle=False,
                         callbacks=[callback]).history

    through = run("callback.model")
    assert through != run("none")  # the reset shows in the epoch's numbers
    assert run("held") == through


@pytest.mark.parametrize("method", ["evaluate", "predict"])
def test_evaluate_from_a_callback_holding_the_model_gives_callback_models_numbers(method):
    def run(held):
        model = _model()
        results = []

        def evaluate(m, batch, logs):
            if batch == 1:
                if method == "evaluate":
                    results.append(m.evaluate(XV, YV, verbose=0, return_dict=True))
                else:
                    results.append(m.predict(XV, verbose=0).tolist())

        if held:
            _fit_with_callback(model, on_train_batch_end=lambda b, logs: evaluate(model, b, logs))
        else:
            model.fit(X, Y, batch_size=16, epochs=1, verbose=0, shuffle=False,
                      callbacks=[_ThroughCallbackModel(evaluate)])
        return results, _weights(model)

    (held, held_weights), (through, through_weights) = run(True), run(False)
    assert held == through
    _assert_same(held_weights, through_weights)


def test_attack_seeds_preserved_from_a_callback_holding_the_model_leaves_the_run_unchanged():
    def run(evaluate):
        model = _model()

        def end(batch, logs=None):
            if evaluate and batch == 1:
                with model.attack_seeds_preserved():
                    model.evaluate(XV, YV, verbose=0)

        model.fit(X, Y, batch_size=16, epochs=2, verbose=0, shuffle=False,
                  validation_data=(XV, YV),
                  callbacks=[keras.callbacks.LambdaCallback(on_train_batch_end=end)])
        return model.history.history, _weights(model)

    (history, weights), (plain_history, plain_weights) = run(True), run(False)
    assert history == plain_history
    _assert_same(weights, plain_weights)


def _functions_of_the_classifier():
    def attack(net, operator):
        robustlab.attacks.run_attack(net, XV, YV, robustlab.PGD(0.05, steps=2), loss=LOSS,
                                     seed=3)

    def input_gradient(net, operator):
        robustlab.attacks.loss_gradient(net, XV, YV, loss=LOSS)

    def eigenvalue(net, operator):
        curvature.top_hessian_eigenvalue(net, XV, YV, loss=LOSS, iterations=2, seed=0)

    def product(net, operator):
        operator.matvec(np.zeros(operator.dim))

    def loss_gradient(net, operator):
        operator.gradient()

    return [attack, input_gradient, eigenvalue, product, loss_gradient]


@ONLY_JAX
@pytest.mark.parametrize("function", _functions_of_the_classifier(),
                         ids=lambda f: f.__name__)
def test_a_classifier_held_from_outside_a_callback_mid_epoch_is_refused_clearly(function):
    model = _model()
    net = model.model
    operator = curvature.HessianOperator(net, XV, YV, loss=LOSS)  # built before the fit
    errors = []

    def end(batch, logs=None):
        if batch == 1:
            with pytest.raises(ValueError) as info:
                function(net, operator)
            errors.append(str(info.value))

    _fit_with_callback(model, on_train_batch_end=end)
    assert len(errors) == 1
    assert "through the callback's `self.model`" in errors[0]
    assert errors[0].endswith(f"Received: model={net.name!r}")


# -- where no intact state is left -------------------------------------------------


def _losing_step(state, iterator):
    # What a step of Keras's own functions does when Ctrl-C falls right
    # after the compiled call: its input buffers are taken, its result lost.
    for part in state:
        for value in part:
            value.delete()
    raise KeyboardInterrupt


@ONLY_JAX
def test_a_lost_state_says_so_when_the_model_is_read():
    model = _model()
    model.make_train_function()
    model.train_function = _losing_step
    with pytest.raises(KeyboardInterrupt) as info:
        model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    assert any("were lost" in note for note in info.value.__notes__)
    with pytest.raises(RuntimeError, match=r"were lost: Keras's JAX trainer hands them"):
        model.model.get_weights()


class _InterruptWithoutNotes(KeyboardInterrupt):
    """An interruption as Python 3.10 raises it: exceptions have no notes."""

    def __getattribute__(self, name):
        if name == "add_note":
            raise AttributeError(name)
        return super().__getattribute__(name)


def _losing_step_without_notes(state, iterator):
    try:
        _losing_step(state, iterator)
    except KeyboardInterrupt:
        raise _InterruptWithoutNotes from None


@ONLY_JAX
def test_a_lost_state_is_a_warning_where_exceptions_take_no_notes():
    # Python 3.10: error.add_note raised AttributeError in place of the
    # interruption, and the advice was lost with it.
    model = _model()
    model.make_train_function()
    model.train_function = _losing_step_without_notes
    with pytest.warns(RuntimeWarning, match=r"were lost: Keras's JAX trainer hands them"):
        with pytest.raises(_InterruptWithoutNotes):
            model.fit(X, Y, batch_size=16, epochs=1, verbose=0)


@ONLY_JAX
def test_load_weights_and_compile_make_a_model_with_lost_state_usable_again(tmp_path):
    model = _model()
    path = str(tmp_path / "saved.weights.h5")
    model.save_weights(path)
    saved = model.get_weights()
    model.make_train_function()
    model.train_function = _losing_step
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
    model.load_weights(path)
    model.compile(keras.optimizers.SGD(0.1), LOSS, metrics=["accuracy"])
    _assert_same(model.get_weights(), saved)
    model.fit(X, Y, batch_size=16, epochs=1, verbose=0)
