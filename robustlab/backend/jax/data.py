"""Input pipelines on JAX: Keras iterates NumPy data cheaply there, so the
arrays are served as they are."""

import keras
import numpy as np

__all__ = [
    "batched",
    "epoch_shuffled",
]


def batched(arrays, batch_size):
    """The arrays themselves (Keras batches them without a rebuild cost)."""
    return tuple(arrays)


class _EpochOrdered(keras.utils.PyDataset):
    def __init__(self, arrays, batch_size, permutation, steps):
        super().__init__()
        self.arrays = arrays
        self.batch_size = batch_size
        self.permutation = permutation
        self.steps = steps
        self.set_epoch(0)

    def set_epoch(self, epoch):
        self._order = self.permutation(int(epoch))

    def __len__(self):
        return self.steps

    def __getitem__(self, index):
        rows = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        return tuple(a[rows] for a in self.arrays)


def epoch_shuffled(arrays, batch_size, permutation, steps, endless=True):
    """The first `steps` batches of `arrays` in the order `permutation(e)`,
    e the epoch last passed to `set_epoch`.

    Returns `(dataset, set_epoch, None)`: a `keras.utils.PyDataset` of
    `steps` batches, which `fit` takes without `steps_per_epoch` (Keras
    iterates it without a rebuild cost, so `endless` makes no difference).
    """
    dataset = _EpochOrdered(tuple(np.asarray(a) for a in arrays), batch_size,
                            permutation, steps)
    return dataset, dataset.set_epoch, None
