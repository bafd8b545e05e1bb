"""The per-epoch table and the progress bars: a bar on a terminal, none in a
log file or a pipe (where its redrawn lines would land among the rows), and
the rows and messages printed in every case."""

import io
import sys

import keras
import numpy as np
import pytest
import tqdm.notebook
import tqdm.std

from robustlab.progress import EpochTable, _is_notebook_bar, progress_bar
from robustlab.studies import _StudyProgress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_the_bar_is_off_on_a_stream_that_is_not_a_terminal():
    stream = io.StringIO()
    bar = progress_bar(total=3, file=stream)
    # Before `close`, which sets `disable` on every bar.
    assert bar.disable
    bar.update(3)
    bar.close()
    assert stream.getvalue() == ""


def test_the_bar_draws_on_a_terminal():
    stream = Terminal()
    bar = progress_bar(total=3, unit="epoch", file=stream)
    assert not bar.disable
    bar.update(3)
    bar.close()
    assert "3/3" in stream.getvalue()


def test_the_bar_follows_standard_error_by_default(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert not progress_bar(total=1).disable
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert progress_bar(total=1).disable


def test_an_explicit_disable_is_kept():
    assert not progress_bar(total=1, file=io.StringIO(), disable=False).disable


def test_notebook_bars_are_told_from_text_bars():
    assert _is_notebook_bar(tqdm.notebook.tqdm)
    assert not _is_notebook_bar(tqdm.std.tqdm)


def _fit_with_table(epochs, callbacks=()):
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    net.compile(optimizer="sgd", loss="mse")
    x = np.zeros((4, 2), "float32")
    net.fit(x, np.zeros((4, 1), "float32"), epochs=epochs, verbose=0,
            callbacks=[*callbacks, EpochTable()])


def test_the_table_prints_a_header_and_a_row_per_epoch_and_no_bar_off_a_terminal(capsys):
    _fit_with_table(3)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["epoch", "loss", "time"]
    assert [line.split()[0] for line in lines[1:]] == ["0", "1", "2"]
    assert [line.split()[1] for line in lines[1:]] == ["0.0000"] * 3
    assert "epoch/s" not in out + err and "\r" not in out + err


def test_columns_follow_the_first_epochs_logs_and_a_missing_value_prints_a_dash(capsys):
    class Probe(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                logs["hessian_top_eig"] = 2.5

    _fit_with_table(2, callbacks=[Probe()])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["epoch", "loss", "top.eig", "time"]
    assert lines[1].split()[2] == "2.500"
    assert lines[2].split()[2] == "-"


def _fit(callbacks, epochs=3, initial_epoch=0, stop_after=None):
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    net.compile(optimizer="sgd", loss="mse")

    class Stop(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 == stop_after:
                self.model.stop_training = True  # as a non-finite loss stops a run

    net.fit(np.zeros((4, 2), "float32"), np.zeros((4, 1), "float32"), epochs=epochs,
            initial_epoch=initial_epoch, verbose=0, callbacks=[*callbacks, Stop()])


def test_the_tables_bar_of_a_resumed_run_starts_at_its_first_epoch(monkeypatch):
    monkeypatch.setattr(sys, "stderr", Terminal())
    table, seen = EpochTable(), []

    class Peek(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((table._bar.n, table._bar.total))

    _fit([table, Peek()], epochs=3, initial_epoch=2)
    assert seen == [(3, 3)]


class _Config:
    def __init__(self, epochs):
        self.epochs = epochs


@pytest.mark.parametrize("first_run", [
    dict(initial_epoch=3),  # resumed from a checkpoint holding every epoch
    dict(stop_after=1),  # stopped early
    dict(initial_epoch=1),  # resumed midway
])
def test_a_studys_bar_counts_every_epoch_of_every_run_however_it_ended(monkeypatch,
                                                                       first_run):
    monkeypatch.setattr(sys, "stderr", Terminal())
    study = _StudyProgress([(None, _Config(3), 0), (None, _Config(3), 1)], verbose=1)
    _fit([study.callback("quick", 0)], **first_run)
    _fit([study.callback("quick", 1)])
    assert (study._bar.n, study._bar.total) == (6, 6)
    study.close()


def test_a_run_resumed_with_every_epoch_done_says_it_ended_after_its_last(monkeypatch,
                                                                          capsys):
    monkeypatch.setattr(sys, "stderr", Terminal())
    study = _StudyProgress([(None, _Config(3), 0)], verbose=1)
    _fit([study.callback("quick", 0)], initial_epoch=3)
    study.close()
    assert "quick seed 0: ended after epoch 3 of 3 (" in capsys.readouterr().out


@pytest.mark.parametrize("columns, error, message", [
    ([("loss", "loss")], ValueError, r"triples of strings. Received: a column \('loss', 'loss'\)"),
    ("loss", ValueError, r"triples of strings. Received: a column 'loss'"),
    (5, TypeError, r"a sequence of \(log key, title, format\) triples. Received: columns=5"),
    ([("loss", "loss", "{:d}")], ValueError,
     r"a format that str.format applies to a float, such as '\{:.3f\}' \(Unknown format code "
     r"'d'.*\). Received: a column \('loss', 'loss', '\{:d\}'\)"),
    ([("loss", "loss", "{value}")], ValueError, r"a format that str.format applies to a float"),
    ([("loss", "loss", "{0[1]}")], ValueError, r"a format that str.format applies to a float"),
    ([("loss", "loss", "{0.foo}")], ValueError, r"a format that str.format applies to a float"),
], ids=["a pair", "a key alone", "a number", "an integer format", "a named field", "an index",
        "an attribute"])
def test_a_column_that_is_not_a_key_title_and_float_format_is_named_when_made(
        columns, error, message):
    # Before: an unpacking or format error at the end of the fit's first epoch.
    with pytest.raises(error, match=message):
        EpochTable(columns)

