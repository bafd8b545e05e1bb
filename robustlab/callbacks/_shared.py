"""Helpers that robustlab's tracking callbacks share: the network a callback
tracks, its loss, the checks of probe data and of epoch schedules, and an
atomic `.npz` writer for the state a resumed run reads back."""

import numbers
import os
import warnings

import numpy as np

from robustlab import validation
from robustlab.adversarial import AdversarialModel


def classifier(model):
    """The network whose weights are tracked: `model.model` for an
    `AdversarialModel`, the model itself otherwise."""
    return model.model if isinstance(model, AdversarialModel) else model


def compiled_loss(model):
    loss = getattr(model, "loss", None) if getattr(model, "compiled", False) else None
    if loss is None:
        raise ValueError(
            "The fitted model must be compiled with a loss (the probes measure "
            "the compiled loss). Received: loss=None"
        )
    return loss


def epoch_seed(seed, epoch):
    """The seed of a measurement at `epoch`: `seed + epoch`, wrapped into
    [0, validation.MAX_SEED] so that a base seed near the top of the range
    stays valid (the same as `seed + epoch` for every smaller one)."""
    return (seed + epoch) % (validation.MAX_SEED + 1)


def check_probe_data(x, y, names=("x", "y")):
    x = np.asarray(x)
    y = np.asarray(y)
    validation.check_inputs(x, None, name=names[0])
    if x.ndim == 0:
        raise ValueError(
            f"Argument `{names[0]}` must be a batch of examples (first axis: "
            f"examples). Received: {names[0]} with shape {x.shape}"
        )
    if y.ndim == 0 or len(y) != len(x):
        raise ValueError(
            f"Arguments `{names[0]}` and `{names[1]}` must hold the same number of "
            f"examples. Received: {names[0]} with {len(x)} examples and "
            f"{names[1]} with shape {y.shape}"
        )
    if np.issubdtype(y.dtype, np.floating) and not np.all(np.isfinite(y)):
        raise ValueError(
            f"Argument `{names[1]}` must be finite (no NaN or inf). Received: "
            f"{names[1]} with {int(np.sum(~np.isfinite(y)))} non-finite values"
        )
    return x, y


def check_state_dir(state_dir):
    """`state_dir` as a str path, or None."""
    if state_dir is None:
        return None
    try:
        path = os.fspath(state_dir)
    except TypeError:
        path = None
    if not isinstance(path, str):
        raise TypeError(
            "Argument `state_dir` must be None or a folder path (a str or an "
            f"os.PathLike). Received: state_dir={state_dir!r}"
        )
    # An empty path is refused, not taken for the current folder.
    return validation.check_folder("state_dir", path)


def check_schedule(every, epochs):
    every = validation.check_int_at_least("every", every, 1)
    if epochs is None:
        return every, None
    try:
        listed = list(epochs)
    except TypeError:
        listed = None
    if (
        listed is None
        or not listed
        or not all(isinstance(e, numbers.Integral) and not isinstance(e, bool)
                   and e >= 0 for e in listed)
    ):
        raise ValueError(
            "Argument `epochs` must be None or a non-empty list of 0-based "
            f"epoch indices (integers >= 0). Received: epochs={epochs!r}"
        )
    return every, frozenset(int(e) for e in listed)


def is_selected(epoch, every, epochs, end_of_epoch):
    if epochs is not None:
        return epoch in epochs
    return (epoch + 1) % every == 0 if end_of_epoch else epoch % every == 0


def warn_if_never_selected(callback, total_epochs, end_of_epoch):
    """Warn when a schedule runs past the fit: nothing (or not everything
    asked for) would be measured."""
    if not total_epochs:
        return
    name = type(callback).__name__
    if callback.epochs is not None:
        late = sorted(e for e in callback.epochs if e >= total_epochs)
        if late:
            warnings.warn(
                f"{name}: epochs {late} are past the end of this fit "
                f"(epochs={total_epochs}); they will not be measured. "
                f"Received: epochs={sorted(callback.epochs)}", stacklevel=3)
    elif end_of_epoch and callback.every > total_epochs:
        warnings.warn(
            f"{name}: every={callback.every} is larger than the fit's "
            f"epochs={total_epochs}, so it never runs. Received: "
            f"every={callback.every}", stacklevel=3)


def atomic_savez(path, arrays):
    """`np.savez` to a temporary name, then rename: a reader sees the old
    file or the new one, never a half-written one."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = path + ".tmp.npz"
    np.savez(temporary, **arrays)
    os.replace(temporary, path)
