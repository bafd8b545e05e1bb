"""Interactive explorers for the course notebooks (ipywidgets).

Each explorer separates what it computes (`figure(...)`, a plain matplotlib
figure for given settings) from the controls (`widget()`), so the drawing can
be tested without a browser. None of them trains a model: they redraw from
attacks on a fixed model (`AttackExplorer` caches every attack, so moving a
control back is instant), from closed forms and a small simulation (well
under a second a redraw), or from the reference results that ship with
robustlab. Their arguments are checked when they are built, with the
package's messages.

Needs the `course` extra (`pip install "robustlab[course]"`) for the
controls; the figures need only matplotlib.
"""

import collections.abc
import html
import io
import math
import time

import keras
import matplotlib.pyplot as plt
import numpy as np

from robustlab import attacks
from robustlab import bounds
from robustlab import plots
from robustlab import validation
from robustlab.course import exercises

__all__ = ["AttackExplorer", "BoundExplorer", "CloudExplorer", "ForkExplorer", "LiveCurves",
           "ReferenceExplorer"]


def _controls_module():
    try:
        import ipywidgets
    except ImportError as error:  # pragma: no cover - depends on the install
        raise ImportError(
            "The course's widgets need ipywidgets: pip install "
            "'robustlab[course]'") from error
    return ipywidgets


def _png(figure):
    """The figure as the PNG bytes Jupyter's inline backend would show."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=figure.dpi, bbox_inches="tight")
    return buffer.getvalue()


def _interactive(draw, controls, timings):
    """A VBox of `controls` over an image that `draw(**values)` redraws
    whenever a control changes; drawn once now.

    The figure goes into an `ipywidgets.Image`, not an `Output` widget: a
    headless executor (nbclient, which nbgrader uses) answers an Output
    widget's outputs with comm messages on the shell channel, and one sent
    while it awaits the cell's reply can leave that reply unseen until the
    per-cell timeout (a cell of 0.5 s then takes the whole 60 s of
    `nbgrader autograde`). An image is state only: nothing comes back.
    """
    ipywidgets = _controls_module()
    image = ipywidgets.Image(format="png",
                             layout=ipywidgets.Layout(max_width="100%", height="auto"))
    # A callback's exception would reach only the kernel's log: say it here.
    failure = ipywidgets.HTML()

    def redraw(change=None):
        started = time.perf_counter()
        open_before = set(plt.get_fignums())
        try:
            try:
                figure = draw(**{name: control.value for name, control in controls.items()})
            except BaseException:
                # A drawing that fails after plt.subplots leaves its figure open.
                for number in set(plt.get_fignums()) - open_before:
                    plt.close(number)
                raise
            try:
                image.value = _png(figure)
            finally:
                plt.close(figure)
        except Exception as error:
            failure.value = (f"<pre>Redrawing failed: {html.escape(type(error).__name__)}: "
                             f"{html.escape(str(error))}</pre>")
            if change is None:
                raise
            return
        failure.value = ""
        timings.append(time.perf_counter() - started)

    for control in controls.values():
        control.observe(redraw, names="value")
    redraw()
    return ipywidgets.VBox([ipywidgets.HBox(list(controls.values())), image, failure])


def _predicted_classes(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False)).argmax(axis=1)


def _nonempty_list(name, values, check):
    """`values` as a list of `check(name, v)`, at least one."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"Argument `{name}` must be a sequence of numbers. "
                        f"Received: {name}={values!r}")
    checked = [check(name, v) for v in values]
    if not checked:
        raise ValueError(f"Argument `{name}` must hold at least one value. "
                         f"Received: {name}={values!r}")
    return checked


def _study_results(results, name="results"):
    if not hasattr(results, "histories"):
        raise TypeError(
            f"Argument `{name}` must be a robustlab.studies.StudyResults, e.g. "
            f"robustlab.studies.reference(\"{results}\")" if isinstance(results, str) else
            f"Argument `{name}` must be a robustlab.studies.StudyResults. "
            f"Received: {name}={results!r}")
    return results


class AttackExplorer:
    """Attack a few digits with PGD and see what changes as eps and the
    number of steps move.

    Every setting is computed once (PGD without random start, step size
    2.5 eps / steps, on the model's input gradients), then cached.

    Args:
        models: `{name: keras classifier}` (logits or probabilities: see
            `robustlab.attacks`), e.g. a clean and an adversarially trained
            model.
        x, y: the images to attack, shape `(n, height, width, channels)`
            with 1 channel (drawn in grey) or 3 (drawn in colour); a few
            hundred at most: accuracy is measured on all of them. `y` class
            indices, shape `(n,)` or `(n, 1)`, or one-hot rows.
        eps_values: the eps the slider offers (at least one, each >= 0).
        steps_values: the numbers of steps the slider offers (each >= 1).
        shown: how many digits to draw (>= 1; at most all of them).
        value_range: the inputs' range `(low, high)`; `x` must lie in it.

    Attributes:
        redraw_seconds: the time of every redraw so far.

    Example:

    >>> import keras, numpy as np
    >>> from robustlab.course.widgets import AttackExplorer
    >>> net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
    ...                         keras.layers.Dense(10)])
    >>> x = np.random.default_rng(0).random((16, 8, 8, 1), dtype="float32")
    >>> explorer = AttackExplorer({"net": net}, x, np.arange(16) % 10,
    ...                           eps_values=[0.0, 0.1], steps_values=[1, 5])
    >>> x_adv, predicted, accuracy = explorer.attack("net", 0.1, 5)
    >>> bool(np.abs(x_adv - x).max() <= 0.1 + 1e-6)
    True
    """

    def __init__(self, models, x, y, *, eps_values, steps_values, shown=8,
                 value_range=(0.0, 1.0)):
        if not isinstance(models, collections.abc.Mapping) or not all(
                isinstance(name, str) and isinstance(model, keras.Model)
                for name, model in models.items()):
            raise TypeError("Argument `models` must be a dict {name: keras model}, "
                            "e.g. {'clean': net}. Received: models="
                            + (repr(models) if isinstance(models, collections.abc.Mapping)
                               else f"a {type(models).__name__}"))
        if not models:
            raise ValueError(f"Argument `models` must name at least one model. "
                             f"Received: models={models!r}")
        self.models = dict(models)
        self.value_range = validation.check_value_range(value_range)
        validation.check_inputs(x, self.value_range, name="x")
        self.x = np.asarray(x, dtype="float32")
        if self.x.ndim != 4 or self.x.shape[-1] not in (1, 3):
            # The figure draws images: (n, 8, 8) or (n, 64) failed only when
            # drawn, in matplotlib.
            raise ValueError("Argument `x` must be a batch of images, shape (n, height, "
                             "width, channels) with 1 or 3 channels. "
                             f"Received: x with shape {self.x.shape}")
        y = np.asarray(y)
        # Accuracy compares predicted classes with y: a (n, 1) column would
        # broadcast to an n x n comparison, one-hot rows not at all.
        if y.ndim == 2 and y.shape[1] > 1:
            y = y.argmax(axis=1)
        elif y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1 or len(y) != len(self.x):
            raise ValueError(
                f"Argument `y` must hold one label per input ({len(self.x)}): class "
                "indices of shape (n,) or (n, 1), or one-hot rows. "
                f"Received: y with shape {np.shape(y)}")
        self.y = y
        self.eps_values = _nonempty_list(
            "eps_values", eps_values,
            lambda name, v: validation.check_finite_at_least(name, v, 0.0))
        self.steps_values = _nonempty_list(
            "steps_values", steps_values,
            lambda name, v: validation.check_int_at_least(name, v, 1))
        self.shown = min(validation.check_int_at_least("shown", shown, 1), len(self.x))
        self.redraw_seconds = []
        self._cache = {}

    def attack(self, model_name, eps, steps):
        """`(x_adv, predicted classes, accuracy)` for one setting (cached):
        `model_name` one of `models`, `eps` >= 0, `steps` >= 1."""
        if model_name not in self.models:
            raise ValueError(f"Argument `model_name` must be one of {list(self.models)}. "
                             f"Received: model_name={model_name!r}")
        eps = validation.check_finite_at_least("eps", eps, 0.0)
        steps = validation.check_int_at_least("steps", steps, 1)
        key = (model_name, eps, steps)
        if key not in self._cache:
            model = self.models[model_name]

            def gradient(z):
                return attacks.loss_gradient(model, z, self.y)

            x_adv = self.x
            if eps > 0:
                x_adv = exercises.pgd_linf(gradient, self.x, eps, 2.5 * eps / steps,
                                           steps, self.value_range)
            predicted = _predicted_classes(model, x_adv)
            self._cache[key] = (x_adv, predicted, float(np.mean(predicted == self.y)))
        return self._cache[key]

    def figure(self, model_name, eps, steps):
        """Clean digits (top), the attacked ones with their predicted class
        (middle), the perturbation (bottom) and the accuracy."""
        _, clean_predicted, clean_accuracy = self.attack(model_name, 0.0, 1)
        x_adv, predicted, accuracy = self.attack(model_name, eps, steps)
        low, high = self.value_range or (None, None)  # None: each image's own range
        colour = self.x.shape[-1] == 3
        scale = max(eps, 1e-3)
        figure, axes = plt.subplots(3, self.shown, figsize=(1.35 * self.shown, 4.6),
                                    squeeze=False)
        for i in range(self.shown):
            rows = ((self.x[i], f"{clean_predicted[i]}", clean_predicted[i] == self.y[i]),
                    (x_adv[i], f"{predicted[i]}", predicted[i] == self.y[i]))
            for row, (image, title, right) in enumerate(rows):
                if colour:
                    # imshow takes RGB in [0, 1]: the value range mapped onto it.
                    lo, hi = (image.min(), image.max()) if low is None else (low, high)
                    axes[row, i].imshow(np.clip((image - lo) / max(hi - lo, 1e-12), 0, 1))
                else:
                    axes[row, i].imshow(image[..., 0], cmap="gray_r", vmin=low, vmax=high)
                axes[row, i].set_title(title, color="green" if right else "red",
                                       fontsize=10)
            delta = x_adv[i] - self.x[i]
            if colour:
                # Grey is no change; each channel's +/- eps is its full colour.
                axes[2, i].imshow(np.clip(0.5 + delta / (2 * scale), 0, 1))
            else:
                axes[2, i].imshow(delta[..., 0], cmap="coolwarm", vmin=-scale, vmax=scale)
            for row in range(3):
                axes[row, i].set_xticks([])
                axes[row, i].set_yticks([])
        axes[0, 0].set_ylabel("clean", fontsize=9)
        axes[1, 0].set_ylabel("attacked", fontsize=9)
        axes[2, 0].set_ylabel("x_adv - x", fontsize=9)
        figure.suptitle(
            f"{model_name}: PGD-{steps}, eps={eps:.3g}: accuracy {accuracy:.1%} on "
            f"{len(self.x)} digits (clean {clean_accuracy:.1%}); title = predicted "
            "class, red = wrong", fontsize=10)
        figure.tight_layout()
        return figure

    def widget(self):
        """The controls: model, eps and steps; the figure redraws on change."""
        ipywidgets = _controls_module()
        controls = {
            "model_name": ipywidgets.Dropdown(options=list(self.models),
                                              description="model"),
            "eps": ipywidgets.SelectionSlider(
                options=self.eps_values, value=self.eps_values[len(self.eps_values) // 2],
                description="eps", continuous_update=False),
            "steps": ipywidgets.SelectionSlider(
                options=self.steps_values, value=self.steps_values[-1],
                description="steps", continuous_update=False),
        }
        return _interactive(self.figure, controls, self.redraw_seconds)


class ReferenceExplorer:
    """Browse a study's reference results (or any `StudyResults`): one log
    key, every arm's mean with a standard-error band, and optionally the
    seeds one by one, the learning-rate drop marked and, for accuracy
    curves, the best epoch of each mean.

    Args:
        results: a `robustlab.studies.StudyResults` (e.g.
            `robustlab.studies.reference("robust-overfitting")`).
        keys: the log keys offered (a sequence of names), each logged in
            every run. `None` (the default) offers those of
            `DEFAULT_KEYS` that were.

    Attributes:
        redraw_seconds: the time of every redraw so far.
    """

    DEFAULT_KEYS = ("val_robust_accuracy", "train_robust_accuracy",
                    "val_robust_loss", "val_clean_accuracy")

    def __init__(self, results, keys=None):
        self.results = _study_results(results)
        if keys is not None and not isinstance(keys, (tuple, list)):
            raise TypeError("Argument `keys` must be a sequence of log keys, e.g. "
                            f"({keys!r},). Received: keys={keys!r}")
        runs = [h for arm_runs in self.results.histories.values() for h in arm_runs]
        logged = set.intersection(*(set(h) for h in runs)) if runs else set()
        if keys is None:
            self.keys = [k for k in self.DEFAULT_KEYS if k in logged]
        else:
            # A key asked for by name and not offered was a misspelling
            # the dropdown hid without a word.
            missing = [k for k in keys if k not in logged]
            if missing:
                raise ValueError(
                    f"Argument `keys` must name keys logged in every run; {missing} "
                    f"{'is' if len(missing) == 1 else 'are'} not (logged in every run: "
                    f"{sorted(logged)}). Received: keys={keys!r}")
            self.keys = list(keys)
        if not self.keys:
            raise ValueError(
                f"None of the keys {list(self.DEFAULT_KEYS if keys is None else keys)} was "
                f"logged in every run. Received: keys={keys!r}")
        self.redraw_seconds = []

    def figure(self, key, seeds_shown=False):
        figure, ax = plt.subplots(figsize=(8, 4.2))
        for arm in self.results.study.arms:
            stacked = self.results.stacked(arm.experiment, key)
            mean, stderr = self.results.curve(arm.experiment, key)
            line = plots.band(ax, mean, stderr, label=f"{arm.label}, mean +/- s.e.")
            if seeds_shown:
                for row in stacked:
                    # A probe's key is NaN between probes: joined at its
                    # finite points, as the band is (else no segment shows).
                    finite = np.isfinite(row)
                    ax.plot(np.flatnonzero(finite), row[finite], color=line.get_color(),
                            alpha=0.25, linewidth=0.8)
            if key.endswith("accuracy"):
                best = int(np.nanargmax(mean))
                ax.plot([best], [mean[best]], "v", color=line.get_color(), markersize=9)
        plots.mark_drops(ax, sorted({e for a in self.results.study.arms
                                     for e in a.config.lr_drop_epochs}))
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.set_title(f"{key}: {len(self.results.seeds)} seeds"
                     + (" (triangle: best epoch of the mean)" if key.endswith("accuracy") else ""),
                     fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        figure.tight_layout()
        return figure

    def widget(self):
        ipywidgets = _controls_module()
        controls = {
            "key": ipywidgets.Dropdown(options=self.keys, description="curve"),
            "seeds_shown": ipywidgets.Checkbox(value=False, description="each seed"),
        }
        return _interactive(self.figure, controls, self.redraw_seconds)


def _live_panels(panels):
    """`panels` as `[(title, [(key, label), ...]), ...]`, or a TypeError
    naming the form: keys without labels were taken, and failed at the first
    redraw with "too many values to unpack"; a 2-letter key was read as a
    key and its label."""
    def is_pair(item):
        return (isinstance(item, (tuple, list)) and len(item) == 2
                and all(isinstance(part, str) for part in item))

    def is_panel(panel):
        return (isinstance(panel, (tuple, list)) and len(panel) == 2
                and isinstance(panel[0], str) and isinstance(panel[1], (tuple, list))
                and all(is_pair(item) for item in panel[1]))

    if isinstance(panels, (str, bytes)) or not isinstance(panels, (tuple, list)) or not (
            panels and all(is_panel(panel) for panel in panels)):
        raise TypeError(
            "Argument `panels` must be a list of (title, [(log key, label), ...]), e.g. "
            "[('Loss', [('loss', 'train'), ('val_loss', 'test')])]. "
            f"Received: panels={panels!r}")
    return [(title, [tuple(item) for item in keys]) for title, keys in panels]


class LiveCurves(keras.callbacks.Callback):
    """Learning curves drawn while `fit` runs, redrawn in place every few
    epochs, and the logs of every epoch kept as arrays.

    A callback that only observes: it reads `logs` and draws.

    Args:
        panels: `(title, [(log key, label), ...])` per panel.
        every: redraw every this many epochs (and at the end); >= 1.
        drop_epochs: learning-rate drops to mark.
        display: False records without drawing (e.g. in a script).

    Attributes:
        history: `{log key: float64 array over epochs}`, NaN in the epochs
            where the key was not logged (e.g. evaluation every 2 epochs).
        epochs: the epoch of each entry of those arrays (the 0-based index
            `fit` passes: a fit from `initial_epoch=5` starts at 5).
        epochs_seen: number of epochs recorded.

    Used in several `fit` calls, the curves go on from each fit's first
    epoch: a fit from `initial_epoch` past the last epoch recorded adds to
    them, one from an epoch already recorded (a fit from 0 again) replaces
    that epoch and those after it. Each fit draws in the output of the cell
    that runs it.
    """

    def __init__(self, panels, every=5, drop_epochs=(), display=True):
        super().__init__()
        self.panels = _live_panels(panels)
        self.every = validation.check_int_at_least("every", every, 1)
        self.drop_epochs = tuple(plots._drop_epochs(drop_epochs))
        self.display = bool(display)
        self._rows = []
        self._epochs = []
        self._handle = None

    @property
    def epochs_seen(self):
        return len(self._rows)

    @property
    def epochs(self):
        return np.array(self._epochs, dtype=np.int64)

    @property
    def history(self):
        keys = sorted({k for row in self._rows for k in row})
        return {k: np.array([float(row.get(k, math.nan)) for row in self._rows])
                for k in keys}

    def on_train_begin(self, logs=None):
        # A display handle updates the cell that first drew it: a second fit
        # would redraw into an earlier cell's output and show nothing.
        self._handle = None

    def on_epoch_end(self, epoch, logs=None):
        epoch = int(epoch)
        # A second fit from epoch 0 had its curves appended to the first's:
        # the lines ran back from the last epoch to 0.
        kept = sum(1 for e in self._epochs if e < epoch)
        if kept < len(self._epochs):
            del self._rows[kept:], self._epochs[kept:]
        self._rows.append({k: float(v) for k, v in (logs or {}).items()
                           if np.ndim(v) == 0})
        self._epochs.append(epoch)
        if self.display and (epoch + 1) % self.every == 0:
            self._draw()

    def on_train_end(self, logs=None):
        if self.display:
            self._draw()

    def figure(self):
        """The current curves as a matplotlib figure."""
        history = self.history
        figure, axes = plt.subplots(1, len(self.panels), figsize=(5 * len(self.panels), 3.6),
                                    squeeze=False)
        epochs = self.epochs
        last = int(epochs[-1]) + 1 if len(epochs) else 0
        total = (self.params or {}).get("epochs") or last
        for ax, (title, keys) in zip(axes[0], self.panels):
            for key, label in keys:
                if key not in history:
                    continue
                values = history[key]
                finite = np.isfinite(values)
                # At the epochs fit numbered, so that a fit from
                # initial_epoch > 0 meets the drop marks where they are.
                ax.plot(epochs[finite], values[finite], ".-", markersize=3, label=label)
            plots.mark_drops(ax, self.drop_epochs)
            ax.set_xlim(-1, max(total, 1))
            ax.set_title(title, fontsize=10)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
        figure.suptitle(f"epoch {last} of {total}", fontsize=10)
        figure.tight_layout()
        return figure

    def _draw(self):
        from IPython.display import display

        figure = self.figure()
        if self._handle is None:
            self._handle = display(figure, display_id=True)
        else:
            self._handle.update(figure)
        plt.close(figure)


class BoundExplorer:
    """What the kl-inverse PAC-Bayes bound needs to say something: move the
    empirical robust error, the KL (in nats) and the number of training
    examples n, and see the bound against n (at this KL) and against the KL
    (at this n), with the unclipped McAllester form beside it.

    Args:
        empirical_risk, kl, n: the starting point (e.g. a trained cloud's):
            an error in [0, 1), a KL >= 0 in nats, n >= 1 examples. The
            controls' ranges (error up to 0.99, KL 1 to 1e10 nats, n 100 to
            1e10) widen to hold it (a KL below 1 nat starts at 1, the
            smallest the KL control shows).
        delta: the bound's confidence parameter, in (0, 1).

    Attributes:
        redraw_seconds: the time of every redraw so far.
    """

    def __init__(self, empirical_risk=0.25, kl=1e6, n=1000, delta=0.05):
        risk = validation.check_finite_in("empirical_risk", empirical_risk, 0.0, 1.0,
                                          include_low=True)
        self.start = dict(empirical_risk=risk,
                          kl=validation.check_finite_at_least("kl", kl, 0.0),
                          n=validation.check_int_at_least("n", n, 1))
        self.delta = validation.check_finite_in("delta", delta, 0.0, 1.0)
        self.redraw_seconds = []

    def bound(self, empirical_risk, kl, n):
        """The kl-inverse bound (`robustlab.bounds.seeger_bound`)."""
        return bounds.seeger_bound(empirical_risk, kl, int(n), self.delta)

    def _against_n(self, empirical_risk, kl, ns):
        """The kl-inverse and McAllester bounds at each n of `ns` (as
        integers), in one vectorised kl inversion: the same floats as
        `bound` and `bounds.mcallester_bound` give n by n (each a bisection
        of its own: 60 of them took a redraw past a second)."""
        ns = np.asarray(ns).astype(np.int64)
        # The bounds' own budget and square-root bound, over an array of n
        # (their public functions take one n).
        budget = bounds._complexity(kl, ns, self.delta)
        mcallester = bounds._square_root_bound(empirical_risk, budget)
        return np.minimum(bounds.kl_inverse(empirical_risk, budget), mcallester), mcallester

    def figure(self, empirical_risk=0.25, kl=1e6, n=1000):
        """The two panels at an error in [0, 1), a KL >= 0 (nats) and n >= 1
        examples (a number: the control moves it in steps of its
        logarithm)."""
        empirical_risk = validation.check_finite_in(
            "empirical_risk", empirical_risk, 0.0, 1.0, include_low=True)
        kl = validation.check_finite_at_least("kl", kl, 0.0)
        n = validation.check_finite_at_least("n", n, 1.0)
        figure, (ax_n, ax_kl) = plt.subplots(1, 2, figsize=(13, 4))
        # Each panel spans its control's range (as `widget` sets it), so the
        # curve passes through the marker wherever the control stands (the
        # KL panel stopped at 1e8 nats, the control goes to 1e10).
        ns = np.logspace(min(2, math.floor(math.log10(n))), max(10, math.ceil(math.log10(n))), 60)
        kls = np.logspace(0, max(10, math.ceil(math.log10(max(kl, 1.0)))), 60)
        panels = (
            (ax_n, ns, self._against_n(empirical_risk, kl, ns), n,
             f"training examples n (KL = {kl:.3g} nats)"),
            (ax_kl, kls, (self.bound(empirical_risk, kls, n),
                          bounds.mcallester_bound(empirical_risk, kls, int(n), self.delta)),
             kl, f"KL(Q || P) in nats (n = {int(n):,})"),
        )
        for ax, xs, (seeger, mcallester), x, xlabel in panels:
            ax.semilogx(xs, seeger, label="kl-inverse bound")
            ax.semilogx(xs, np.minimum(mcallester, 1.5), color="C1", linestyle="--",
                        label="McAllester (unclipped, cut at 1.5)")
            ax.axhline(empirical_risk, color="0.5", linestyle=":", label="empirical robust error")
            ax.axhline(1.0, color="C3", linewidth=0.8)
            ax.axvline(x, color="k", linewidth=0.8)
            ax.set_xlabel(xlabel)
            ax.set_ylabel("bound on the robust error")
            ax.set_ylim(0, 1.55)
            ax.grid(alpha=0.3)
        ax_n.legend(fontsize=8, loc="lower left")
        value = self.bound(empirical_risk, kl, n)
        c = (kl + math.log(2 * math.sqrt(int(n)) / self.delta)) / int(n)  # the bound's n
        figure.suptitle(f"bound {value:.4f} at error {empirical_risk:.3g}, KL {kl:.3g} nats, "
                        f"n {int(n):,}: c = (KL + ln(2 sqrt(n) / delta)) / n = {c:.3g}",
                        fontsize=10)
        figure.tight_layout()
        return figure

    def widget(self):
        ipywidgets = _controls_module()
        slider = dict(continuous_update=False, readout_format=".3g")
        start = self.start
        # ipywidgets clamps a value outside a slider's range: the ranges
        # widen to hold the start instead (a KL below 1 nat starts at the
        # log slider's 1e0, the nearest it can show).
        controls = {
            "empirical_risk": ipywidgets.FloatSlider(value=start["empirical_risk"], min=0.0,
                                                     max=max(0.99, start["empirical_risk"]),
                                                     step=0.01,
                                                     description="error", **slider),
            "kl": ipywidgets.FloatLogSlider(
                value=max(start["kl"], 1.0), base=10, min=0,
                max=max(10, math.ceil(math.log10(max(start["kl"], 1.0)))),
                step=0.1, description="KL", **slider),
            "n": ipywidgets.FloatLogSlider(
                value=start["n"], base=10, min=min(2, math.floor(math.log10(start["n"]))),
                max=max(10, math.ceil(math.log10(start["n"]))), step=0.1,
                description="n", **slider),
        }
        return _interactive(self.figure, controls, self.redraw_seconds)


def _cloud_settings(lr, momentum, curvature, noise_variance):
    """The settings of `CloudExplorer`'s process, checked: a momentum of 1 or
    a curvature of 0 divided by zero in the stationary variance, a negative
    noise drew NaN limits."""
    return (validation.check_finite_in("lr", lr, 0.0),
            validation.check_finite_in("momentum", momentum, 0.0, 1.0, include_low=True),
            validation.check_finite_in("curvature", curvature, 0.0),
            validation.check_finite_at_least("noise_variance", noise_variance, 0.0))


class CloudExplorer:
    """The heavy-ball cloud under a learning-rate drop, from the closed forms
    and a simulation: move the learning rate, momentum, curvature and noise,
    and see the predicted variance over a schedule with a drop, next to a
    simulated cloud of iterates in two directions, a sharp one (curvature
    lambda) and a flat one (lambda / 10).

    Args:
        steps_before, steps_after: steps at the first learning rate and after
            the drop.
        drop_factor: the learning rate after the drop is lr / drop_factor
            (> 1: a drop).
        particles: simulated copies of the process (>= 2).
        batch_size: B of the noise s^2 / B (>= 1).
        seed: seed of the simulation (the same settings draw the same cloud).

    Attributes:
        redraw_seconds: the time of every redraw so far.
    """

    def __init__(self, steps_before=300, steps_after=300, drop_factor=10.0,
                 particles=400, batch_size=64, seed=0):
        self.steps_before = validation.check_int_at_least("steps_before", steps_before, 1)
        self.steps_after = validation.check_int_at_least("steps_after", steps_after, 1)
        self.drop_factor = validation.check_finite_in(
            "drop_factor", drop_factor, 1.0,
            why=" (the learning rate is divided by it at the drop)")
        self.particles = validation.check_int_at_least("particles", particles, 2)
        self.batch_size = validation.check_int_at_least("batch_size", batch_size, 1)
        self.seed = validation.check_seed("seed", seed)
        self.redraw_seconds = []

    def schedule(self, lr):
        return np.r_[np.full(self.steps_before, lr),
                     np.full(self.steps_after, lr / self.drop_factor)]

    def simulate(self, lr, momentum, curvature, noise_variance):
        """Iterates `(steps + 1, particles, 2)` of the scalar heavy-ball
        process along a sharp and a flat direction, from zero."""
        lr, momentum, curvature, noise_variance = _cloud_settings(
            lr, momentum, curvature, noise_variance)
        rng = np.random.default_rng(self.seed)
        lrs = self.schedule(lr)
        lam = np.array([curvature, curvature / 10.0])
        x = np.zeros((self.particles, 2))
        previous = np.zeros_like(x)
        path = [x]
        scale = np.sqrt(noise_variance / self.batch_size)
        for eta in lrs:
            noise = rng.normal(size=x.shape) * scale
            x, previous = x - eta * (lam * x + noise) + momentum * (x - previous), x
            path.append(x)
        return np.stack(path)

    def figure(self, lr=0.2, momentum=0.9, curvature=2.0, noise_variance=4.0):
        """The predicted variance and the simulated clouds at a learning rate
        > 0, a momentum in [0, 1), a curvature > 0 (the sharp direction's;
        the flat one has a tenth of it) and a gradient-noise variance >= 0.
        Settings where the process is unstable are drawn as such."""
        lr, momentum, curvature, noise_variance = _cloud_settings(
            lr, momentum, curvature, noise_variance)
        lrs = self.schedule(lr)
        steps = np.arange(1, len(lrs) + 1)
        figure, (ax, ax_before, ax_after) = plt.subplots(1, 3, figsize=(15, 4.2))
        unstable = lr * curvature >= 2 * (1 + momentum)
        for lam, label, color in ((curvature, "sharp direction (lambda)", "C3"),
                                  (curvature / 10, "flat direction (lambda / 10)", "C0")):
            if lr * lam >= 2 * (1 + momentum):
                # Its variance grows without bound (to inf, then NaN), which
                # would leave the log axis unreadable: the text below says so.
                continue
            predicted = exercises.heavy_ball_variance(lrs, momentum, lam, noise_variance,
                                                      self.batch_size)
            ax.plot(steps, predicted, color=color, label=label)
            for value, linestyle in ((lr, "--"), (lr / self.drop_factor, ":")):
                if value * lam < 2 * (1 + momentum):
                    ax.axhline(exercises.stationary_variance(
                        value, momentum, lam, noise_variance, self.batch_size),
                        color=color, linestyle=linestyle, linewidth=0.8)
        ax.axvline(self.steps_before, color="0.5", linestyle=":", label="LR drop")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("weight variance")
        ax.set_title("Predicted variance (dashed/dotted: stationary before/after)",
                     fontsize=9)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        if unstable:
            ax.text(0.5, 0.5, "lr x lambda >= 2 (1 + momentum): unstable\n(a variance that "
                    "grows without bound is not drawn)", ha="center",
                    transform=ax.transAxes, color="red")
            for axis in (ax_before, ax_after):
                axis.set_visible(False)
        else:
            path = self.simulate(lr, momentum, curvature, noise_variance)
            limit = max(np.abs(path[self.steps_before]).max(), 1e-12) * 1.2
            for axis, step, title in ((ax_before, self.steps_before, "just before the drop"),
                                      (ax_after, len(lrs), f"{self.steps_after} steps after")):
                cloud = path[step]
                axis.scatter(cloud[:, 1], cloud[:, 0], s=6, alpha=0.6)
                axis.set_xlim(-limit, limit)
                axis.set_ylim(-limit, limit)
                axis.set_xlabel("flat direction")
                axis.set_ylabel("sharp direction")
                axis.set_title(f"{self.particles} simulated runs, {title}", fontsize=9)
                axis.grid(alpha=0.3)
        figure.tight_layout()
        return figure

    def widget(self):
        ipywidgets = _controls_module()
        slider = dict(continuous_update=False, readout_format=".3g")
        controls = {
            "lr": ipywidgets.FloatLogSlider(value=0.2, base=10, min=-3, max=0, step=0.1,
                                            description="lr", **slider),
            "momentum": ipywidgets.FloatSlider(value=0.9, min=0.0, max=0.98, step=0.02,
                                               description="momentum", **slider),
            "curvature": ipywidgets.FloatLogSlider(value=2.0, base=10, min=-1, max=1.5,
                                                   step=0.1, description="curvature",
                                                   **slider),
            "noise_variance": ipywidgets.FloatLogSlider(value=4.0, base=10, min=-1, max=2,
                                                        step=0.1, description="noise s^2",
                                                        **slider),
        }
        return _interactive(self.figure, controls, self.redraw_seconds)


class ForkExplorer:
    """Step through replica forks of real training (`robustlab.forks`): the
    replicas' weights in the plane of the top two Hessian eigenvectors, step by
    step, before and after the learning-rate drop, on the same scale.

    Args:
        results: `StudyResults` with forks (e.g. the shipped
            `robustlab.studies.reference("lr-drop-collapse")`).

    Attributes:
        redraw_seconds: the time of every redraw so far.
    """

    def __init__(self, results):
        results = _study_results(results)
        if not results.forks:
            raise ValueError("These results hold no replica forks. Received: "
                             f"results={results!r}")
        self.results = results
        self.redraw_seconds = []

    def figure(self, seed, step):
        """The replicas of every window of `seed` (one of the forked seeds)
        after `step` steps (>= 0; past a window's end, its end)."""
        if seed not in self.results.forks:
            raise ValueError(f"Argument `seed` must be a forked seed, one of "
                             f"{sorted(self.results.forks)}. Received: seed={seed!r}")
        step = validation.check_int_at_least("step", step, 0)
        windows = self.results.forks[seed]
        limit = max(np.abs(w.path).max() for w in windows) * 1.1
        figure, axes = plt.subplots(1, len(windows), figsize=(5.2 * len(windows), 4.6),
                                    squeeze=False)
        for ax, window in zip(axes[0], windows):
            shown = min(step, window.steps)
            trail = window.path[:, : shown + 1, :]
            for replica in trail:
                ax.plot(replica[:, 0], replica[:, 1], color="0.8", linewidth=0.5)
            ax.scatter(trail[:, -1, 0], trail[:, -1, 1], s=12, color="C0", zorder=3)
            ax.set_xlim(-limit, limit)
            ax.set_ylim(-limit, limit)
            ax.set_xlabel("along u1 (top eigenvector)")
            ax.set_ylabel("along u2")
            spread = np.var(trail[:, -1, 0], ddof=1) if shown else 0.0
            ax.set_title(f"epoch {window.epoch}, lr {window.learning_rate:g}: step {shown} of "
                         f"{window.steps}\nvariance along u1 {spread:.2e} (predicted at the "
                         f"end {window.predicted_top:.2e})", fontsize=9)
            ax.grid(alpha=0.3)
        figure.suptitle(f"seed {seed}: {windows[0].replicas} replicas forked from one state",
                        fontsize=10)
        figure.tight_layout()
        return figure

    def widget(self):
        ipywidgets = _controls_module()
        steps = max(w.steps for windows in self.results.forks.values() for w in windows)
        controls = {
            "seed": ipywidgets.Dropdown(options=sorted(self.results.forks), description="seed"),
            "step": ipywidgets.IntSlider(value=steps, min=0, max=steps, description="step",
                                         continuous_update=False),
        }
        return _interactive(self.figure, controls, self.redraw_seconds)
