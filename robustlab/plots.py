"""Figures of a run's history: the robust-overfitting picture at a glance."""

import matplotlib.pyplot as plt
import numpy as np


def _mark_drops(ax, drop_epochs):
    for i, epoch in enumerate(drop_epochs or ()):
        ax.axvline(epoch, color="0.6", linestyle=":", linewidth=1,
                   label="LR drop" if i == 0 else None)


def _plot_keys(ax, history, keys, labels):
    shown = False
    for key, label in zip(keys, labels):
        if key in history:
            values = np.asarray(history[key], dtype="float64")
            ax.plot(np.arange(len(values)), values, label=label)
            shown = True
    return shown


def learning_curves(history, drop_epochs=(), title=None):
    """A 2x2 figure: robust/clean accuracy, robust losses, the top Hessian
    eigenvalue (when logged) and the AWP numbers or learning rate.

    Args:
        history: per-epoch logs (a dict of lists, e.g. `History.history`).
        drop_epochs: epochs of learning-rate drops, drawn as dotted lines.
        title: figure title.

    Returns:
        The matplotlib Figure (close it with `close`).

    Example:

    >>> fig = learning_curves({"val_robust_accuracy": [0.5, 0.6]}, (1,))
    >>> len(fig.axes)
    4
    >>> close(fig)
    """
    figure, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True)
    (acc, loss), (curv, other) = axes
    _plot_keys(acc, history,
               ["train_robust_accuracy", "val_robust_accuracy", "val_clean_accuracy"],
               ["robust train", "robust test", "clean test"])
    acc.set_ylabel("accuracy")
    _plot_keys(loss, history,
               ["train_robust_loss", "val_robust_loss", "robust_loss"],
               ["robust train (eval)", "robust test", "robust train (batches)"])
    loss.set_ylabel("loss")
    if not _plot_keys(curv, history, ["hessian_top_eig"], ["top Hessian eigenvalue"]):
        curv.text(0.5, 0.5, "no curvature logged\n(add a HessianProbe)",
                  ha="center", va="center", transform=curv.transAxes, color="0.5")
    curv.set_ylabel("curvature")
    if not _plot_keys(other, history, ["awp_perturbed_loss", "robust_loss"],
                      ["loss at w + v (AWP)", "loss at w"]) or "awp_gamma" not in history:
        other.clear()
        _plot_keys(other, history, ["learning_rate"], ["learning rate"])
        other.set_yscale("log")
        other.set_ylabel("learning rate")
    else:
        other.set_ylabel("training loss")
    for ax in axes.flat:
        _mark_drops(ax, drop_epochs)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
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
