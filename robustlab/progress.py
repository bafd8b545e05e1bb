"""A per-epoch table with a progress bar, for the command line and notebooks."""

import sys
import time

import keras

__all__ = [
    "DEFAULT_COLUMNS",
    "EpochTable",
    "progress_bar",
]


def _is_notebook_bar(cls):
    return any(c.__module__ == "tqdm.notebook" for c in cls.__mro__)


def progress_bar(**kwargs):
    """A `tqdm` progress bar (keyword arguments as tqdm's): a widget in a
    notebook, a redrawn line on a terminal, and off where its stream
    (standard error, or `file=`) is not a terminal (a log file, a pipe),
    where the redrawn lines would pile up among the printed rows. An
    explicit `disable=` is kept. Messages written through the bar (`write`)
    print in every case."""
    from tqdm.auto import tqdm

    if not _is_notebook_bar(tqdm):
        stream = kwargs.get("file") or sys.stderr
        isatty = getattr(stream, "isatty", None)
        kwargs.setdefault("disable", not (callable(isatty) and isatty()))
    return tqdm(**kwargs)


# (log key, column title, format)
DEFAULT_COLUMNS = (
    ("learning_rate", "lr", "{:.3g}"),
    ("loss", "loss", "{:.4f}"),
    ("train_robust_accuracy", "rob.train", "{:.3f}"),
    ("val_robust_accuracy", "rob.test", "{:.3f}"),
    ("val_robust_loss", "rob.test.loss", "{:.4f}"),
    ("val_clean_accuracy", "clean.test", "{:.3f}"),
    ("awp_gamma", "awp.gamma", "{:.4g}"),
    ("hessian_top_eig", "top.eig", "{:.3f}"),
)


class EpochTable(keras.callbacks.Callback):
    """Print one row per epoch of the chosen logs, under a tqdm progress bar
    (`progress_bar`: off where standard error is not a terminal).

    Columns whose key is not in the first epoch's logs are left out; a value
    missing later prints as "-".

    Args:
        columns: `(log key, title, format)` triples of strings, the format
            one that `str.format` applies to a float (e.g. `"{:.3f}"`).
    """

    def __init__(self, columns=DEFAULT_COLUMNS):
        super().__init__()
        self.columns = _checked_columns(columns)

    def on_train_begin(self, logs=None):
        self._bar = progress_bar(total=self.params.get("epochs"), unit="epoch", leave=False)
        self._first = True
        self._shown = None
        self._started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        if self._first:
            self._bar.update(epoch)  # a resumed run starts at its checkpoint's epoch
            self._first = False

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._shown is None:
            self._shown = [c for c in self.columns if c[0] in logs]
            header = "epoch  " + "  ".join(f"{t:>13}" for _, t, _ in self._shown)
            self._bar.write(header + "      time")
        cells = []
        for key, _, fmt in self._shown:
            value = logs.get(key)
            cells.append(f"{'-' if value is None else fmt.format(float(value)):>13}")
        elapsed = time.perf_counter() - self._started
        self._bar.write(f"{epoch:5d}  " + "  ".join(cells) + f"  {elapsed:7.1f}s")
        self._bar.update(1)

    def on_train_end(self, logs=None):
        self._bar.close()


def _checked_columns(columns):
    # Checked here, not at the first epoch's end, where a bad column would
    # stop a fit after its first epoch's work.
    if isinstance(columns, (str, bytes)):
        columns = [columns]
    try:
        columns = tuple(columns)
    except TypeError:
        raise TypeError("Argument `columns` must be a sequence of (log key, title, format) "
                        f"triples. Received: columns={columns!r}") from None
    for column in columns:
        if (not isinstance(column, (tuple, list)) or len(column) != 3
                or not all(isinstance(part, str) for part in column)):
            raise ValueError("Argument `columns` must be a sequence of (log key, title, format) "
                             f"triples of strings. Received: a column {column!r}")
        try:
            column[2].format(0.5)
        except (ValueError, TypeError, IndexError, KeyError, AttributeError) as error:
            raise ValueError(
                "Argument `columns` must give each column a format that str.format "
                f"applies to a float, such as '{{:.3f}}' ({error}). Received: a column "
                f"{column!r}") from None
    return columns
