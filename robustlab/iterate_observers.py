"""Host functions that see every training iterate from inside the compiled
training step of an `AdversarialModel`.

`PosteriorTracker` needs the weights after every optimizer step. Read by a
per-batch callback, they cost Keras's host round trip of every step and
forbid `steps_per_execution > 1` (the callback would see one iterate in k).
Instead, the compiled step itself hands the new weights and the step's
learning rate to the host (TensorFlow: `tf.numpy_function`; JAX: an ordered
`io_callback`), so any number of steps can run in one compiled call and an
observer still receives each iterate, in order, as the same float32 values a
callback would read.

The step includes the hand-off only if observers are registered when it is
traced; `AdversarialModel` rebuilds its train function when that changes.
Observers are registered for one `fit` (from a callback's `on_train_begin`)
and removed when it returns or raises.
"""

__all__ = ["IterateObservers"]


class IterateObservers:
    """The observers of one model: `observer(learning_rate, weights)` is
    called with the step's learning rate (a float) and the values after the
    step of the variables it was registered with (a list of NumPy arrays,
    valid only during the call: copy what you keep).

    `dispatch` is what the compiled step calls, with the values of all the
    model's trainable variables; an observer must not raise (an exception
    cannot leave a compiled step cleanly, so an observer keeps its own errors
    and reports them on the host: `PosteriorTracker` does).
    """

    def __init__(self):
        self._entries = []  # (observer, indices into the trainable variables)
        self.traced_with_observers = None  # what the last trace of the step saw

    def __bool__(self):
        return bool(self._entries)

    def add(self, observer, variables, trainable_variables):
        """Register `observer` for `variables` (all among `trainable_variables`,
        the model's, in whose order the step passes values)."""
        positions = {id(v): i for i, v in enumerate(trainable_variables)}
        missing = [v.path for v in variables if id(v) not in positions]
        if missing:
            raise ValueError(
                "An iterate observer can only watch the model's trainable "
                f"variables; {missing} are not. Received: variables="
                f"{[v.path for v in variables]}")
        self.remove(observer)
        self._entries.append((observer, [positions[id(v)] for v in variables]))

    def remove(self, observer):
        self._entries = [e for e in self._entries if e[0] is not observer]

    def clear(self):
        self._entries = []

    def saved(self):
        """The observers and what the last trace saw, for `restore`."""
        return list(self._entries), self.traced_with_observers

    def restore(self, saved):
        self._entries, self.traced_with_observers = list(saved[0]), saved[1]

    def dispatch(self, learning_rate, *values):
        learning_rate = float(learning_rate)
        for observer, indices in list(self._entries):
            observer(learning_rate, [values[i] for i in indices])
