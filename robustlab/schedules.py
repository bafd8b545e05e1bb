"""Learning-rate schedules expressed in epochs.

Robust overfitting is a story about one event, the learning-rate drop, so the
schedule is stated the way the papers state it: "0.1, divided by 10 at epoch
100 and again at 150". `PiecewiseConstant` is that schedule; `callback()` makes
the Keras callback that applies it at the start of each epoch (and logs
`learning_rate`), and `per_step` expands it to one learning rate per
optimizer step, which is what the posterior-covariance recursion consumes.
"""

import dataclasses
import numbers

import keras
import numpy as np

from robustlab import validation

__all__ = [
    "PiecewiseConstant",
    "check_drops",
]


def check_drops(drop_epochs, factor, names=("drop_epochs", "factor")):
    """The drop epochs (integers >= 1, strictly increasing) as a tuple of
    ints and the factor (in (0, 1]) as a float, or a TypeError/ValueError
    naming them by `names` (an `Experiment` calls them `lr_drop_epochs` and
    `lr_drop_factor`)."""
    epochs_name, factor_name = names
    if (isinstance(drop_epochs, (str, bytes)) or not hasattr(drop_epochs, "__iter__")
            or (isinstance(drop_epochs, np.ndarray) and drop_epochs.ndim == 0)):
        # tuple("40") would read as the epochs 4 and 0.
        raise TypeError(
            f"Argument `{epochs_name}` must be a sequence of epochs, e.g. (40,). "
            f"Received: {epochs_name}={drop_epochs!r}")
    drops = tuple(drop_epochs)
    requirement = (f"Argument `{epochs_name}` must hold integers, strictly increasing "
                   f"and >= 1. Received: {epochs_name}={drop_epochs!r}")
    if not all(isinstance(e, numbers.Integral) and not isinstance(e, bool) for e in drops):
        raise TypeError(requirement)
    if any(e < 1 for e in drops) or any(b <= a for a, b in zip(drops, drops[1:])):
        raise ValueError(requirement)
    checked = validation.check_finite_in(factor_name, factor, 0.0, 1.0, include_high=True)
    return tuple(int(e) for e in drops), checked


_NO_EPOCH = object()


@dataclasses.dataclass(frozen=True)
class PiecewiseConstant:
    """lr(epoch) = initial * factor ** (number of drop epochs <= epoch).

    Args:
        initial: the learning rate of epoch 0, finite and > 0.
        drop_epochs: 0-based epochs at whose start the rate is multiplied by
            `factor` (strictly increasing integers >= 1).
        factor: the drop factor, in (0, 1].

    Example:

    >>> from robustlab.schedules import PiecewiseConstant
    >>> schedule = PiecewiseConstant(0.2, drop_epochs=(40,), factor=0.1)
    >>> [round(schedule(e), 6) for e in (0, 39, 40, 99)]
    [0.2, 0.2, 0.02, 0.02]
    >>> schedule.per_step(steps_per_epoch=2, epochs=2).tolist()
    [0.2, 0.2, 0.2, 0.2]
    """

    initial: float
    drop_epochs: tuple = ()
    factor: float = 0.1

    def __post_init__(self):
        validation.check_finite_positive("initial", self.initial)
        drops, factor = check_drops(self.drop_epochs, self.factor)
        object.__setattr__(self, "drop_epochs", drops)
        object.__setattr__(self, "initial", float(self.initial))
        object.__setattr__(self, "factor", factor)

    def __call__(self, epoch=_NO_EPOCH, lr=None):
        """The rate of `epoch`, a finite number >= 0 (Keras passes the
        0-based epoch index; `lr`, the current rate, is ignored)."""
        if epoch is _NO_EPOCH:
            # A Keras optimizer calls a plain callable `learning_rate` with
            # no argument at every step.
            raise TypeError(
                "PiecewiseConstant is a schedule in epochs: pass "
                "`schedule.callback()` to fit's callbacks (it sets the "
                "optimizer's rate at the start of each epoch), not the "
                "schedule itself as an optimizer's `learning_rate`. "
                "Received: a call with no epoch")
        # Unchecked, NaN and -1 compare below every drop and give the
        # initial rate, and True counts as epoch 1.
        epoch = validation.check_finite_at_least("epoch", epoch, 0)
        drops = sum(1 for e in self.drop_epochs if e <= epoch)
        return self.initial * self.factor**drops

    def per_step(self, steps_per_epoch, epochs):
        """One learning rate per optimizer step over `epochs` epochs."""
        validation.check_int_at_least("steps_per_epoch", steps_per_epoch, 1)
        validation.check_int_at_least("epochs", epochs, 1)
        return np.repeat(
            [self(e) for e in range(epochs)], steps_per_epoch
        ).astype("float64")

    def callback(self):
        """A `keras.callbacks.LearningRateScheduler` applying this schedule."""
        return keras.callbacks.LearningRateScheduler(self)
