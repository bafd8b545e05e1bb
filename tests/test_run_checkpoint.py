"""`robustlab.run_checkpoint`: `write_history` on histories it must refuse,
and `restore_checkpoint` on models it cannot restore into.

(The resume behaviour of `EpochCheckpoint` is tested in tests/test_resume.py.)
"""

import keras
import numpy as np
import pytest

from robustlab import run_checkpoint

X, Y = np.ones((8, 3), "float32"), np.zeros((8, 2), "float32")


@pytest.mark.parametrize("history", [
    # Sorted keys: the first one ("loss") is the shorter, which used to cut
    # the CSV to one row ...
    {"loss": [1.0], "val_loss": [2.0, 3.0]},
    # ... or a later one, which used to fail after history.json was written.
    {"loss": [1.0, 0.5], "val_loss": [2.0]},
])
def test_write_history_refuses_lists_of_different_lengths(tmp_path, history):
    lengths = {key: len(values) for key, values in sorted(history.items())}
    with pytest.raises(ValueError, match="`history`") as raised:
        run_checkpoint.write_history(history, tmp_path)
    assert str(raised.value).endswith(f"Received: history with lengths {lengths}")


def test_write_history_refusing_a_history_writes_no_file(tmp_path):
    with pytest.raises(ValueError):
        run_checkpoint.write_history({"loss": [1.0, 0.5], "val_loss": [2.0]}, tmp_path)
    assert list(tmp_path.iterdir()) == []


# -- paths: an empty one is no folder ---------------------------------------------------
# Each wrote into the current folder (write_json_atomically left a stray
# `.partial` there, or beside a folder it was given).


def test_write_history_refuses_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=r"`folder` must be a folder.*Received: folder=''"):
        run_checkpoint.write_history({"loss": [1.0]}, "")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", ["", "folder"])
def test_write_json_atomically_refuses_an_empty_path_or_a_folder(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "folder").mkdir()
    with pytest.raises(ValueError, match=rf"`path` must be the path of a file.*"
                                         rf"Received: path='{path}'"):
        run_checkpoint.write_json_atomically(path, {"a": 1})
    assert [p.name for p in tmp_path.iterdir()] == ["folder"]
    assert list((tmp_path / "folder").iterdir()) == []


def test_epoch_checkpoint_refuses_an_empty_directory():
    with pytest.raises(ValueError, match=r"`directory` must be a folder.*Received: directory=''"):
        run_checkpoint.EpochCheckpoint("")


@pytest.mark.parametrize("elapsed, error", [
    (-0.1, ValueError), (float("nan"), ValueError), (float("inf"), ValueError),
    ("0.1", TypeError), (True, TypeError)])
def test_epoch_checkpoint_refuses_elapsed_seconds_that_are_no_duration(tmp_path, elapsed, error):
    with pytest.raises(error, match=r"`elapsed` must be a finite number >= 0"):
        run_checkpoint.EpochCheckpoint(tmp_path, elapsed=elapsed)


# -- the model a checkpoint is restored into ------------------------------------------


def _checkpoint_folder(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    model.fit(X, Y, epochs=1, verbose=0, callbacks=[run_checkpoint.EpochCheckpoint(tmp_path)])
    return tmp_path


def _unbuilt_model():
    model = keras.Sequential([keras.layers.Dense(2)])  # no Input: no variables yet
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    return model


def test_restore_checkpoint_refuses_a_model_that_is_not_compiled(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)], name="uncompiled")
    with pytest.raises(ValueError, match="`model` must be compiled and built.*not compiled"
                       r".*Received: model='uncompiled'$"):
        run_checkpoint.restore_checkpoint(model, _checkpoint_folder(tmp_path))


def test_restore_checkpoint_refuses_a_model_that_is_not_built(tmp_path):
    with pytest.raises(ValueError, match="`model` must be compiled and built.*not built"):
        run_checkpoint.restore_checkpoint(_unbuilt_model(), _checkpoint_folder(tmp_path))


def test_a_refused_restore_leaves_the_model_able_to_fit(tmp_path):
    model = _unbuilt_model()
    with pytest.raises(ValueError):
        run_checkpoint.restore_checkpoint(model, _checkpoint_folder(tmp_path))
    history = model.fit(X, Y, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])


def _compiled_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    return model


def _cut_state(folder):
    (state,) = folder.glob("*.state.npz")
    state.write_bytes(state.read_bytes()[:100])
    return state.name


def _remove_state(folder):
    (state,) = folder.glob("*.state.npz")
    state.unlink()
    return state.name


@pytest.mark.parametrize("damage", [_cut_state, _remove_state], ids=["cut", "missing"])
def test_a_damaged_checkpoint_is_named_and_the_model_left_as_it_was(tmp_path, damage):
    # A cut file raised zipfile.BadZipFile; a missing one a FileNotFoundError
    # that the command reported as "could not write the results".
    folder = _checkpoint_folder(tmp_path)
    name = damage(folder)
    model = _compiled_model()
    before = [keras.ops.convert_to_numpy(v) for v in model.variables]
    with pytest.raises(ValueError, match=rf"The checkpoint in {folder} cannot be read: {name} is "
                                         rf"damaged or missing .*Start the run again without "
                                         rf"resuming, or remove the folder"):
        run_checkpoint.restore_checkpoint(model, folder)
    assert not model.optimizer.built
    for variable, value in zip(model.variables, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), value)
