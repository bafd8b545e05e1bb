"""Specifications of robustlab.losses: what a `loss=` argument resolves to."""

import ast
import math
import pathlib
import re
import sys

import keras
import numpy as np
import pytest

from robustlab import losses

# Two examples, two classes, equal logits: each cross-entropy is log 2.
LABELS = np.array([0, 1])
EQUAL_LOGITS = np.zeros((2, 2), "float32")


@pytest.mark.parametrize(
    "loss",
    [
        "sparse_categorical_crossentropy",
        keras.losses.sparse_categorical_crossentropy,
        keras.losses.SparseCategoricalCrossentropy(reduction="sum"),
    ],
    ids=["name", "function", "Loss"],
)
def test_every_form_of_a_loss_gives_one_value_per_example(loss):
    probabilities = keras.ops.softmax(EQUAL_LOGITS)
    values = keras.ops.convert_to_numpy(
        losses.per_example_loss(loss)(LABELS, probabilities))
    np.testing.assert_allclose(values, [math.log(2.0)] * 2, rtol=1e-6)


def test_no_loss_is_rejected():
    with pytest.raises(ValueError, match="a keras.losses.Loss. Received: loss=None"):
        losses.per_example_loss(None)


def test_a_name_keras_does_not_know_is_rejected_in_robustlabs_words():
    with pytest.raises(ValueError, match=r"`loss` must be a Keras loss name.*Received: loss='nonsense'"):
        losses.per_example_loss("nonsense")


@pytest.mark.parametrize(
    "sparse, labels, expected_type",
    [
        (True, LABELS, keras.losses.SparseCategoricalCrossentropy),
        (False, np.eye(2)[LABELS], keras.losses.CategoricalCrossentropy),
    ],
)
def test_the_default_classification_loss_is_a_summed_cross_entropy(
        sparse, labels, expected_type):
    loss = losses.default_classification_loss(sparse, from_logits=True)
    assert isinstance(loss, expected_type)
    assert float(loss(labels, EQUAL_LOGITS)) == pytest.approx(2 * math.log(2.0))


def test_a_final_softmax_means_probabilities():
    logits = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    activation = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    layer = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2), keras.layers.Softmax()])
    assert not losses.final_activation_is_softmax(logits)
    assert losses.final_activation_is_softmax(activation)
    assert losses.final_activation_is_softmax(layer)


def _dense(x, activation=None):
    return keras.layers.Dense(2, activation=activation)(x)


def _functional(output):
    inputs = keras.Input((3,))
    return keras.Model(inputs, output(inputs))


def test_a_softmax_at_the_end_of_a_nested_model_means_probabilities():
    inner = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    assert losses.final_activation_is_softmax(
        keras.Sequential([keras.Input((3,)), inner]))
    assert losses.final_activation_is_softmax(_functional(inner))


@pytest.mark.parametrize("softmax", [keras.ops.softmax, keras.activations.softmax],
                         ids=["ops", "activations"])
def test_a_softmax_call_at_a_functional_output_means_probabilities(softmax):
    assert losses.final_activation_is_softmax(_functional(lambda x: softmax(_dense(x))))


def test_an_operation_after_a_functional_softmax_means_logits():
    # log-probabilities: a softmax of them gives the probabilities back.
    model = _functional(lambda x: keras.ops.log(_dense(x, "softmax")))
    assert not losses.final_activation_is_softmax(model)


def test_an_attack_on_a_nested_probability_model_uses_probabilities():
    from robustlab import attacks

    # Three classes: with two, the cross-entropy of probabilities taken as
    # logits falls with the same margin, so its gradient has the same signs.
    # (On TensorFlow, Keras's cross-entropy itself finds the logits behind a
    # softmax op, whatever `from_logits`; on JAX only the right flag does.)
    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(3, 3)).astype("float32")
    x = rng.uniform(size=(16, 3)).astype("float32")
    y = np.arange(16) % 3
    logits = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)])
    inner = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(3, activation="softmax")])
    probabilities = keras.Sequential([keras.Input((3,)), inner])
    for model in (logits, probabilities):
        model.set_weights([kernel, np.zeros(3, "float32")])
    np.testing.assert_array_equal(
        attacks.pgd(logits, x, y, eps=0.1, steps=3, random_start=False),
        attacks.pgd(probabilities, x, y, eps=0.1, steps=3, random_start=False))


def test_no_loss_means_the_compiled_loss():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    compiled = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(loss=compiled)
    key, per_example = losses.resolve_model_loss(model, None)
    assert key is compiled
    assert per_example == compiled.call


def test_a_function_is_its_own_cache_key():
    key, per_example = losses.resolve_model_loss(
        None, keras.losses.sparse_categorical_crossentropy)
    assert key is per_example is keras.losses.sparse_categorical_crossentropy


@pytest.mark.parametrize(
    "loss, message",
    [
        (None, "`loss` is required.*Received: loss=None"),
        (["mse", "mse"], "single Keras loss.*Received: loss=\\['mse', 'mse'\\]"),
        ("no_such_loss", "Received: loss='no_such_loss'"),
    ],
)
def test_a_model_loss_that_cannot_be_resolved_is_named(loss, message):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=message):
        losses.resolve_model_loss(model, loss)


def test_loss_resolution_depends_on_no_other_robustlab_module_but_keras_compat():
    # The attacks, the curvature probes and the posterior tracker all use it:
    # importing any of them back would make a cycle. _keras_compat, the one
    # module that reads Keras's private API, imports only Keras.
    tree = ast.parse(pathlib.Path(losses.__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            imported |= {f"{node.module}.{alias.name}" for alias in node.names}
    imported = {name for name in imported if name.split(".")[0] not in sys.stdlib_module_names}
    assert imported == {"keras", "robustlab._keras_compat"}


def _build_count(losses_in_order):
    """How many functions `compiled_for_loss` builds for these losses, in order."""
    import weakref

    cache, model, built = weakref.WeakKeyDictionary(), keras.Sequential(), []
    for loss in losses_in_order:
        losses.compiled_for_loss(cache, model, "key", loss, losses.per_example_loss(loss),
                                 lambda per_example: built.append(per_example) or len(built))
    return len(built)


def test_keras_losses_are_keyed_by_class_and_config():
    assert _build_count([
        keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
        keras.losses.CategoricalCrossentropy(label_smoothing=0.1),
        keras.losses.CategoricalCrossentropy(label_smoothing=0.2),
        keras.losses.CategoricalFocalCrossentropy(label_smoothing=0.1),
    ]) == 3


def test_names_and_keras_functions_are_keyed_by_value():
    assert _build_count(["mse", "".join(["m", "se"]), keras.losses.mean_squared_error,
                         keras.losses.mean_squared_error]) == 2


# -- labels of the kind the loss takes ----------------------------------------------


@pytest.mark.parametrize("loss, takes_class_indices", [
    ("sparse_categorical_crossentropy", True),
    (keras.losses.sparse_categorical_crossentropy, True),
    (keras.losses.SparseCategoricalCrossentropy(from_logits=True), True),
    ("categorical_crossentropy", False),
    (keras.losses.categorical_crossentropy, False),
    (keras.losses.CategoricalCrossentropy(), False),
    (keras.losses.CategoricalFocalCrossentropy(), False),
    (keras.losses.categorical_focal_crossentropy, False),
    ("mse", None),
    (keras.losses.KLDivergence(), None),
    (lambda y_true, y_pred: y_pred[:, 0], None),
], ids=["sparse name", "sparse function", "sparse Loss", "categorical name",
        "categorical function", "categorical Loss", "focal Loss", "focal function",
        "mse", "another Loss", "a function of the user's"])
def test_the_label_kind_of_keras_cross_entropies_is_known_and_others_are_free(
        loss, takes_class_indices):
    kind = losses.LabelKind(loss)
    assert kind.takes_class_indices is takes_class_indices
    if takes_class_indices is None:
        kind.check(True, (2,))
        kind.check(False, (2, 2))


def test_one_hot_labels_for_a_sparse_cross_entropy_are_refused_naming_the_argument():
    with pytest.raises(ValueError, match=re.escape(
            "Argument `y_val` holds one-hot labels, but the loss SparseCategoricalCrossentropy "
            "(a sparse categorical cross-entropy) takes class indices: pass "
            "`np.argmax(y_val, axis=-1)`, or a categorical cross-entropy. "
            "Received: y_val with shape (2, 2)")):
        losses.check_labels_fit_loss(keras.losses.SparseCategoricalCrossentropy(), False,
                                     (2, 2), "y_val")
    losses.check_labels_fit_loss(keras.losses.SparseCategoricalCrossentropy(), True, (2,))


def test_class_indices_for_a_categorical_cross_entropy_are_refused_naming_the_argument():
    with pytest.raises(ValueError, match=re.escape(
            "Argument `y` holds class indices, but the loss 'categorical_crossentropy' (a "
            "categorical cross-entropy) takes one-hot labels: pass "
            "`keras.utils.to_categorical(y, num_classes)`, or a sparse categorical "
            "cross-entropy. Received: y with shape (2, 1)")):
        losses.check_labels_fit_loss("categorical_crossentropy", True, (2, 1))
    losses.check_labels_fit_loss("categorical_crossentropy", False, (2, 2))


def test_a_label_kind_pickles_for_a_py_dataset_read_in_other_processes():
    import pickle

    kind = pickle.loads(pickle.dumps(losses.LabelKind(keras.losses.sparse_categorical_crossentropy)))
    assert kind.takes_class_indices is True
    with pytest.raises(ValueError, match="loss sparse_categorical_crossentropy"):
        kind.check(False, (2, 2))
