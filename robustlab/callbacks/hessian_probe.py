"""Top Hessian eigenvalue (and trace) of the robust and clean loss during `fit`."""

import dataclasses
import math
import os
import warnings

import keras
import numpy as np

from robustlab import attacks
from robustlab import curvature
from robustlab import losses
from robustlab import model_validation
from robustlab import validation
from robustlab.callbacks._shared import atomic_savez
from robustlab.callbacks._shared import check_probe_data
from robustlab.callbacks._shared import check_schedule
from robustlab.callbacks._shared import check_state_dir
from robustlab.callbacks._shared import classifier
from robustlab.callbacks._shared import compiled_loss
from robustlab.callbacks._shared import epoch_seed
from robustlab.callbacks._shared import is_selected
from robustlab.callbacks._shared import warn_if_never_selected

__all__ = [
    "HessianProbe",
    "ProbeResult",
]


@dataclasses.dataclass(frozen=True, eq=False)
class ProbeResult:
    """One curvature measurement of `HessianProbe`.

    Attributes:
        epoch: the epoch at whose end it was measured (the weights are those
            at the start of epoch `epoch + 1`).
        kind: `"robust"` (adversarial examples of the probe set) or `"clean"`.
        eigenvalue: the top (largest-magnitude) Hessian eigenvalue, the
            Rayleigh quotient of `eigenvector`.
        eigenvector: unit-norm list of float64 arrays aligned with the
            classifier's `trainable_variables`.
        iterations: Hessian-vector products used by the power iteration.
        converged: whether it met `tol` within `iterations`.
        trace: Hutchinson estimate of the Hessian trace (NaN when not asked).
        trace_stderr: its standard error (NaN when not asked or one probe).
    """

    epoch: int
    kind: str
    eigenvalue: float
    eigenvector: list
    iterations: int
    converged: bool
    trace: float = math.nan
    trace_stderr: float = math.nan


class HessianProbe(keras.callbacks.Callback):
    """Top Hessian eigenvalue of the robust (and/or clean) loss at chosen epochs.

    At the end of each chosen epoch the probe measures, on the fixed probe
    set `(x, y)` and at the current weights of the classifier (`model.model`
    of an `AdversarialModel`, or the fitted model itself):

    - robust (default): adversarial examples are crafted once with `attack`
      (default: the `AdversarialModel`'s `eval_attack`; the attack ascends
      the compiled loss, in the model's `attack_training_mode`), then held
      fixed; the Hessian is that of the compiled loss on them, with respect
      to the trainable weights (`robustlab.curvature.top_hessian_eigenvalue`
      with `loss=` the compiled loss, model in inference mode,
      regularisation losses excluded: an `L2(l)` adds `2 l` along every
      direction it covers).
    - clean (`clean=True`): the same on the unperturbed `x`.

    Logged (robust / clean):

    - `hessian_top_eig` / `hessian_top_eig_clean`: the eigenvalue of largest
      magnitude;
    - `hessian_iterations[_clean]`, `hessian_converged[_clean]` (1.0 or 0.0);
    - with `trace_probes > 0`: `hessian_trace[_clean]` and
      `hessian_trace_stderr[_clean]` (Hutchinson, Rademacher probes).

    On the epochs where the probe does not run, every key is logged as NaN:
    the keys are the same at every epoch, so `History` lists stay aligned
    with the epochs and `CSVLogger` (which fixes its columns from the first
    epoch's logs and would silently drop a key first seen later) writes
    every column; plot with NaN-aware code or drop the NaN rows.

    Warm start and reproducibility. Each power iteration starts from the
    previous eigenvector of the same kind (fewer iterations once the
    direction settles). Without a previous vector it starts from a standard
    normal vector drawn with seed `seed + epoch`, and the attack also uses
    `seed + epoch`, so no random state is carried from epoch to epoch. The
    one thing carried is the previous eigenvector: with `state_dir` it is
    written there at every probe and read back when a fit resumes (e.g. with
    `keras.callbacks.BackupAndRestore`), so a resumed run logs exactly the
    numbers of an uninterrupted one, also after a SIGKILL at any moment but
    one: BackupAndRestore writes the weights and then, separately, the epoch
    number, and a kill between the two resumes an epoch's weights as if they
    were those of the epoch before (`robustlab.run_checkpoint`, behind
    `robustlab train`, has no such gap). Without `state_dir`, the first probe
    after a resume starts from the seeded random vector instead: its
    eigenvalue agrees with the warm-started one to about `tol` once both
    converge, but iterations, the last digits (and, when the top two
    eigenvalues are close, possibly which eigenvector is found) differ, and
    a `PosteriorTracker` sharing the probe has no direction until that
    probe. `state_dir` can be the `BackupAndRestore` directory (then it is
    removed with it when training ends); it holds two files of two float64
    copies of the weights each (per kind): `hessian_probe.npz`, the newest
    result, and `hessian_probe.previous.npz`, the result that one started
    from (what a fit killed after the probe wrote, before the backup of the
    epoch, resumes from).

    Sharing with `PosteriorTracker`: pass the same probe object to both;
    the tracker reads `latest_before(epoch)` (the direction and eigenvalue
    measured at the end of an earlier epoch). Callbacks exchange nothing
    else.

    Place it before CSVLogger in the callback list.

    Args:
        x, y: the probe set (NumPy arrays; e.g. 256 training examples),
            finite and non-empty.
        every: run at the end of every `every`-th epoch (epochs `every - 1`,
            `2 every - 1`, ...), an integer >= 1. Ignored when `epochs` is
            given.
        epochs: an explicit list of (0-based) epochs at whose end to run.
        robust: measure the robust loss (needs `attack` or an
            `AdversarialModel`).
        clean: measure the clean loss.
        attack: a `robustlab.PGD` for the robust loss; default the
            `AdversarialModel`'s `eval_attack`.
        iterations: power-iteration cap (power steps), >= 1; a probe that
            reaches it logs one product more (the returned vector's
            Rayleigh quotient) and `hessian_converged` 0.
        tol: relative tolerance on the Rayleigh quotient, > 0.
        trace_probes: Hutchinson probes for the trace; 0 (default) skips it.
        batch_size: examples per compiled Hessian-vector product and attack
            call.
        seed: base seed, an integer in [0, 2**31 - 1]; the probe at the end
            of epoch `e` uses seed `seed + e` (modulo 2**31).
        warm_start: start each power iteration from the previous eigenvector.
        state_dir: optional directory (a str or an os.PathLike) where the
            latest result is kept for resumed fits (see above).

    Attributes:
        latest: the last robust `ProbeResult` (the clean one when
            `robust=False`), or None.
        latest_clean: the last clean `ProbeResult`, or None.

    Example:

    >>> import numpy as np, keras, robustlab
    >>> from robustlab.callbacks.hessian_probe import HessianProbe
    >>> net = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    >>> model = robustlab.AdversarialModel(net, robustlab.PGD(0.1, steps=2))
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(True))
    >>> x = np.random.default_rng(0).random((32, 4), dtype="float32")
    >>> y = np.arange(32) % 3
    >>> probe = HessianProbe(x, y, every=2, iterations=5)
    >>> h = model.fit(x, y, epochs=2, verbose=0, callbacks=[probe])
    >>> eig = h.history["hessian_top_eig"]  # NaN where the probe did not run
    >>> bool(np.isnan(eig[0])), eig[1] > 0
    (True, True)
    >>> probe.latest.epoch, len(probe.latest.eigenvector)  # kernel and bias
    (1, 2)
    """

    def __init__(
        self,
        x,
        y,
        *,
        every=5,
        epochs=None,
        robust=True,
        clean=False,
        attack=None,
        iterations=20,
        tol=1e-3,
        trace_probes=0,
        batch_size=256,
        seed=0,
        warm_start=True,
        state_dir=None,
    ):
        super().__init__()
        self.x, self.y = check_probe_data(x, y)
        self.every, self.epochs = check_schedule(every, epochs)
        robust = validation.check_bool("robust", robust)
        clean = validation.check_bool("clean", clean)
        if not (robust or clean):
            raise ValueError(
                "HessianProbe needs something to measure: robust=True and/or "
                f"clean=True. Received: robust={robust!r}, clean={clean!r}"
            )
        if attack is not None and not isinstance(attack, attacks.PGD):
            raise TypeError(
                "Argument `attack` must be a robustlab.PGD or None. "
                f"Received: attack={attack!r}"
            )
        self.robust = robust
        self.clean = clean
        self.attack = attack
        self.iterations = validation.check_int_at_least("iterations", iterations, 1)
        self.tol = validation.check_finite_positive("tol", tol)
        self.trace_probes = validation.check_int_at_least(
            "trace_probes", trace_probes, 0
        )
        self.batch_size = validation.check_int_at_least("batch_size", batch_size, 1)
        self.seed = validation.check_seed("seed", seed)
        self.warm_start = validation.check_bool("warm_start", warm_start)
        self.state_dir = check_state_dir(state_dir)
        self._results = {}  # kind -> ProbeResult
        self._restored = None  # candidate results read from state_dir

    # -- public state ----------------------------------------------------------

    @property
    def kinds(self):
        """The measured kinds, primary first: ("robust",), ("clean",) or both."""
        return tuple(k for k, on in (("robust", self.robust), ("clean", self.clean))
                     if on)

    @property
    def latest(self):
        """The last primary `ProbeResult` (robust, or clean when
        `robust=False`), or None."""
        return self._results.get(self.kinds[0])

    @property
    def latest_clean(self):
        """The last clean `ProbeResult`, or None."""
        return self._results.get("clean")

    def latest_before(self, epoch):
        """The primary result measured at the end of an epoch < `epoch`, or
        None: what a window starting at `epoch` may use. (After a resume from
        `state_dir` this picks the newest saved result older than `epoch`.)"""
        self._resolve_restored(epoch)
        result = self.latest
        if result is None or result.epoch >= epoch:
            return None
        return result

    def log_keys(self):
        """The keys this probe writes into `logs` (every epoch)."""
        keys = []
        for kind in self.kinds:
            suffix = "" if kind == "robust" else "_clean"
            keys += [f"hessian_top_eig{suffix}", f"hessian_iterations{suffix}",
                     f"hessian_converged{suffix}"]
            if self.trace_probes:
                keys += [f"hessian_trace{suffix}", f"hessian_trace_stderr{suffix}"]
        return keys

    # -- callback hooks ----------------------------------------------------------

    def on_train_begin(self, logs=None):
        model = self.model
        net = classifier(model)
        self._loss = compiled_loss(model)
        num_classes = model_validation.check_classifier(net, self.x[:1])
        sparse = validation.check_labels(self.y, num_classes, len(self.x), name="y")
        losses.check_labels_fit_loss(self._loss, sparse, np.shape(self.y))
        if self.robust:
            self._attack = self.attack or getattr(model, "eval_attack", None)
            if self._attack is None:
                raise ValueError(
                    "HessianProbe(robust=True) needs an attack: pass `attack=` "
                    "or fit a robustlab.AdversarialModel. Received: attack=None "
                    f"and a model of type {type(model).__name__}"
                )
            validation.check_inputs(self.x, self._attack.value_range, name="x")
        self._attack_training = bool(getattr(model, "attack_training_mode", False))
        warn_if_never_selected(self, self.params.get("epochs"), end_of_epoch=True)
        if not self._results and self.state_dir is not None:
            self._restored = self._read_state(net)

    def on_epoch_begin(self, epoch, logs=None):
        self._resolve_restored(epoch)

    def on_epoch_end(self, epoch, logs=None):
        values = dict.fromkeys(self.log_keys(), math.nan)
        if is_selected(epoch, self.every, self.epochs, end_of_epoch=True):
            started_from = dict(self._results)
            for kind in self.kinds:
                result = self._measure(kind, epoch)
                self._results[kind] = result
                suffix = "" if kind == "robust" else "_clean"
                values[f"hessian_top_eig{suffix}"] = result.eigenvalue
                values[f"hessian_iterations{suffix}"] = float(result.iterations)
                values[f"hessian_converged{suffix}"] = float(result.converged)
                if self.trace_probes:
                    values[f"hessian_trace{suffix}"] = result.trace
                    values[f"hessian_trace_stderr{suffix}"] = result.trace_stderr
            if self.state_dir is not None:
                self._write_state(started_from)
        if logs is not None:
            logs.update(values)

    # -- measurement ---------------------------------------------------------------

    def probe_inputs(self, kind, epoch):
        """The inputs whose Hessian a probe at the end of `epoch` measures:
        the adversarial examples (seed `seed + epoch`) for "robust", `x` for
        "clean". Computed at the current weights."""
        if kind == "clean":
            return self.x
        return attacks.run_attack(
            classifier(self.model), self.x, self.y, self._attack, loss=self._loss,
            training=self._attack_training, batch_size=self.batch_size,
            seed=epoch_seed(self.seed, epoch),
        )

    def _measure(self, kind, epoch):
        net = classifier(self.model)
        inputs = self.probe_inputs(kind, epoch)
        previous = self._results.get(kind)
        initial = previous.eigenvector if (self.warm_start and previous) else None
        estimate = curvature.top_hessian_eigenvalue(
            net, inputs, self.y, loss=self._loss, iterations=self.iterations,
            tol=self.tol, batch_size=self.batch_size, seed=epoch_seed(self.seed, epoch),
            initial_vector=initial,
        )
        trace = stderr = math.nan
        if self.trace_probes:
            trace_estimate = curvature.hessian_trace(
                net, inputs, self.y, probes=self.trace_probes, loss=self._loss,
                batch_size=self.batch_size, seed=epoch_seed(self.seed, epoch),
            )
            trace, stderr = trace_estimate.trace, trace_estimate.stderr
        return ProbeResult(
            epoch=int(epoch), kind=kind, eigenvalue=float(estimate.eigenvalue),
            eigenvector=[np.asarray(v, np.float64) for v in estimate.eigenvector],
            iterations=int(estimate.iterations), converged=bool(estimate.converged),
            trace=float(trace), trace_stderr=float(stderr),
        )

    # -- state for resumed fits -----------------------------------------------------

    def _paths(self):
        current = os.path.join(self.state_dir, "hessian_probe.npz")
        return current, current[:-4] + ".previous.npz"

    def _write_state(self, started_from):
        """Write the new results as the current file, and keep as the
        previous file the results `started_from` (those in force before
        this probe): a fit killed after this write but before its backup of
        this epoch resumes at this epoch and needs them."""
        current, previous = self._paths()
        if not started_from:
            if os.path.exists(previous):
                os.remove(previous)
        # A rename suffices when the current file holds them. It does not
        # after a resume from the previous file: the current one is then
        # newer than the backup (a killed attempt wrote it after the backup
        # this fit resumed from), and renaming it would lose what this fit
        # resumed from.
        elif _saved_epoch(current) == _epoch_of(started_from):
            os.replace(current, previous)
        elif _saved_epoch(previous) != _epoch_of(started_from):
            atomic_savez(previous, _state_arrays(started_from))
        atomic_savez(current, _state_arrays(self._results))

    def _read_state(self, net):
        shapes = [tuple(v.shape) for v in net.trainable_variables]
        candidates = []
        for path in self._paths():
            if not os.path.exists(path):
                continue
            try:
                with np.load(path) as data:
                    results = {}
                    for kind in self.kinds:
                        if f"{kind}/scalars" not in data:
                            continue
                        ep, value, its, conv, trace, stderr = data[f"{kind}/scalars"]
                        vector = [np.array(data[f"{kind}/vector_{i}"], np.float64)
                                  for i in range(len(shapes))]
                        if [v.shape for v in vector] != shapes:
                            raise ValueError("shapes differ from the model's")
                        results[kind] = ProbeResult(
                            int(ep), kind, float(value), vector, int(its),
                            bool(conv), float(trace), float(stderr))
            except (OSError, KeyError, ValueError) as error:
                warnings.warn(
                    f"HessianProbe ignores its state file {path!r}: {error}. The "
                    "next probe starts from a random vector.", stacklevel=2)
                continue
            if results:
                candidates.append(results)
        return candidates or None

    def _resolve_restored(self, epoch):
        """Adopt the newest restored result older than `epoch` (once)."""
        if self._restored is None:
            return
        candidates, self._restored = self._restored, None
        usable = [c for c in candidates if _epoch_of(c) < epoch]
        if usable:
            self._results = max(usable, key=_epoch_of)


def _epoch_of(results):
    """The epoch of a probe's results (kind -> ProbeResult)."""
    return max(r.epoch for r in results.values())


def _state_arrays(results):
    arrays = {}
    for kind, result in results.items():
        arrays[f"{kind}/scalars"] = np.array(
            [result.epoch, result.eigenvalue, result.iterations,
             result.converged, result.trace, result.trace_stderr], np.float64)
        for i, part in enumerate(result.eigenvector):
            arrays[f"{kind}/vector_{i}"] = part
    return arrays


def _saved_epoch(path):
    """The epoch of the results in a state file, None when there is none."""
    try:
        with np.load(path) as data:
            return max(int(data[name][0]) for name in data.files
                       if name.endswith("/scalars"))
    except (OSError, KeyError, ValueError):
        return None
