"""Training arrays in a seeded, per-epoch order.

Keras shuffles NumPy data with global random state, so an interrupted and
resumed `fit` (BackupAndRestore) sees a different order than an uninterrupted
one. Here the order of epoch e is `np.random.default_rng([seed, e])
.permutation(n)`, a fixed function of (seed, e) on every backend: resuming at
epoch e replays exactly the batches it would have seen.
"""

import keras
import numpy as np

from robustlab import backend as _backend

__all__ = [
    "epoch_permutation",
    "epoch_shuffled_batches",
]


def epoch_permutation(n, seed):
    """`permutation(epoch) -> indices`, the order of each epoch.

    Example:

    >>> order = epoch_permutation(5, seed=0)
    >>> sorted(order(3).tolist()) == list(range(5))
    True
    >>> bool((order(3) == order(3)).all())
    True
    """

    def permutation(epoch):
        return np.random.default_rng([seed, epoch]).permutation(n)

    return permutation


def epoch_shuffled_batches(x, y, sample_weight, batch_size, seed):
    """The data for `fit` and the callback that selects each epoch's order.

    Args:
        x, y: arrays of equal length; `sample_weight`: optional array.
        batch_size: examples per batch (the last batch may be smaller).
        seed: integer seed of the epoch orders.

    Returns:
        `(data, callback)`: pass `data` to `fit` as `x` (with `shuffle=False`)
        and `callback` in its callbacks.
    """
    arrays = (x, y) if sample_weight is None else (x, y, sample_weight)
    data, set_epoch = _backend.get().epoch_shuffled(
        arrays, int(batch_size), epoch_permutation(len(x), int(seed)))
    return data, _SetEpoch(set_epoch)


class _SetEpoch(keras.callbacks.Callback):
    def __init__(self, set_epoch):
        super().__init__()
        self.set_epoch = set_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self.set_epoch(epoch)
