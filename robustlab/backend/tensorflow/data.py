"""Input pipelines on TensorFlow.

Keras's NumPy-array adapter rebuilds a tf.data pipeline at every `fit` epoch
and `evaluate` call (about 0.1-0.15 s each on two CPU cores, as much as an
epoch of the quick experiment's training); these pipelines are built once.
"""

import numpy as np
import tensorflow as tf
from tensorflow.python.data.ops import dataset_ops

__all__ = [
    "EpochStream",
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
    one iterator for the whole call), else None. The endless stream's
    `set_epoch` is an `EpochStream`, which can also keep the iterator from
    one `fit` call to the next. Over a dataset that ends
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
    # No prefetch: the permutation is Python, and run ahead it would run in
    # a thread of tf.data's own, where Python's garbage collector can free
    # the iterator that owns the thread, whose destructor then waits for
    # that thread forever (`robustlab.model_validation._PipelineCheck`).
    # Here it runs in the thread that asks for the batch; gathering a batch
    # costs microseconds.
    dataset = _untuned(
        dataset.map(lambda indices: tuple(tf.gather(t, indices) for t in tensors))
        # flat_map hides the length; Keras needs it for progress and epochs.
        .apply(tf.data.experimental.assert_cardinality(
            tf.data.INFINITE_CARDINALITY if endless else steps))
    )
    if not endless:
        return dataset, first_epoch.assign, None
    stream = EpochStream(first_epoch, steps)
    return _IteratorFromStream(dataset, stream), stream, steps


class EpochStream:
    """Which iterator the endless stream of seeded epochs hands to `fit`.

    Creating an iterator over the stream costs about 16 ms on two CPU cores
    (TensorFlow runs its graph optimizer on the pipeline's functions for
    every iterator), a tenth of a quick-setting epoch, and Keras creates one
    each `fit` call. So the iterator is kept, and handed to the next call
    when that call starts at the epoch whose first batch the iterator serves
    next. What it has served is counted by whoever reads it
    (`batches_read`); an iterator whose reader failed mid-read
    (`abandon`) is not handed out again.

    `fit` calls it with the epoch at each epoch's start (it sets the epoch a
    new iterator starts at) and `epoch_ended` at its end; only the first
    `iter` between the two gets the kept iterator. Any other (Keras building
    a model from a first batch before training, say) gets a new one, so
    that nothing reads the kept iterator without counting.

    A reader that does not count (a plain `keras.Model` fitting the stream,
    whose train function never calls `batches_read`) must not pass the
    iterator on: at each epoch's end the count must have reached that
    epoch's last batch, and an epoch that began and never ended (a fit
    interrupted inside it) must not leave the iterator behind. Otherwise it
    is dropped, and the next call starts a new one.
    """

    def __init__(self, first_epoch, steps):
        self._first_epoch = first_epoch
        self._steps = int(steps)
        self._iterator = self._next_batch = None
        self._wanted = None  # the batch an epoch's `iter` must start at
        self._epoch = None  # the epoch begun and not yet ended

    def __call__(self, epoch):
        if self._epoch is not None:  # the last epoch never ended
            self._iterator = self._next_batch = None
        self._epoch = int(epoch)
        self._first_epoch.assign(epoch)
        self._wanted = int(epoch) * self._steps
        if self._next_batch != self._wanted:
            self._iterator = self._next_batch = None

    def epoch_ended(self):
        self._wanted = None
        if self._epoch is not None and self._next_batch != (self._epoch + 1) * self._steps:
            self._iterator = self._next_batch = None  # read without counting
        self._epoch = None

    def iterator(self, new_iterator):
        wanted, self._wanted = self._wanted, None
        if wanted is None:
            return new_iterator()
        if self._iterator is None:
            self._iterator, self._next_batch = new_iterator(), wanted
        return self._iterator

    def batches_read(self, iterator, batches):
        if iterator is self._iterator:
            self._next_batch += int(batches)

    def abandon(self, iterator):
        if iterator is self._iterator:
            self._iterator = self._next_batch = None


class _IteratorFromStream(dataset_ops.UnaryUnchangedStructureDataset):
    """The dataset itself, whose `iter` asks its `EpochStream`. (Keras's
    `fit` calls `iter` on the dataset it is given, with no distribution
    strategy: it hands this very object over.)"""

    def __init__(self, dataset, stream):
        self._stream = stream
        super().__init__(dataset, dataset._variant_tensor)

    def __iter__(self):
        return self._stream.iterator(super().__iter__)
