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

Whether a train function includes the hand-off is fixed when it is built
(`tracing_step`), not read from the observers when the step is traced:
JAX's `jax.jit` of a function it has traced before hands back the cached
trace, so a rebuilt function could silently lack the hand-off.
`AdversarialModel` keeps one train function with the hand-off and one
without, and swaps them, so that a `fit` with observers after one without
(or the other way round) traces nothing again. The hand-off calls whatever
observers are registered when a step runs. Observers are registered for one
`fit` (from a callback's `on_train_begin`) and removed when it returns or
raises.
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
        self._tracing_handoff = None  # set by `tracing_step` while a step runs

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
        """The observers, for `restore`."""
        return list(self._entries)

    def restore(self, saved):
        self._entries = list(saved)

    def tracing_step(self, step, handoff):
        """`step` (a training step), which includes the hand-off where
        `handoff`, whatever observers are registered when it is traced."""
        handoff = bool(handoff)

        def step_with_handoff_fixed(*args):
            outer, self._tracing_handoff = self._tracing_handoff, handoff
            try:
                return step(*args)
            finally:
                self._tracing_handoff = outer

        return step_with_handoff_fixed

    def handoff_in_step(self):
        """Whether the step being traced (or run eagerly) hands the iterates
        to the host: as its `tracing_step` fixed, else (Keras's own train
        function, under `run_eagerly`, say) whether observers are registered."""
        if self._tracing_handoff is not None:
            return self._tracing_handoff
        return bool(self)

    def dispatch(self, learning_rate, *values):
        learning_rate = float(learning_rate)
        for observer, indices in list(self._entries):
            observer(learning_rate, [values[i] for i in indices])
