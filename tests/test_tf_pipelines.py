"""The tf.data pipelines robustlab builds from NumPy arrays on TensorFlow."""

import keras
import numpy as np
import pytest

if keras.backend.backend() != "tensorflow":
    pytest.skip("tf.data pipelines are TensorFlow's", allow_module_level=True)

from robustlab.backend.tensorflow import data  # noqa: E402

X = np.arange(10, dtype="float32").reshape(5, 2)
Y = np.arange(5)


def _batches(dataset):
    return [tuple(t.numpy() for t in batch) for batch in dataset]


def test_batched_serves_the_arrays_in_order_in_batches():
    batches = _batches(data.batched((X, Y), 2))
    assert [len(b[0]) for b in batches] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([b[0] for b in batches]), X)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in batches]), Y)


def test_epoch_shuffled_serves_each_epochs_permutation():
    def permutation(epoch):
        return np.roll(np.arange(5), epoch)

    dataset, set_epoch = data.epoch_shuffled((X, Y), 2, permutation)
    for epoch in (0, 3):
        set_epoch(epoch)
        rows = np.concatenate([b[1] for b in _batches(dataset)])
        np.testing.assert_array_equal(rows, permutation(epoch))


@pytest.mark.parametrize("pipeline", ["batched", "epoch_shuffled"])
def test_pipelines_run_without_autotuning(pipeline):
    # Autotuning's background thread made deleting an iterator wait for its
    # next wake-up (65 ms on average on 2 cores), and Keras deletes one at
    # the end of every epoch and every evaluate call.
    if pipeline == "batched":
        dataset = data.batched((X, Y), 2)
    else:
        dataset, _ = data.epoch_shuffled((X, Y), 2, lambda epoch: np.arange(5))
    assert dataset.options().autotune.enabled is False
