"""Figures of a run's history: the robust-overfitting picture at a glance."""

import collections.abc

import matplotlib.pyplot as plt
import numpy as np

from robustlab import validation
from robustlab.summary_statistics import mean_and_stderr

__all__ = [
    "PANELS",
    "STUDY_PANELS",
    "band",
    "close",
    "fork_widths",
    "gap_against_train_accuracy",
    "learning_curves",
    "mark_drops",
    "study_curves",
]

# (title, y label, [(log key, label)], log scale)
PANELS = (
    ("Accuracy", "accuracy", [("train_robust_accuracy", "robust train"),
                              ("val_robust_accuracy", "robust test"),
                              ("val_clean_accuracy", "clean test")], False),
    ("Robust loss", "loss", [("train_robust_loss", "train (eval attack)"),
                             ("val_robust_loss", "test"),
                             ("robust_loss", "train batches")], False),
    ("Curvature of the robust loss", "top Hessian eigenvalue",
     [("hessian_top_eig", "top eigenvalue")], False),
    ("Width of the weight cloud", "variance within an epoch",
     [("posterior_var", "all weights (mean)"),
      ("posterior_var_top", "along top eigenvector"),
      ("posterior_var_top_predicted", "predicted (heavy-ball)")], True),
    ("PAC-Bayes", "KL / 1000, bound",
     [("pac_bayes_kl", "KL(Q||P) / 1000"),
      ("pac_bayes_bound_mcallester", "bound, McAllester (unclipped)"),
      ("pac_bayes_bound", "bound, kl-inverse (1: vacuous)")], True),
    ("Optimisation", "value", [("learning_rate", "learning rate"),
                               ("awp_gamma", "AWP gamma"),
                               ("awp_perturbed_loss", "loss at w + v (AWP)")], True),
)


# Settings, the same in every run of a setting: not drawn against a reference.
_SETTINGS = ("learning_rate", "awp_gamma")

# Drawn on a linear axis of their own on the right of a log-scale panel: AWP's
# gamma is 0 throughout its warm-up, which a log axis cannot show.
_LINEAR_TWIN = {"awp_gamma": "AWP gamma"}
_TWIN_NOTE = " (right axis, linear)"

# Measured along the probe's top eigenvector: in a window right after a probe
# the direction is fresh; later windows reuse it while it turns (at a large
# learning rate it turns within a few epochs), so they are drawn apart.
_ALONG_PROBED_DIRECTION = ("posterior_var_top", "posterior_var_top_predicted")
_OLDER_DIRECTION_NOTE = "hollow: an older probe's direction"


def _validated_epochs(validation_freq, length):
    """The 0-based epochs of a run of `length` epochs at which Keras's `fit`
    with `validation_freq` validates: every `validation_freq`-th, or the
    listed 1-based epochs."""
    if isinstance(validation_freq, (int, np.integer)) and not isinstance(validation_freq, bool):
        if validation_freq >= 1:
            return np.arange(validation_freq - 1, length, validation_freq)
    elif isinstance(validation_freq, collections.abc.Collection) and not isinstance(
            validation_freq, (str, bytes)) and all(
                isinstance(e, (int, np.integer)) and not isinstance(e, bool) and e >= 1
                for e in validation_freq):
        return np.array(sorted({int(e) - 1 for e in validation_freq if e <= length}),
                        dtype=int)
    raise ValueError(
        "Argument `validation_freq` must be an integer >= 1 or a list of 1-based "
        f"epochs (integers >= 1), as given to `fit`. Received: "
        f"validation_freq={validation_freq!r}")


def _logged_epochs(key, count, length, validated, validation_freq):
    """The epochs of a key's `count` values: every epoch, or those validated."""
    if count == length:
        return np.arange(length)
    if count == len(validated):
        return validated
    # Drawn from epoch 0, such a curve sat at the wrong epochs.
    raise ValueError(
        f"Argument `history` has {length} epochs but {count} values of {key!r}, "
        f"and `fit` with validation_freq={validation_freq!r} validates "
        f"{len(validated)} of them: pass `validation_freq` as given to `fit` (a "
        f"key logged at some epochs only is drawn at those). Received: "
        f"history[{key!r}] of length {count}")


def _fresh_direction_epochs(top_eigenvalues, n):
    """Of epochs 0..n-1, those whose window starts right after a probe (the
    top eigenvalue is finite at the epochs the probe measured), or None
    without probes."""
    if top_eigenvalues is None:
        return None
    probed = np.flatnonzero(np.isfinite(np.asarray(top_eigenvalues, dtype="float64")))
    return np.isin(np.arange(n), probed + 1)


def _plot_by_direction_age(ax, epochs, values, fresh, label=None, **style):
    """One line through every point, filled markers where `fresh`, hollow
    ones elsewhere (same colour, no legend entry of their own: the panel's
    title says it). The line."""
    (line,) = ax.plot(epochs, values, marker="o", markersize=3,
                      markevery=list(np.flatnonzero(fresh)), label=label, **style)
    older = ~fresh
    ax.plot(epochs[older], values[older], "o", markersize=3, color=line.get_color(),
            markerfacecolor="none")
    return line


def _per_epoch(name, values, length=None):
    """`values` as a float64 curve, one number per epoch (NaN: not logged);
    with `length`, as long as the curve it is aligned with."""
    array = validation._float_array(name, values)
    if array.ndim != 1:
        raise ValueError(
            f"Argument `{name}` must hold one number per epoch (a 1-D sequence). "
            f"Received: {name} of shape {array.shape}")
    if length is not None and len(array) != length:
        raise ValueError(
            f"Argument `{name}` must have one entry per epoch of `mean` "
            f"({length}). Received: {name} of length {len(array)}")
    return array


def _check_axes(ax):
    """`ax` must be one matplotlib Axes: a panel's array or None failed
    deep inside with AttributeError."""
    import matplotlib.axes

    if not isinstance(ax, matplotlib.axes.Axes):
        shown = (f"an array of Axes of shape {ax.shape}" if isinstance(ax, np.ndarray)
                 else repr(ax))
        raise TypeError(
            "Argument `ax` must be one matplotlib Axes (of `plt.subplots(...)`'s "
            "array of panels, pass one of them, e.g. `axes[0]`). "
            f"Received: ax={shown}")
    return ax


def _drop_epochs(drop_epochs):
    """The drops as a list of numbers (None: none)."""
    if drop_epochs is None:
        return []
    try:
        if isinstance(drop_epochs, (str, bytes)):
            raise TypeError
        epochs = list(drop_epochs)  # a 0-d array raises TypeError here too
    except TypeError:
        raise TypeError("Argument `drop_epochs` must be an iterable of epochs (numbers) "
                        f"or None. Received: drop_epochs={drop_epochs!r}") from None
    if epochs and validation._float_array("drop_epochs", epochs).ndim != 1:
        raise ValueError("Argument `drop_epochs` must be a flat sequence of epochs. "
                         f"Received: drop_epochs={drop_epochs!r}")
    return epochs


def _series(history, key):
    return _scaled(key, _per_epoch(f"history[{key!r}]", history[key]))


def _scaled(key, values):
    """A logged curve in the units its panel draws."""
    return values / 1000.0 if key == "pac_bayes_kl" else values


def _reference_curve(reference, key):
    """`reference[key]` as its (mean, stderr) curves."""
    curves = reference[key]
    if not isinstance(curves, (tuple, list)) or len(curves) != 2:
        raise ValueError(
            "Argument `reference` must map each key to a (mean, stderr) pair of "
            f"curves. Received: reference[{key!r}]={curves!r}")
    mean, stderr = (_scaled(key, _per_epoch(f"reference[{key!r}][{i}]", curve))
                    for i, curve in enumerate(curves))
    if len(stderr) != len(mean):
        raise ValueError(
            f"Argument `reference` must map each key to a mean and a standard error of one "
            f"length. Received: reference[{key!r}] of lengths {len(mean)} and {len(stderr)}")
    return mean, stderr


def learning_curves(history, drop_epochs=(), title=None, reference=None,
                    reference_label="reference: mean +/- s.e.", validation_freq=1):
    """A 2x3 figure of a run: accuracy, robust loss, curvature, weight-cloud
    width, PAC-Bayes KL and bound, and the optimisation settings; panels
    whose keys were not logged say so (and those logged only as NaN so far,
    e.g. by a run shorter than the probe's period, that they have no value
    yet). The cloud's width along the top
    eigenvector, measured and predicted, has filled markers in the epoch
    right after a probe and hollow ones in later epochs, which reuse that
    probe's direction while it may have turned. AWP's gamma, 0 during its
    warm-up, is drawn on a linear axis of its own, on the right of the
    (log-scale) optimisation panel.

    Args:
        history: per-epoch logs (a dict of lists, e.g. `History.history`).
        drop_epochs: epochs of learning-rate drops, drawn as dotted lines
            (any iterable of numbers, a NumPy array included; None for
            none).
        title: figure title.
        reference: `{key: (mean, stderr)}` of other runs of the same setting
            (`robustlab.studies.reference_curves`): each key the run logged
            is drawn against them, dashed in its colour with a band of one
            standard error, so one run (one draw) is seen against many.
        reference_label: the legend entry of the first reference curve of a
            panel.
        validation_freq: as given to `fit` (an integer >= 1, or the 1-based
            epochs of a list): a key with fewer values than the run has
            epochs (the `val_` keys of such a fit) is drawn at the epochs
            Keras validated. Its number of values must be theirs.

    Returns:
        The matplotlib Figure (close it with `close`).

    Example:

    >>> from robustlab.plots import close, learning_curves
    >>> fig = learning_curves({"val_robust_accuracy": [0.5, 0.6]}, (1,))
    >>> len(fig.axes)
    6
    >>> close(fig)
    """
    if not isinstance(history, collections.abc.Mapping):
        raise TypeError(
            "Argument `history` must be the per-epoch logs, a dict of lists "
            "(`History.history`, not the History). "
            f"Received: history={type(history).__name__}")
    if reference is not None and not isinstance(reference, collections.abc.Mapping):
        # A StudyResults failed with "not iterable"; a list of pairs was
        # ignored, and the figure drawn without the reference.
        raise TypeError(
            "Argument `reference` must be None or a mapping `{key: (mean, stderr)}`, "
            "as `robustlab.studies.reference_curves` gives. "
            f"Received: reference of type {type(reference).__name__}")
    reference = reference or {}
    # A drop the run never reached (a shortened run) would only stretch the axes.
    length = max((len(np.atleast_1d(v)) for v in history.values()), default=0)
    validated = _validated_epochs(validation_freq, length)
    drop_epochs = [e for e in _drop_epochs(drop_epochs) if not length or e < length]
    figure, axes = plt.subplots(2, 3, figsize=(15, 7.5), sharex=True)
    for ax, (name, ylabel, keys, log) in zip(axes.flat, PANELS):
        shown = on_main = referenced = older_marked = False
        twin = None
        for drawn, (key, label) in enumerate(k for k in keys if k[0] in history):
            values = _series(history, key)
            epochs = _logged_epochs(key, len(values), length, validated, validation_freq)
            finite = np.isfinite(values)
            if not finite.any():
                # Logged as NaN throughout (a run shorter than the probe's
                # period): nothing to draw, and no legend entry for it.
                continue
            # Probes run every few epochs (NaN between): markers, not gaps.
            # A single point (a one-epoch run) is a marker too, or nothing shows.
            style = "o-" if finite.sum() < max(len(values), 2) else "-"
            fresh = (_fresh_direction_epochs(history.get("hessian_top_eig"), length)
                     if key in _ALONG_PROBED_DIRECTION else None)
            fresh = None if fresh is None else fresh[epochs]
            # Named, not taken from the axis's cycle, which a line on the
            # twin axis would not advance: each key keeps its colour.
            color = f"C{drawn}"
            if log and key in _LINEAR_TWIN:
                if twin is None:
                    twin = ax.twinx()
                    twin.set_ylabel(f"{_LINEAR_TWIN[key]} (linear)")
                (line,) = twin.plot(epochs[finite], values[finite], style, markersize=3,
                                    label=label + _TWIN_NOTE, color=color)
            elif fresh is None or fresh[finite].all():
                (line,) = ax.plot(epochs[finite], values[finite], style, markersize=3,
                                  label=label, color=color)
                on_main = True
            else:
                line = _plot_by_direction_age(ax, epochs[finite], values[finite],
                                              fresh[finite], label=label, linestyle="-",
                                              color=color)
                older_marked = on_main = True
            shown = True
            if key in reference and key not in _SETTINGS:
                mean, stderr = _reference_curve(reference, key)
                band(ax, mean, stderr, label=None if referenced else reference_label,
                     color=line.get_color(), linestyle="--", linewidth=1)
                referenced = True
        if not shown:
            logged = any(key in history for key, _ in keys)
            ax.text(0.5, 0.5, "no value logged yet" if logged else "not logged",
                    ha="center", va="center", transform=ax.transAxes, color="0.5")
        elif log and on_main:
            ax.set_yscale("log")
        mark_drops(ax, drop_epochs)
        ax.set_title(f"{name}\n({_OLDER_DIRECTION_NOTE})" if older_marked else name,
                     fontsize=10)
        ax.set_ylabel(ylabel)
        handles, labels = ax.get_legend_handles_labels()
        if twin is not None:
            # One legend for both axes, the twin's lines last.
            more = twin.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        if handles:
            ax.legend(handles, labels, fontsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


# (title, y label, [(log key, label suffix, line style)], log scale) of
# `study_curves`: every arm draws each key of a panel.
STUDY_PANELS = (
    ("Robust test accuracy", "accuracy", [("val_robust_accuracy", "", "-")], False),
    ("Robust train accuracy (its own labels)", "accuracy",
     [("train_robust_accuracy", "", "-")], False),
    ("Clean test accuracy", "accuracy", [("val_clean_accuracy", "", "-")], False),
    ("Robust test loss", "loss", [("val_robust_loss", "", "-")], False),
    ("Robust train loss (eval attack)", "loss", [("train_robust_loss", "", "-")], False),
    # The kl-inverse bound sits at 1 (vacuous) in the quick setting: the
    # unclipped McAllester form shows how the bound moves.
    ("PAC-Bayes bound, McAllester form, unclipped", "bound on the robust 0-1 error",
     [("pac_bayes_bound_mcallester", "", "-")], False),
    ("Curvature of the robust loss", "top Hessian eigenvalue",
     [("hessian_top_eig", "", "-")], False),
    ("Width of the weight cloud, all weights", "variance within an epoch",
     [("posterior_var", "", "-")], True),
    ("Width along the top eigenvector", "variance within an epoch",
     [("posterior_var_top", ", measured", "-"),
      ("posterior_var_top_predicted", ", predicted (heavy-ball)", "--")], True),
)


def band(ax, mean, stderr, label=None, epochs=None, fresh=None, **style):
    """Draw a mean curve with a +/- one-standard-error band; epochs where the
    mean is NaN (not logged) are skipped, so probe curves join their points.
    With `fresh` (a boolean per epoch), the markers are filled where it is
    true and hollow elsewhere (a width measured along a probe's direction:
    right after the probe, or later).

    Args:
        ax: the matplotlib Axes to draw on.
        mean: the mean per epoch, a 1-D array-like (NaN where not logged).
        stderr: the standard error per epoch, aligned with `mean`; a NaN
            draws no band at that epoch.
        label: the legend entry of the line, or None.
        epochs: the x values, aligned with `mean`; default `0, 1, ...,
            len(mean) - 1`.
        fresh: None, or a boolean per epoch, aligned with `mean`.
        **style: passed on to `ax.plot` (e.g. `color`, `linestyle`); the
            band takes the line's colour.

    Returns:
        The line (a matplotlib `Line2D`).

    Example:

    >>> import matplotlib.pyplot as plt
    >>> import numpy as np
    >>> from robustlab.plots import band, close
    >>> figure, ax = plt.subplots()
    >>> line = band(ax, [0.5, np.nan, 0.7], [0.02, np.nan, 0.03],
    ...             label="robust test")
    >>> line.get_xdata().tolist(), line.get_marker()  # epoch 1 skipped
    ([0, 2], 'o')
    >>> close(figure)
    """
    _check_axes(ax)
    mean = _per_epoch("mean", mean)
    stderr = _per_epoch("stderr", stderr, len(mean))
    epochs = np.arange(len(mean)) if epochs is None else _per_epoch("epochs", epochs, len(mean))
    if fresh is not None:
        fresh = np.asarray(fresh)
        if fresh.dtype != bool or fresh.shape != mean.shape:
            raise ValueError(
                "Argument `fresh` must be None or one boolean per epoch of `mean` "
                f"({len(mean)}). Received: fresh={fresh!r}")
    finite = np.isfinite(mean)
    if fresh is not None and not fresh[finite].all():
        line = _plot_by_direction_age(ax, epochs[finite], mean[finite],
                                      fresh[finite], label=label, **style)
    else:
        # A single point draws no line: a marker, or nothing shows.
        marker = "o" if finite.sum() < max(len(mean), 2) else None
        (line,) = ax.plot(epochs[finite], mean[finite], marker=marker, markersize=3,
                          label=label, **style)
    spread = np.where(np.isfinite(stderr), stderr, 0.0)[finite]
    ax.fill_between(epochs[finite], mean[finite] - spread, mean[finite] + spread,
                    color=line.get_color(), alpha=0.2, linewidth=0)
    return line


def mark_drops(ax, drop_epochs):
    """Dotted vertical lines at the learning-rate drops.

    Args:
        ax: the matplotlib Axes to draw on.
        drop_epochs: the epochs of the drops (numbers on the x axis: any
            iterable, a NumPy array included); None or empty draws nothing.

    Returns:
        None. The first line has the legend entry "LR drop", the others
        none.

    Example:

    >>> import matplotlib.pyplot as plt
    >>> from robustlab.plots import close, mark_drops
    >>> figure, ax = plt.subplots()
    >>> mark_drops(ax, [40, 60])
    >>> [line.get_xdata()[0] for line in ax.lines]
    [40, 60]
    >>> ax.get_legend_handles_labels()[1]  # one entry for all the drops
    ['LR drop']
    >>> close(figure)
    """
    _check_axes(ax)
    for i, epoch in enumerate(_drop_epochs(drop_epochs)):
        ax.axvline(epoch, color="0.6", linestyle=":", linewidth=1,
                   label="LR drop" if i == 0 else None)


def study_curves(results, panels=STUDY_PANELS):
    """Learning curves of a study: every arm's mean over seeds with a
    standard-error band, the learning-rate drop marked; a panel whose key no
    arm logged says so.

    Args:
        results: a `robustlab.studies.StudyResults`.
        panels: `(title, y label, [(log key, label suffix, line style)],
            log scale)` tuples.

    Returns:
        The matplotlib Figure (close it with `close`).

    Example:

    >>> from robustlab.plots import close, study_curves
    >>> from robustlab.studies import reference
    >>> figure = study_curves(reference("awp-tradeoff"))
    >>> ax = figure.axes[0]
    >>> ax.get_title()
    'Robust test accuracy'
    >>> ax.get_legend_handles_labels()[1][:2]  # one line per arm
    ['AWP gamma 0 (quick)', 'AWP gamma 0.002']
    >>> close(figure)
    """
    _check_study_results(results)
    panels = _check_panels(panels)
    columns = 3
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(15, 3.8 * rows),
                                sharex=True, squeeze=False)
    # A shortened study ends before a drop that its settings list. (An empty
    # history has no length: its panels say "not logged".)
    length = max((len(values) for arm in results.study.arms
                  for h in results.runs(arm.experiment) for values in h.values()),
                 default=0)
    drops = sorted({e for arm in results.study.arms
                    for e in arm.config.lr_drop_epochs if e < length})
    for ax, (title, ylabel, keys, log) in zip(axes.flat, panels):
        shown = older_marked = False
        for index, arm in enumerate(results.study.arms):
            runs = results.runs(arm.experiment)
            for key, suffix, linestyle in keys:
                if not all(key in h for h in runs):
                    continue
                mean, stderr = results.curve(arm.experiment, key)
                if not np.isfinite(mean).any():
                    continue
                fresh = None
                if key in _ALONG_PROBED_DIRECTION and all("hessian_top_eig" in h for h in runs):
                    fresh = _fresh_direction_epochs(
                        results.curve(arm.experiment, "hessian_top_eig")[0], len(mean))
                if fresh is not None and not fresh[np.isfinite(mean)].all():
                    older_marked = True
                band(ax, mean, stderr, label=arm.label + suffix, color=f"C{index}",
                     linestyle=linestyle, fresh=fresh)
                shown = True
        if not shown:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center",
                    transform=ax.transAxes, color="0.5")
        elif log:
            ax.set_yscale("log")
        mark_drops(ax, drops)
        ax.set_title(f"{title}\n({_OLDER_DIRECTION_NOTE})" if older_marked else title,
                     fontsize=10)
        ax.set_ylabel(ylabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    figure.suptitle(f"{results.study.name} ({_label_noise_note(results)}): mean and "
                    f"standard error over {len(results.seeds)} seeds")
    figure.tight_layout()
    return figure


def fork_widths(results, seed=None):
    """Replica forks of a study: measured against predicted variance along
    the top eigenvector, window by window (one point per seed, joined to its
    prediction; where the windows have it, also the prediction for one
    shuffled pass, `ForkResult.predicted_top_shuffled`), and the cloud of one
    seed's replicas in the plane of the top two eigenvectors at the end of
    each window.

    Args:
        results: a `robustlab.studies.StudyResults` with forks: at least one
            window for every seed, at the same epochs for every seed (the
            seeds are compared window by window).
        seed: the seed whose cloud is drawn (default: the first).

    Returns:
        The matplotlib Figure (close it with `close`).

    Raises:
        ValueError: for a `seed` without forks, or `results` whose seeds
            have no windows, or windows at different epochs.

    Example:

    >>> from robustlab.plots import close, fork_widths
    >>> from robustlab.studies import reference
    >>> figure = fork_widths(reference("lr-drop-collapse"))
    >>> for ax in figure.axes[1:]:  # a cloud per window
    ...     print(ax.get_title())
    seed 0: 64 replicas after 15 steps, epoch 39 (lr 0.2)
    seed 0: 64 replicas after 15 steps, epoch 40 (lr 0.02)
    >>> close(figure)
    """
    _check_study_results(results)
    seeds = results.seeds
    seed = seeds[0] if seed is None else seed
    if seed not in results.forks:
        raise ValueError(f"Argument `seed` must be one of the study's seeds with forks: "
                         f"{sorted(results.forks)}. Received: seed={seed!r}")
    windows = results.forks[seed]
    epochs = {s: [w.epoch for w in results.forks[s]] if s in results.forks else None
              for s in dict.fromkeys([seed, *seeds])}
    received = f"Received: results with fork windows at epochs {epochs}"
    if not windows:
        raise ValueError(f"Argument `results` holds no fork window for seed {seed}: "
                         f"there is nothing to draw. {received}")
    for other in seeds:
        if epochs[other] != epochs[seed]:
            raise ValueError(
                "Argument `results` must hold fork windows at the same epochs for "
                f"every seed: seed {other} has "
                + ("none" if epochs[other] is None else f"them at epochs {epochs[other]}")
                + f", seed {seed} at epochs {epochs[seed]}. {received}")
    # (An array of Axes whatever the number of panels: a row of one would
    # otherwise be a bare Axes.)
    figure, axes = plt.subplots(1, 1 + len(windows), figsize=(5 * (1 + len(windows)), 4.2),
                                squeeze=False)
    axes = axes[0]
    ax = axes[0]
    shuffled = all(results.forks[s][i].predicted_top_shuffled is not None
                   for s in seeds for i in range(len(windows)))
    for i, window in enumerate(windows):
        measured = [results.forks[s][i].measured_top for s in seeds]
        predicted = [results.forks[s][i].predicted_top for s in seeds]
        x = np.full(len(seeds), 2.0 * i)
        ax.plot(x - 0.15, measured, "o", color="C0", label="measured" if i == 0 else None)
        ax.plot(x + 0.15, predicted, "s", color="C1",
                label="predicted, independent batches" if i == 0 else None)
        for s_index, (m, p) in enumerate(zip(measured, predicted)):
            ax.plot([x[s_index] - 0.15, x[s_index] + 0.15], [m, p], color="0.7", linewidth=0.8)
        if shuffled:
            passes = [results.forks[s][i].predicted_top_shuffled for s in seeds]
            ax.plot(x + 0.45, passes, "^", color="C2",
                    label="predicted, one shuffled pass" if i == 0 else None)
            for s_index, (m, p) in enumerate(zip(measured, passes)):
                ax.plot([x[s_index] - 0.15, x[s_index] + 0.45], [m, p], color="C2",
                        alpha=0.25, linewidth=0.8)
    ax.set_yscale("log")
    ax.set_xticks([2.0 * i for i in range(len(windows))])
    ax.set_xticklabels([f"epoch {w.epoch}\nlr {w.learning_rate:g}" for w in windows])
    ax.set_ylabel("variance across replicas along u")
    ax.set_title(f"Width along the top eigenvector ({len(seeds)} seeds, "
                 f"{_label_noise_note(results)})", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    limit = max(np.abs(w.path[:, -1, :]).max() for w in windows)
    for ax, window in zip(axes[1:], windows):
        end = window.path[:, -1, :]
        ax.scatter(end[:, 0], end[:, 1], s=10, alpha=0.7)
        ax.set_xlim(-1.1 * limit, 1.1 * limit)
        ax.set_ylim(-1.1 * limit, 1.1 * limit)
        ax.set_xlabel("along u1 (top eigenvector)")
        ax.set_ylabel("along u2")
        ax.set_title(f"seed {seed}: {window.replicas} replicas after {window.steps} steps, "
                     f"epoch {window.epoch} (lr {window.learning_rate:g})", fontsize=9)
        ax.grid(alpha=0.3)
    figure.tight_layout()
    return figure


def gap_against_train_accuracy(results):
    """The AWP trade-off of a study whose arms differ in gamma: the robust
    overfitting gap (best - final robust test accuracy) against the final
    robust train accuracy, one point per seed and each arm's mean with
    standard-error bars on both axes.

    Args:
        results: a `robustlab.studies.StudyResults`.

    Returns:
        The matplotlib Figure (close it with `close`).

    Raises:
        ValueError: for runs that did not log `train_robust_accuracy`
            (`robustlab.callbacks.RobustEvaluation`), the figure's x axis.

    Example:

    >>> from robustlab.plots import close, gap_against_train_accuracy
    >>> from robustlab.studies import reference
    >>> figure = gap_against_train_accuracy(reference("awp-tradeoff"))
    >>> figure.axes[0].get_legend_handles_labels()[1][:3]  # one entry per gamma
    ['gamma 0', 'gamma 0.002', 'gamma 0.005']
    >>> close(figure)
    """
    _check_study_results(results)
    all_summaries = {arm.experiment: results.summaries(arm.experiment)
                     for arm in results.study.arms}
    for name, summaries in all_summaries.items():
        lacking = [seed for seed, s in zip(results.seeds, summaries)
                   if "final_robust_train_accuracy" not in s]
        if lacking:
            raise ValueError(
                "Argument `results` must hold runs that logged `train_robust_accuracy` "
                "(robust train accuracy at the end is the x axis). Received: results "
                f"whose arm {name!r} lacks it for seeds {lacking}")
    figure, ax = plt.subplots(figsize=(6.5, 4.8))
    for index, arm in enumerate(results.study.arms):
        summaries = all_summaries[arm.experiment]
        train = 100 * np.array([s["final_robust_train_accuracy"] for s in summaries])
        gap = 100 * np.array([s["robust_overfitting_gap"] for s in summaries])
        color = f"C{index}"
        ax.plot(train, gap, "o", color=color, alpha=0.35, markersize=4)
        (x, dx), (y, dy) = mean_and_stderr(train), mean_and_stderr(gap)
        ax.errorbar(x, y, xerr=dx, yerr=dy, fmt="s", color=color, markersize=7,
                    capsize=3, label=f"gamma {arm.config.awp_gamma:g}")
    ax.set_xlabel("robust train accuracy at the end (points, its own labels)")
    ax.set_ylabel("best - final robust test accuracy (points)")
    ax.set_title(f"{results.study.name} ({_label_noise_note(results)}): the gap against "
                 f"fitting,\n{len(results.seeds)} seeds (mean +/- s.e.)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _label_noise_note(results):
    """How a study's training labels were made, for its figures' titles:
    "20% label noise", "clean labels", or, where the arms differ, a pointer
    to the legend (whose arm labels say it)."""
    notes = {arm.config.labels for arm in results.study.arms}
    return notes.pop() if len(notes) == 1 else "label noise per arm: see the legend"


def close(figure):
    """Release a figure's memory (matplotlib keeps every figure it made until
    it is closed).

    Args:
        figure: a matplotlib Figure, such as the functions here return.

    Example:

    >>> import matplotlib.pyplot as plt
    >>> from robustlab.plots import close
    >>> figure = plt.figure()
    >>> close(figure)
    >>> plt.fignum_exists(figure.number)
    False
    """
    plt.close(figure)


_STUDY_RESULTS_ATTRIBUTES = ("study", "seeds", "forks", "runs", "curve", "summaries")


def _check_study_results(results):
    # plots sits below studies in the layers, so the check is by what the
    # figures read: a History's dict raised AttributeError ('study').
    if not all(hasattr(results, name) for name in _STUDY_RESULTS_ATTRIBUTES):
        raise TypeError(
            "Argument `results` must be a robustlab.studies.StudyResults, such as "
            "`robustlab.studies.reference(name)` gives (for one run's history, "
            f"`learning_curves`). Received: results of type {type(results).__name__}")


def _check_panels(panels):
    """`panels` as a list of `(title, y label, [(key, suffix, style)], log)`."""
    try:
        panels = list(panels)
        valid = bool(panels) and all(
            len(panel) == 4 and all(len(key) == 3 for key in panel[2]) for panel in panels)
    except TypeError:
        valid = False
    if not valid:
        raise ValueError(
            "Argument `panels` must hold at least one `(title, y label, [(log key, "
            "label suffix, line style), ...], log scale)` tuple. "
            f"Received: panels={panels!r}")
    return panels
