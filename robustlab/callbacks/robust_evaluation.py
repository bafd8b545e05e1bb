"""Clean and robust evaluation of extra data at the end of chosen epochs."""

import math

import keras
import numpy as np

from robustlab import backend as _backend
from robustlab import model_validation
from robustlab import validation
from robustlab.adversarial import AdversarialModel

__all__ = [
    "RobustEvaluation",
]


class RobustEvaluation(keras.callbacks.Callback):
    """Evaluate an `AdversarialModel` on extra data and write the results into
    `logs` under `prefix`.

    Validation already gives the robust test numbers; this callback is for
    the other side of the robust-overfitting picture, the robust accuracy on
    (a fixed subset of) the *training* set, measured with the evaluation
    attack and the model in inference mode, like the test set.

    Place it before CSVLogger in the callback list (History and the progress
    bar always come last).

    Args:
        x, y: the data (NumPy arrays).
        prefix: log-key prefix, a non-empty string: e.g. `"train_"`
            (default) gives `train_robust_accuracy`. A prefix that makes a
            key already in the logs (`"val_"` gives `val_loss`) raises a
            `ValueError` at the end of the first epoch rather than overwrite
            it.
        every: evaluate at the end of every `every`-th epoch (0-based epochs
            `every - 1`, `2 every - 1`, ...) and always at the end of the
            last one, also one where a callback placed before this one (e.g.
            `keras.callbacks.EarlyStopping`) stopped training; an integer
            >= 1. The keys are logged at every epoch, NaN where not
            evaluated, so that History and CSVLogger columns stay aligned.
        batch_size: evaluation batch size, an integer >= 1. With an
            evaluation attack that starts at random, the starts are drawn
            batch by batch, so another batch size gives other draws (and
            numbers that differ within the attack's noise).

    Example:

    >>> import numpy as np, keras, robustlab
    >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model = robustlab.AdversarialModel(net, robustlab.PGD(0.1, steps=2))
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(True),
    ...               metrics=["accuracy"])
    >>> x = np.full((8, 4), 0.5, "float32"); y = np.arange(8) % 3
    >>> h = model.fit(x, y, epochs=1, verbose=0,
    ...               callbacks=[robustlab.callbacks.RobustEvaluation(x, y)])
    >>> "train_robust_accuracy" in h.history
    True
    """

    def __init__(self, x, y, prefix="train_", every=1, batch_size=256):
        super().__init__()
        every = validation.check_int_at_least("every", every, 1)
        batch_size = validation.check_int_at_least("batch_size", batch_size, 1)
        if not isinstance(prefix, str) or not prefix:
            # An empty prefix would write this evaluation's numbers over the
            # training loss and accuracy in the logs.
            raise (TypeError if not isinstance(prefix, str) else ValueError)(
                "Argument `prefix` must be a non-empty string (the logs' keys "
                f"are prefix + the metric's name). Received: prefix={prefix!r}")
        self.x = np.asarray(x)
        self.y = np.asarray(y)
        self.prefix = prefix
        self.every = every
        self.batch_size = batch_size

    def on_train_begin(self, logs=None):
        if not isinstance(self.model, AdversarialModel):
            # It reads the model's evaluation attack and robust metrics; a
            # plain Keras model failed with an AttributeError.
            raise TypeError(
                "RobustEvaluation needs a robustlab.AdversarialModel (it evaluates "
                "with the model's evaluation attack). Received: model="
                f"{type(self.model).__name__}")
        self._last_epoch = self.params.get("epochs", 1) - 1
        self.model._check_arrays(self.x, self.y, "x", "y", self.model.eval_attack)
        # Built once: re-adapting NumPy arrays at every call costs as much as
        # a small evaluation on TensorFlow.
        self._data = model_validation.mark_checked(
            _backend.get().batched((self.x, self.y), self.batch_size))

    def log_keys(self):
        """The keys this callback writes into `logs` (every epoch)."""
        return [self.prefix + name for name in self.model.metrics_names]

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        keys = self.log_keys()
        taken = sorted(k for k in keys if k in logs)
        if taken:
            raise ValueError(
                f"Argument `prefix` of RobustEvaluation must not make keys that "
                f"are in the logs already: it would overwrite {taken} (another "
                "metric, or another callback's). Pick another prefix, e.g. "
                f"'train_'. Received: prefix={self.prefix!r}")
        # A callback placed before this one that stops training (EarlyStopping)
        # has set stop_training by now: this epoch is then the last one.
        last = epoch == self._last_epoch or self.model.stop_training
        if (epoch + 1) % self.every and not last:
            # NaN on epochs without an evaluation, so that History's lists
            # and CSVLogger's columns stay aligned (and a BoundTracker sees
            # that there is no accuracy this epoch).
            logs.update(dict.fromkeys(keys, math.nan))
            return
        data = self._data
        # Observe only: the evaluation attack's seed is the validation's too.
        with self.model.attack_seeds_preserved():
            if isinstance(data, tuple):
                results = self.model.evaluate(*data, batch_size=self.batch_size,
                                              verbose=0, return_dict=True)
            else:
                results = self.model.evaluate(data, verbose=0, return_dict=True)
        values = dict.fromkeys(keys, math.nan)
        values.update((self.prefix + key, float(value)) for key, value in results.items())
        logs.update(values)
