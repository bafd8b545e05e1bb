"""Input pipelines on TensorFlow.

Keras's NumPy-array adapter rebuilds a tf.data pipeline at every `fit` epoch
and `evaluate` call (about 0.1-0.15 s each on two CPU cores, as much as an
epoch of the quick experiment's training); these pipelines are built once.
"""

import numpy as np
import tensorflow as tf

__all__ = [
    "batched",
    "epoch_shuffled",
]


def _untuned(dataset):
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def batched(arrays, batch_size):
    """A cached dataset of the given arrays in order, `batch_size` a batch."""
    return _untuned(
        tf.data.Dataset.from_tensor_slices(tuple(arrays)).batch(batch_size).cache())


def epoch_shuffled(arrays, batch_size, permutation):
    """Batches of `arrays` in the order `permutation(epoch)`.

    Returns `(dataset, set_epoch)`: the dataset reads the epoch from a
    variable each time Keras starts iterating it, so calling `set_epoch(e)`
    at the start of epoch e selects that epoch's order.
    """
    epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    tensors = tuple(tf.constant(a) for a in arrays)
    num_batches = -(-len(arrays[0]) // batch_size)

    def order(_):
        indices = tf.numpy_function(
            lambda e: permutation(int(e)).astype(np.int64), [epoch], tf.int64)
        return tf.data.Dataset.from_tensor_slices(tf.reshape(indices, [-1]))

    dataset = _untuned(
        tf.data.Dataset.from_tensors(0)
        .flat_map(order)
        .batch(batch_size)
        .map(lambda rows: tuple(tf.gather(t, rows) for t in tensors))
        .prefetch(1)
        # flat_map hides the length; Keras needs it for progress and epochs.
        .apply(tf.data.experimental.assert_cardinality(num_batches))
    )
    return dataset, epoch.assign
