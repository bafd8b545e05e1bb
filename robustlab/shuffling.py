"""Training arrays in a seeded, per-epoch order.

Keras shuffles NumPy data with global random state, so an interrupted and
resumed `fit` (BackupAndRestore) sees a different order than an uninterrupted
one. `EpochShuffledArrays` makes the order of epoch e a fixed function of
(seed, e): resuming at epoch e replays exactly the batches it would have seen.
"""

import math

import keras
import numpy as np


class EpochShuffledArrays(keras.utils.PyDataset):
    """Batches of `(x, y[, sample_weight])` in the order of
    `np.random.default_rng([seed, epoch]).permutation(n)`.

    Args:
        x, y: arrays of equal length.
        sample_weight: optional array of the same length.
        batch_size: examples per batch (the last batch may be smaller).
        seed: integer seed of the epoch orders.

    Example:

    >>> data = EpochShuffledArrays(np.arange(10), np.arange(10), None,
    ...                            batch_size=4, seed=0)
    >>> data.set_epoch(3); a = data[0][0].tolist()
    >>> data.set_epoch(0); data.set_epoch(3); a == data[0][0].tolist()
    True
    """

    def __init__(self, x, y, sample_weight, batch_size, seed):
        super().__init__()
        self.x = x
        self.y = y
        self.sample_weight = sample_weight
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.set_epoch(0)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)
        rng = np.random.default_rng([self.seed, self.epoch])
        self._order = rng.permutation(len(self.x))

    def __len__(self):
        return math.ceil(len(self.x) / self.batch_size)

    def __getitem__(self, index):
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        batch = (self.x[rows], None if self.y is None else self.y[rows])
        if self.sample_weight is not None:
            batch = batch + (self.sample_weight[rows],)
        return batch

    def epoch_callback(self):
        """A callback that selects each epoch's order as the epoch begins."""
        return _SetEpoch(self)


class _SetEpoch(keras.callbacks.Callback):
    def __init__(self, data):
        super().__init__()
        self.data = data

    def on_epoch_begin(self, epoch, logs=None):
        self.data.set_epoch(epoch)
