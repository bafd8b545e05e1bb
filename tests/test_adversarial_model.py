"""Specifications of AdversarialModel: PGD adversarial training in model.fit."""

import csv
import inspect
import os
import threading
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import robustlab
from robustlab import attacks
from robustlab.callbacks import NonFiniteLossError
from tests.conftest import softmax_regression
from tests.test_attacks import B3
from tests.test_attacks import W3
from tests.test_attacks import X6
from tests.test_attacks import Y6
from tests.test_attacks import softmax

LOGITS_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def adversarial(net, attack=None, **kwargs):
    attack = attack or robustlab.PGD(eps=0.1, steps=3)
    return robustlab.AdversarialModel(net, attack=attack, **kwargs)


def compiled(net, lr=0.1, attack=None, metrics=("accuracy",), **kwargs):
    model = adversarial(net, attack, **kwargs)
    model.compile(keras.optimizers.SGD(lr), LOGITS_CE, metrics=list(metrics))
    return model


def small_cnn_model(seed=0, **kwargs):
    return compiled(robustlab.models.small_cnn(filters=(4, 8), dense=32, seed=seed),
                    seed=seed, **kwargs)


# -- the step ---------------------------------------------------------------------


def test_one_step_descends_the_closed_form_gradient_at_the_pgd_examples():
    # Softmax regression: dCE/dW = x^T (p - onehot) / B, dCE/db = mean(p - onehot).
    attack = robustlab.PGD(eps=0.1, steps=3, random_start=False)
    x_adv = attacks.pgd(softmax_regression(W3, B3), X6, Y6, **attack.get_config())
    p = softmax(x_adv.astype("float64") @ W3 + B3)
    p[np.arange(len(Y6)), Y6] -= 1.0
    expected_w = W3 - 0.5 * x_adv.T.astype("float64") @ p / len(Y6)
    expected_b = B3 - 0.5 * p.mean(axis=0)

    model = compiled(softmax_regression(W3, B3), lr=0.5, attack=attack)
    model.fit(X6, Y6, batch_size=len(Y6), epochs=1, shuffle=False, verbose=0)
    w, b = model.model.get_weights()
    np.testing.assert_allclose(w, expected_w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, expected_b, rtol=1e-5, atol=1e-6)


def test_training_logs_name_what_they_measure():
    model = compiled(softmax_regression(W3, B3))
    history = model.fit(X6, Y6, batch_size=8, epochs=2, verbose=0,
                        validation_data=(X6, Y6))
    assert sorted(history.history) == sorted([
        "loss", "robust_loss", "robust_accuracy",
        "val_loss", "val_robust_loss", "val_robust_accuracy",
        "val_clean_loss", "val_clean_accuracy",
    ])
    assert len(history.history["loss"]) == 2


def test_evaluate_reports_clean_numbers_equal_to_the_plain_model():
    net = softmax_regression(W3, B3)
    model = compiled(net)
    logs = model.evaluate(X6, Y6, verbose=0, return_dict=True)
    logits = net.predict(X6, verbose=0)
    assert logs["clean_loss"] == pytest.approx(float(LOGITS_CE(Y6, logits)), rel=1e-5)
    assert logs["clean_accuracy"] == pytest.approx(np.mean(logits.argmax(1) == Y6))
    assert logs["robust_loss"] > logs["clean_loss"]
    assert logs["robust_accuracy"] <= logs["clean_accuracy"]


def test_evaluate_reports_the_robust_loss_of_the_eval_attack():
    net = softmax_regression(W3, B3)
    eval_attack = robustlab.PGD(eps=0.1, steps=5, random_start=False)
    model = compiled(net, eval_attack=eval_attack)
    logs = model.evaluate(X6, Y6, batch_size=len(X6), verbose=0, return_dict=True)
    x_adv = attacks.pgd(net, X6, Y6, **eval_attack.get_config())
    expected = float(LOGITS_CE(Y6, net.predict(x_adv, verbose=0)))
    assert logs["robust_loss"] == pytest.approx(expected, rel=1e-5)


def _custom_cross_entropy(sparse_labels):
    # Named without "sparse" for class indices, with it for one-hot rows:
    # the name says nothing about the labels.
    if sparse_labels:
        def my_cross_entropy(y_true, y_pred):
            return keras.losses.sparse_categorical_crossentropy(
                y_true, y_pred, from_logits=True)
        return my_cross_entropy

    def my_sparse_free_categorical(y_true, y_pred):
        return keras.losses.categorical_crossentropy(y_true, y_pred, from_logits=True)
    my_sparse_free_categorical.__name__ = "not_sparse_categorical_crossentropy"
    return my_sparse_free_categorical


@pytest.mark.parametrize("sparse_labels", [True, False], ids=["class-indices", "one-hot"])
def test_accuracy_with_a_custom_loss_is_picked_from_the_labels(sparse_labels):
    net = softmax_regression(W3, B3)
    model = adversarial(net)
    model.compile(keras.optimizers.SGD(0.1), _custom_cross_entropy(sparse_labels),
                  metrics=["accuracy"])
    y = Y6 if sparse_labels else np.eye(3, dtype="float32")[Y6]
    logs = model.evaluate(X6, y, verbose=0, return_dict=True)
    expected = np.mean(net.predict(X6, verbose=0).argmax(1) == Y6)
    assert logs["clean_accuracy"] == pytest.approx(expected)


def _top2(y_true, y_pred):  # a user's metric function, not registered with Keras
    return keras.metrics.sparse_top_k_categorical_accuracy(y_true, y_pred, k=2)


class _InTopK(keras.metrics.Metric):
    """A user's metric with an argument and Keras's base get_config."""

    def __init__(self, k=1, name="in_top_k", **kwargs):
        super().__init__(name=name, **kwargs)
        self.k = k
        self.hits = self.add_variable((), initializer="zeros", name="hits")

    def update_state(self, y_true, y_pred, sample_weight=None):
        hit = keras.ops.in_top_k(keras.ops.cast(y_true, "int32"), y_pred, self.k)
        self.hits.assign_add(keras.ops.sum(keras.ops.cast(hit, "float32")))

    def result(self):
        return self.hits


class _TopKWithExtra(keras.metrics.SparseTopKCategoricalAccuracy):
    """A built-in metric's subclass whose own argument its config leaves out."""

    def __init__(self, extra=0, **kwargs):
        super().__init__(**kwargs)
        self.extra = extra


@pytest.mark.parametrize("metric", [
    _top2, keras.metrics.MeanMetricWrapper(_top2, name="_top2"),
    keras.metrics.SparseTopKCategoricalAccuracy(k=2, name="_top2")],
    ids=["a function", "MeanMetricWrapper of it", "a built-in with an argument"])
def test_a_users_metric_gives_on_clean_inputs_what_keras_gives(metric):
    # eps = 0: the robust and clean values are Keras's own. Before, the
    # wrapper of an unregistered function failed in compile (Keras could not
    # deserialize it) and a function was refused; Keras takes both.
    net = softmax_regression(W3, B3)
    net.compile(loss=LOGITS_CE, metrics=[_top2])
    expected = net.evaluate(X6, Y6, verbose=0, return_dict=True)["_top2"]
    model = adversarial(net, robustlab.PGD(eps=0.0, steps=1))
    model.compile(keras.optimizers.SGD(0.1), LOGITS_CE, metrics=[metric])
    logs = model.evaluate(X6, Y6, verbose=0, return_dict=True)
    assert 0 < expected < 1
    assert logs["clean__top2"] == logs["robust__top2"] == pytest.approx(expected)


def _every_keras_metric():
    """An instance of each of Keras's metric classes (the arguments some
    need to be built at all)."""
    needs = {"num_classes": 3, "target_class_ids": [0], "recall": 0.5, "precision": 0.5,
             "specificity": 0.5, "sensitivity": 0.5}
    metrics = []
    for name in sorted(dir(keras.metrics)):
        cls = getattr(keras.metrics, name)
        if not (isinstance(cls, type) and issubclass(cls, keras.metrics.Metric)) or cls in (
                keras.metrics.Metric, keras.metrics.MeanMetricWrapper):
            continue
        parameters = inspect.signature(cls.__init__).parameters
        metrics.append(cls(**{k: v for k, v in needs.items() if k in parameters
                              and parameters[k].default is inspect.Parameter.empty}))
    return metrics


def test_every_keras_metric_is_copied_for_the_robust_and_clean_values():
    metrics = _every_keras_metric()
    assert len(metrics) >= 40
    model = adversarial(softmax_regression(W3, B3))
    model.compile(keras.optimizers.SGD(0.1), LOGITS_CE, metrics=metrics)
    names = {m.name for m in model.metrics}
    assert all({"robust_" + m.name, "clean_" + m.name} <= names for m in metrics)


class _Thresholded(keras.metrics.Mean):
    """A user metric whose config holds its tuple as a list, and a NaN."""

    def __init__(self, thresholds=(0.25, 0.75), fill=float("nan"), **kwargs):
        super().__init__(**kwargs)
        self.thresholds, self.fill = thresholds, fill

    def get_config(self):
        return {**super().get_config(), "thresholds": list(self.thresholds), "fill": self.fill}


def test_a_metric_whose_config_copies_it_is_taken_though_a_tuple_comes_back_a_list():
    model = adversarial(softmax_regression(W3, B3))
    model.compile(keras.optimizers.SGD(0.1), LOGITS_CE, metrics=[_Thresholded(name="t")])
    assert {"robust_t", "clean_t"} <= {m.name for m in model.metrics}


@pytest.mark.parametrize("metric, why", [
    (_InTopK(k=2), r"its get_config \(Keras's base one\) returns only its name and dtype, "
                   r"not its arguments \['k'\]"),
    (_TopKWithExtra(extra=3, k=2), r"the copy from its config differs in \['extra'\]"),
], ids=["base get_config", "a setting left out of the config"])
def test_a_metric_its_config_does_not_copy_is_refused_by_name(metric, why):
    # Before: rebuilt from its config with its defaults (k=1, extra=0), and
    # every robust_ and clean_ value was another metric's, without a word.
    model = adversarial(softmax_regression(W3, B3))
    with pytest.raises(TypeError, match=r"computes each metric twice.*cannot be copied so: "
                                        + why + r".*Define `get_config`.*Received: metric="):
        model.compile(keras.optimizers.SGD(0.1), LOGITS_CE, metrics=[metric])


def test_metrics_names_label_the_values_evaluate_returns_with_awp():
    model = adversarial(softmax_regression(W3, B3), awp=robustlab.AWP(0.01))
    model.compile(keras.optimizers.SGD(0.1), LOGITS_CE, metrics=["accuracy"])
    model.fit(X6, Y6, batch_size=3, verbose=0)
    values = model.evaluate(X6, Y6, verbose=0)
    by_name = model.evaluate(X6, Y6, verbose=0, return_dict=True)
    # Each call draws new random starts: compare the numbers that draw none.
    paired = dict(zip(model.metrics_names, values))
    assert sorted(paired) == sorted(by_name)
    assert paired["clean_loss"] == pytest.approx(by_name["clean_loss"])
    assert paired["clean_accuracy"] == pytest.approx(by_name["clean_accuracy"])


def test_predict_gives_the_clean_outputs_of_the_wrapped_model():
    net = softmax_regression(W3, B3)
    np.testing.assert_allclose(compiled(net).predict(X6, verbose=0),
                               net.predict(X6, verbose=0), rtol=1e-6)


def test_jit_compile_trains_to_the_same_weights():
    def train(jit):
        model = compiled(softmax_regression(W3, B3),
                         attack=robustlab.PGD(eps=0.1, steps=3, random_start=False))
        model.compile(keras.optimizers.SGD(0.1), LOGITS_CE, metrics=["accuracy"],
                      jit_compile=jit)
        model.fit(X6, Y6, batch_size=8, epochs=2, verbose=0)
        return model.model.get_weights()

    for a, b in zip(train(False), train(True)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_tf_data_datasets_train_and_evaluate():
    model = compiled(softmax_regression(W3, B3))
    data = tf.data.Dataset.from_tensor_slices((X6, Y6)).batch(8)
    history = model.fit(data, epochs=2, verbose=0, validation_data=data)
    assert np.isfinite(history.history["val_robust_loss"]).all()
    assert set(model.evaluate(data, verbose=0, return_dict=True)) >= {
        "clean_accuracy", "robust_accuracy"}


def test_unit_sample_weights_and_a_validation_split_train_as_expected():
    def run(**kwargs):
        model = compiled(softmax_regression(W3, B3),
                         attack=robustlab.PGD(eps=0.1, steps=2, random_start=False))
        history = model.fit(X6, Y6, batch_size=4, epochs=2, verbose=0, **kwargs)
        return history.history, model.model.get_weights()

    plain, w_plain = run()
    weighted, w_weighted = run(sample_weight=np.ones(len(X6), "float32"))
    for a, b in zip(w_plain, w_weighted):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    split, _ = run(validation_split=0.25)
    assert "val_robust_accuracy" in split and "val_clean_loss" in split


@pytest.mark.parametrize("kwargs, batches", [
    ({}, [4, 4, 4, 4]),  # Keras's default: the training batch
    ({"validation_batch_size": 5}, [5, 5, 5, 1]),
])
def test_validation_arrays_are_evaluated_in_the_validation_batch(kwargs, batches):
    model = compiled(softmax_regression(W3, B3))
    model.run_eagerly = True  # so that the step sees each batch's concrete shape
    seen = []
    test_step = model.test_step

    def recording_test_step(*args):
        seen.append(int(keras.ops.shape(args[-1][0])[0]))
        return test_step(*args)

    model.test_step = recording_test_step
    model.fit(X6, Y6, batch_size=4, epochs=1, verbose=0,
              validation_data=(X6, Y6), **kwargs)
    assert seen == batches


def test_a_validation_split_keeps_the_validation_sample_weights():
    weights = np.where(np.arange(len(X6)) % 3 == 0, 3.0, 0.5).astype("float32")
    fixed = robustlab.PGD(eps=0.1, steps=2, random_start=False)
    model = compiled(softmax_regression(W3, B3), attack=fixed)
    history = model.fit(X6, Y6, sample_weight=weights, validation_split=0.5,
                        batch_size=4, epochs=1, shuffle=False, verbose=0).history
    x_val, y_val, w_val = X6[8:], Y6[8:], weights[8:]
    weighted = model.evaluate(x_val, y_val, sample_weight=w_val, batch_size=4,
                              verbose=0, return_dict=True)
    unweighted = model.evaluate(x_val, y_val, batch_size=4, verbose=0,
                                return_dict=True)
    assert weighted["clean_loss"] != pytest.approx(unweighted["clean_loss"], rel=1e-3)
    for key in ("loss", "robust_loss", "clean_loss", "clean_accuracy",
                "robust_accuracy"):
        assert history["val_" + key][0] == pytest.approx(weighted[key], rel=1e-5), key


# -- determinism ------------------------------------------------------------------


def test_the_same_seed_gives_identical_histories(digits):
    def run():
        model = small_cnn_model(seed=3)
        return model.fit(digits.x_train[:256], digits.y_train[:256], batch_size=64,
                         epochs=2, verbose=0,
                         validation_data=(digits.x_test[:128], digits.y_test[:128])
                         ).history

    assert run() == run()


def test_one_fit_call_an_epoch_trains_bit_for_bit_as_one_fit_over_the_epochs(digits):
    # The second and third calls get the data the first one built.
    x, y = digits.x_train[:256], digits.y_train[:256]
    at_once = small_cnn_model(seed=4)
    losses = at_once.fit(x, y, batch_size=64, epochs=3, verbose=0).history["loss"]
    by_calls = small_cnn_model(seed=4)
    losses_by_calls = [
        by_calls.fit(x, y, batch_size=64, epochs=epoch + 1, initial_epoch=epoch,
                     verbose=0).history["loss"][0]
        for epoch in range(3)]
    assert losses_by_calls == losses
    for a, b in zip(at_once.model.get_weights(), by_calls.model.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("changed", ["x", "y"])
def test_arrays_changed_in_place_between_fit_calls_are_trained_on_as_changed(
        digits, changed):
    def two_epochs(model, first, second):
        for epoch, (x, y) in enumerate((first, second)):
            model.fit(x, y, batch_size=64, epochs=epoch + 1, initial_epoch=epoch,
                      verbose=0)
        return model.model.get_weights()

    x, y = digits.x_train[:256].copy(), digits.y_train[:256].copy()
    before = (x.copy(), y.copy())
    model = small_cnn_model(seed=6)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0)
    if changed == "x":
        x[:] = 1.0 - x
    else:
        y[:] = (y + 1) % 10
    model.fit(x, y, batch_size=64, epochs=2, initial_epoch=1, verbose=0)
    expected = two_epochs(small_cnn_model(seed=6), before, (x.copy(), y.copy()))
    for a, b in zip(model.model.get_weights(), expected):
        np.testing.assert_array_equal(a, b)


def _epoch_by_hand(model, x, y, epoch, batches=None):
    # The seeded order of `epoch` (its first `batches` batches of 64),
    # trained unshuffled: what fit's epoch trains on.
    rows = robustlab.shuffling.epoch_permutation(len(x), seed=model.seed)(epoch)
    rows = rows if batches is None else rows[:64 * batches]
    model.fit(x[rows], y[rows], batch_size=64, epochs=epoch + 1, initial_epoch=epoch,
              shuffle=False, verbose=0)


class _StopAfterBatch(keras.callbacks.Callback):
    def __init__(self, batch):
        super().__init__()
        self.batch = batch

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.batch:
            self.model.stop_training = True


def test_fit_after_a_call_stopped_mid_epoch_trains_on_the_next_epochs_order(digits):
    # The stopped call's stream stands inside epoch 0: the next call must
    # not go on from there.
    x, y = digits.x_train[:256], digits.y_train[:256]
    model = small_cnn_model(seed=7)
    model.fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[_StopAfterBatch(1)])
    model.fit(x, y, batch_size=64, epochs=2, initial_epoch=1, verbose=0)
    by_hand = small_cnn_model(seed=7)
    _epoch_by_hand(by_hand, x, y, 0, batches=2)
    _epoch_by_hand(by_hand, x, y, 1)
    for a, b in zip(model.model.get_weights(), by_hand.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_fit_going_back_to_an_earlier_epoch_trains_on_that_epochs_order(digits):
    x, y = digits.x_train[:256], digits.y_train[:256]
    model = small_cnn_model(seed=8)
    model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    model.fit(x, y, batch_size=64, epochs=1, initial_epoch=0, verbose=0)
    by_hand = small_cnn_model(seed=8)
    for epoch in (0, 1, 0):
        _epoch_by_hand(by_hand, x, y, epoch)
    for a, b in zip(model.model.get_weights(), by_hand.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_train_call_that_raises_abandons_the_streams_iterator():
    # So that the stream never hands on an iterator it cannot account for.
    events = []

    class Stream:
        def batches_read(self, iterator, batches):
            events.append(("read", iterator, batches))

        def abandon(self, iterator):
            events.append(("abandon", iterator))

    def failing(iterator):
        raise RuntimeError("the step failed")

    model = small_cnn_model()
    model._training_stream = Stream()
    with pytest.raises(RuntimeError, match="the step failed"):
        model._counting_batches_read(failing)("iterator")
    model._counting_batches_read(lambda iterator: {})("iterator")
    assert events == [("abandon", "iterator"), ("read", "iterator", 1)]


def test_several_steps_per_execution_train_bit_for_bit_as_one_at_a_time(digits):
    # Keras's steps_per_execution runs several steps in one compiled call
    # (fewer host round trips); the attack's random starts and every weight
    # must come out exactly as with one step a call, the short last batch
    # included (250 = 3 * 64 + 58: executions of 3 steps and of 1).
    def run(steps_per_execution):
        model = robustlab.AdversarialModel(
            robustlab.models.small_cnn(filters=(4, 8), dense=32, seed=5),
            robustlab.PGD(eps=0.1, steps=3), seed=5)
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9), LOGITS_CE,
                      metrics=["accuracy"], steps_per_execution=steps_per_execution)
        history = model.fit(digits.x_train[:250], digits.y_train[:250], batch_size=64,
                            epochs=2, verbose=0).history
        return history, model.model.get_weights()

    history_one, weights_one = run(1)
    history_three, weights_three = run(3)
    for a, b in zip(weights_one, weights_three):
        np.testing.assert_array_equal(a, b)
    assert history_one == history_three


def test_steps_per_epoch_trains_on_the_first_batches_of_each_epochs_order(digits):
    # Epoch e trains on the first steps_per_epoch batches of the seeded order
    # of epoch e: the same as fitting those rows, in that order, unshuffled.
    x, y = digits.x_train[:256], digits.y_train[:256]
    limited = small_cnn_model(seed=2)
    history = limited.fit(x, y, batch_size=64, epochs=2, steps_per_epoch=2,
                          verbose=0).history
    by_hand = small_cnn_model(seed=2)
    order = robustlab.shuffling.epoch_permutation(len(x), seed=2)
    losses = []
    for epoch in range(2):
        rows = order(epoch)[:128]
        losses += by_hand.fit(x[rows], y[rows], batch_size=64, epochs=epoch + 1,
                              initial_epoch=epoch, shuffle=False,
                              verbose=0).history["loss"]
    assert history["loss"] == losses
    for a, b in zip(limited.model.get_weights(), by_hand.model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_steps_per_epoch_beyond_one_pass_is_rejected(digits):
    with pytest.raises(ValueError, match=r"at most 4.*Received: steps_per_epoch=5"):
        small_cnn_model().fit(digits.x_train[:256], digits.y_train[:256],
                              batch_size=64, steps_per_epoch=5, verbose=0)


@pytest.mark.parametrize("steps_per_execution", [1, 3])
def test_the_steps_functions_give_keras_own_numbers(digits, steps_per_execution):
    # robustlab's train and test functions (on TensorFlow one tf.function a
    # call, no Optional round trip for one step, several steps in a while
    # loop; on JAX the jitted steps with the state kept between them)
    # against Keras's own. 250 digits in batches of 64: with 3 steps a call,
    # the second call ends early, on the short last batch.
    def run(keras_functions):
        model = small_cnn_model(seed=4)
        model.compile(keras.optimizers.SGD(0.05), LOGITS_CE, metrics=["accuracy"],
                      steps_per_execution=steps_per_execution)
        if keras_functions:
            model.make_train_function = lambda force=False: keras.Model.make_train_function(
                model, force)
            model.make_test_function = lambda force=False: keras.Model.make_test_function(
                model, force)
        history = model.fit(digits.x_train[:250], digits.y_train[:250], batch_size=64,
                            epochs=2, verbose=0,
                            validation_data=(digits.x_test[:100], digits.y_test[:100]))
        return history.history, model.model.get_weights()

    (history, weights), (keras_history, keras_weights) = run(False), run(True)
    assert history == keras_history
    for a, b in zip(weights, keras_weights):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="TensorFlow's while loop; jax.jit traces once a batch shape")
def test_several_steps_a_call_trace_the_step_once(digits):
    # The first step of a call runs before the loop: a second trace of the
    # step would keep a second copy of its graph in memory for every model.
    model = small_cnn_model(seed=4)
    model.compile(keras.optimizers.SGD(0.05), LOGITS_CE, steps_per_execution=3)
    traced = []
    train_step = model.train_step
    model.train_step = lambda *args: traced.append(args) or train_step(*args)
    model.fit(digits.x_train[:250], digits.y_train[:250], batch_size=64, epochs=2,
              verbose=0)
    assert len(traced) == 1


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="TensorFlow's train function")
@pytest.mark.parametrize("setting", [{"jit_compile": True},
                                     {"steps_per_execution": 2, "jit_compile": True}])
def test_keras_makes_the_train_function_under_xla(setting):
    from robustlab.backend import tensorflow as tf_backend

    model = adversarial(softmax_regression(W3, B3))
    model.compile(keras.optimizers.SGD(0.1), LOGITS_CE, **setting)
    assert tf_backend.steps_function(model, model.train_step) is None


def test_another_seed_gives_other_numbers(digits):
    def run(seed):
        return small_cnn_model(seed=seed).fit(
            digits.x_train[:256], digits.y_train[:256], batch_size=64, epochs=1,
            verbose=0).history["loss"]

    assert run(1) != run(2)


# -- callbacks, saving, resuming ------------------------------------------------------


def test_csv_logger_and_tensorboard_see_the_robust_metrics(tmp_path, digits):
    model = small_cnn_model()
    model.fit(digits.x_train[:128], digits.y_train[:128], batch_size=64, epochs=2,
              verbose=0, validation_data=(digits.x_test[:64], digits.y_test[:64]),
              callbacks=[keras.callbacks.CSVLogger(str(tmp_path / "log.csv")),
                         keras.callbacks.TensorBoard(str(tmp_path / "tb"))])
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2
    assert {"robust_accuracy", "val_clean_accuracy", "val_robust_loss"} <= set(rows[0])
    event_files = [f for _, _, fs in os.walk(tmp_path / "tb") for f in fs
                   if "tfevents" in f]
    assert event_files


def test_saving_and_loading_keeps_config_weights_and_attack_state(tmp_path, digits):
    model = small_cnn_model()
    model.fit(digits.x_train[:128], digits.y_train[:128], batch_size=64, epochs=1,
              verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, robustlab.AdversarialModel)
    assert loaded.attack == model.attack
    np.testing.assert_allclose(loaded.predict(digits.x_test[:32], verbose=0),
                               model.predict(digits.x_test[:32], verbose=0), rtol=1e-6)
    a = model.evaluate(digits.x_test[:64], digits.y_test[:64], verbose=0, return_dict=True)
    b = loaded.evaluate(digits.x_test[:64], digits.y_test[:64], verbose=0, return_dict=True)
    assert a == pytest.approx(b, rel=1e-6)


class InterruptAt(keras.callbacks.Callback):
    def __init__(self, at_epoch):
        super().__init__()
        self.at_epoch = at_epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at_epoch:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_to_the_same_history(tmp_path, digits):
    x, y = digits.x_train[:192], digits.y_train[:192]
    val = (digits.x_test[:64], digits.y_test[:64])
    schedule = robustlab.schedules.PiecewiseConstant(0.1, drop_epochs=(2,))

    def fit(model, *callbacks):
        return model.fit(x, y, batch_size=64, epochs=4, verbose=0, validation_data=val,
                         callbacks=[schedule.callback(), *callbacks]).history

    uninterrupted = fit(small_cnn_model())
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(small_cnn_model(), backup, InterruptAt(at_epoch=2))
    resumed = fit(small_cnn_model(), keras.callbacks.BackupAndRestore(
        str(tmp_path / "backup")))
    for key, values in resumed.items():
        np.testing.assert_allclose(values, uninterrupted[key][2:], rtol=1e-6,
                                   err_msg=key)


def _dropout_model():
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"),
                            keras.layers.Dropout(0.5), keras.layers.Dense(3)])
    model = adversarial(net, robustlab.PGD(0.1, steps=2))
    model.compile(keras.optimizers.SGD(0.1), LOGITS_CE)
    return model


def test_backup_and_restore_resumes_dropout_to_the_same_weights(tmp_path):
    # Keras saves no layer's seed; the resumed fit must draw the masks the
    # uninterrupted one drew.
    x = np.random.default_rng(0).random((48, 4), dtype="float32")
    y = np.arange(48) % 3

    def fit(model, *callbacks):
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=list(callbacks))
        return model.get_weights()

    uninterrupted = fit(_dropout_model())
    with pytest.raises(RuntimeError, match="interrupted"):
        fit(_dropout_model(), keras.callbacks.BackupAndRestore(str(tmp_path)),
            InterruptAt(at_epoch=2))
    resumed = fit(_dropout_model(), keras.callbacks.BackupAndRestore(str(tmp_path)))
    for a, b in zip(resumed, uninterrupted):
        np.testing.assert_array_equal(a, b)


def test_weights_saved_without_the_layers_seeds_still_load(tmp_path, monkeypatch):
    path = str(tmp_path / "old.weights.h5")
    old = _dropout_model()
    monkeypatch.setattr(robustlab.AdversarialModel, "_model_seed_states", lambda self: [])
    old.save_weights(path)  # as files were saved before the seeds were
    monkeypatch.undo()
    model = _dropout_model()
    model.load_weights(path)
    for a, b in zip(model.get_weights(), old.get_weights()):
        np.testing.assert_array_equal(a, b)


# -- learning signal ----------------------------------------------------------------


@pytest.mark.slow
def test_adversarial_training_beats_standard_training_on_robust_accuracy(digits):
    attack = robustlab.PGD(eps=0.1, steps=3)
    x_test, y_test = digits.x_test[:400], digits.y_test[:400]

    def robust_accuracy(train_attack_eps):
        net = robustlab.models.small_cnn(filters=(8, 16), dense=64, seed=0)
        model = adversarial(net, attack=robustlab.PGD(
            eps=train_attack_eps, steps=3, random_start=train_attack_eps > 0),
            eval_attack=robustlab.PGD(eps=0.1, steps=10))
        model.compile(keras.optimizers.Adam(2e-3), LOGITS_CE, metrics=["accuracy"])
        model.fit(digits.x_train, digits.y_train, batch_size=64, epochs=12, verbose=0)
        return model.evaluate(x_test, y_test, verbose=0, return_dict=True)

    standard = robust_accuracy(0.0)
    robust = robust_accuracy(attack.eps)
    assert standard["clean_accuracy"] > 0.9
    assert robust["robust_accuracy"] > standard["robust_accuracy"] + 0.2


# -- bad input and faults ---------------------------------------------------------------


def test_training_inputs_outside_the_value_range_are_rejected():
    model = compiled(softmax_regression(W3, B3))
    with pytest.raises(ValueError, match=r"`x` must lie inside value_range"):
        model.fit(X6 * 255.0, Y6, verbose=0)


def test_training_labels_that_do_not_fit_the_output_are_rejected():
    model = compiled(softmax_regression(W3, B3))
    with pytest.raises(ValueError, match=r"class indices in \[0, 2\]"):
        model.fit(X6, Y6 + 1, verbose=0)


def test_validation_data_is_checked_too():
    model = compiled(softmax_regression(W3, B3))
    with pytest.raises(ValueError, match=r"`validation_data\[0\]` must lie inside"):
        model.fit(X6, Y6, verbose=0, validation_data=(X6 + 5.0, Y6))


def _dataset(x, y, batch_size=8):
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


@pytest.mark.parametrize("where", ["fit", "validation_data", "evaluate"])
def test_tf_data_inputs_get_the_checks_of_arrays(where):
    model = compiled(softmax_regression(W3, B3))
    good = _dataset(X6, Y6)
    bad_range = _dataset(np.concatenate([X6[:8], X6[8:] * 255.0]), Y6)
    bad_labels = _dataset(X6, np.concatenate([Y6[:8], Y6[8:] + 3]))
    names = {"fit": ("x", "y"), "evaluate": ("x", "y"),
             "validation_data": ("validation_data[0]", "validation_data[1]")}[where]

    def run(data):
        if where == "fit":
            return model.fit(data, epochs=1, verbose=0)
        if where == "evaluate":
            return model.evaluate(data, verbose=0)
        return model.fit(good, epochs=1, verbose=0, validation_data=data)

    x_name, y_name = (n.replace("[", r"\[").replace("]", r"\]") for n in names)
    with pytest.raises(ValueError, match=(
            rf"^Argument `{x_name}` must lie inside value_range=\(0, 1\).*"
            rf"Received: {x_name} with values in \[\d\S*, \d+\.?\d*\]$")):
        run(bad_range)
    with pytest.raises(ValueError, match=(
            rf"^Labels `{y_name}` must be class indices in \[0, 2\].*"
            rf"Received: {y_name} with values in \[\d, [345]\]$")):
        run(bad_labels)
    run(good)


@pytest.mark.parametrize("where", ["fit", "evaluate"])
def test_non_finite_tf_data_inputs_are_refused_as_arrays_are(where):
    x = X6.copy()
    x[3, 1] = np.nan
    model = compiled(softmax_regression(W3, B3))
    run = model.fit if where == "fit" else model.evaluate
    with pytest.raises(ValueError, match=(
            r"^Argument `x` must be finite \(no NaN or inf\). "
            r"Received: x with 1 non-finite values$")):
        run(_dataset(x, Y6), verbose=0)


IMAGES = np.random.default_rng(0).random((8, 8, 8, 1)).astype("float32")
IMAGE_LABELS = np.arange(8) % 3


def _net_of_open_input_axes(channels=1, seed=0):
    """A classifier of images of any height and width."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, channels))
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(features))


def _image_net(declares):
    keras.utils.set_random_seed(0)
    if declares == "its input shape":
        return keras.Sequential([keras.Input(IMAGES.shape[1:]), keras.layers.Flatten(),
                                 keras.layers.Dense(3)])
    if declares == "open input axes":
        return _net_of_open_input_axes()
    return keras.Sequential([keras.layers.Conv2D(4, 3), keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(3)])  # unbuilt: declares nothing


def _images_of_unknown_size(x, y, batch_size=4):
    """A pipeline whose static input shape leaves height and width open, as
    `from_generator`, a `py_function` map or decoded files give."""
    def examples():
        yield from zip(x, y)

    return tf.data.Dataset.from_generator(examples, output_signature=(
        tf.TensorSpec((None, None, x.shape[-1]), tf.float32), tf.TensorSpec((), tf.int64),
    )).batch(batch_size)


@pytest.mark.parametrize("declares", ["its input shape", "open input axes", "nothing"])
@pytest.mark.parametrize("where", ["fit", "evaluate"])
def test_tf_data_inputs_of_unknown_image_size_get_the_checks_of_arrays(where, declares):
    model = compiled(_image_net(declares), attack=robustlab.PGD(0.1, steps=1))
    run = model.fit if where == "fit" else model.evaluate
    nan = IMAGES.copy()
    nan[5, 2, 3, 0] = np.nan
    with pytest.raises(ValueError, match=(
            r"^Argument `x` must lie inside value_range=\(0, 1\).*"
            r"Received: x with values in \[\d\S*, \d+\.?\d*\]$")):
        run(_images_of_unknown_size(IMAGES * 255.0, IMAGE_LABELS), verbose=0)
    with pytest.raises(ValueError, match=(
            r"^Argument `x` must be finite \(no NaN or inf\). "
            r"Received: x with 1 non-finite values$")):
        run(_images_of_unknown_size(nan, IMAGE_LABELS), verbose=0)
    with pytest.raises(ValueError, match=(
            r"^Labels `y` must be class indices in \[0, 2\].*"
            r"Received: y with values in \[3, 5\]$")):
        run(_images_of_unknown_size(IMAGES, IMAGE_LABELS + 3), verbose=0)
    run(_images_of_unknown_size(IMAGES, IMAGE_LABELS), verbose=0)


class _Batches(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size=8, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def __getitem__(self, index):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return self.x[rows], self.y[rows]


def _generator(x, y, batch_size=8):
    for start in range(0, len(x), batch_size):
        yield x[start:start + batch_size], y[start:start + batch_size]


@pytest.mark.parametrize("kind", ["generator", "PyDataset"])
@pytest.mark.parametrize("where", ["fit", "validation_data", "evaluate"])
def test_generator_and_py_dataset_inputs_get_the_checks_of_arrays(where, kind):
    model = compiled(softmax_regression(W3, B3))
    make = _generator if kind == "generator" else (
        lambda x, y: _Batches(x, y, workers=2))  # read in threads
    names = {"fit": ("x", "y"), "evaluate": ("x", "y"),
             "validation_data": ("validation_data[0]", "validation_data[1]")}[where]

    def run(x, y):
        if where == "fit":
            return model.fit(make(x, y), epochs=1, verbose=0)
        if where == "evaluate":
            return model.evaluate(make(x, y), verbose=0)
        return model.fit(X6, Y6, epochs=1, verbose=0, validation_data=make(x, y))

    x_name, y_name = (n.replace("[", r"\[").replace("]", r"\]") for n in names)
    with pytest.raises(ValueError, match=(
            rf"^Argument `{x_name}` must lie inside value_range=\(0, 1\).*"
            rf"Received: {x_name} with values in \[\d\S*, \d+\.?\d*\]$")):
        run(np.concatenate([X6[:8], X6[8:] * 255.0]), Y6)
    with pytest.raises(ValueError, match=(
            rf"^Labels `{y_name}` must be class indices in \[0, 2\].*"
            rf"Received: {y_name} with values in \[\d, [345]\]$")):
        run(X6, np.concatenate([Y6[:8], Y6[8:] + 3]))
    run(X6, Y6)


@pytest.mark.parametrize("where", ["fit", "validation_data", "evaluate"])
def test_a_list_of_inputs_is_refused_by_name(where):
    # Keras would take it as the inputs of a model with several, past the
    # checks of arrays; the classifier takes one.
    model = compiled(softmax_regression(W3, B3))
    name = r"validation_data\[0\]" if where == "validation_data" else "x"
    with pytest.raises(TypeError, match=rf"`{name}` must be a NumPy array.*"
                                        rf"Received: {name} of type list$"):
        if where == "fit":
            model.fit([X6 * 255.0], Y6, verbose=0)
        elif where == "evaluate":
            model.evaluate([X6 * 255.0], Y6, verbose=0)
        else:
            model.fit(X6, Y6, verbose=0, validation_data=([X6 * 255.0], Y6))


def test_tf_data_inputs_are_checked_without_an_extra_pass():
    # As many passes as Keras itself makes (on JAX it also counts the batches
    # of a dataset of unknown length once). Reads are compared to within less
    # than one pass: tf.data's prefetching thread may or may not have read the
    # last examples of a pass when Keras drops its iterator, so the exact count
    # varies from run to run by a few examples, while an extra pass would add
    # len(X6) of them.
    def reads_of(model):
        reads = []

        def examples():
            for i in range(len(X6)):
                reads.append(i)
                yield X6[i], Y6[i]

        data = tf.data.Dataset.from_generator(examples, output_signature=(
            tf.TensorSpec((X6.shape[1],), tf.float32), tf.TensorSpec((), tf.int64),
        )).batch(8)
        model.fit(data, epochs=2, verbose=0)
        return len(reads)

    plain = softmax_regression(W3, B3)
    plain.compile(keras.optimizers.SGD(0.1), LOGITS_CE)
    checked, unchecked = reads_of(compiled(softmax_regression(W3, B3))), reads_of(plain)
    assert abs(checked - unchecked) < len(X6), (checked, unchecked)
    assert checked >= 2 * len(X6)


def test_arrays_are_checked_once_not_again_at_every_epochs_evaluation(monkeypatch):
    # NumPy training, validation and RobustEvaluation data are checked whole
    # when fit starts; the per-epoch evaluations of the pipelines built from
    # them must not check (nor wrap) their batches again.
    from robustlab import model_validation
    from robustlab import validation

    calls = {"inputs": 0, "wrapped": 0}
    check_inputs, checked_dataset = validation.check_inputs, model_validation.checked_dataset

    def counting_check(*args, **kwargs):
        calls["inputs"] += 1
        return check_inputs(*args, **kwargs)

    def counting_wrap(dataset, *args, **kwargs):
        wrapped = checked_dataset(dataset, *args, **kwargs)
        calls["wrapped"] += wrapped is not dataset
        return wrapped

    monkeypatch.setattr(validation, "check_inputs", counting_check)
    monkeypatch.setattr(model_validation, "check_inputs", counting_check)
    monkeypatch.setattr(model_validation, "checked_dataset", counting_wrap)
    model = compiled(softmax_regression(W3, B3))
    evaluation = robustlab.callbacks.RobustEvaluation(X6, Y6, batch_size=8)
    history = model.fit(X6, Y6, epochs=3, verbose=0, validation_data=(X6, Y6),
                        validation_batch_size=8, callbacks=[evaluation]).history
    assert len(history["val_robust_accuracy"]) == len(history["train_robust_accuracy"]) == 3
    # x, validation_data[0], RobustEvaluation's x: once each, whatever the
    # epochs. (On JAX the evaluations are handed the arrays themselves, and
    # `evaluate` checks arrays whole at each call: a NumPy pass, no pipeline.)
    once = 3
    per_epoch = 0 if keras.backend.backend() == "tensorflow" else 2
    assert calls == {"inputs": once + 3 * per_epoch, "wrapped": 0}


def test_a_regression_model_is_rejected_at_construction():
    regression = keras.Sequential([keras.Input((6,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match=r"classifier.*at least 2 classes"):
        adversarial(regression)


def test_a_classifier_of_open_input_axes_is_taken_and_trains_on_each_image_size():
    model = compiled(_net_of_open_input_axes(channels=3), attack=robustlab.PGD(0.1, steps=1))
    rng = np.random.default_rng(0)
    for size in (8, 16):
        images = rng.random((4, size, size, 3)).astype("float32")
        history = model.fit(images, np.arange(4) % 3, epochs=1, verbose=0).history
        assert np.isfinite(history["loss"]).all()


def test_a_non_model_and_a_non_attack_are_rejected():
    with pytest.raises(TypeError, match=r"`model` must be a keras.Model"):
        robustlab.AdversarialModel(lambda x: x, attack=robustlab.PGD(0.1))
    with pytest.raises(TypeError, match=r"`attack` must be a robustlab.PGD"):
        robustlab.AdversarialModel(softmax_regression(W3, B3), attack=0.1)


def test_a_string_is_not_a_flag():
    with pytest.raises(TypeError, match=r"`attack_training_mode` must be True or False. "
                                        r"Received: attack_training_mode='no'"):
        robustlab.AdversarialModel(softmax_regression(W3, B3), attack=robustlab.PGD(0.1),
                                   attack_training_mode="no")


def test_compile_requires_a_loss():
    with pytest.raises(ValueError, match=r"`loss`.*required.*Received: loss=None"):
        adversarial(softmax_regression(W3, B3)).compile("sgd")


def _nan_weights():
    w = W3.copy()
    w[1, 0] = np.nan
    return w


def test_a_nan_loss_stops_training_with_a_clear_error():
    model = compiled(softmax_regression(_nan_weights(), B3))
    with pytest.raises(NonFiniteLossError, match=r"non-finite at epoch 0, batch 0"):
        model.fit(X6, Y6, batch_size=4, epochs=3, verbose=0)


def test_a_step_that_leaves_a_weight_non_finite_stops_training_at_that_batch():
    # Batch 0's loss is finite (computed before the update); its update is
    # not, and the error names it rather than the next batch.
    model = compiled(softmax_regression(W3, B3), lr=float("inf"))
    with pytest.raises(NonFiniteLossError, match=r"non-finite at epoch 0, batch 0\."):
        model.fit(X6, Y6, batch_size=4, epochs=1, verbose=0, shuffle=False)


def test_a_diverged_relu_network_stops_training_on_every_backend():
    # TensorFlow's oneDNN kernel of a fused MatMul + BiasAdd + Relu maps NaN
    # to 0: the loss of NaN weights stays finite there.
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                            keras.layers.Dense(3)])
    model = adversarial(net)
    model.compile(keras.optimizers.SGD(1e30), LOGITS_CE)
    x = np.random.default_rng(0).random((64, 4), dtype="float32")
    with pytest.raises(NonFiniteLossError, match=r"non-finite at epoch 0"):
        model.fit(x, np.arange(64) % 3, batch_size=8, epochs=3, verbose=0)



@pytest.mark.skipif(keras.backend.backend() != "jax",
                    reason="only JAX's Callback.model attaches the fit's state")
def test_the_loss_check_leaves_a_jax_fits_state_to_the_fit_thread():
    # From Keras's worker thread a state sync races the fit's next step,
    # which donates the synced buffers: the fit then failed, now and then,
    # with "Buffer has been deleted or donated" instead of the guard's error.
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                            keras.layers.Dense(3)])
    model = adversarial(net)
    model.compile(keras.optimizers.SGD(1e30), LOGITS_CE)
    fit_thread = threading.current_thread()
    sync = model.jax_state_sync
    synced_from = []

    def recorded_sync():
        synced_from.append(threading.current_thread())
        return sync()

    model.jax_state_sync = recorded_sync
    x = np.random.default_rng(0).random((64, 4), dtype="float32")
    with pytest.raises(NonFiniteLossError, match=r"non-finite at epoch 0"):
        model.fit(x, np.arange(64) % 3, batch_size=8, epochs=3, verbose=0)
    assert synced_from and set(synced_from) == {fit_thread}

class _SlowFirstBatchCheck(keras.callbacks.Callback):
    """Delays the check of batch 0 (Keras runs a step's batch callbacks one
    after the other, in one thread) and lets the check of batch 1 finish
    before Keras dispatches batch 2's, where it looks for finished checks."""

    async_safe = True

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 2:
            time.sleep(0.3)

    def on_train_batch_end(self, batch, logs=None):
        if batch == 0:
            time.sleep(1.0)


def test_a_nan_loss_checked_out_of_order_still_names_the_first_batch():
    # Under asynchronous dispatch (JAX) the later batches' checks, whose
    # losses are non-finite too, finish first; the error must not name them.
    model = compiled(softmax_regression(_nan_weights(), B3))
    with pytest.raises(NonFiniteLossError, match=r"non-finite at epoch 0, batch 0\."):
        model.fit(X6, Y6, batch_size=4, epochs=1, verbose=0,
                  callbacks=[_SlowFirstBatchCheck()])


def _ended_in_a_thread(callback, batch, logs):
    outcome = {}

    def end():
        try:
            callback.on_train_batch_end(batch, logs)
            outcome["returned"] = True
        except Exception as error:  # noqa: BLE001 - the test reads it
            outcome["raised"] = error

    thread = threading.Thread(target=end, daemon=True)
    thread.start()
    return thread, outcome


def test_the_nan_checks_take_turns_in_the_order_of_the_calls():
    from robustlab.callbacks import StopOnNonFiniteLoss

    guard = StopOnNonFiniteLoss()
    guard.set_model(compiled(softmax_regression(W3, B3)))
    guard.on_epoch_begin(2)
    guard.on_train_batch_begin(0)
    guard.on_train_batch_begin(1)
    later, outcome = _ended_in_a_thread(guard, 1, {"loss": float("nan")})
    later.join(timeout=0.3)
    assert later.is_alive() and not outcome  # waits for batch 0's check
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, batch 0\."):
        guard.on_train_batch_end(0, {"loss": float("nan")})
    later.join(timeout=10)
    assert outcome == {"returned": True}  # the first error is the one raised


def test_a_nan_check_after_finite_ones_raises_for_its_own_batch():
    from robustlab.callbacks import StopOnNonFiniteLoss

    guard = StopOnNonFiniteLoss()
    guard.set_model(compiled(softmax_regression(W3, B3)))
    guard.on_epoch_begin(0)
    for batch in range(3):
        guard.on_train_batch_begin(batch)
    later, outcome = _ended_in_a_thread(guard, 2, {"loss": float("inf")})
    guard.on_train_batch_end(0, {"loss": 1.0})
    guard.on_train_batch_end(1, {"loss": 0.5})
    later.join(timeout=10)
    assert isinstance(outcome.get("raised"), NonFiniteLossError)
    assert "epoch 0, batch 2." in str(outcome["raised"])


def test_the_nan_check_finishes_a_loop_that_calls_only_the_batch_hooks():
    # A hand-written loop whose batches count from 0 again each epoch and
    # that never calls on_epoch_begin: the guard waited forever at the
    # second epoch's first batch (a call it took to be still unchecked).
    from robustlab.callbacks import StopOnNonFiniteLoss

    guard = StopOnNonFiniteLoss()
    guard.set_model(compiled(softmax_regression(W3, B3)))
    outcome = {}

    def loop():
        try:
            for epoch in range(3):
                for batch in range(4):
                    guard.on_train_batch_begin(batch)
                    guard.on_train_batch_end(batch, {"loss": 1.0})
            guard.on_train_batch_begin(0)
            guard.on_train_batch_end(0, {"loss": float("nan")})
        except Exception as error:  # noqa: BLE001 - the test reads it
            outcome["raised"] = error

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert isinstance(outcome.get("raised"), NonFiniteLossError)
    assert "batch 0." in str(outcome["raised"])


def test_the_nan_check_lets_keras_dispatch_batch_callbacks_asynchronously():
    # Keras reads each step's logs on the spot (a host sync every batch)
    # unless every per-batch callback declares itself async-safe.
    from robustlab.callbacks import StopOnNonFiniteLoss

    if keras.backend.backend() == "tensorflow":
        pytest.skip("Keras never dispatches batch callbacks asynchronously on TensorFlow")

    callbacks = keras.callbacks.CallbackList([StopOnNonFiniteLoss()])
    assert callbacks._async_train


def test_a_nan_loss_under_several_steps_per_execution_names_the_calls_batches():
    x = np.repeat(X6, 4, axis=0)  # 24 examples: 6 batches of 4, 2 calls of 3
    y = np.repeat(Y6, 4, axis=0)
    model = adversarial(softmax_regression(W3, B3))
    model.compile(keras.optimizers.SGD(1e38), LOGITS_CE, steps_per_execution=3)
    with pytest.raises(NonFiniteLossError, match=(
            r"non-finite at epoch 0, in batches (0-2|3-5) \(checked once per compiled "
            r"call: steps_per_execution=3\)")):
        model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)


def test_a_nan_loss_in_a_later_batch_names_that_batch():
    x = np.repeat(X6, 4, axis=0)
    y = np.repeat(Y6, 4, axis=0)
    # Batch 0's loss is finite (it is computed before the update); the
    # update overflows the weights, and the loss with them.
    model = compiled(softmax_regression(W3, B3), lr=1e38)
    with pytest.raises(NonFiniteLossError, match=r"non-finite at epoch 0, batch [1-5]\."):
        model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False)
