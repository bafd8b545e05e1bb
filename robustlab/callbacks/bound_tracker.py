"""A time-resolved PAC-Bayes bound, one per epoch, from the tracked weight cloud."""

import math
import numbers
import os
import sys
import warnings

import keras
import numpy as np
from keras import ops

from robustlab import bounds
from robustlab import validation
from robustlab.callbacks._shared import atomic_savez
from robustlab.callbacks._shared import check_state_dir
from robustlab.callbacks._shared import classifier
from robustlab.callbacks.posterior_tracker import PosteriorTracker

__all__ = [
    "BoundTracker",
]

_POSTERIORS = ("diagonal", "isotropic")
_STATE_FILE = "bound_tracker_initial_weights.npz"
_DEFAULT_FLOOR_RATIO = 1e-12


class BoundTracker(keras.callbacks.Callback):
    """PAC-Bayes bound per epoch with the measured posterior width.

    At the end of every epoch whose window `tracker` measured:

    - posterior Q_t = N(w_t, diag sigma_t^2): w_t the classifier's trainable
      weights at the end of the epoch; sigma_t^2 the per-parameter variance
      of the iterates within the epoch's window as the `PosteriorTracker`
      measured it (ddof=0; `posterior="isotropic"` uses instead its mean
      over all parameters, `posterior_var`, for every parameter). Variances
      below `variance_floor` (a parameter that did not move at all, such as
      the zero bias of a dead ReLU unit) are raised to it, so the KL stays
      finite; each such parameter adds about 1/2 (ln(prior_variance /
      variance_floor) - 1) nats (13.3 with the default floor), and `last`
      counts them.
    - prior P = N(w_0, sigma_0^2 I): w_0 the weights at the start of
      training (data-independent), sigma_0^2 = `prior_variance`, to be fixed
      before looking at the data (a value picked after seeing bounds needs
      a union bound over the candidates).
    - loss: the 0-1 robust error, in [0, 1] as the theorem needs;
      the empirical risk is 1 - `logs[accuracy_key]`, by default
      `train_robust_accuracy` of a `RobustEvaluation(prefix="train_")`
      placed BEFORE this callback (the robust accuracy, under the
      evaluation attack, of a fixed training subset at w_t). Caveats: it is
      the risk of the mean weights w_t, not the Gibbs risk of Q_t the
      theorem is about, and of a subset, not all n examples.

    Logged: `pac_bayes_kl` = KL(Q_t || P) in nats (`bounds.gaussian_kl`),
    `pac_bayes_bound` (`bounds.seeger_bound`, the kl-inverse form) and
    `pac_bayes_bound_mcallester` (`bounds.mcallester_bound`), with
    confidence 1 - `delta` for all epochs together (the theorem holds for
    every posterior at once, so no union bound over the epochs is needed;
    the prior, `delta` and `n` are fixed before training). NaN on epochs the
    tracker did not measure or without the accuracy (NaN in the logs, as a
    `RobustEvaluation(every=k)` logs on the epochs it skips; the key absent
    at the first measured epoch is an error: the callback is missing or
    placed after this one). With a within-epoch cloud the KL is large and
    the bounds vacuous (>= 1): what the course shows is how the KL jumps
    when the cloud collapses at the learning-rate drop.

    w_0 across resumed fits: it is taken, in this order, from
    `initial_weights`; from memory (the same callback object in a later
    fit); at epoch 0, from the model (the weights before the first step),
    and then written to `state_dir` when given; when a fit resumes at epoch
    > 0 (e.g. `keras.callbacks.BackupAndRestore`), from `state_dir`. A
    resumed fit with none of these raises an error rather than use trained
    weights as the prior mean. `state_dir` may be the BackupAndRestore
    directory; the file is `bound_tracker_initial_weights.npz` (one copy of
    the weights).

    Args:
        n: number of training examples, an integer >= 1 (the sample the
            theorem is about; the empirical risk read from the logs
            estimates the risk on it, see the caveats above).
        prior_variance: sigma_0^2, > 0.
        tracker: the `PosteriorTracker` in the same callback list.
        delta: confidence parameter in (0, 1).
        accuracy_key: the logs key of the robust training accuracy.
        posterior: "diagonal" (default) or "isotropic".
        variance_floor: smallest posterior variance used, a finite number
            > 0 (any such floor keeps the KL finite); default 1e-12 *
            prior_variance.
        initial_weights: optional w_0, a list of arrays shaped like the
            classifier's trainable variables.
        state_dir: optional directory for w_0 (see above).

    Attributes:
        initial_weights: w_0 as float64 arrays (None before training).
        last: the inputs and outputs of the last bound (a dict), or None.

    Example:

    >>> import numpy as np, keras, robustlab
    >>> from robustlab.callbacks.posterior_tracker import PosteriorTracker
    >>> from robustlab.callbacks.bound_tracker import BoundTracker
    >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model = robustlab.AdversarialModel(net, robustlab.PGD(0.1, steps=2))
    >>> model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
    ...               keras.losses.SparseCategoricalCrossentropy(True),
    ...               metrics=["accuracy"])
    >>> x = np.random.default_rng(0).random((64, 4), dtype="float32")
    >>> y = np.arange(64) % 3
    >>> tracker = PosteriorTracker()
    >>> bound = BoundTracker(64, prior_variance=0.01, tracker=tracker,
    ...                      accuracy_key="robust_accuracy")
    >>> h = model.fit(x, y, batch_size=16, epochs=2, verbose=0,
    ...               callbacks=[tracker, bound])
    >>> kl, b = h.history["pac_bayes_kl"][-1], h.history["pac_bayes_bound"][-1]
    >>> bool(kl > 0 and 0 < b <= 1)
    True
    """

    def __init__(
        self,
        n,
        *,
        prior_variance,
        tracker,
        delta=0.05,
        accuracy_key="train_robust_accuracy",
        posterior="diagonal",
        variance_floor=None,
        initial_weights=None,
        state_dir=None,
    ):
        super().__init__()
        self.n = validation.check_int_at_least("n", n, 1)
        self.prior_variance = validation.check_finite_positive(
            "prior_variance", prior_variance)
        if not isinstance(tracker, PosteriorTracker):
            raise TypeError(
                "Argument `tracker` must be the PosteriorTracker of the same "
                f"callback list. Received: tracker={tracker!r}"
            )
        self.tracker = tracker
        if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not (
            0 < delta < 1
        ):
            raise ValueError(
                "Argument `delta` must be a number in (0, 1). "
                f"Received: delta={delta!r}"
            )
        self.delta = float(delta)
        if not isinstance(accuracy_key, str) or not accuracy_key:
            raise ValueError(
                "Argument `accuracy_key` must be a logs key (a non-empty string). "
                f"Received: accuracy_key={accuracy_key!r}"
            )
        self.accuracy_key = accuracy_key
        if posterior not in _POSTERIORS:
            raise ValueError(
                f"Argument `posterior` must be one of {_POSTERIORS}. "
                f"Received: posterior={posterior!r}"
            )
        self.posterior = posterior
        if variance_floor is None:
            variance_floor = _DEFAULT_FLOOR_RATIO * self.prior_variance
        # No lower limit: gaussian_kl takes the log of each variance, so the
        # KL stays finite for any floor > 0 (about 372 nats per floored
        # parameter at the smallest float, 5e-324, under a prior of 1).
        self.variance_floor = validation.check_finite_positive(
            "variance_floor", variance_floor)
        self.initial_weights = None
        if initial_weights is not None:
            if not isinstance(initial_weights, (list, tuple)):
                # 0.0 (a zero-mean prior?) failed with "'float' object is not
                # iterable".
                raise TypeError(
                    "Argument `initial_weights` must be a list of arrays shaped like "
                    "the classifier's trainable variables (w_0, the prior's mean). "
                    f"Received: initial_weights={initial_weights!r}")
            self.initial_weights = [np.asarray(w, np.float64) for w in initial_weights]
            if not all(np.all(np.isfinite(w)) for w in self.initial_weights):
                raise ValueError(
                    "Argument `initial_weights` must be finite. Received: "
                    "initial_weights with non-finite values"
                )
        self.state_dir = check_state_dir(state_dir)
        self.last = None
        self._seen_accuracy = False
        self._warned_floor = False

    def log_keys(self):
        return ["pac_bayes_kl", "pac_bayes_bound", "pac_bayes_bound_mcallester"]

    # -- w_0 -------------------------------------------------------------------------

    def _current_weights(self):
        return [np.asarray(ops.convert_to_numpy(v), np.float64)
                for v in classifier(self.model).trainable_variables]

    def _check_shapes(self, weights, source):
        shapes = [tuple(v.shape) for v in classifier(self.model).trainable_variables]
        received = [tuple(np.shape(w)) for w in weights]
        if received != shapes:
            raise ValueError(
                f"BoundTracker's w_0 ({source}) must be shaped like the "
                f"classifier's trainable variables {shapes}. Received: shapes "
                f"{received}"
            )
        return weights

    def on_train_begin(self, logs=None):
        # Keras hands every callback of one fit the same `params` dict: a
        # tracker not in this fit's callbacks never measures, and every bound
        # would be NaN without a word.
        if self.tracker.params is not self.params:
            raise ValueError(
                "Argument `tracker` must be a PosteriorTracker that is also in the "
                "callbacks of this fit: the bound reads the weight cloud it "
                "measures. Received: a tracker that is not among this fit's callbacks")
        self._seen_accuracy = False
        self._warned_floor = False
        if self.initial_weights is not None:
            self._check_shapes(self.initial_weights, "initial_weights")

    def on_epoch_begin(self, epoch, logs=None):
        if self.initial_weights is not None:
            return
        path = None if self.state_dir is None else os.path.join(
            self.state_dir, _STATE_FILE)
        if epoch == 0:
            self.initial_weights = self._current_weights()
            if path is not None:
                atomic_savez(path, {f"w_{i}": w for i, w in
                                    enumerate(self.initial_weights)})
            return
        if path is not None and os.path.exists(path):
            with np.load(path) as data:
                count = len(data.files)
                weights = [np.array(data[f"w_{i}"], np.float64) for i in range(count)]
            self.initial_weights = self._check_shapes(weights, path)
            return
        raise RuntimeError(
            f"BoundTracker does not know the initial weights w_0 (the prior "
            f"mean): this fit starts at epoch {epoch}, not 0, and they were "
            "neither given (`initial_weights=`) nor saved (`state_dir=`, "
            "written at epoch 0). Using the current, trained weights would "
            "make the prior depend on the data. Received: state_dir="
            f"{self.state_dir!r}"
        )

    # -- the bound ------------------------------------------------------------

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        values = dict.fromkeys(self.log_keys(), math.nan)
        stats = self.tracker.statistics_for(epoch)
        accuracy = logs.get(self.accuracy_key)
        if accuracy is None and stats is not None and not self._seen_accuracy:
            raise ValueError(
                f"BoundTracker reads the robust training accuracy from "
                f"logs[{self.accuracy_key!r}], absent at epoch {epoch}: place a "
                "RobustEvaluation(x_train_subset, y_train_subset, "
                "prefix='train_') before BoundTracker in the callback list, or "
                "pass accuracy_key='robust_accuracy' (the running accuracy on "
                f"the training batches). Received: logs keys {sorted(logs)}"
            )
        if accuracy is not None:
            self._seen_accuracy = True
        if stats is not None and accuracy is not None:
            accuracy = float(ops.convert_to_numpy(accuracy))
            if math.isfinite(accuracy):
                values.update(self._bound(epoch, stats, accuracy))
        logs.update(values)

    def _bound(self, epoch, stats, accuracy):
        if not 0.0 <= accuracy <= 1.0:
            # The theorem needs a risk in [0, 1]; a key that names another
            # quantity (a loss, say) must not be clipped into one.
            raise ValueError(
                f"BoundTracker reads an accuracy in [0, 1] from "
                f"logs[{self.accuracy_key!r}]; at epoch {epoch} it holds "
                f"{accuracy!r}. Received: accuracy_key={self.accuracy_key!r}")
        risk = 1.0 - accuracy
        weights = self._current_weights()
        if self.posterior == "diagonal":
            variance = [np.maximum(v, self.variance_floor) for v in stats.variance()]
            floored = sum(int(np.sum(v <= self.variance_floor)) for v in variance)
        else:
            overall = stats.summary()["overall"]
            variance = max(overall, self.variance_floor)
            # One variance for every parameter: all of them are raised or none.
            floored = (sum(int(np.size(w)) for w in weights)
                       if overall < self.variance_floor else 0)
        if floored and not self._warned_floor:
            self._warned_floor = True
            # Once a run, as documented: Python's default filter would show a
            # second run's word-for-word same warning never again in the
            # process, so the registry that remembers it is the run's own.
            caller = sys._getframe(1)
            warnings.warn_explicit(
                f"BoundTracker: {floored} parameters had a window variance "
                f"below variance_floor={self.variance_floor:g} at epoch {epoch} "
                "(they did not move) and were raised to it; `last['floored']` "
                "counts them at each epoch.", UserWarning,
                caller.f_code.co_filename, caller.f_lineno,
                module=caller.f_globals.get("__name__"), registry={},
                module_globals=caller.f_globals)
        kl = float(bounds.gaussian_kl(weights, variance, self.initial_weights,
                                      self.prior_variance))
        seeger = float(bounds.seeger_bound(risk, kl, self.n, self.delta))
        mcallester = float(bounds.mcallester_bound(risk, kl, self.n, self.delta))
        self.last = {"epoch": epoch, "empirical_risk": risk, "kl": kl,
                     "bound": seeger, "mcallester": mcallester,
                     "floored": floored}
        return {"pac_bayes_kl": kl, "pac_bayes_bound": seeger,
                "pac_bayes_bound_mcallester": mcallester}
