"""Figures of a run's history: the robust-overfitting picture at a glance."""

import matplotlib.pyplot as plt
import numpy as np

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
     [("pac_bayes_kl", "KL(Q||P) / 1000"), ("pac_bayes_bound", "bound (kl)")], True),
    ("Optimisation", "value", [("learning_rate", "learning rate"),
                               ("awp_gamma", "AWP gamma"),
                               ("awp_perturbed_loss", "loss at w + v (AWP)")], True),
)


def _series(history, key):
    values = np.asarray(history[key], dtype="float64")
    if key == "pac_bayes_kl":
        values = values / 1000.0
    return values


def learning_curves(history, drop_epochs=(), title=None):
    """A 2x3 figure of a run: accuracy, robust loss, curvature, weight-cloud
    width, PAC-Bayes KL and bound, and the optimisation settings; panels
    whose keys were not logged say so.

    Args:
        history: per-epoch logs (a dict of lists, e.g. `History.history`).
        drop_epochs: epochs of learning-rate drops, drawn as dotted lines.
        title: figure title.

    Returns:
        The matplotlib Figure (close it with `close`).

    Example:

    >>> fig = learning_curves({"val_robust_accuracy": [0.5, 0.6]}, (1,))
    >>> len(fig.axes)
    6
    >>> close(fig)
    """
    figure, axes = plt.subplots(2, 3, figsize=(15, 7.5), sharex=True)
    for ax, (name, ylabel, keys, log) in zip(axes.flat, PANELS):
        shown = False
        for key, label in keys:
            if key not in history:
                continue
            values = _series(history, key)
            epochs = np.arange(len(values))
            finite = np.isfinite(values)
            # Probes run every few epochs (NaN between): markers, not gaps.
            style = "o-" if finite.sum() < len(values) else "-"
            ax.plot(epochs[finite], values[finite], style, markersize=3, label=label)
            shown = True
        if not shown:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center",
                    transform=ax.transAxes, color="0.5")
        elif log:
            ax.set_yscale("log")
        for i, epoch in enumerate(drop_epochs or ()):
            ax.axvline(epoch, color="0.6", linestyle=":", linewidth=1,
                       label="LR drop" if i == 0 else None)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel(ylabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[1]:
        ax.set_xlabel("epoch")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return figure


def close(figure):
    """Release a figure's memory."""
    plt.close(figure)
