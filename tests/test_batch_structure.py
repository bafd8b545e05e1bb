"""Data whose batches are not `(x, y[, sample_weight])` with `x` the
classifier's one input: a dict of inputs (which Keras takes for a model with
one named input) or batches without labels. The attack needs the input as
one tensor and the labels, so `fit` and `evaluate` refuse such data by name
before any step runs, whether it comes as a `tf.data.Dataset`, a generator
or a `keras.utils.PyDataset`."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import robustlab

X = np.random.default_rng(0).random((16, 4, 4, 1), dtype="float32")
Y = (np.arange(16) % 3).astype("int32")
MESSAGE = re.escape(
    "must yield (x, y[, sample_weight]) batches: x the classifier's one input as one "
    "array or tensor (not a dict or list of inputs) and y its integer labels (the "
    "attack needs them). Received: batches of structure ")


def _model():
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((4, 4, 1), name="image"), keras.layers.Flatten(),
                            keras.layers.Dense(3)])
    model = robustlab.AdversarialModel(net, robustlab.PGD(0.05, steps=2), seed=0)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _weights(model):
    return [np.array(w) for w in model.model.get_weights()]


class _Batches(keras.utils.PyDataset):
    def __init__(self, make):
        super().__init__()
        self.make = make

    def __len__(self):
        return 2

    def __getitem__(self, index):
        rows = slice(8 * index, 8 * (index + 1))
        return self.make(X[rows], Y[rows])


def _generator(make):
    for start in (0, 8):
        yield make(X[start:start + 8], Y[start:start + 8])


def _data(kind, make):
    if kind == "tf.data":
        return tf.data.Dataset.from_tensor_slices(make(X, Y)).batch(8)
    if kind == "generator":
        return _generator(make)
    return _Batches(make)


STRUCTURES = {
    "dict of inputs": (lambda x, y: ({"image": x}, y),
                       {"tf.data": "({'image': TensorSpec}, TensorSpec)",
                        "generator": "({'image': ndarray}, ndarray)",
                        "PyDataset": "({'image': ndarray}, ndarray)"}),
    "inputs only": (lambda x, y: x,
                    {"tf.data": "TensorSpec", "generator": "ndarray",
                     "PyDataset": "ndarray"}),
}


@pytest.mark.parametrize("kind", ["tf.data", "generator", "PyDataset"])
@pytest.mark.parametrize("structure", sorted(STRUCTURES))
def test_fit_refuses_batches_that_are_not_inputs_and_labels_before_any_step(kind, structure):
    make, received = STRUCTURES[structure]
    model = _model()
    before = _weights(model)
    with pytest.raises(TypeError, match=r"^Argument `x` " + MESSAGE
                       + re.escape(received[kind]) + "$"):
        model.fit(_data(kind, make), epochs=1, steps_per_epoch=2, verbose=0)
    for a, b in zip(_weights(model), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", ["tf.data", "generator", "PyDataset"])
def test_evaluate_refuses_a_dict_of_inputs(kind):
    make, received = STRUCTURES["dict of inputs"]
    with pytest.raises(TypeError, match="^Argument `x` " + MESSAGE + re.escape(received[kind])):
        _model().evaluate(_data(kind, make), steps=2, verbose=0)


def test_validation_data_of_a_dict_of_inputs_is_refused_by_its_name():
    make, received = STRUCTURES["dict of inputs"]
    with pytest.raises(TypeError, match="^Argument `validation_data\\[0\\]` " + MESSAGE
                       + re.escape(received["tf.data"])):
        _model().fit(X, Y, batch_size=8, epochs=1, verbose=0,
                     validation_data=_data("tf.data", make))


@pytest.mark.parametrize("kind", ["tf.data", "generator", "PyDataset"])
def test_inputs_labels_and_sample_weights_are_taken(kind):
    def make(x, y):
        return x, y, np.ones(len(y), "float32")
    history = _model().fit(_data(kind, make), epochs=1, steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["loss"][0])
