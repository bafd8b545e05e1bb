"""The width of the SGD weight cloud within each epoch, measured and predicted."""

import math
import numbers
import weakref
import warnings

import keras
import numpy as np
from keras import ops

from robustlab import _keras_compat
from robustlab import attacks
from robustlab import losses as losses_module
from robustlab import backend as _backend
from robustlab import curvature as _curvature
from robustlab import posterior
from robustlab import model_validation
from robustlab import validation
from robustlab.callbacks.hessian_probe import HessianProbe
from robustlab.callbacks._shared import check_probe_data
from robustlab.callbacks._shared import check_schedule
from robustlab.callbacks._shared import classifier
from robustlab.callbacks._shared import compiled_loss
from robustlab.callbacks._shared import epoch_seed
from robustlab.callbacks._shared import is_selected
from robustlab.callbacks._shared import warn_if_never_selected

__all__ = [
    "PosteriorTracker",
    "expected_window_variance",
    "per_example_directional_derivatives",
]


class PosteriorTracker(keras.callbacks.Callback):
    """Measure the weight cloud of each epoch and compare it with the
    heavy-ball prediction along the top Hessian eigenvector.

    **Window.** Each measured epoch is one window: it starts afresh at
    `on_epoch_begin` and holds the W iterates w_1..w_W, the classifier's
    trainable weights after each of the epoch's W optimizer steps. Running
    (Welford) mean and variance of the iterates, in float32 accumulators by
    default (`posterior.IterateStatistics`), give at the end of the epoch:

    - `posterior_var`: the mean over all trainable parameters of the
      per-parameter variance of the iterates within the window (ddof=0, what
      `np.var` of the stacked iterates gives); with `per_layer=True` also
      `posterior_var/<layer>` per layer, the same mean over that layer's
      parameters. `<layer>` is the variables' path (`Variable.path`) without
      its last part: `posterior_var/conv1` for the layer `conv1` of the
      functional `robustlab.models.small_cnn` (variables `conv1/kernel`,
      `conv1/bias`), `posterior_var/sequential/conv1` for a layer `conv1` of
      a `keras.Sequential` named `sequential` (variables
      `sequential/conv1/kernel`, ...). Where a variable's path repeats an
      earlier one's (two functional sub-models, each with a layer `dense`),
      the k-th layer of that path, in the order of the model's trainable
      variables, is named with `#k` after it: `dense` and `dense#2` (keys
      `posterior_var/dense`, `posterior_var/dense#2`; variable names
      `dense/kernel`, ..., `dense#2/kernel`, ... in `statistics`). A model
      without repeated paths keeps its paths unchanged. The per-layer keys
      are known once the tracker has a built model (`fit` gives it one;
      before that `log_keys` raises a RuntimeError).

    With a `probe` (a `HessianProbe` also in the callback list of the same
    fit; a ValueError when training begins without it) whose result
    from an earlier epoch is available when the window starts
    (`probe.latest_before(epoch)`: a probe at the end of epoch k-1 measured
    exactly the weights window k starts from; later windows reuse the last
    direction until the next probe):

    - `posterior_var_top`: the variance (ddof=0) of u . w_t over the window,
      u the probe's unit top eigenvector (exact, not sum u_i^2 Var w_i).
    - `posterior_var_top_predicted`: the *expected value of that same
      statistic*, E[(1/W) sum_t (x_t - mean_t x_t)^2] with x_t = u . w_t,
      under the linear model of heavy-ball SGD along u (`posterior` module;
      `expected_window_variance`): the window's own learning rates (read
      from the optimizer before every step), the optimizer's momentum beta,
      curvature lambda = the probe's eigenvalue + the regularisation
      curvature along u, and the minibatch noise along u measured when the
      window starts. Its start: the cloud is taken to be stationary at the
      learning rate in force just before the window (stationary covariance
      of (x_0, x_{-1})), then driven through the window's W steps; the
      per-step variances are `posterior.covariance_recursion` from that
      start and the lagged covariances follow from the same transition
      matrices. This is the comparable prediction: a single run's time
      variance over W steps is not the ensemble variance Var(x_t) that the
      recursion gives (correlated iterates spread less than independent
      replicas), and it approaches the stationary variance only when W is
      much longer than the relaxation time ((1 - beta) / (eta lambda) steps,
      at least -2 / ln beta, ~19 steps for beta = 0.9 - about one epoch in
      the quick setting). In the window after a learning-rate drop it
      contains the transient: the wide cloud of the old rate collapsing.
    - `posterior_var_top_stationary`: `posterior.stationary_variance` at the
      window's last learning rate (the limit the cloud relaxes towards).
    - `posterior_curvature_top` (the lambda used) and `posterior_noise_top`
      (s^2: the variance over the noise examples, ddof=0, of the
      per-example gradient projected on u, at the window's start, on
      examples crafted as in training: the `AdversarialModel`'s training
      attack, seed `seed + epoch`, the model called in its
      `attack_training_mode` while crafting (inference mode unless
      `attack_training_mode=True`); the derivatives are then taken with the
      model in inference mode, `per_example_directional_derivatives`). The minibatch
      noise is s^2 / B * (n - B) / (n - 1) (B distinct examples out of n;
      the last, smaller batch of an epoch gets its own B), and batches of
      one epoch are treated as independent. They partition the data, so
      their noises are anticorrelated and sum to zero over the epoch; where
      every step's push reaches the end of the window with the same sign
      (a small learning rate, after a drop) that narrows the cloud, for
      replicas forked from one state to about 0.6 of what independent
      batches give (`posterior.shuffled_pass_variance`, and the forks'
      control in the project's docs/RESULTS.md).
    - `posterior_unstable`: 1.0 when the measured curvature makes the
      schedule unstable (eta lambda >= 2 (1 + beta) at some step, or lambda
      <= 0, where no stationary cloud exists); the predictions are then NaN
      and a warning is issued. 0.0 otherwise.

    Keys are logged at every epoch (NaN where not measured or no direction),
    so History and CSVLogger columns stay aligned.

    What to expect (quick setting, 4 seeds, a drop at epoch 8 of a shortened
    run, a probe every epoch): one window's measured / predicted ratio
    scattered between about 0.1 and 4 away from the drop (a window of 16
    steps holds about one relaxation time, so a single window is close to
    one draw of the cloud's state) and was 0.01-0.4 in the window of the
    drop: there the prediction is dominated by the velocity the momentum
    carries over from the old rate, which the network shows less of than
    the linear model. Compare ratios averaged over seeds.

    **A probe every k > 1 epochs.** Windows after the first reuse an older
    direction. Where the learning rate is large the top eigenvector turns
    within a few epochs (quick setting, learning rate 0.2, 8 seeds: from
    one probe to the next, 5 epochs, |u_old . u_new| was 0.28 on average
    and the curvature along u_old 0.24 of the new top eigenvalue; after
    the drop to 0.02, 0.82 and 0.88). Such a window measures the cloud
    along a direction that is no longer the top one, with the probe's
    lambda, and its ratio is not a test of the model: there, windows 1-4
    epochs after their probe came out 1.14-1.21x on average against
    0.69-0.86x for the window right after a probe. Compare fresh windows
    (the probe's `hessian_top_eig` is logged at the epochs it measured).

    **Learning rate before the window** (the prediction's start): with
    `schedule` (a callable epoch -> rate, e.g. a
    `robustlab.schedules.PiecewiseConstant`) it is `schedule(epoch - 1)`;
    with a Keras `LearningRateSchedule` in the optimizer, its value at the
    step before the window; otherwise the rate the previous epoch's last
    step used, remembered from it (whatever a callback such as
    `ReduceLROnPlateau` sets at that epoch's end, before or after this one
    in the list, is the window's own first rate). The first window of a
    resumed fit has no remembered rate: pass `schedule` for a resumed run
    to reproduce the uninterrupted one exactly (otherwise that window
    starts from the stationary cloud of its own first rate, which differs
    only if the rate changed at that epoch, and a warning says so).

    **Regularisation curvature** (added to lambda): with
    `regularization_curvature=None` it is read from the model:
    sum over the variables of 2 l ||u_v||^2 for an `L2(l)` (or the l2 of
    `L1L2`) regulariser on variable v, plus (1 - beta) * wd * ||u||^2 on the
    covered variables for an optimizer's decoupled `weight_decay` wd (to
    first order in eta lambda, decoupled decay acts like curvature (1 - beta)
    wd). Pass a number to set it yourself.

    **State and memory.** Nothing is carried from one window to the next
    except the remembered learning rate above, so a fit resumed with
    `keras.callbacks.BackupAndRestore` logs the numbers of an uninterrupted
    one (with `schedule`, and a probe that restores its direction, see
    `HessianProbe(state_dir=...)`; after a SIGKILL too, but for the one
    moment in BackupAndRestore's save that `HessianProbe` describes).
    Persistent memory: the mean and M2 accumulators, two copies of the
    parameters (float32 by default: as many bytes as two copies of float32
    weights; `dtype="float64"` doubles it); the direction is the probe's own
    array, not copied. `nbytes` reports it.

    Place it before CSVLogger (and before a `BoundTracker` reading it, which
    is not required: it reads the accumulators, complete after the last
    batch). Every iterate is seen: a `robustlab.AdversarialModel` hands each
    one to the tracker from inside its compiled training step
    (`AdversarialModel.observe_iterates`), so any `steps_per_execution`
    works and logs the same numbers bit for bit; another model (or one
    under XLA on TensorFlow, or under a distribution) is read after every
    batch and needs `steps_per_execution=1`. For the prediction: a
    `keras.optimizers.SGD` without Nesterov (Keras's momentum form is
    exactly the heavy-ball recursion), and a loss that averages over the
    batch (Keras's default reduction; a summed loss steps B times as far).

    Args:
        probe: optional `HessianProbe` providing the direction and curvature;
            it must be in the same `fit`'s callbacks (it measures at the end
            of its epochs, the tracker reads the result).
        every: measure the windows of epochs 0, every, 2 every, ...; >= 1.
            Ignored when `epochs` is given.
        epochs: an explicit list of (0-based) epochs to measure.
        x, y: training examples for the noise (NumPy); default the probe's.
            Only with a probe (without one there is no prediction).
        batch_size: the training batch size B (required with a probe).
        train_size: the number n of training examples, for the
            finite-population factor and the last batch's size; None: no
            correction, every batch of size B. When given: an integer >= 2,
            >= `batch_size`, and (checked when training starts, with a
            probe) >= the number of noise examples (`len(x)`, or the
            probe's).
        schedule: optional callable epoch -> learning rate (see above).
        regularization_curvature: None (read from the model) or a number >= 0.
        per_layer: also log `posterior_var/<layer>` (`<layer>` as above).
        dtype: accumulator dtype, "float32" (default) or "float64".
        noise_batch_size: examples per compiled attack / derivative call.
        seed: base seed of the noise examples' attack, an integer in
            [0, 2**31 - 1]; the window of epoch `e` uses seed `seed + e`
            (modulo 2**31).

    Attributes:
        statistics: the window's `posterior.IterateStatistics` (None
            between windows that are not measured).
        window_epoch: the epoch whose iterates `statistics` holds.
        last_prediction: the inputs and outputs of the last prediction
            (a dict), or None.

    Example:

    >>> import numpy as np, keras, robustlab
    >>> from robustlab.callbacks.posterior_tracker import PosteriorTracker
    >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model = robustlab.AdversarialModel(net, robustlab.PGD(0.1, steps=2))
    >>> model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
    ...               keras.losses.SparseCategoricalCrossentropy(True))
    >>> x = np.random.default_rng(0).random((64, 4), dtype="float32")
    >>> y = np.arange(64) % 3
    >>> tracker = PosteriorTracker()
    >>> h = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[tracker])
    >>> [v > 0 for v in h.history["posterior_var"]]
    [True, True]
    >>> tracker.statistics.count  # the 4 iterates of the last epoch
    4
    """

    def __init__(
        self,
        probe=None,
        *,
        every=1,
        epochs=None,
        x=None,
        y=None,
        batch_size=None,
        train_size=None,
        schedule=None,
        regularization_curvature=None,
        per_layer=False,
        dtype="float32",
        noise_batch_size=256,
        seed=0,
    ):
        super().__init__()
        if probe is not None and not isinstance(probe, HessianProbe):
            raise TypeError(
                "Argument `probe` must be a HessianProbe (the one also in the "
                f"callback list) or None. Received: probe={probe!r}"
            )
        self.probe = probe
        self.every, self.epochs = check_schedule(every, epochs)
        if (x is None) != (y is None):
            raise ValueError(
                "Arguments `x` and `y` go together (the noise examples). "
                f"Received: x={'None' if x is None else 'an array'}, "
                f"y={'None' if y is None else 'an array'}"
            )
        if x is not None and probe is None:
            # Without a probe nothing is predicted and no noise is measured:
            # the examples would be silently unused.
            raise ValueError(
                "Arguments `x` and `y` are the examples of the gradient noise that "
                "the prediction along the probe's direction uses; without a probe "
                "there is none. Pass the HessianProbe of this fit, or drop x and y. "
                "Received: probe=None")
        if x is not None:
            x, y = check_probe_data(x, y)
        self.x, self.y = x, y
        if probe is not None and batch_size is None:
            raise ValueError(
                "PosteriorTracker with a probe predicts the cloud from the "
                "minibatch noise s^2 / B: pass the training `batch_size`. "
                "Received: batch_size=None"
            )
        self.batch_size = (
            None if batch_size is None
            else validation.check_int_at_least("batch_size", batch_size, 1)
        )
        self.train_size = (
            None if train_size is None
            else validation.check_int_at_least("train_size", train_size, 2)
        )
        if self.train_size is not None and self.batch_size is not None and (
            self.train_size < self.batch_size
        ):
            raise ValueError(
                f"Argument `train_size` must be >= batch_size={self.batch_size}. "
                f"Received: train_size={train_size!r}"
            )
        if schedule is not None and not callable(schedule):
            raise TypeError(
                "Argument `schedule` must be None or a callable epoch -> "
                f"learning rate. Received: schedule={schedule!r}"
            )
        self.schedule = schedule
        if regularization_curvature is not None:
            regularization_curvature = validation.check_finite_at_least(
                "regularization_curvature", regularization_curvature, 0.0
            )
        self.regularization_curvature = regularization_curvature
        self.per_layer = validation.check_bool("per_layer", per_layer)
        posterior.IterateStatistics(dtype=dtype)  # validates dtype
        self.dtype = str(np.dtype(dtype))
        self.noise_batch_size = validation.check_int_at_least(
            "noise_batch_size", noise_batch_size, 1
        )
        self.seed = validation.check_seed("seed", seed)
        self.statistics = None
        self.window_epoch = None
        self.last_prediction = None
        self._end_lr = None  # (epoch, learning rate of that epoch's last step)
        self._step_lr = None  # the learning rate of the epoch's last step so far
        self._calls_run = 0  # compiled calls of the epoch (steps handed over in them)
        self._in_step = False  # iterates handed over by the compiled step
        self._observer_error = None
        self._layers = None  # the per-layer keys' layers, set when training begins
        self._given_model = None  # the model of the last set_model

    # -- public ------------------------------------------------------------------

    @property
    def nbytes(self):
        """Bytes of the window's accumulators (mean and M2)."""
        return 0 if self.statistics is None else self.statistics.nbytes

    def statistics_for(self, epoch):
        """The window statistics of `epoch` if that window was measured and
        holds at least one iterate, else None (read by `BoundTracker`)."""
        if self.window_epoch != epoch or self.statistics is None:
            return None
        return self.statistics if self.statistics.count else None

    def log_keys(self):
        """The keys this tracker writes into `logs` (every epoch).

        With `per_layer=True` they name the model's layers, which are known
        once the tracker has a built model: during and after `fit` (or after
        `set_model(model)`); before that a RuntimeError says so.
        """
        if not self.per_layer:
            return self._keys(())
        if self._layers is not None:
            return self._keys(self._layers)
        model = self._given_model
        variables = [] if model is None else list(classifier(model).trainable_variables)
        if not variables:
            raise RuntimeError(
                "PosteriorTracker(per_layer=True) names its per-layer keys after "
                "the model's layers, which are known once it has a built model: "
                "fit sets it (or call set_model(model) with a built model). "
                "Received: " + ("no model" if model is None
                                else "a model without trainable variables"))
        return self._keys(_layers_of(_variable_names(variables)))

    def set_model(self, model):
        super().set_model(model)
        # Kept apart from Keras's own attribute (private; on JAX, reading the
        # `model` property also syncs the training state into the variables).
        self._given_model = model
        self._layers = None  # this model's layers, named when asked for

    def _keys(self, layers):
        keys = ["posterior_var"]
        keys += [f"posterior_var/{layer}" for layer in layers]
        if self.probe is not None:
            keys += ["posterior_var_top", "posterior_var_top_predicted",
                     "posterior_var_top_stationary", "posterior_curvature_top",
                     "posterior_noise_top", "posterior_unstable"]
        return keys

    # -- callback hooks ------------------------------------------------------------

    def on_train_begin(self, logs=None):
        model = self.model
        # Keras hands every callback of one fit the same `params` dict: a
        # probe with another one (or none) is not in this fit's callbacks,
        # never measures, and would leave every prediction NaN.
        if self.probe is not None and self.probe.params is not self.params:
            raise ValueError(
                "Argument `probe` must be a HessianProbe that is also in the "
                "callbacks of this fit: it measures the direction at the end of "
                "its epochs and the tracker only reads it. This fit's callbacks "
                f"do not include it. Received: probe={self.probe!r}"
            )
        net = classifier(model)
        self._variables = list(net.trainable_variables)
        if not self._variables:
            raise ValueError(
                "PosteriorTracker needs a model with trainable variables. "
                "Received: a model with none"
            )
        self._names = _variable_names(self._variables)
        self._layers = _layers_of(self._names)
        self._observer_error = None
        # An AdversarialModel hands every iterate over from inside its
        # compiled step, whatever steps_per_execution; other models are read
        # batch by batch.
        observe = getattr(model, "observe_iterates", None)
        self._in_step = bool(observe is not None and observe(self._observe, self._variables))
        if not self._in_step and getattr(model, "steps_per_execution", 1) != 1:
            raise ValueError(
                "PosteriorTracker reads the weights of this model once per "
                "execution; compile with steps_per_execution=1 so that every "
                "iterate enters the window (a robustlab.AdversarialModel, "
                "without XLA or a distribution, needs no such setting). "
                f"Received: steps_per_execution={model.steps_per_execution}"
            )
        _check_window_steps(self.params.get("steps"))
        warn_if_never_selected(self, self.params.get("epochs"), end_of_epoch=False)
        if self.probe is None:
            return
        optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)
        if not isinstance(optimizer, keras.optimizers.SGD) or optimizer.nesterov:
            raise ValueError(
                "PosteriorTracker's prediction models heavy-ball momentum SGD: "
                "compile with keras.optimizers.SGD(learning_rate, "
                "momentum=beta) without nesterov (or drop the probe to "
                f"measure only). Received: optimizer={type(optimizer).__name__}"
                f"{' (nesterov=True)' if getattr(optimizer, 'nesterov', False) else ''}"
            )
        model_validation.check_heavy_ball_sgd(
            optimizer, "PosteriorTracker", " (or drop the probe to measure only)")
        self._optimizer = optimizer
        self._momentum = float(optimizer.momentum)
        self._loss = compiled_loss(model)
        model_validation.check_mean_loss(
            self._loss, "PosteriorTracker", " (or drop the probe to measure only)")
        x, y = (self.x, self.y) if self.x is not None else (self.probe.x, self.probe.y)
        num_classes = model_validation.check_classifier(net, x[:1])
        sparse = validation.check_labels(y, num_classes, len(x), name="y")
        losses_module.check_labels_fit_loss(self._loss, sparse, np.shape(y))
        if self.train_size is not None and self.train_size < len(x):
            raise ValueError(
                f"Argument `train_size` must be >= the number of noise examples "
                f"({len(x)}). Received: train_size={self.train_size}"
            )
        self._attack = getattr(model, "attack", None)
        if self._attack is not None:
            validation.check_inputs(x, self._attack.value_range, name="x")
        self._attack_training = bool(getattr(model, "attack_training_mode", False))
        self._noise_data = (x, y)

    def on_epoch_begin(self, epoch, logs=None):
        self._step_lr = None
        self._calls_run = 0
        self.statistics = None
        self.window_epoch = None
        self._window = None
        if not is_selected(epoch, self.every, self.epochs, end_of_epoch=False):
            return
        self.statistics = posterior.IterateStatistics(
            names=self._names, dtype=self.dtype
        )
        self.window_epoch = epoch
        self._lrs = []
        self._window = {"epoch": epoch}
        result = None if self.probe is None else self.probe.latest_before(epoch)
        if result is None:
            return
        self.statistics.track_direction("top", result.eigenvector)
        self._window.update(
            iterations=int(ops.convert_to_numpy(self._optimizer.iterations)),
            probe_result=result,
            noise_variance=self._noise_along(result.eigenvector, epoch),
            previous_lr=self._lr_before(epoch),
        )

    def on_train_batch_begin(self, batch, logs=None):
        # Kept only once the step has run: Keras may announce a batch and
        # then find the data exhausted.
        # With a probe, also outside the windows: the last step's rate is
        # where the next window's prediction starts.
        if not self._in_step and (self.statistics is not None or self.probe is not None):
            self._pending_lr = _learning_rate(self.model.optimizer)

    def on_train_batch_end(self, batch, logs=None):
        if self._in_step:
            self._calls_run += 1
            self._raise_observer_error()
            return
        if self.statistics is not None or self.probe is not None:
            self._step_lr = self._pending_lr
        if self.statistics is not None:
            self.model  # noqa: B018 (on JAX: attaches the step's weights)
            self._add_iterate(
                self._pending_lr, [ops.convert_to_numpy(v) for v in self._variables])

    def _observe(self, learning_rate, weights):
        """The model's iterate observer: called from inside the compiled step."""
        self._step_lr = learning_rate
        if self.statistics is None or self._observer_error is not None:
            return
        try:
            self._add_iterate(learning_rate, weights)
        except Exception as error:  # noqa: BLE001 (raised on the host, below)
            self._observer_error = error

    def _add_iterate(self, learning_rate, weights):
        self.statistics.update(weights)
        self._lrs.append(learning_rate)

    def _raise_observer_error(self):
        error, self._observer_error = self._observer_error, None
        if error is not None:
            raise error

    def on_epoch_end(self, epoch, logs=None):
        if self._in_step:
            _backend.get().wait_for_iterate_observers()
            self._raise_observer_error()
            if self._calls_run and self._step_lr is None:
                # Otherwise the empty window would be blamed on the batch size.
                raise RuntimeError(
                    "PosteriorTracker was registered to receive every iterate "
                    "from inside the compiled training step, but the "
                    f"{self._calls_run} compiled call(s) of epoch {epoch} handed "
                    "it none: the model's train function was traced without "
                    "the iterate hand-off (a bug in robustlab).")
        # The rate the epoch's last step used, not the optimizer's now: a
        # callback earlier in the list (ReduceLROnPlateau, say) may already
        # have set the next epoch's.
        self._end_lr = (epoch, self._step_lr if self._step_lr is not None
                        else _learning_rate(self.model.optimizer))
        if logs is None:
            return
        values = dict.fromkeys(self.log_keys(), math.nan)
        stats = self.statistics_for(epoch)
        if self.statistics is not None and self.window_epoch == epoch:
            _check_window_steps(self.statistics.count)
        if stats is not None:
            summary = stats.summary()
            values["posterior_var"] = summary["overall"]
            if self.per_layer:
                values.update(self._per_layer(stats))
            if "top" in stats.direction_names:
                values.update(self._predict(epoch, stats))
        logs.update(values)

    # -- pieces ----------------------------------------------------------------------

    def _per_layer(self, stats):
        per_variable = stats.summary()["per_layer"]
        sizes = {name: math.prod(v.shape)
                 for name, v in zip(self._names, self._variables)}
        totals, counts = {}, {}
        for name, value in per_variable.items():
            layer = _layer_of(name)
            totals[layer] = totals.get(layer, 0.0) + value * sizes[name]
            counts[layer] = counts.get(layer, 0) + sizes[name]
        return {
            f"posterior_var/{layer}": totals[layer] / counts[layer] if counts[layer]
            else 0.0 for layer in totals
        }

    def _noise_along(self, direction, epoch):
        """s^2: variance over the noise examples of u . grad loss_i (ddof=0)."""
        net = classifier(self.model)
        x, y = self._noise_data
        if self._attack is not None:
            x = attacks.run_attack(
                net, x, y, self._attack, loss=self._loss,
                training=self._attack_training, batch_size=self.noise_batch_size,
                seed=epoch_seed(self.seed, epoch),
            )
        derivatives = per_example_directional_derivatives(
            net, x, y, direction, loss=self._loss, batch_size=self.noise_batch_size
        )
        return float(np.var(derivatives))

    def _lr_before(self, epoch):
        if epoch == 0:
            return None
        if self.schedule is not None:
            return float(self.schedule(epoch - 1))
        schedule = _keras_compat.learning_rate_schedule(self._optimizer)
        if schedule is not None:
            step = int(ops.convert_to_numpy(self._optimizer.iterations))
            return float(ops.convert_to_numpy(schedule(max(step - 1, 0))))
        if self._end_lr is not None and self._end_lr[0] == epoch - 1:
            return self._end_lr[1]
        warnings.warn(
            f"PosteriorTracker: the learning rate before epoch {epoch} is "
            "unknown (a resumed fit without `schedule=`); the prediction for "
            "this window starts from the stationary cloud of the window's own "
            "first rate.", stacklevel=2)
        return None

    def _curvature_along(self, direction):
        """Regularisation curvature along the unit direction u."""
        if self.regularization_curvature is not None:
            return self.regularization_curvature
        total = 0.0
        decay = getattr(self._optimizer, "weight_decay", None) or 0.0
        for variable, part in zip(self._variables, direction):
            weight = float(np.dot(part.ravel(), part.ravel()))
            l2 = getattr(getattr(variable, "regularizer", None), "l2", None)
            if l2:
                total += 2.0 * float(l2) * weight
            if decay and _keras_compat.applies_weight_decay(self._optimizer, variable):
                total += (1.0 - self._momentum) * float(decay) * weight
        return total

    def _minibatch_noise(self, noise_variance, steps):
        """Per-step minibatch noise s^2 / B_t * (n - B_t) / (n - 1)."""
        batch, n = self.batch_size, self.train_size
        sizes = np.full(steps, batch)
        if n is not None and steps == math.ceil(n / batch) and n % batch:
            sizes[-1] = n - (steps - 1) * batch
        factor = 1.0 if n is None else (n - sizes) / (n - 1)
        return noise_variance / sizes * factor

    def _predict(self, epoch, stats):
        window = self._window
        result = window["probe_result"]
        u = result.eigenvector
        lrs = np.asarray(self._lrs, dtype=np.float64)
        regularization = self._curvature_along(u)
        lam = result.eigenvalue + regularization
        beta = self._momentum
        s2 = window["noise_variance"]
        noise = self._minibatch_noise(s2, len(lrs))
        previous_lr = window["previous_lr"]
        start_lr = lrs[0] if previous_lr is None else previous_lr
        limit = 2.0 * (1.0 + beta)
        unstable = (
            not lam > 0 or np.any(lrs * lam >= limit) or start_lr * lam >= limit
        )
        values = {
            "posterior_var_top": float(stats.projected_variance("top")),
            "posterior_curvature_top": float(lam),
            "posterior_noise_top": float(s2),
            "posterior_unstable": float(unstable),
            "posterior_var_top_predicted": math.nan,
            "posterior_var_top_stationary": math.nan,
        }
        self.last_prediction = {
            "epoch": epoch, "lrs": lrs, "momentum": beta, "curvature": lam,
            "eigenvalue": result.eigenvalue, "regularization_curvature": regularization,
            "noise_variance": s2, "minibatch_noise": noise, "start_lr": start_lr,
            "probe_epoch": result.epoch, "unstable": bool(unstable),
        }
        skipped = len(lrs) - (int(ops.convert_to_numpy(self._optimizer.iterations))
                              - window["iterations"])
        if skipped:
            # A LossScaleOptimizer skips a step whose scaled gradients
            # overflow: the weights stay, but the iterate is still handed over.
            warnings.warn(
                f"PosteriorTracker: the optimizer skipped {skipped} of the {len(lrs)} "
                f"steps of epoch {epoch}'s window (a LossScaleOptimizer skips a step "
                "whose scaled gradients overflow); the heavy-ball prediction models "
                "every step taken, so this window has none. Received: "
                f"{len(lrs) - skipped} steps applied", stacklevel=2)
            return values
        if unstable:
            warnings.warn(
                f"PosteriorTracker: at epoch {epoch} the measured curvature "
                f"lambda={lam:.4g} makes heavy-ball SGD unstable along the top "
                f"direction: it needs 0 < lr*lambda < 2*(1+momentum)={limit:g}, "
                f"and lr*lambda reaches {max(lrs.max(), start_lr) * lam:.4g}; no "
                "prediction (posterior_unstable=1). Received: learning rates "
                f"in [{min(lrs.min(), start_lr):.4g}, {max(lrs.max(), start_lr):.4g}]",
                stacklevel=2)
            return values
        # A zero rate before the window leaves no cloud (zero covariance), and
        # a zero rate has no stationary state.
        initial = (posterior.stationary_covariance(start_lr, beta, lam, noise[0], 1)
                   if start_lr > 0 else (0.0, 0.0, 0.0))
        predicted = expected_window_variance(lrs, beta, lam, noise, initial=initial)
        stationary = (posterior.stationary_variance(lrs[-1], beta, lam, noise[0], 1)
                      if lrs[-1] > 0 else math.nan)
        values["posterior_var_top_predicted"] = float(predicted)
        values["posterior_var_top_stationary"] = float(stationary)
        self.last_prediction.update(
            initial=tuple(float(v) for v in initial), predicted=float(predicted),
            stationary=float(stationary))
        return values


def _check_window_steps(steps):
    if steps is not None and steps < 2:
        raise ValueError(
            "PosteriorTracker measures the spread of the iterates within one "
            "epoch; a window of fewer than 2 steps has none. Use more batches "
            f"per epoch (a smaller batch_size). Received: steps per epoch={steps}"
        )


def _layer_of(path):
    return path.rsplit("/", 1)[0] if "/" in path else path


def _variable_names(variables):
    """The variables' paths, made distinct: the k-th (k >= 2) variable with
    an earlier one's path `<layer>/<leaf>` is named `<layer>#k/<leaf>` (a
    path without "/" becomes `<path>#k`), k raised further past any name
    already taken. Paths that do not repeat are kept as they are."""
    paths = [v.path for v in variables]
    taken = set(paths)
    seen, names = {}, []
    for path in paths:
        seen[path] = seen.get(path, 0) + 1
        if seen[path] == 1:
            names.append(path)
            continue
        layer, slash, leaf = path.rpartition("/")
        k = seen[path]
        while True:
            name = f"{layer}#{k}{slash}{leaf}" if slash else f"{path}#{k}"
            if name not in taken:
                break
            k += 1
        taken.add(name)
        names.append(name)
    return names


def _layers_of(names):
    """The layers of the variables `names`, in order, each once."""
    return list(dict.fromkeys(_layer_of(name) for name in names))


def _learning_rate(optimizer):
    return float(ops.convert_to_numpy(optimizer.learning_rate))


# ---------------------------------------------------------------------------
# The prediction: expected time variance of the iterates over a window.
# ---------------------------------------------------------------------------


def expected_window_variance(lrs, momentum, curvature, minibatch_noise, *,
                             initial=None, return_trajectory=False):
    """Expected variance of one run's iterates over a window, under the
    heavy-ball linear model along one direction.

    With x_t the iterate after step t (t = 1..W) of x_{t+1} = x_t - eta_t
    (lambda x_t + xi_t) + beta (x_t - x_{t-1}), Var xi_t = q_t, and
    (x_0, x_{-1}) drawn with covariance `initial`, this returns

        E[ (1/W) sum_t (x_t - xbar)^2 ] = (1/W) sum_t C(t, t)
                                          - (1/W^2) sum_{s,t} C(s, t),

    C(s, t) = E[x_s x_t]: the time variance of a single run (ddof=0), the
    quantity `PosteriorTracker` measures. The diagonal C(t, t) is
    `posterior.covariance_recursion` (run over stretches of constant noise
    and chained through its full state); for s < t, E[z_t z_s^T] =
    A_{t-1} ... A_s P_s, summed by the recursion V_{t+1} = A_t (V_t + P_t e1).
    O(W) work. With a constant rate, a stationary start and W much longer
    than the relaxation time it tends to `posterior.stationary_variance`.

    Args:
        lrs: (W,) learning rates of the window's steps, W >= 1.
        momentum: beta in [0, 1).
        curvature: lambda, a finite real number (one direction).
        minibatch_noise: the variance of the minibatch gradient along the
            direction (s^2 / B with any finite-population factor, as
            `posterior.minibatch_noise_variance` returns): a scalar or one
            value per step, finite and >= 0.
        initial: covariance triple (Var x_0, Cov(x_0, x_{-1}), Var x_{-1}),
            e.g. `posterior.stationary_covariance(...)`; None: zero (a fork).
        return_trajectory: True or False: also return Var x_t, t = 1..W.

    Returns:
        The expected window variance (float), and with `return_trajectory`
        the (W,) array of Var x_t.

    Example:

    Plain SGD without memory of the start (lambda = 1/eta): x_t = -eta xi,
    independent, so the expected ddof=0 variance over W = 4 steps is
    (1 - 1/4) eta^2 q:

    >>> from robustlab.callbacks.posterior_tracker import (
    ...     expected_window_variance)
    >>> print(expected_window_variance([0.5] * 4, 0.0, 2.0, 4.0))
    0.75
    """
    lrs = validation._float_array("lrs", lrs)
    if lrs.ndim != 1 or lrs.size < 1:
        raise ValueError(
            "Argument `lrs` must be a 1-D array with at least one step. "
            f"Received: lrs with shape {lrs.shape}"
        )
    if not isinstance(curvature, numbers.Real) and np.ndim(curvature) != 0:
        raise ValueError(
            "Argument `curvature` must be a scalar (one direction). "
            f"Received: curvature with shape {np.shape(curvature)}"
        )
    curvature = validation._real_scalar(
        "curvature", curvature, "a finite real number (one direction)")
    return_trajectory = validation.check_bool("return_trajectory", return_trajectory)
    noise = validation._finite_nonnegative("minibatch_noise", minibatch_noise)
    try:
        noise = np.broadcast_to(noise, lrs.shape)
    except ValueError:
        raise ValueError(
            "Argument `minibatch_noise` must be a scalar or one value per step "
            f"({lrs.size}). Received: minibatch_noise with shape {noise.shape}"
        ) from None
    variances, covariances = [], []
    state, start = initial, 0
    while start < lrs.size:
        stop = start + 1
        while stop < lrs.size and noise[stop] == noise[start]:
            stop += 1
        segment = posterior.covariance_recursion(
            lrs[start:stop], momentum, float(curvature), float(noise[start]), 1,
            initial=state, return_full=True,
        )
        variances.append(segment.variance)
        covariances.append(segment.covariance)
        state = (segment.variance[-1], segment.covariance[-1],
                 segment.previous_variance[-1])
        start = stop
    p = np.concatenate(variances)  # Var x_t, t = 1..W
    c = np.concatenate(covariances)  # Cov(x_t, x_{t-1})
    beta = float(momentum)
    cross, v0, v1 = 0.0, 0.0, 0.0
    for t in range(1, lrs.size):  # V_{t+1} = A(lrs[t]) (V_t + P_t e1)
        a = 1.0 + beta - lrs[t] * float(curvature)
        w0, w1 = v0 + p[t - 1], v1 + c[t - 1]
        v0, v1 = a * w0 - beta * w1, w0
        cross += v0
    steps = lrs.size
    total = float(p.sum())
    expected = total / steps - (total + 2.0 * cross) / steps**2
    expected = max(expected, 0.0)
    return (expected, p) if return_trajectory else expected


# ---------------------------------------------------------------------------
# Per-example directional derivatives (forward mode, in the backend).
# ---------------------------------------------------------------------------


_DIRECTIONAL = weakref.WeakKeyDictionary()  # model -> {key: compiled function}
_HALF_PRECISION = ("float16", "bfloat16")


def _per_example_losses(per_example):
    def losses(y, y_pred):
        if keras.backend.standardize_dtype(y_pred.dtype) in _HALF_PRECISION:
            y_pred = ops.cast(y_pred, "float32")
        if keras.backend.is_float_dtype(y.dtype):
            y = ops.cast(y, y_pred.dtype)
        values = per_example(y, y_pred)
        if len(values.shape) > 1:
            values = ops.mean(values, axis=tuple(range(1, len(values.shape))))
        return values

    return losses


def _directional_function(model, loss, per_example):
    # Keyed as curvature's products are (`losses.compiled_for_loss`): by
    # identity, an equal Keras loss written afresh for each call compiled
    # again each time and was held for the model's life.
    return losses_module.compiled_for_loss(
        _DIRECTIONAL, model, tuple(id(v) for v in model.trainable_variables), loss,
        per_example, lambda per_example: _backend.get().make_directional_derivative(
            model, _per_example_losses(per_example)))


def per_example_directional_derivatives(model, x, y, direction, *, loss,
                                        batch_size=256, return_losses=False):
    """u . grad_w loss_i(w) for every example i, by forward-mode autodiff.

    One forward pass with tangents per batch (`jax.jvp` /
    `tf.autodiff.ForwardAccumulator` in `robustlab.backend.<name>.directional`),
    compiled once per model and loss, with the model in inference mode;
    the loss is the per-example loss (extra axes averaged; reduction, sample
    weights and regularisation losses ignored). The last batch is padded to
    the batch shape, so one trace serves all.

    Args:
        model: a built Keras model.
        x, y: the examples (NumPy), finite, at least one; with a categorical
            cross-entropy, `y` must be class indices of the model's classes
            (or one-hot rows), as in `robustlab.curvature`.
        direction: u, a list of arrays shaped like `model.trainable_variables`,
            or one flat vector of all of them in the order of
            `robustlab.curvature.flatten_weights` (as a probe's eigenvector
            is); not normalised here: the derivative is along u as given.
        loss: a Keras loss (name, function or `keras.losses.Loss`).
        batch_size: examples per compiled call.
        return_losses: also return the per-example losses.

    Returns:
        float64 array (n,) of directional derivatives (and the (n,) losses).

    Example:

    >>> import keras, numpy as np
    >>> from robustlab.callbacks.posterior_tracker import (
    ...     per_example_directional_derivatives)
    >>> net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    >>> net.set_weights([np.zeros((2, 2)), np.zeros(2)])
    >>> u = [np.zeros((2, 2)), np.array([1.0, 0.0])]  # the first bias
    >>> d = per_example_directional_derivatives(
    ...     net, np.eye(2, dtype="float32"), np.array([0, 1]), u,
    ...     loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> np.round(d, 6).tolist()  # p_0 - [y == 0] with p = (1/2, 1/2)
    [-0.5, 0.5]
    """
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model. "
            f"Received: model of type {type(model).__name__}")
    if loss is None:
        raise ValueError("Argument `loss` is required (a Keras loss name, function "
                         "or keras.losses.Loss). Received: loss=None")
    # A clear error for a non-loss; the resolved loss keys the compiled function.
    loss, per_example = losses_module.resolve_model_loss(model, loss)
    x, y = check_probe_data(x, y)
    batch_size = validation.check_int_at_least("batch_size", batch_size, 1)
    # Out-of-range class labels: TensorFlow would fail inside the graph and
    # JAX's one-hot would quietly give a zero loss and derivative.
    _curvature._check_class_labels(model, loss, x, y)
    variables = list(model.trainable_variables)
    direction_given = direction
    if (isinstance(direction, np.ndarray) and direction.ndim == 1
            and direction.dtype.kind in "iuf"
            and direction.size == sum(math.prod(v.shape) for v in variables)):
        # A flat vector, such as a probe's eigenvector: list() split it into
        # numbers, and the error listed one empty shape per parameter.
        direction = _curvature.unflatten_weights(direction, model)
    try:
        direction = None if isinstance(direction, (str, bytes)) else list(direction)
    except TypeError:  # list() of a number: "'float' object is not iterable"
        direction = None
    if direction is None:
        raise TypeError(
            "Argument `direction` must be a list of arrays shaped like "
            f"model.trainable_variables. Received: direction={direction_given!r}")
    shapes = [tuple(v.shape) for v in variables]
    if [tuple(np.shape(d)) for d in direction] != shapes:
        given = [tuple(np.shape(d)) for d in direction]
        raise ValueError(
            "Argument `direction` must be a list of arrays shaped like "
            f"model.trainable_variables {shapes}, or a flat vector of their "
            f"{sum(math.prod(s) for s in shapes)} values. Received: direction with "
            + (f"shapes {given}" if len(given) <= 2 * len(shapes) + 4 else
               f"{len(given)} entries of shapes {sorted(set(given))}"))
    if not all(np.all(np.isfinite(d)) for d in direction):
        raise ValueError(
            "Argument `direction` must be finite (no NaN or inf). "
            "Received: direction with non-finite values"
        )
    function = _directional_function(model, loss, per_example)
    tangents = [
        ops.convert_to_tensor(np.asarray(d, dtype=keras.backend.standardize_dtype(
            v.dtype))) for d, v in zip(direction, variables)
    ]
    n = len(x)
    size = min(batch_size, n)
    float_dtype = keras.backend.standardize_dtype(variables[0].dtype)
    if np.issubdtype(x.dtype, np.floating):
        x = x.astype(float_dtype, copy=False)
    derivatives, losses = [], []
    for start in range(0, n, size):
        index = np.arange(start, start + size) % n
        batch_losses, batch_derivatives = function(
            ops.convert_to_tensor(x[index]), ops.convert_to_tensor(y[index]), tangents
        )
        keep = min(size, n - start)
        derivatives.append(np.asarray(batch_derivatives, np.float64)[:keep])
        losses.append(np.asarray(batch_losses, np.float64)[:keep])
    derivatives = np.concatenate(derivatives)
    return (derivatives, np.concatenate(losses)) if return_losses else derivatives
