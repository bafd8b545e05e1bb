"""Guards of the training loop that `AdversarialModel.fit` always adds: a
non-finite loss stops training with a clear error, and AWP's gamma follows
its warm-up and schedule epoch by epoch.

They belong to training, not to the instruments of `robustlab.callbacks`
(which re-exports the error and the guard for users who add it to a plain
Keras fit).
"""

import bisect
import math
import threading

import keras

__all__ = [
    "AWPGammaFromConfig",
    "NonFiniteLossError",
    "StopOnNonFiniteLoss",
]


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raise `NonFiniteLossError` as soon as a batch's loss is NaN or inf.

    Keras's `TerminateOnNaN` stops quietly; an adversarial run that diverged
    (a learning rate too large for the curvature, say) should say so instead
    of returning a History that looks like a finished run.

    `robustlab.AdversarialModel` logs the loss as NaN from the step whose
    update left a weight NaN or inf (checked in the compiled step, from the
    updated weights), so the guard stops such a run at that step on every
    backend, also where the loss itself stayed finite (on TensorFlow,
    oneDNN's fused MatMul + BiasAdd + Relu maps NaN to 0).

    The check is safe for Keras's asynchronous dispatch of batch callbacks
    (`async_safe`): when every per-batch callback of a fit is, Keras queues
    the next step before the last one's logs are read, instead of waiting
    for each step to finish (on JAX, a GPU would otherwise idle between
    steps). The error then surfaces at the latest when the epoch ends, still
    naming the first batch whose loss was not finite; the steps queued
    meanwhile have run on non-finite weights.

    Example:

    >>> import keras, numpy as np
    >>> from robustlab.training_guards import (
    ...     NonFiniteLossError, StopOnNonFiniteLoss)
    >>> model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    >>> model.compile("sgd", "mse")
    >>> try:
    ...     model.fit(np.array([[np.nan]]), np.array([[0.0]]), verbose=0,
    ...               callbacks=[StopOnNonFiniteLoss()])
    ... except NonFiniteLossError as error:
    ...     print(str(error).split(".")[0])
    The training loss became non-finite at epoch 0, batch 0
    """

    async_safe = True

    def __init__(self):
        super().__init__()
        self._turn = threading.Condition()
        self._start_epoch(0)

    def set_model(self, model):
        super().set_model(model)
        # On JAX, every read of `Callback.model` attaches the fit's state to
        # the variables (`jax_state_sync`). From Keras's worker thread that
        # races the fit's next step, which donates those very buffers: the
        # variables are left holding deleted arrays, and the fit fails with
        # "Buffer has been deleted or donated" instead of this guard's error
        # (4 fits in 100 of a diverging network did). The check needs no
        # state, so it keeps the model as given.
        self._checked_model = model

    def _start_epoch(self, epoch):
        self._epoch = epoch
        # Under asynchronous dispatch Keras checks the steps' logs in a pool
        # of threads, in no set order, and raises the first error of a
        # finished check it finds: a later step's check (its loss is
        # non-finite too, as the weights are) could name the wrong batch.
        # So the checks take turns in the order of the calls, which Keras
        # begins in the fit's own thread, and the ones after an error pass.
        self._call_begins = []
        self._calls_checked = 0
        self._failed = False

    def on_epoch_begin(self, epoch, logs=None):
        # Keras has waited for every check of the last epoch by now.
        self._start_epoch(epoch)

    def on_train_batch_begin(self, batch, logs=None):
        if self._call_begins and batch <= self._call_begins[-1]:
            # The batches count from 0 again without `on_epoch_begin` (a
            # hand-written loop calling only the batch hooks): a new run of
            # calls. Left in one list, the calls' begins would be out of
            # order and the bisection below would wait for a call that never
            # comes. Once the earlier calls are checked, the turns restart.
            with self._turn:
                self._turn.wait_for(
                    lambda: self._calls_checked >= len(self._call_begins))
            self._start_epoch(self._epoch)
        self._call_begins.append(batch)

    def on_train_batch_end(self, batch, logs=None):
        # The call that began last at or before `batch` (its last step).
        call = bisect.bisect_right(self._call_begins, batch) - 1
        with self._turn:
            self._turn.wait_for(lambda: self._calls_checked >= call)
        try:
            if not self._failed:
                self._check(batch, logs)
        except NonFiniteLossError:
            self._failed = True
            raise
        finally:
            with self._turn:
                self._calls_checked = max(self._calls_checked, call + 1)
                self._turn.notify_all()

    def _check(self, batch, logs):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        value = float(keras.ops.convert_to_numpy(loss))
        if not math.isfinite(value):
            self._checked_model.stop_training = True
            where = f"batch {batch}"
            steps = getattr(self._checked_model, "steps_per_execution", 1) or 1
            if steps > 1:
                # Keras reports once per compiled call of `steps` steps, with
                # the index of its nominal last step; the loss is the epoch's
                # running mean, non-finite since the first bad step.
                last = batch
                if self.params and self.params.get("steps"):
                    last = min(batch, self.params["steps"] - 1)
                where = (f"in batches {max(batch - steps + 1, 0)}-{last} (checked "
                         f"once per compiled call: steps_per_execution={steps})")
            raise NonFiniteLossError(
                "The training loss became non-finite at epoch "
                f"{self._epoch}, {where}. Lower the learning "
                "rate, check the inputs for NaN, or check the loss for log(0) on "
                f"probabilities. Received: loss={value}"
            )


class AWPGammaFromConfig(keras.callbacks.Callback):
    """Sets AWP's gamma at the start of each epoch from the model's
    `AWP.gamma_at(epoch)` (its warm-up and schedule). `fit` puts it first
    among the callbacks, so a gamma a user's callback sets at the start of an
    epoch is the one in force."""

    def on_epoch_begin(self, epoch, logs=None):
        self.model.set_awp_gamma(self.model.awp.gamma_at(epoch))
