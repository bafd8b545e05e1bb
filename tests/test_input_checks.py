"""Bad arguments that used to pass silently, be coerced, or fail deep inside
Keras or NumPy: each is now refused by name, with the allowed range and
"Received: ..."; and valid arguments that used to be refused are taken."""

import os

import keras
import numpy as np
import pytest

import robustlab
from robustlab import attacks
from robustlab import awp
from robustlab import bounds
from robustlab import curvature
from robustlab import data
from robustlab import experiments
from robustlab import heavy_ball
from robustlab import spectral
from robustlab import validation
from robustlab.callbacks import HessianProbe
from robustlab.callbacks import PosteriorTracker
from robustlab.callbacks import RobustEvaluation
from robustlab.callbacks.posterior_tracker import expected_window_variance

LOGITS_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
X = np.random.default_rng(0).random((16, 8, 8, 1)).astype("float32")
Y = np.arange(16) % 10


def net(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                             keras.layers.Dense(10)])


def model(seed=0, **kwargs):
    m = robustlab.AdversarialModel(net(seed), robustlab.PGD(0.1, steps=1), **kwargs)
    m.compile(keras.optimizers.SGD(0.1), LOGITS_CE, metrics=["accuracy"])
    return m


def backend_tensor(array):
    return keras.ops.convert_to_tensor(array)


# -- fit and evaluate ------------------------------------------------------------------


def test_tensors_out_of_the_value_range_are_refused_as_arrays_are():
    with pytest.raises(ValueError, match=r"value_range=\(0, 1\).*Received: x with values"):
        model().fit(backend_tensor(X + 5), backend_tensor(Y), verbose=0)


def test_tensors_train_exactly_as_the_same_arrays():
    by_array, by_tensor = model(), model()
    by_array.fit(X, Y, batch_size=4, epochs=2, verbose=0)
    by_tensor.fit(backend_tensor(X), backend_tensor(Y), batch_size=4, epochs=2, verbose=0)
    for a, b in zip(by_array.get_weights(), by_tensor.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_labels_of_tensors_outside_the_classes_are_refused_in_evaluate():
    with pytest.raises(ValueError, match=r"class indices in \[0, 9\].*Received: y"):
        model().evaluate(backend_tensor(X), backend_tensor(Y + 30), verbose=0)


def test_evaluate_checks_inputs_against_the_evaluation_attacks_range():
    m = robustlab.AdversarialModel(net(), robustlab.PGD(0.1, steps=1),
                                   eval_attack=robustlab.PGD(0.0, steps=1, value_range=(0, 0.5)))
    m.compile(keras.optimizers.SGD(0.1), LOGITS_CE)
    with pytest.raises(ValueError, match=r"value_range=\(0, 0.5\)"):
        m.evaluate(X, Y, verbose=0)


def test_validation_data_is_checked_against_the_evaluation_attacks_range():
    m = robustlab.AdversarialModel(net(), robustlab.PGD(0.1, steps=1),
                                   eval_attack=robustlab.PGD(0.0, steps=1, value_range=(0, 0.5)))
    m.compile(keras.optimizers.SGD(0.1), LOGITS_CE)
    with pytest.raises(ValueError, match=r"`validation_data\[0\]`.*value_range=\(0, 0.5\)"):
        m.fit(X * 0.5, Y, validation_data=(X, Y), verbose=0)


@pytest.mark.parametrize("split", [1.5, -0.5, 1.0, float("nan"), "0.2"])
def test_a_validation_split_outside_0_1_is_refused(split):
    with pytest.raises(ValueError, match=r"`validation_split` must be a fraction in \[0, 1\)"):
        model().fit(X, Y, validation_split=split, verbose=0)


def test_a_validation_split_that_empties_one_side_is_refused():
    with pytest.raises(ValueError, match=r"at least one example on each side.*0.99"):
        model().fit(X, Y, validation_split=0.99, verbose=0)


def test_validation_data_overrides_validation_split_as_in_keras():
    with_both, with_data = model(), model()
    h1 = with_both.fit(X, Y, validation_split=0.5, validation_data=(X[:4], Y[:4]),
                       batch_size=4, verbose=0).history
    h2 = with_data.fit(X, Y, validation_data=(X[:4], Y[:4]), batch_size=4, verbose=0).history
    assert h1 == h2


@pytest.mark.parametrize("argument", [
    {"batch_size": 0}, {"batch_size": -1}, {"validation_batch_size": 0},
    {"steps_per_epoch": 0}, {"epochs": 0}, {"epochs": -1}, {"initial_epoch": -1},
    {"validation_freq": 0}])
def test_counts_below_their_minimum_are_refused_by_fit(argument):
    (name, value), = argument.items()
    with pytest.raises(ValueError, match=rf"`{name}` must be an integer >= .*Received: {name}="):
        model().fit(X, Y, shuffle=False, verbose=0, **argument)


@pytest.mark.parametrize("argument", [{"batch_size": 8.0}, {"batch_size": "8"}, {"epochs": 1.5}])
def test_counts_that_are_not_integers_are_refused_by_fit(argument):
    (name, _), = argument.items()
    m = model()
    m.fit(X, Y, batch_size=8, verbose=0)  # a kept pipeline must not let them through
    with pytest.raises(TypeError, match=rf"`{name}` must be an integer"):
        m.fit(X, Y, verbose=0, **{"batch_size": 8, **argument})


def test_evaluate_refuses_a_negative_batch_size():
    with pytest.raises(ValueError, match=r"Received: batch_size=-3"):
        model().evaluate(X, Y, batch_size=-3, verbose=0)


@pytest.mark.parametrize("weights", [-np.ones(16), np.full(16, np.nan)])
def test_negative_or_missing_sample_weights_are_refused(weights):
    with pytest.raises(ValueError, match=r"`sample_weight` must hold finite weights >= 0"):
        model().fit(X, Y, sample_weight=weights, verbose=0)


def test_sample_weights_of_another_shape_are_refused():
    with pytest.raises(ValueError, match=r"one weight per example, shape \(16,\).*\(16, 2\)"):
        model().evaluate(X, Y, sample_weight=np.ones((16, 2)), verbose=0)


def test_negative_class_weights_are_refused():
    with pytest.raises(ValueError, match=r"`class_weight` must map classes to finite weights"):
        model().fit(X, Y, class_weight={0: -1.0, 1: 1.0}, verbose=0)


def test_integer_inputs_are_refused_and_the_model_stays_usable():
    m = model()
    with pytest.raises(TypeError, match=r"floating-point inputs.*Received: x of dtype int32"):
        m.fit((X * 10).astype("int32"), Y, verbose=0)
    m.fit(X, Y, verbose=0)  # on JAX a failure inside Keras's step left it broken


def _pipeline(x, y, batch_size=4):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size)


@pytest.mark.parametrize("where", ["fit", "evaluate"])
def test_integer_tf_data_inputs_are_refused_before_a_batch_is_read(where):
    m = model()
    run = m.fit if where == "fit" else m.evaluate
    with pytest.raises(TypeError, match=r"`x` must hold floating-point inputs.*"
                                        r"Received: x of dtype uint8$"):
        run(_pipeline((X * 255).astype("uint8"), Y), verbose=0)


def test_a_tf_data_batch_refused_in_the_first_fit_leaves_the_model_usable():
    # On JAX Keras detaches the variables while it loops over the data, the
    # optimizer's too, which the first fit builds; a batch refused before
    # any step has run leaves them so unless they are put back.
    import tensorflow as tf

    passes = []

    def examples():
        # Only the first pass is in range. Keras's JAX trainer reads a first
        # batch to build the loss and then starts over, so the refusal comes
        # before any step there (on TensorFlow, at the second epoch).
        passes.append(None)
        yield from zip(X if len(passes) == 1 else X + 5.0, Y)

    data = tf.data.Dataset.from_generator(examples, output_signature=(
        tf.TensorSpec(X.shape[1:], tf.float32), tf.TensorSpec((), tf.int64))).batch(4)
    m = model()
    with pytest.raises(ValueError, match=r"`x` must lie inside value_range"):
        m.fit(data, epochs=2, verbose=0)
    m.fit(_pipeline(X, Y), verbose=0)


@pytest.mark.parametrize("where", ["fit", "evaluate"])
def test_a_refused_tf_data_batch_raises_no_python_exception_in_tf_datas_threads(
        where, monkeypatch):
    # TensorFlow formats a Python exception raised in a tf.data thread
    # there; the allocations can run Python's garbage collector in that
    # thread, which can free an earlier pipeline's iterator, whose
    # TensorFlow destructor then never returns: the collector stays "in
    # progress" and gc.collect() collects nothing more in the process (seen
    # with TensorFlow 2.21 after a few refused batches in one process).
    import threading
    import traceback

    formatted_elsewhere = []
    format_exception = traceback.format_exception

    def noting_format_exception(*args, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            formatted_elsewhere.append(args[0] if args else kwargs)
        return format_exception(*args, **kwargs)

    monkeypatch.setattr(traceback, "format_exception", noting_format_exception)
    m = model()
    run = m.fit if where == "fit" else m.evaluate
    for data in ((X + 5.0, Y), (X, Y + 10)):
        with pytest.raises(ValueError, match=r"^(Argument `x` must lie inside|Labels `y` must)"):
            run(_pipeline(*data), verbose=0)
    assert formatted_elsewhere == []


def _counting_checks(monkeypatch):
    from robustlab import model_validation

    checked = []
    unmarked = model_validation._BatchCheck.unmarked

    def counting(self, x, y):
        checked.append(len(x))
        return unmarked(self, x, y)

    monkeypatch.setattr(model_validation._BatchCheck, "unmarked", counting)
    return checked


def test_a_tf_data_batch_is_read_and_checked_only_when_it_is_asked_for(monkeypatch):
    # The check is Python, and so is a generator's pipeline. tf.data adds a
    # prefetch to a pipeline's end and ran both there, a batch ahead, in a
    # thread of its own: there the garbage collector can free the iterator
    # that owns the thread, whose destructor then waits for that thread
    # forever.
    import time

    import tensorflow as tf

    from robustlab import model_validation

    checked = _counting_checks(monkeypatch)
    examples = []

    def generator():
        for example in zip(X, Y):
            examples.append(None)
            yield example

    pipeline = tf.data.Dataset.from_generator(generator, output_signature=(
        tf.TensorSpec(X.shape[1:], tf.float32), tf.TensorSpec((), tf.int64))).batch(4)
    iterator = iter(model_validation.checked_dataset(pipeline, model(), (0, 1)))
    next(iterator)
    time.sleep(0.5)  # time enough for a thread reading ahead to read a second batch
    assert checked == [4] and len(examples) == 4
    next(iterator)
    assert checked == [4, 4] and len(examples) == 8


@pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                    reason="Keras's JAX trainer reads a first batch on its own first")
@pytest.mark.parametrize("class_weight", [None, {0: 2.0}])
def test_fit_checks_exactly_the_tf_data_batches_it_trains_on(monkeypatch, class_weight):
    # With a class weight Keras mapped the checked batches and prefetched
    # them, reading ahead (in its threads); robustlab now weighs them itself.
    import time

    checked = _counting_checks(monkeypatch)
    model().fit(_pipeline(X, Y), steps_per_epoch=2, class_weight=class_weight, verbose=0)
    time.sleep(0.5)
    assert checked == [4, 4]


@pytest.mark.parametrize("reduction", ["none", None])
def test_a_loss_that_leaves_the_batch_unreduced_is_refused_at_compile(reduction):
    # Before: TensorFlow trained on the gradient of the sum (steps 16 times
    # those of the mean here, without a word) and JAX failed at the first
    # step ("Gradient only defined for scalar-output functions").
    m = robustlab.AdversarialModel(net(), robustlab.PGD(0.1, steps=1))
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=reduction)
    with pytest.raises(ValueError, match=r"`loss` of AdversarialModel.compile must reduce the "
                                         r"batch to one number.*Received: loss with "
                                         rf"reduction={reduction!r}$"):
        m.compile(keras.optimizers.SGD(0.1), loss)


@pytest.mark.parametrize("reduction", ["sum", "mean", "sum_over_batch_size"])
def test_losses_reduced_to_one_number_are_compiled(reduction):
    m = robustlab.AdversarialModel(net(), robustlab.PGD(0.1, steps=1))
    m.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=reduction))
    assert np.isfinite(m.fit(X, Y, epochs=1, verbose=0).history["loss"][0])


def test_fit_without_labels_is_refused():
    with pytest.raises(ValueError, match=r"`y` must hold the labels.*Received: y=None"):
        model().fit(X, None, verbose=0)


def test_validation_data_of_one_array_is_refused():
    with pytest.raises(ValueError, match=r"\(x_val, y_val\).*length 1"):
        model().fit(X, Y, validation_data=(X,), verbose=0)


def test_shuffle_must_be_a_flag():
    with pytest.raises(TypeError, match=r"`shuffle` must be True or False. Received: shuffle='no'"):
        model().fit(X, Y, shuffle="no", verbose=0)


def test_a_metrics_string_is_refused_rather_than_read_letter_by_letter():
    m = robustlab.AdversarialModel(net(), robustlab.PGD(0.1, steps=1))
    with pytest.raises(TypeError, match=r"list of metrics.*Received: metrics='accuracy'"):
        m.compile("sgd", LOGITS_CE, metrics="accuracy")


def test_an_iterate_observer_must_be_callable():
    m = model()
    with pytest.raises(TypeError, match=r"`observer` must be callable.*Received: observer=3"):
        m.observe_iterates(3, m.trainable_variables)


@pytest.mark.parametrize("variables", ["one variable", "arrays"])
def test_iterate_observers_take_a_list_of_variables(variables):
    # One variable was iterated by its rows; arrays failed on their `path`.
    m = model()
    m.fit(X, Y, verbose=0)
    given = (m.trainable_variables[0] if variables == "one variable"
             else [np.zeros(3)])
    with pytest.raises(TypeError, match=r"`variables` must be a list of the model's "
                                        r"trainable variables\. Received: variables="):
        m.observe_iterates(lambda rate, weights: None, given)


def test_an_iterate_observer_of_another_models_variables_names_them():
    m, other = model(), model()
    for each in (m, other):
        each.fit(X, Y, verbose=0)
    with pytest.raises(ValueError, match=r"only watch the model's trainable variables; "
                                         r"\[.*\] are not\. Received: variables=\["):
        m.observe_iterates(lambda rate, weights: None, other.trainable_variables[:1])


# -- seeds -----------------------------------------------------------------------------


def test_numpy_integer_seeds_are_taken():
    assert robustlab.AdversarialModel(net(), robustlab.PGD(0.1), seed=np.int64(3)).seed == 3
    x_adv = attacks.pgd(net(), X, Y, eps=0.1, steps=1, seed=np.int64(3))
    np.testing.assert_array_equal(x_adv, attacks.pgd(net(), X, Y, eps=0.1, steps=1, seed=3))


@pytest.mark.parametrize("seed", [2**31, 2**70])
def test_seeds_beyond_what_every_backend_takes_are_refused(seed):
    with pytest.raises(ValueError, match=rf"\[0, 2147483647\]. Received: seed={seed}"):
        attacks.pgd(net(), X, Y, eps=0.1, steps=1, seed=seed)
    with pytest.raises(ValueError, match=rf"Received: seed={seed}"):
        robustlab.AdversarialModel(net(), robustlab.PGD(0.1), seed=seed)


# -- attacks ---------------------------------------------------------------------------


def test_a_bfloat16_batch_is_attacked():
    import ml_dtypes

    x_adv = attacks.pgd(net(), X.astype(ml_dtypes.bfloat16), Y, eps=0.1, steps=1, seed=0)
    assert x_adv.dtype == ml_dtypes.bfloat16


@pytest.mark.parametrize("call, error, pattern", [
    (lambda: attacks.pgd(net(), X, None, eps=0.1), ValueError,
     r"one label per input \(16\). Received: y=array\(None"),
    (lambda: attacks.pgd(net(), np.float32(0.5), Y, eps=0.1), ValueError,
     r"batch of examples.*Received: x="),
    (lambda: attacks.run_attack(net(), X, Y, "pgd"), TypeError,
     r"`attack` must be a robustlab.PGD. Received: attack='pgd'"),
    (lambda: attacks.pgd(net(), X, Y, eps=0.1, training="no"), TypeError,
     r"`training` must be True or False. Received: training='no'"),
    (lambda: attacks.pgd(net(), X, Y, eps=0.1, from_logits="yes"), TypeError,
     r"`from_logits` must be True or False"),
])
def test_bad_attack_arguments_are_named(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_a_nan_in_one_hot_labels_is_reported_as_non_finite():
    one_hot = np.eye(10, dtype="float32")[Y]
    one_hot[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"must be finite. Received: y with 1 non-finite"):
        attacks.pgd(net(), X, one_hot, eps=0.1)


# -- labels of the other kind than the loss takes ----------------------------------------
# Keras's own error named its `target` and `output` ("Argument `output` must
# have rank (ndim) `target.ndim - 1`"), on TensorFlow from inside a trace.

ONE_HOT = np.eye(10, dtype="float32")[Y]
ONE_HOT_REFUSED = (r"Argument `y` holds one-hot labels, but the loss "
                   r"SparseCategoricalCrossentropy \(a sparse categorical cross-entropy\) "
                   r"takes class indices: .* Received: y with shape \((16|None|4), 10\)")


class _OneHotBatches(keras.utils.PyDataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return X[4 * index:4 * index + 4], ONE_HOT[4 * index:4 * index + 4]


def _tracked(tracker_of):
    probe = HessianProbe(X, Y, iterations=2)
    return [probe, tracker_of(probe)]


@pytest.mark.parametrize("call", [
    lambda: attacks.pgd(net(), X, ONE_HOT, 0.1, steps=1, loss=LOGITS_CE),
    lambda: attacks.loss_gradient(net(), X, ONE_HOT, loss=LOGITS_CE),
    lambda: model().fit(X, ONE_HOT, epochs=1, verbose=0),
    lambda: model().evaluate(X, ONE_HOT, verbose=0),
    lambda: model().train_on_batch(X, ONE_HOT),
    pytest.param(lambda: model().fit(_pipeline(X, ONE_HOT), epochs=1, verbose=0),
                 id="tf.data", marks=pytest.mark.skipif(
                     keras.backend.backend() != "tensorflow",
                     reason="tf.data pipelines are TensorFlow's")),
    lambda: model().fit(((X[i:i + 4], ONE_HOT[i:i + 4]) for i in range(0, 16, 4)),
                        epochs=1, verbose=0),
    lambda: model().fit(_OneHotBatches(), epochs=1, verbose=0),
    lambda: curvature.top_hessian_eigenvalue(net(), X, ONE_HOT, loss=LOGITS_CE, iterations=2),
    lambda: model().fit(X, Y, epochs=1, verbose=0, callbacks=[
        HessianProbe(X, ONE_HOT, iterations=2)]),
    lambda: model().fit(X, Y, batch_size=4, epochs=1, verbose=0, callbacks=_tracked(
        lambda probe: PosteriorTracker(probe, x=X, y=ONE_HOT, batch_size=4, train_size=16))),
    lambda: model().fit(X, Y, epochs=1, verbose=0, callbacks=[
        RobustEvaluation(X, ONE_HOT, prefix="probe_")]),
], ids=["pgd", "loss_gradient", "fit", "evaluate", "train_on_batch", "tf.data", "generator",
        "PyDataset", "curvature", "HessianProbe", "PosteriorTracker", "RobustEvaluation"])
def test_one_hot_labels_for_a_sparse_cross_entropy_are_refused_by_name(call):
    with pytest.raises(ValueError, match=ONE_HOT_REFUSED):
        call()


def test_validation_labels_of_the_other_kind_are_refused_naming_them():
    with pytest.raises(ValueError, match=r"Argument `validation_data\[1\]` holds one-hot "
                                         r"labels, .*Received: validation_data\[1\] with shape"):
        model().fit(X, Y, validation_data=(X, ONE_HOT), epochs=1, verbose=0)


def test_class_indices_for_a_categorical_cross_entropy_are_refused_by_name():
    m = robustlab.AdversarialModel(net(), robustlab.PGD(0.1, steps=1))
    m.compile(keras.optimizers.SGD(0.1), keras.losses.CategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match=r"`y` holds class indices, but the loss "
                                         r"CategoricalCrossentropy .*Received: y with shape \(16,\)"):
        m.fit(X, Y, epochs=1, verbose=0)
    m.fit(X, ONE_HOT, epochs=1, verbose=0)  # the labels it takes


# -- curvature ------------------------------------------------------------------------


@pytest.mark.parametrize("labels", [np.full(16, 15), np.full(16, 0.5)])
def test_curvature_refuses_labels_that_are_not_the_models_classes(labels):
    with pytest.raises(ValueError, match=r"Received: y"):
        curvature.top_hessian_eigenvalue(net(), X, labels, loss=LOGITS_CE, iterations=2)


def test_curvature_refuses_inputs_of_another_shape_by_name():
    with pytest.raises(ValueError, match=r"input shape \(8, 8, 1\). Received: x with examples"):
        curvature.hessian_trace(net(), X[..., 0], Y, loss=LOGITS_CE, probes=1)


def test_curvature_leaves_regression_targets_to_their_loss():
    regression = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    x = np.ones((4, 3), "float32")
    estimate = curvature.top_hessian_eigenvalue(regression, x, np.full((4, 1), 2.5, "float32"),
                                                loss="mse", iterations=3)
    assert np.isfinite(estimate.eigenvalue)


@pytest.mark.parametrize("call", [
    lambda: spectral.hutchinson_trace(lambda v: v, 3, 2, rng=None),
    lambda: spectral.slq_density(lambda v: v, 3, 2, 1, rng=5),
    lambda: spectral.lanczos(lambda v: v, np.ones(3), 2, rng=5),
])
def test_spectral_functions_name_an_rng_that_is_not_a_generator(call):
    with pytest.raises(TypeError, match=r"`rng` must be a numpy.random.Generator"):
        call()


# -- flags that bool() would have taken -----------------------------------------------


@pytest.mark.parametrize("call, name", [
    (lambda: heavy_ball.covariance_recursion([10.0], 0.9, 1.0, 1.0, 32, allow_unstable="no"),
     "allow_unstable"),
    (lambda: bounds.mcallester_bound(0.1, 10.0, 100, clip="no"), "clip"),
    (lambda: HessianProbe(X, Y, robust="no"), "robust"),
    (lambda: HessianProbe(X, Y, warm_start="yes"), "warm_start"),
    (lambda: PosteriorTracker(per_layer="no"), "per_layer"),
    (lambda: expected_window_variance([0.1, 0.1], 0.9, 2.0, 1.0, return_trajectory="no"),
     "return_trajectory"),
])
def test_flags_must_be_true_or_false(call, name):
    with pytest.raises(TypeError, match=rf"`{name}` must be True or False"):
        call()


# -- callbacks ---------------------------------------------------------------------------


def test_robust_evaluation_refuses_an_empty_prefix():
    with pytest.raises(ValueError, match=r"`prefix` must be a non-empty string"):
        RobustEvaluation(X, Y, prefix="")
    # Not a string at all: a TypeError (it was a ValueError).
    with pytest.raises(TypeError, match=r"`prefix` must be a non-empty string.*Received: prefix=3"):
        RobustEvaluation(X, Y, prefix=3)


def test_robust_evaluation_takes_a_numpy_integer_period():
    assert RobustEvaluation(X, Y, every=np.int64(2)).every == 2


def test_robust_evaluation_refuses_a_flag_as_its_period():
    with pytest.raises(TypeError, match=r"`every` must be an integer"):
        RobustEvaluation(X, Y, every=True)


# -- data, schedules, AWP, experiments, forks ------------------------------------------


@pytest.mark.parametrize("labels, pattern", [
    ([2.7, 9.9], "1-D array of whole class indices"), ([[1, 2]], "1-D array of whole"),
    ([2**32 + 1], r"class indices in \[0, 10\). Received: labels in \[4294967297")])
def test_label_noise_refuses_labels_that_a_cast_would_change(labels, pattern):
    with pytest.raises(ValueError, match=pattern):
        data.with_symmetric_label_noise(np.asarray(labels), 0.5, 10, np.random.default_rng(0))


def test_label_noise_names_an_rng_that_is_not_a_generator():
    with pytest.raises(TypeError, match=r"`rng` must be a numpy.random.Generator"):
        data.with_symmetric_label_noise(np.zeros(4, "int32"), 0.5, 10, None)


def test_class_counts_must_be_whole():
    with pytest.raises(ValueError, match=r"whole counts >= 0"):
        data.balanced_class_counts([2.5, 3.0], 4, np.random.default_rng(0))


@pytest.mark.parametrize("drops", ["40", 40, None])
def test_a_schedule_needs_a_sequence_of_drop_epochs(drops):
    with pytest.raises(TypeError, match=r"`drop_epochs` must be a sequence of epochs"):
        robustlab.schedules.PiecewiseConstant(0.1, drops)


def test_awp_names_a_schedule_that_returns_no_number():
    weight_perturbation = robustlab.AWP(0.01, warmup_epochs=0, schedule=lambda epoch: None)
    with pytest.raises(TypeError, match=r"must return a number.*Received: schedule\(3\)=None"):
        weight_perturbation.gamma_at(3)


@pytest.mark.parametrize("gamma, error", [(-0.1, ValueError), (float("nan"), ValueError),
                                          (np.array([0.1, 0.2]), TypeError), (True, TypeError)])
def test_the_layerwise_perturbation_checks_a_gamma_it_can_read(gamma, error):
    w, g = [np.array([3.0, 4.0])], [np.array([0.0, 2.0])]
    with pytest.raises(error, match=r"`gamma` must be a finite number >= 0\. Received: gamma="):
        awp.layerwise_relative_perturbation(w, g, gamma, [True])


def test_the_layerwise_perturbation_refuses_a_gradient_of_another_shape():
    with pytest.raises(ValueError, match=r"Received: weights\[1\]\.shape=\(2,\), "
                                         r"gradients\[1\]\.shape=\(3,\)"):
        awp.layerwise_relative_perturbation(
            [np.ones(1), np.ones(2)], [np.ones(1), np.ones(3)], 0.1, [True, True])


def test_the_layerwise_perturbation_takes_nested_lists_as_arrays():
    # Lists raised AttributeError ('list' object has no attribute 'shape').
    (v,) = awp.layerwise_relative_perturbation([[[3.0, 4.0]]], [[[0.0, 2.0]]], 0.1, [True])
    np.testing.assert_allclose(keras.ops.convert_to_numpy(v), [[0.0, 0.5]], rtol=1e-6)


@pytest.mark.parametrize("w, g, name", [
    (np.array([3.0, 4.0]), np.array([0, 2]), "gradients"),
    (np.array([3, 4]), np.array([0.0, 2.0]), "weights")])
def test_the_layerwise_perturbation_refuses_an_integer_weight_or_gradient(w, g, name):
    # Integer gradients gave a perturbation of zeros, silently.
    with pytest.raises(TypeError, match=rf"`{name}\[0\]` must have a floating-point dtype\. "
                                        rf"Received: {name}\[0\] of dtype int"):
        awp.layerwise_relative_perturbation([w], [g], 0.1, [True])


def test_the_layerwise_perturbation_takes_a_weight_of_another_float_dtype():
    # Only the weight's norm is used; TensorFlow refused float64 and float32.
    (v,) = awp.layerwise_relative_perturbation(
        [np.array([3.0, 4.0])], [np.array([0.0, 2.0], "float32")], 0.1, [True])
    assert keras.backend.standardize_dtype(v.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(v), [0.0, 0.5], rtol=1e-6)


def test_awp_refuses_a_negative_epoch():
    with pytest.raises(ValueError, match=r"Received: epoch=-5"):
        robustlab.AWP(0.01).gamma_at(-5)


@pytest.mark.parametrize("setting, name", [
    ({"label_noise": 1.5}, "label_noise"), ({"momentum": 1.5}, "momentum"),
    ({"model": "bogus"}, "model"), ({"eval_train_examples": -5}, "eval_train_examples"),
    ({"weight_decay": -1.0}, "weight_decay"), ({"seed": -1}, "seed"),
    ({"train_size": 0}, "train_size"), ({"lr_drop_factor": 0.0}, "lr_drop_factor")])
def test_experiment_settings_are_checked_when_made(setting, name):
    with pytest.raises(ValueError, match=rf"`{name}`.*Received: {name}="):
        experiments.get("quick").replace(**setting)


def test_a_refused_run_leaves_the_earlier_results_in_its_folder(tmp_path):
    (tmp_path / "history.json").write_text("{}")
    (tmp_path / "summary.json").write_text("{}")
    bad = experiments.get("quick").replace(epochs=1, model_kwargs=(("bogus", 1),))
    with pytest.raises(TypeError):
        experiments.run(bad, str(tmp_path), verbose=0)
    assert sorted(os.listdir(tmp_path)) == ["history.json", "summary.json"]


def test_build_takes_an_experiments_name():
    dataset, built = experiments.build("quick")
    assert isinstance(built, robustlab.AdversarialModel) and len(dataset.x_train) == 1000


@pytest.mark.parametrize("experiment", [
    robustlab.studies.get("robust-overfitting").arms[0],
    experiments.get("quick").to_dict()])
def test_run_names_an_experiment_that_is_neither_one_nor_a_name(experiment, tmp_path):
    # A study's Arm or an experiment's dict raised AttributeError in `replace`.
    with pytest.raises(TypeError, match=r"`experiment` must be a robustlab.experiments."
                                        r"Experiment or the name of one\. Received: experiment="):
        experiments.run(experiment, str(tmp_path / "run"), epochs=1, verbose=0)
    assert not (tmp_path / "run").exists()


def test_an_experiment_name_that_is_not_a_string_is_a_type_error():
    # A list raised "unhashable type: 'list'".
    with pytest.raises(TypeError, match=r"`name` must be the name of an experiment \(a string\)"
                                        r", one of .*quick.*\. Received: name=\['quick'\]"):
        experiments.get(["quick"])


def test_write_figures_names_a_study_name_given_for_results_and_makes_no_folder(tmp_path):
    with pytest.raises(TypeError, match=r"`results` must be a robustlab.studies.StudyResults.*"
                                        r"Received: results='awp-tradeoff'"):
        robustlab.studies.write_figures("awp-tradeoff", str(tmp_path / "figures"))
    assert not (tmp_path / "figures").exists()


def test_study_results_name_a_study_that_is_not_one():
    with pytest.raises(TypeError, match=r"`study` must be a robustlab.studies.Study.*"
                                        r"Received: study=3"):
        robustlab.studies.StudyResults(3, [0], {})


def test_summaries_need_at_least_one_final_epoch():
    with pytest.raises(ValueError, match=r"Received: final_epochs=0"):
        experiments.summarize({"val_robust_accuracy": [0.1, 0.2]}, final_epochs=0)


def test_a_fork_refuses_a_negative_probe_size():
    m = model()
    m.fit(X, Y, verbose=0)
    with pytest.raises(ValueError, match=r"Received: probe_examples=-12"):
        robustlab.forks.fork(m, X, Y, batch_size=4, replicas=2, probe_examples=-12)


def test_a_fork_refuses_a_weight_decay_given_as_text():
    m = model()
    m.fit(X, Y, verbose=0)
    with pytest.raises(TypeError, match=r"Received: weight_decay='0.5'"):
        robustlab.forks.fork(m, X, Y, batch_size=4, replicas=2, weight_decay="0.5")


# -- the shared checks ----------------------------------------------------------------


@pytest.mark.parametrize("value_range", [(0, "1"), (True, 2), (0, 1, 2)])
def test_a_value_range_of_other_than_two_numbers_is_refused(value_range):
    with pytest.raises(ValueError, match=r"pair \(low, high\) of finite numbers"):
        validation.check_value_range(value_range)


def test_a_zero_dimensional_array_passes_as_a_number():
    assert robustlab.PGD(eps=np.array(0.1)).eps == pytest.approx(0.1)


def test_a_number_given_as_text_is_a_type_error():
    with pytest.raises(TypeError, match=r"`eps` must be a finite number >= 0. Received: eps='0.1'"):
        robustlab.PGD(eps="0.1")


# -- the command and its outputs ---------------------------------------------------------


def test_an_output_folder_that_cannot_be_written_is_refused_by_name(tmp_path, monkeypatch):
    # Running as root, a chmod would not stop this process: the check asks
    # os.access, as it would answer an ordinary user.
    monkeypatch.setattr(validation.os, "access", lambda path, mode: False)
    with pytest.raises(ValueError, match=r"`out` must be a folder this process can write in"):
        validation.check_folder("out", str(tmp_path / "run"))


@pytest.mark.parametrize("path", ["", b""])
def test_an_empty_output_path_is_refused_not_taken_for_the_current_folder(path):
    with pytest.raises(ValueError, match=r"`out` must be a folder, or a path where one can "
                                         r"be made; an empty path names none. Received: out="):
        validation.check_folder("out", path)


@pytest.mark.parametrize("path", [3, None, ["runs"]])
def test_an_output_path_that_is_not_a_path_is_a_type_error(path):
    # os.fspath's TypeError named no argument.
    with pytest.raises(TypeError, match=r"`out` must be a path \(a str or os.PathLike\)\. "
                                        rf"Received: out={path!r}".replace("[", "\\[")):
        validation.check_folder("out", path)


def test_a_failed_write_ends_the_command_with_a_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    from robustlab import cli

    def read_only(*args, **kwargs):
        raise OSError(30, "Read-only file system", str(tmp_path / "run"))

    monkeypatch.setattr(cli.experiments, "run", read_only)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--epochs", "1", "--out", str(tmp_path / "run"), "--quiet"])
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "could not write the results (Read-only file system" in err
    assert "Traceback" not in err


def test_a_bad_seed_of_the_command_is_named_as_its_flag(tmp_path, capsys):
    from robustlab import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--seeds", "-1", "--out", str(tmp_path), "--quiet"])
    assert exit_.value.code == 2
    assert "Argument `seeds` must be an integer >= 0. Received: seeds=-1" in capsys.readouterr().err


def test_the_labels_are_said_in_a_runs_title_header_and_summary():
    quick = experiments.get("quick")
    assert quick.labels == "20% label noise"
    assert quick.replace(label_noise=0.0).labels == "clean labels"
    assert quick.replace(label_noise=0.125).labels == "12.5% label noise"
    from robustlab import cli

    summary = cli.seeds_summary([{"gap": 0.1, "label_noise": 0.2},
                                 {"gap": 0.3, "label_noise": 0.2}])
    assert summary["label_noise"] == 0.2 and summary["gap"]["n"] == 2


def test_resuming_another_setting_names_the_settings_that_differ():
    from robustlab.experiments import _differences

    assert _differences({"epochs": 6, "seed": 0}, {"epochs": 7, "seed": 0}) == (
        " (epochs 6 there, 7 here)")


@pytest.mark.parametrize("timeout", [0, -1.0])
def test_the_download_probe_needs_a_positive_timeout(timeout):
    with pytest.raises(ValueError, match=rf"`timeout` must be a finite number > 0"):
        data.can_reach_download_host("host.invalid", 443, timeout=timeout)


def test_a_base_seed_at_the_top_of_the_range_still_probes_later_epochs():
    from robustlab.callbacks._shared import epoch_seed

    assert epoch_seed(5, 3) == 8
    assert epoch_seed(validation.MAX_SEED, 1) == 0
    assert epoch_seed(validation.MAX_SEED, 0) == validation.MAX_SEED


def _two_input_classifier():
    inputs = [keras.Input((8, 8, 1)), keras.Input((8, 8, 1))]
    logits = keras.layers.Dense(10)(keras.layers.Flatten()(keras.layers.Add()(inputs)))
    return keras.Model(inputs, logits)


def test_a_classifier_with_two_inputs_is_refused_when_wrapped():
    # It was accepted, then fit(x, y) failed inside Keras ("expects 2 named
    # input(s)") and fit([x, x], y) was refused as "the classifier's one input".
    with pytest.raises(ValueError, match=r"Argument `model` must be a classifier with one input "
                                         r"\(the images\). Received: model with 2 inputs$"):
        robustlab.AdversarialModel(_two_input_classifier(), robustlab.PGD(0.1, steps=2))


def test_a_classifier_with_two_inputs_is_refused_by_the_attacks_and_curvature():
    x = np.zeros((4, 8, 8, 1), "float32")
    y = np.arange(4)
    net = _two_input_classifier()
    with pytest.raises(ValueError, match=r"one input \(the images\). Received: model with 2 inputs"):
        attacks.pgd(net, x, y, eps=0.1, steps=2)
    with pytest.raises(ValueError, match=r"one input \(the images\). Received: model with 2 inputs"):
        curvature.top_hessian_eigenvalue(net, x, y, loss="sparse_categorical_crossentropy")
