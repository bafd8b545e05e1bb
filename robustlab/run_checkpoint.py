"""Epoch checkpoints that survive a killed process.

A run killed at any moment (SIGKILL included) and started again with
`restore_checkpoint` continues from the last finished epoch and logs exactly
the numbers an uninterrupted run would have: the model's weights, its
optimizer state and its attack seeds come back from the checkpoint, NumPy data
is shuffled by a fixed function of (seed, epoch) (`robustlab.shuffling`), and
the history of the finished epochs is stored with them.

The state is every variable of the model (weights, non-trainable
statistics, the attack seeds) and of its optimizer, as arrays in one `.npz`
file, checked against the model's variables in order and shape when read.

Why not `keras.callbacks.BackupAndRestore`: it writes the weights and then,
separately, the epoch number, so a kill between the two resumes the weights of
epoch k as if they were those of epoch k - 1 (one epoch trained twice), and the
History of a resumed `fit` holds only the epochs after the resume. Here every
file of a checkpoint is written under a temporary name and renamed into place,
and a checkpoint only counts once the small `latest.json` that names it has
been renamed into place: a kill leaves either the previous checkpoint or the
new one, never a mixture. Each fit names its checkpoints afresh
(`epoch00003-<8 hex digits>`), so that a new run in the folder of an
earlier one never writes over the files `latest.json` still names.

Example:

>>> import keras, numpy as np, tempfile
>>> from robustlab.run_checkpoint import (
...     EpochCheckpoint, restore_checkpoint)
>>> def model():
...     net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
...     net.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
...     return net
>>> x, y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")
>>> scratch = tempfile.TemporaryDirectory()
>>> folder = scratch.name
>>> first = model()
>>> _ = first.fit(x, y, epochs=2, verbose=0, shuffle=False,
...               callbacks=[EpochCheckpoint(folder)])
>>> second = model()
>>> epoch, history, seconds = restore_checkpoint(second, folder)
>>> epoch, len(history["loss"])
(2, 2)
>>> same = lambda a, b: all(np.array_equal(u, v) for u, v in zip(a, b))
>>> same(first.get_weights(), second.get_weights())
True
>>> same(first.optimizer.variables, second.optimizer.variables)  # momentum too
True
>>> scratch.cleanup()
"""

import collections.abc
import csv
import json
import math
import os
import re
import time
import zipfile

import keras
import numpy as np

from robustlab import validation

__all__ = ["EpochCheckpoint", "read_history", "restore_checkpoint", "write_history",
           "write_json_atomically"]

_LATEST = "latest.json"
# Names without the token are those of checkpoints written before it.
_CHECKPOINT_FILE = re.compile(r"epoch\d{5}(-[0-9a-f]{8})?\.")


class EpochCheckpoint(keras.callbacks.Callback):
    """Write the model's state and the history so far after every epoch.

    Place it last among the callbacks, so that the logs it stores hold what
    every other callback added to them.

    Args:
        directory: the checkpoint folder (created). It keeps one checkpoint,
            the newest, and leaves any other file there alone.
        history: the history of epochs finished before this fit started
            (what `restore_checkpoint` returned), so the stored history is
            always the whole run's.
        elapsed: seconds the earlier attempts took, finite and >= 0 (stored
            with the checkpoint, so a resumed run can report its total time).
    """

    def __init__(self, directory, history=None, elapsed=0.0):
        super().__init__()
        self.directory = os.fspath(validation.check_folder("directory", directory))
        self.history = _check_history(history)
        self.elapsed = validation.check_finite_at_least("elapsed", elapsed, 0.0)
        self._started = None
        self._token = None

    def on_train_begin(self, logs=None):
        self._started = time.perf_counter()
        os.makedirs(self.directory, exist_ok=True)
        # A new token each fit, never that of the checkpoint latest.json
        # names now: its files are not written over before the new one counts.
        committed = _committed_name(self.directory)
        self._token = os.urandom(4).hex()
        while committed is not None and committed.endswith("-" + self._token):
            self._token = os.urandom(4).hex()

    def on_epoch_begin(self, epoch, logs=None):
        # The first epoch of this fit follows exactly the stored ones.
        done = len(next(iter(self.history.values()), []))
        if done != epoch:
            raise ValueError(
                f"EpochCheckpoint holds the history of {done} epochs but the fit "
                f"starts at epoch {epoch}: pass `initial_epoch` as returned by "
                f"`restore_checkpoint`. Received: initial_epoch={epoch}")

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, [math.nan] * epoch).append(float(value))
        for values in self.history.values():
            if len(values) < epoch + 1:
                values.append(math.nan)
        name = f"epoch{epoch + 1:05d}-{self._token}"
        state = os.path.join(self.directory, f"{name}.state.npz")
        with open(state + ".partial", "wb") as f:
            np.savez(f, **_state_arrays(self.model))
        os.replace(state + ".partial", state)
        elapsed = self.elapsed + time.perf_counter() - self._started
        write_json_atomically(os.path.join(self.directory, f"{name}.json"),
                               {"epoch": epoch + 1, "history": self.history,
                                "elapsed": elapsed})
        # The commit point: only now does the new checkpoint count.
        write_json_atomically(os.path.join(self.directory, _LATEST), {"checkpoint": name})
        # Older checkpoints go; other files (e.g. instruments' state kept in
        # the same folder) stay.
        for entry in os.listdir(self.directory):
            if _CHECKPOINT_FILE.match(entry) and not entry.startswith(name + "."):
                os.remove(os.path.join(self.directory, entry))


def restore_checkpoint(model, directory):
    """Load the newest checkpoint of `directory` into `model`.

    Args:
        model: a compiled, built model of the same architecture (its optimizer
            is built here if it is not yet, so that its state can be loaded;
            a model that is not compiled or not built is refused with a
            `ValueError` before anything is changed).
        directory: an `EpochCheckpoint` folder; missing or empty: nothing
            to restore.

    Returns:
        `(epoch, history, elapsed)`: the epochs finished (pass it to `fit` as
        `initial_epoch`), their history `{key: [value per epoch]}` and the
        seconds they took; `(0, {}, 0.0)` when there is no checkpoint.

    Raises:
        ValueError: for a model that is not compiled or not built, a
            checkpoint of another model, or one that cannot be read (a
            file damaged or missing); the model is left unchanged.
    """
    _check_restorable(model)
    # "" is no folder, not the current one (whose checkpoint it restored).
    directory = os.fspath(validation.check_folder("directory", directory))
    latest = os.path.join(directory, _LATEST)
    if not os.path.exists(latest):
        return 0, {}, 0.0
    reading = latest
    try:
        # Everything read before anything is assigned: a damaged file found
        # half-way would leave the model half restored.
        with open(latest) as f:
            name = json.load(f)["checkpoint"]
        reading = os.path.join(directory, f"{name}.json")
        with open(reading) as f:
            state = json.load(f)
        restored = (int(state["epoch"]), _history_from_json(state["history"]),
                    float(state.get("elapsed", 0.0)))
        path = reading = os.path.join(directory, f"{name}.state.npz")
        with np.load(path) as saved:
            paths = [str(p) for p in saved["paths"]]
            arrays = [saved[f"v{i}"] for i in range(len(paths))]
    except (OSError, EOFError, KeyError, TypeError, ValueError, AttributeError,
            zipfile.BadZipFile) as error:
        # The renames make a killed run's checkpoint whole; a full disk or a
        # crash of the machine (nothing is fsynced) need not.
        raise ValueError(
            f"The checkpoint in {directory} cannot be read: "
            f"{os.path.basename(reading)} is damaged or missing "
            f"({type(error).__name__}: {error}). Start the run again without resuming, "
            f"or remove the folder. Received: directory={directory!r}") from None
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    variables = _state_variables(model)
    # Matched by order and shape, not by name: Keras numbers names per
    # process (`sgd_1/dense_3_kernel_momentum`), so a rebuilt model's differ.
    shapes = [tuple(a.shape) for a in arrays]
    if shapes != [tuple(v.shape) for v in variables]:
        raise ValueError(
            f"The checkpoint {path} holds the state of another model or "
            f"optimizer: its variables {list(zip(paths, shapes))[:4]}... differ "
            f"from the model's {[(v.path, tuple(v.shape)) for v in variables][:4]}"
            f"... Received: directory={directory!r}")
    for variable, array in zip(variables, arrays):
        variable.assign(array)
    return restored


def _committed_name(directory):
    """The checkpoint `latest.json` of `directory` names, or None."""
    try:
        with open(os.path.join(directory, _LATEST)) as f:
            return str(json.load(f)["checkpoint"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_history(history):
    """`history` (None, or `{key: [number per epoch]}` with lists of one
    length, as `restore_checkpoint` returns it) as a dict of lists."""
    if history is None:
        return {}
    if not isinstance(history, collections.abc.Mapping):
        raise TypeError(
            "Argument `history` must be None or a dict `{key: [value per epoch]}`, as "
            "`restore_checkpoint` returns it. "
            f"Received: history of type {type(history).__name__}")
    checked = {}
    for key, values in history.items():
        if isinstance(values, (str, bytes)) or not isinstance(
                values, (collections.abc.Sequence, np.ndarray)) or any(
                np.ndim(v) != 0 or isinstance(v, (str, bytes)) for v in values):
            raise TypeError(
                "Argument `history` must hold a list of numbers per key. Received: "
                f"history[{key!r}]={values!r}")
        checked[key] = [float(validation._float_array(f"history[{key!r}]", v))
                        for v in values]
    lengths = {key: len(values) for key, values in checked.items()}
    if len(set(lengths.values())) > 1:
        # Only the shorter lists were padded at the next epoch: the keys
        # would stay misaligned.
        raise ValueError(
            "Argument `history` must hold one value per finished epoch under every "
            f"key. Received: history with lengths {lengths}")
    return checked


def _check_restorable(model):
    """Refuse, before anything is changed, a model whose state cannot take
    a checkpoint's: the optimizer must exist to receive its state, and the
    model's variables must exist for the optimizer to be built over (an
    optimizer built over none would refuse the model's variables in `fit`)."""
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Argument `model` must be a keras.Model. "
            f"Received: model of type {type(model).__name__}")
    missing = [what for what, ok in (
        ("compiled", getattr(model, "optimizer", None) is not None),
        ("built", model.built)) if not ok]
    if missing:
        raise ValueError(
            "Argument `model` must be compiled and built before a checkpoint "
            "is restored into it (its weights and its optimizer's state are "
            "loaded): compile it, and build it (e.g. with a keras.Input, or "
            f"`model.build(input_shape)`); it is "
            f"{'neither compiled nor built' if len(missing) == 2 else 'not ' + missing[0]}. "
            f"Received: model={model.name!r}")


def _state_variables(model):
    """Every variable a fit carries from epoch to epoch: the model's
    (weights, non-trainable statistics, seed generator states) and the
    optimizer's (iteration count, momentum...), in a fixed order."""
    optimizer = getattr(model, "optimizer", None)
    optimizer = [] if optimizer is None else list(optimizer.variables)
    unique = {}
    for variable in [*model.variables, *optimizer]:
        unique.setdefault(id(variable), variable)
    return list(unique.values())


def _state_arrays(model):
    # (An .npz of the arrays: a fifth of the time of `save_weights`' HDF5,
    # which the runner pays every epoch.)
    variables = _state_variables(model)
    arrays = {f"v{i}": keras.ops.convert_to_numpy(v) for i, v in enumerate(variables)}
    arrays["paths"] = np.array([v.path for v in variables])
    return arrays


def write_history(history, folder):
    """Write `history.json` and `history.csv` (one row per epoch, an `epoch`
    column first, as `keras.callbacks.CSVLogger` writes) into `folder`, each
    renamed into place once complete. history.json is standard JSON: a
    value that is not finite (NaN where a key was not logged, e.g. between
    probes) is null there (`read_history` reads it back as NaN); history.csv
    has `nan`.

    Args:
        history: `{key: [value per epoch]}`, every list of the same length
            (as `EpochCheckpoint.history` is: it pads the epochs a key
            missed with NaN).
        folder: where the two files go (it must exist).

    Raises:
        ValueError: when the lists differ in length, or `folder` is empty
            (not taken for the current folder); nothing is written.
    """
    validation.check_folder("folder", folder)  # "" is no folder, not the current one
    keys = sorted(history)
    lengths = {key: len(history[key]) for key in keys}
    # Checked before either file is written: a history.json beside no
    # history.csv, or a CSV cut to the first key's epochs, would pass for a
    # whole run's.
    if len(set(lengths.values())) > 1:
        raise ValueError(
            "Argument `history` must hold one value per epoch under every key: "
            "lists of the same length (pad the epochs a key missed with NaN, as "
            f"`EpochCheckpoint` does). Received: history with lengths {lengths}")
    epochs = len(history[keys[0]]) if keys else 0
    write_json_atomically(os.path.join(folder, "history.json"), history)
    path = os.path.join(folder, "history.csv")
    with open(path + ".partial", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", *keys])
        for epoch in range(epochs):
            writer.writerow([epoch, *(history[k][epoch] for k in keys)])
    os.replace(path + ".partial", path)


def read_history(folder):
    """The history `write_history` wrote into `folder` (its history.json):
    `{key: [float per epoch]}`, with NaN where the file has null.

    Raises:
        OSError: when there is no history.json; ValueError when it is not
            JSON.
    """
    with open(os.path.join(folder, "history.json")) as f:
        return _history_from_json(json.load(f))


def _history_from_json(history):
    # JSON's null is how `write_json_atomically` writes NaN.
    return {key: [math.nan if value is None else value for value in values]
            for key, values in history.items()}


def write_json_atomically(path, payload, indent=None):
    """Write `payload` as JSON to `path` (its folder created), under a
    temporary name renamed into place once complete: a killed process never
    leaves half a file.

    The file is standard JSON: a float that is not finite (NaN, an
    infinity) is written as null, since JSON has no such numbers (Python's
    `NaN` and `Infinity` tokens are refused by strict parsers: JavaScript,
    jq, Go). NumPy scalars and arrays are written as numbers and lists.
    Whoever reads the file back maps null to NaN where it expects a number
    (`read_history` does). An empty `path`, or a folder's, is a ValueError
    before anything is written."""
    if os.fspath(path) in ("", b"") or os.path.isdir(path):
        # Checked before anything is written: a stray `.partial` was left
        # beside the folder (or in the current one for "").
        raise ValueError(
            "Argument `path` must be the path of a file, not a folder or empty. "
            f"Received: path={path!r}")
    text = json.dumps(_standard_json(payload), indent=indent, sort_keys=True,
                      allow_nan=False)
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".partial", "w") as f:
        f.write(text)
    os.replace(path + ".partial", path)


def _standard_json(value):
    """`value` with every non-finite float as None, NumPy scalars and arrays
    as Python numbers and lists, tuples as lists; anything else as it is
    (`json` refuses what it cannot write)."""
    if isinstance(value, dict):
        return {key: _standard_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_standard_json(item) for item in value]
    if isinstance(value, np.ndarray):
        return _standard_json(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value
