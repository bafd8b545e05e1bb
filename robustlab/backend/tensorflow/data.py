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


def epoch_shuffled(arrays, batch_size, permutation, steps, endless=True):
    """A stream of batches: the first `steps` batches of `arrays` in the
    order `permutation(e)`, then those of `permutation(e + 1)`, and so on,
    where e is the epoch last passed to `set_epoch` when iteration starts;
    endless, or only epoch e's when not `endless`.

    Returns `(dataset, set_epoch, steps_per_epoch)`, the last what `fit`
    takes with the dataset: `steps` for the endless stream (Keras then keeps
    one iterator for the whole call), else None. Over a dataset that ends
    with each epoch Keras creates two iterators an epoch (one it never
    reads), and creating one costs about 6 ms on two CPU cores, since
    TensorFlow instantiates the pipeline's functions anew: the two, about
    8% of a quick-setting PGD-3 epoch. (The endless stream needs `steps` to be
    a multiple of `steps_per_execution`: Keras runs every execution in
    full, and the last one of an epoch would run into the next.)
    """
    first_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
    tensors = tuple(tf.constant(a) for a in arrays)
    rows = steps * batch_size

    def epoch_batches(epoch):
        indices = tf.numpy_function(
            lambda e: permutation(int(e))[:rows].astype(np.int64), [epoch], tf.int64)
        return tf.data.Dataset.from_tensor_slices(tf.reshape(indices, [-1])).batch(batch_size)

    def stream(_):
        # Read when the first batch is asked for, i.e. after Keras's
        # on_epoch_begin of the call's first epoch.
        return tf.data.Dataset.range(first_epoch.read_value(), tf.int64.max).flat_map(
            epoch_batches)

    dataset = tf.data.Dataset.from_tensors(0).flat_map(stream)
    dataset = dataset if endless else dataset.take(steps)
    dataset = _untuned(
        dataset.map(lambda indices: tuple(tf.gather(t, indices) for t in tensors))
        .prefetch(1)
        # flat_map hides the length; Keras needs it for progress and epochs.
        .apply(tf.data.experimental.assert_cardinality(
            tf.data.INFINITE_CARDINALITY if endless else steps))
    )
    return dataset, first_epoch.assign, steps if endless else None
