"""`class_weight` with NumPy data and `tf.data` pipelines, and
`train_on_batch`/`test_on_batch` checking their inputs as `fit` and
`evaluate` do."""

import keras
import numpy as np
import pytest

import robustlab

LOGITS_CE = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
X = np.random.default_rng(0).random((24, 4, 4, 1), dtype="float32")
Y = np.arange(24) % 3
LABELS_OUT_OF_RANGE = (r"Labels `y` must be class indices in \[0, 2\].*"
                       r"Received: y with values in \[7, 9\]$")
INPUTS_OUT_OF_RANGE = r"Argument `x` must lie inside value_range=\(0, 1\).*Received"


def model(attack=None, eval_attack=None):
    """A 3-class classifier on 4x4x1 inputs, the same weights at each call."""
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                            keras.layers.Dense(3)])
    m = robustlab.AdversarialModel(net, attack or robustlab.PGD(0.05, steps=2),
                                   eval_attack=eval_attack)
    m.compile(keras.optimizers.SGD(0.1), LOGITS_CE, metrics=["accuracy"])
    return m


def assert_same_weights(a, b):
    for x, y in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(x, y)


# -- class_weight ----------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [True, False])
def test_a_class_weight_that_leaves_out_classes_weighs_them_1(shuffle):
    # As Keras does for NumPy data (TensorFlow's pipeline failed on a label
    # beyond the largest class named).
    weighted = model()
    weighted.fit(X, Y, class_weight={0: 2.0}, batch_size=8, epochs=1, shuffle=shuffle,
                 verbose=0)
    expected = model()
    expected.fit(X, Y, sample_weight=np.where(Y == 0, 2.0, 1.0), batch_size=8, epochs=1,
                 shuffle=shuffle, verbose=0)
    assert_same_weights(weighted, expected)


def test_a_class_weight_does_not_weigh_the_validation_split():
    # As in Keras: 18 examples train (class-weighted), 6 validate unweighted.
    weighted = model().fit(X, Y, class_weight={1: 3.0}, validation_split=0.25,
                           batch_size=6, epochs=1, shuffle=False, verbose=0)
    expected = model().fit(X[:18], Y[:18], sample_weight=np.where(Y[:18] == 1, 3.0, 1.0),
                           validation_data=(X[18:], Y[18:]), batch_size=6, epochs=1,
                           shuffle=False, verbose=0)
    assert weighted.history == expected.history


@pytest.mark.parametrize("key", [3, -1, True, 1.0, "0"], ids=repr)
def test_a_class_weight_key_that_is_no_class_of_the_model_is_refused(key):
    # It would be ignored silently.
    with pytest.raises(ValueError, match=r"`class_weight` must map class indices in "
                       r"\[0, 2\] \(the model's 3 classes\).*Received: class_weight="):
        model().fit(X, Y, class_weight={key: 2.0}, verbose=0)


def test_class_weight_and_sample_weight_together_are_refused():
    with pytest.raises(ValueError, match=r"Arguments `sample_weight` and `class_weight` "
                       r"cannot be specified at the same time.*Received: sample_weight "
                       r"with shape \(24,\) and class_weight=\{0: 2.0\}$"):
        model().fit(X, Y, sample_weight=np.ones(24), class_weight={0: 2.0}, verbose=0)


def test_train_on_batch_refuses_a_class_weight_key_that_is_no_class():
    m = model()
    with pytest.raises(ValueError, match=r"Received: class_weight=\{5: 2.0\}$"):
        m.train_on_batch(X, Y, class_weight={5: 2.0})


def test_train_on_batch_with_a_class_weight_trains_as_with_its_sample_weights():
    weighted = model()
    weighted.train_on_batch(X, Y, class_weight={2: 0.5})
    expected = model()
    expected.train_on_batch(X, Y, sample_weight=np.where(Y == 2, 0.5, 1.0))
    assert_same_weights(weighted, expected)


def pipeline(*arrays, batch_size=8):
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(arrays).batch(batch_size)


@pytest.mark.parametrize("labels", ["indices", "column", "one-hot"])
def test_a_pipelines_class_weight_trains_as_the_same_sample_weights_in_it(labels):
    # Keras weighed a pipeline's batches after robustlab's check, in a map
    # of its own (run ahead, in tf.data's threads), and failed on a label
    # beyond the largest class named (here 1 and 2).
    y = {"indices": Y, "column": Y[:, None],
         "one-hot": np.eye(3, dtype="float32")[Y]}[labels]
    weighted = model()
    if labels == "one-hot":
        weighted.compile(keras.optimizers.SGD(0.1),
                         keras.losses.CategoricalCrossentropy(from_logits=True))
    weighted.fit(pipeline(X, y), class_weight={0: 2.0}, epochs=2, verbose=0)
    expected = model()
    if labels == "one-hot":
        expected.compile(keras.optimizers.SGD(0.1),
                         keras.losses.CategoricalCrossentropy(from_logits=True))
    expected.fit(pipeline(X, y, np.where(Y == 0, 2.0, 1.0).astype("float32")),
                 epochs=2, verbose=0)
    assert_same_weights(weighted, expected)


def test_a_pipelines_class_weight_key_that_is_no_class_is_refused_before_training():
    m = model()
    before = m.get_weights()
    with pytest.raises(ValueError, match=r"`class_weight` must map class indices in "
                       r"\[0, 2\] \(the model's 3 classes\).*Received: class_weight="
                       r"\{3: 2.0\}$"):
        m.fit(pipeline(X, Y), class_weight={3: 2.0}, verbose=0)
    assert_same_weights_as(m, before)


def test_a_pipeline_of_unknown_image_size_checks_its_class_weight_with_the_first_batch():
    # Neither the pipeline nor the unbuilt network says how many classes
    # there are until the first batch has gone through the network.
    import tensorflow as tf

    def examples():
        yield from zip(X, Y)

    open_size = tf.data.Dataset.from_generator(examples, output_signature=(
        tf.TensorSpec((None, None, 1), tf.float32), tf.TensorSpec((), tf.int64))).batch(8)
    net = keras.Sequential([keras.layers.Conv2D(2, 3), keras.layers.GlobalAveragePooling2D(),
                            keras.layers.Dense(3)])
    m = robustlab.AdversarialModel(net, robustlab.PGD(0.05, steps=2))
    m.compile(keras.optimizers.SGD(0.1), LOGITS_CE)
    with pytest.raises(ValueError, match=r"`class_weight` must map class indices in "
                       r"\[0, 2\].*Received: class_weight=\{3: 2.0\}$"):
        m.fit(open_size, class_weight={3: 2.0}, verbose=0)
    m.fit(open_size, class_weight={2: 2.0}, verbose=0)


def test_a_pipelines_sample_weights_and_a_class_weight_together_are_refused():
    with pytest.raises(ValueError, match=r"Arguments `sample_weight` and `class_weight` "
                       r"cannot be specified at the same time.*Received: `x` yielding "
                       r"\(x, y, sample_weight\) batches and class_weight=\{0: 2.0\}$"):
        model().fit(pipeline(X, Y, np.ones(24, "float32")), class_weight={0: 2.0},
                    verbose=0)


def assert_same_weights_as(m, weights):
    for x, y in zip(m.get_weights(), weights, strict=True):
        np.testing.assert_array_equal(x, y)


# -- train_on_batch / test_on_batch check their inputs ----------------------------


def test_train_on_batch_refuses_labels_outside_the_classes_and_changes_nothing():
    # On JAX such labels trained with loss 0; on TensorFlow a bare graph error.
    m = model()
    before = m.get_weights()
    with pytest.raises(ValueError, match=LABELS_OUT_OF_RANGE):
        m.train_on_batch(X, Y + 7)
    for value, kept in zip(m.get_weights(), before, strict=True):
        np.testing.assert_array_equal(value, kept)


def test_test_on_batch_refuses_labels_outside_the_classes():
    with pytest.raises(ValueError, match=LABELS_OUT_OF_RANGE):
        model().test_on_batch(X, Y + 7)


@pytest.mark.parametrize("as_tensor", [False, True], ids=["numpy", "tensor"])
def test_train_on_batch_refuses_inputs_outside_the_value_range_and_changes_nothing(
        as_tensor):
    # The attack would project them into its range: a clipped image, not x.
    m = model()
    before = m.get_weights()
    x = X * 255
    with pytest.raises(ValueError, match=INPUTS_OUT_OF_RANGE):
        m.train_on_batch(keras.ops.convert_to_tensor(x) if as_tensor else x, Y)
    for value, kept in zip(m.get_weights(), before, strict=True):
        np.testing.assert_array_equal(value, kept)


def test_test_on_batch_refuses_inputs_outside_the_value_range():
    with pytest.raises(ValueError, match=INPUTS_OUT_OF_RANGE):
        model().test_on_batch(X * 255, Y)


def test_each_batch_call_checks_against_its_own_attacks_range():
    m = model(attack=robustlab.PGD(0.05, steps=2, value_range=(0, 2)),
              eval_attack=robustlab.PGD(0.05, steps=2))
    m.train_on_batch(X * 2, Y)
    with pytest.raises(ValueError, match=INPUTS_OUT_OF_RANGE):
        m.test_on_batch(X * 2, Y)


def test_train_on_batch_refuses_a_list_of_inputs():
    # The classifier takes one input, as in `fit`.
    with pytest.raises(TypeError, match=r"Argument `x` must be a NumPy array or a "
                       r"tensor.*Received: x of type list$"):
        model().train_on_batch([X], Y)


def test_train_on_batch_of_a_valid_batch_trains_as_a_one_step_fit():
    stepped = model()
    logs = stepped.train_on_batch(X, Y, return_dict=True)
    fitted = model()
    history = fitted.fit(X, Y, batch_size=len(X), epochs=1, shuffle=False, verbose=0)
    assert_same_weights(stepped, fitted)
    assert logs == {key: values[0] for key, values in history.history.items()}
