"""Training arrays in a seeded, per-epoch order.

Keras shuffles NumPy data with global random state, so an interrupted and
resumed `fit` (BackupAndRestore) sees a different order than an uninterrupted
one. Here the order of epoch e is `np.random.default_rng([seed, e])
.permutation(n)`, a fixed function of (seed, e) on every backend: resuming at
epoch e replays exactly the batches it would have seen.
"""

import hashlib

import keras
import numpy as np

from robustlab import backend as _backend
from robustlab import validation

__all__ = [
    "epoch_permutation",
    "epoch_shuffled_batches",
    "ReusedEpochData",
]


def epoch_permutation(n, seed):
    """`permutation(epoch) -> indices`, the order of each epoch.

    Args:
        n: how many examples, an integer >= 0.
        seed: the seed of the orders, an integer in [0, 2**31 - 1].

    Returns:
        A function of the epoch (an integer >= 0) that gives a permutation
        of `0, ..., n - 1` as a NumPy array.

    Example:

    >>> from robustlab.shuffling import epoch_permutation
    >>> order = epoch_permutation(5, seed=0)
    >>> sorted(order(3).tolist()) == list(range(5))
    True
    >>> bool((order(3) == order(3)).all())
    True
    """

    # Checked here: NumPy named neither (a seed of -1 or None, a float), and
    # a negative n gave an empty order.
    n = validation.check_int_at_least("n", n, 0)
    seed = validation.check_seed("seed", seed)

    def permutation(epoch):
        epoch = validation.check_int_at_least("epoch", epoch, 0)
        return np.random.default_rng([seed, epoch]).permutation(n)

    return permutation


def epoch_shuffled_batches(x, y, sample_weight, batch_size, seed, steps_per_epoch=None,
                           steps_per_execution=1):
    """The data for `fit`, the callback that selects each epoch's order, and
    the `steps_per_epoch` to pass with them.

    Epoch e trains on the first `steps_per_epoch` batches of the examples in
    the order `epoch_permutation(len(x), seed)(e)`, whatever the epoch a
    `fit` call starts from.

    Args:
        x, y: arrays of equal length; `sample_weight`: optional array.
        batch_size: examples per batch (the last batch may be smaller).
        seed: integer seed of the epoch orders.
        steps_per_epoch: batches an epoch, from 1 to the batches of one pass
            over the examples (the default).
        steps_per_execution: the model's (`compile`): on TensorFlow, when it
            divides `steps_per_epoch`, `data` is an endless stream of epochs,
            so that one iterator serves the whole `fit` call.

    Returns:
        `(data, callback, steps_per_epoch)`: pass `data` to `fit` as `x`
        (with `shuffle=False`), `callback` in its callbacks and
        `steps_per_epoch` as its own (None where `data` itself ends with
        each epoch).

    Example:

    >>> import numpy as np
    >>> from robustlab.shuffling import epoch_shuffled_batches
    >>> x, y = np.zeros((10, 2), "float32"), np.arange(10)
    >>> data, callback, steps = epoch_shuffled_batches(x, y, None, 4, seed=0)
    >>> steps in (3, None)  # 3 on TensorFlow, None on JAX
    True
    """
    batch_size = validation.check_int_at_least("batch_size", batch_size, 1)
    seed = validation.check_seed("seed", seed)
    steps_per_execution = validation.check_int_at_least(
        "steps_per_execution", steps_per_execution, 1)
    if len(x) == 0:
        raise ValueError("Argument `x` must hold at least one example. "
                         f"Received: x with shape {np.shape(x)}")
    for name, array in (("y", y), ("sample_weight", sample_weight)):
        if array is not None and len(array) != len(x):
            raise ValueError(
                f"Arguments `x` and `{name}` must hold the same number of examples. "
                f"Received: x with {len(x)} and {name} with {len(array)}")
    batches = -(-len(x) // batch_size)
    if steps_per_epoch is None:
        steps_per_epoch = batches
    validation.check_int_at_least("steps_per_epoch", steps_per_epoch, 1)
    if steps_per_epoch > batches:
        raise ValueError(
            f"Argument `steps_per_epoch` must be at most {batches}, the batches of "
            f"one pass over the {len(x)} training examples in batches of "
            f"{batch_size}: each epoch is one seeded order of the examples. "
            f"Received: steps_per_epoch={steps_per_epoch}")
    arrays = (x, y) if sample_weight is None else (x, y, sample_weight)
    # Keras runs every execution in full: over an endless stream, the last
    # one of an epoch would run into the next unless it ends the epoch.
    endless = steps_per_epoch % steps_per_execution == 0
    data, set_epoch, fit_steps = _backend.get().epoch_shuffled(
        arrays, batch_size, epoch_permutation(len(x), seed), int(steps_per_epoch),
        endless=endless)
    return data, _SetEpoch(set_epoch), fit_steps


class _SetEpoch(keras.callbacks.Callback):
    def __init__(self, set_epoch):
        super().__init__()
        self.set_epoch = set_epoch

    @property
    def stream(self):
        """The backend's stream of epochs, where it can keep its iterator
        between `fit` calls (it must then be told the batches read: see
        `robustlab.backend.tensorflow.data.EpochStream`); else None."""
        return self.set_epoch if hasattr(self.set_epoch, "batches_read") else None

    def on_epoch_begin(self, epoch, logs=None):
        self.set_epoch(epoch)

    def on_epoch_end(self, epoch, logs=None):
        if self.stream is not None:
            self.stream.epoch_ended()


class ReusedEpochData:
    """`epoch_shuffled_batches`, handing back its last result while the
    arrays' contents and the other arguments are the same.

    Building the data costs a `fit` call about 30 ms on two CPU cores on
    TensorFlow (tracing the pipeline's functions, then instantiating them
    for its first iterator), a sixth of an epoch of the quick experiment:
    a user who calls `fit(epochs=1)` in a loop would pay it every epoch.
    (On TensorFlow the data also keeps its iterator, about 16 ms more a
    call: an `AdversarialModel.fit` that starts at the epoch the iterator
    stands at reads on from it.)
    The arrays are compared by content (shape, dtype and a SHA-1 digest of
    their bytes, about 0.5 ms a MiB), not by identity, so arrays changed in
    place get a new pipeline. Training arrays over `max_bytes` together are
    not kept: a kept pipeline holds a copy of them (taken when it is built),
    and their epochs are long enough that the setup does not matter.

    Args:
        max_bytes: the largest total size of `x`, `y` and `sample_weight`
            whose data is kept.

    Example:

    >>> import numpy as np
    >>> from robustlab.shuffling import ReusedEpochData
    >>> epoch_data = ReusedEpochData()
    >>> x, y = np.zeros((10, 2), "float32"), np.arange(10)
    >>> first = epoch_data(x, y, None, 4, seed=0)
    >>> epoch_data(x.copy(), y, None, 4, seed=0) is first
    True
    >>> x[0, 0] = 1.0
    >>> epoch_data(x, y, None, 4, seed=0) is first
    False
    """

    def __init__(self, max_bytes=64 * 2**20):
        self.max_bytes = validation.check_int_at_least("max_bytes", max_bytes, 0)
        self._key = self._result = None

    def __call__(self, x, y, sample_weight, batch_size, seed, steps_per_epoch=None,
                 steps_per_execution=1):
        # Checked before the key is made: a key of int(4.5) would match the
        # data built for 4 and hand it back without a word.
        batch_size = validation.check_int_at_least("batch_size", batch_size, 1)
        seed = validation.check_seed("seed", seed)
        if steps_per_epoch is not None:
            steps_per_epoch = validation.check_int_at_least(
                "steps_per_epoch", steps_per_epoch, 1)
        steps_per_execution = validation.check_int_at_least(
            "steps_per_execution", steps_per_execution, 1)
        arrays = [np.asarray(a) for a in (x, y, sample_weight) if a is not None]
        key = None
        if (sum(a.nbytes for a in arrays) <= self.max_bytes
                and not any(a.dtype.hasobject for a in arrays)):
            key = (_backend.name(), tuple(_content_key(a) for a in arrays),
                   sample_weight is None, batch_size, seed, steps_per_epoch,
                   steps_per_execution)
        if key is None or key != self._key:
            # Dropped first, so that two pipelines are never held at once.
            self._key = self._result = None
            if key is not None:
                # A kept pipeline must not see the caller's buffers change:
                # the key is their content now (on JAX the pipeline would
                # read the arrays themselves).
                x, y, sample_weight = (None if a is None else np.array(a, copy=True)
                                       for a in (x, y, sample_weight))
            result = epoch_shuffled_batches(
                x, y, sample_weight, batch_size, seed, steps_per_epoch, steps_per_execution)
            if key is not None:
                self._key, self._result = key, result
            return result
        return self._result


def _content_key(array):
    data = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    digest = hashlib.sha1(data).hexdigest()
    return array.shape, array.dtype.str, digest
