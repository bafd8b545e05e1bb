"""Resumable runs: a run, a study or a fork killed at any moment (SIGKILL
included) and resumed ends with the results of an uninterrupted one.

The kill tests start a real `robustlab` process, wait until it has written
a checkpoint, SIGKILL it, and resume it with `--resume`: the histories must
be identical, number for number, to an uninterrupted run in this process.
"""

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from robustlab import backend
from robustlab import experiments
from robustlab import forks
from robustlab import provenance
from robustlab import run_checkpoint
from robustlab import studies
from tests.test_studies import TINY
from tests.test_studies import TINY_STUDY
from tests.test_studies import folder_contents

EPOCHS, PROBE_EVERY = 6, 2

# The kill tests start four robustlab processes each; on JAX every one of them
# compiles its steps anew (minutes on two cores). The checkpoint does not
# depend on the backend, and JAX resumes are checked in this process below
# (the forks, the finished run) and in run_checkpoint's doctest.
kills_processes = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="process-kill tests run on the TensorFlow backend (see above)")
# The fork bookkeeping is plain Python around `forks.fork` (tested on both
# backends in test_forks); its resume tests train three runs each.
bookkeeping = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="backend-independent bookkeeping, tested on TensorFlow")


def robustlab_command(*args):
    """The installed `robustlab` command (the module when not installed)."""
    script = os.path.join(os.path.dirname(sys.executable), "robustlab")
    prefix = [script] if os.path.exists(script) else [sys.executable, "-m", "robustlab.cli"]
    return [*prefix, *args]


def checkpointed_epoch(run_dir):
    """The epoch of the newest checkpoint of a run folder, 0 without one."""
    try:
        with open(os.path.join(run_dir, experiments.RESUME_DIR, "latest.json")) as f:
            # "epoch00003-<token>"
            return int(json.load(f)["checkpoint"][len("epoch"):len("epoch00000")])
    except (OSError, ValueError, KeyError):
        return 0


def kill_when(process, ready, timeout=300):
    """SIGKILL `process` as soon as `ready()` holds; fail if it ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, "the process ended before it could be killed"
        assert time.monotonic() < deadline, "the process made no progress"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


def start(*args):
    return subprocess.Popen(robustlab_command(*args), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def same(a, b):
    """Equal number for number, NaN equal to NaN."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def as_json(payload):
    return json.loads(json.dumps(payload, default=lambda x: np.asarray(x).tolist()))


def read_json(*parts):
    with open(os.path.join(*parts)) as f:
        return json.load(f)


def _refuse(token):
    raise ValueError(f"not standard JSON: {token}")


def read_standard_json(*parts):
    """The file's JSON, refused if it holds Python's NaN or Infinity tokens."""
    with open(os.path.join(*parts)) as f:
        return json.loads(f.read(), parse_constant=_refuse)


def standard(payload):
    """`payload` as standard JSON has it: NaN and infinities as None."""
    return json.loads(json.dumps(run_checkpoint._standard_json(payload)))


# -- robustlab train ------------------------------------------------------------------


@kills_processes
def test_a_train_killed_twice_and_resumed_logs_the_uninterrupted_history(tmp_path):
    uninterrupted = str(tmp_path / "uninterrupted")
    history, summary = experiments.run("quick", uninterrupted, epochs=EPOCHS,
                                       probe_every=PROBE_EVERY, verbose=0)
    out = str(tmp_path / "killed")
    args = ("train", "--epochs", str(EPOCHS), "--probe-every", str(PROBE_EVERY),
            "--out", out, "--quiet")
    # Killed during an epoch with a probe (epoch 3 is probed), then right
    # after the checkpoint of epoch 5 appears.
    kill_when(start(*args), lambda: checkpointed_epoch(out) >= 3)
    first = checkpointed_epoch(out)
    kill_when(start(*args, "--resume"), lambda: checkpointed_epoch(out) >= 5)
    assert 3 <= first < checkpointed_epoch(out) < EPOCHS
    assert not os.path.exists(os.path.join(out, "history.json"))
    done = subprocess.run(robustlab_command(*args, "--resume"), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert same(run_checkpoint.read_history(out), history)
    resumed = read_json(out, "summary.json")
    assert same({k: v for k, v in resumed.items() if k != "seconds"},
                {k: v for k, v in summary.items() if k != "seconds"})
    assert sorted(os.listdir(out)) == [
        "config.json", "curves.png", "history.csv", "history.json", "summary.json"]


@kills_processes
def test_ctrl_c_ends_the_command_with_a_line_that_says_how_to_resume(tmp_path):
    out = str(tmp_path / "run")
    args = ("train", "--epochs", "20", "--probe-every", "0", "--out", out, "--quiet")
    process = subprocess.Popen(robustlab_command(*args), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while checkpointed_epoch(out) < 1:
        assert process.poll() is None, process.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    stderr = process.communicate(timeout=120)[1]
    assert process.returncode == 130, stderr[-2000:]
    assert stderr.endswith(
        "robustlab train: interrupted; the same command with --resume continues from "
        "the last finished epoch\n"), stderr[-2000:]
    assert "Traceback" not in stderr
    assert 1 <= checkpointed_epoch(out) < 20


class InterruptAfter(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("interrupted")


# With the instruments, one step a compiled call; without, an epoch a call.
@pytest.mark.parametrize("probe_every", [2, None])
def test_a_run_interrupted_in_process_resumes_to_the_uninterrupted_history(
        tmp_path, probe_every):
    history, _ = experiments.run(TINY, str(tmp_path / "a"), verbose=0,
                                 probe_every=probe_every)
    out = str(tmp_path / "b")
    # The user's callbacks run before the checkpoint: epoch 1 is not saved.
    with pytest.raises(KeyboardInterrupt):
        experiments.run(TINY, out, verbose=0, probe_every=probe_every,
                        callbacks=[InterruptAfter(1)])
    assert checkpointed_epoch(out) == 1
    resumed, _ = experiments.run(TINY, out, verbose=0, probe_every=probe_every,
                                 resume=True)
    assert same(resumed, history)


def test_resuming_a_finished_run_returns_it_without_training(tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    history, summary = experiments.run(TINY, out, verbose=0)
    monkeypatch.setattr(experiments, "build", lambda *a: pytest.fail("trained again"))
    again, again_summary = experiments.run(TINY, out, verbose=0, resume=True)
    assert same(again, history) and again_summary == summary


def test_resuming_a_folder_of_another_configuration_is_refused(tmp_path):
    out = str(tmp_path / "run")
    experiments.run(TINY, out, verbose=0)
    with pytest.raises(ValueError, match=r"another `experiment`.*Received: experiment="):
        experiments.run(TINY.replace(eps=0.05), out, verbose=0, resume=True)
    with pytest.raises(ValueError, match=r"another `probe_every` \(None\).*Received: probe_every=2"):
        experiments.run(TINY, out, verbose=0, resume=True, probe_every=2)


def test_resuming_on_another_backend_is_refused(tmp_path):
    out = str(tmp_path / "run")
    experiments.run(TINY, out, verbose=0, epochs=1)
    config = read_json(out, "config.json")
    config["backend"] = "other"
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match="another `backend`"):
        experiments.run(TINY, out, verbose=0, epochs=1, resume=True)


def test_resuming_a_run_of_other_code_is_refused(tmp_path):
    out = str(tmp_path / "run")
    experiments.run(TINY, out, verbose=0, epochs=1)
    config = read_json(out, "config.json")
    assert config["code"] == provenance.code_identity()
    config["code"]["robustlab_sources"] = "0" * 16
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match=r"made by other code.*train it again"):
        experiments.run(TINY, out, verbose=0, epochs=1, resume=True)


def test_resuming_a_run_made_on_another_thread_count_is_refused(tmp_path):
    out = str(tmp_path / "run")
    experiments.run(TINY, out, verbose=0, epochs=1)
    config = read_json(out, "config.json")
    assert config["cpu_threads"] == provenance.cpu_threads()
    config["cpu_threads"] = provenance.cpu_threads() + 3
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match=rf"made on {provenance.cpu_threads() + 3} CPU threads"
                                         rf".*--threads {provenance.cpu_threads() + 3}"):
        experiments.run(TINY, out, verbose=0, epochs=1, resume=True)


def test_an_accelerator_run_resumes_on_a_host_with_another_thread_count(
        tmp_path, monkeypatch):
    monkeypatch.setattr(backend.get(), "accelerator", lambda: "gpu: NVIDIA H200")
    out = str(tmp_path / "run")
    experiments.run(TINY, out, verbose=0, epochs=1)
    assert read_json(out, "config.json")["cpu_threads"] is None
    other_count = provenance.cpu_threads() + 3
    monkeypatch.setattr(backend.get(), "cpu_threads", lambda: other_count)
    history, _ = experiments.run(TINY, out, verbose=0, epochs=1, resume=True)
    assert history == read_json(out, "history.json")


def test_resuming_a_run_made_on_other_hardware_is_refused(tmp_path):
    out = str(tmp_path / "run")
    experiments.run(TINY, out, verbose=0, epochs=1)
    config = read_json(out, "config.json")
    assert config["hardware"] == provenance.hardware()
    config["hardware"] = "cpu: AMD EPYC (AuthenticAMD family 25 model 1; avx avx2 fma)"
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f)
    with pytest.raises(ValueError, match=r"made on other hardware \('cpu: AMD EPYC .*"
                                         r"train it again here.*Received: hardware='"):
        experiments.run(TINY, out, verbose=0, epochs=1, resume=True)


def test_resuming_needs_the_run_folder():
    with pytest.raises(ValueError, match="Received: out_dir=None, resume=True"):
        experiments.run(TINY, None, verbose=0, resume=True)


def test_a_fresh_run_stopped_early_leaves_nothing_of_the_earlier_run_beside_it(tmp_path):
    # The earlier run's history.csv and curves.png used to stay next to the
    # new run's config.json until the new run finished.
    out = str(tmp_path / "run")
    experiments.run(TINY.replace(epochs=1), out, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        experiments.run(TINY.replace(eps=0.05), out, verbose=0, callbacks=[InterruptAfter(0)])
    assert sorted(os.listdir(out)) == ["config.json", experiments.RESUME_DIR]


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory):
    """A finished run with the instruments every 2 epochs (NaN between
    probes): `(folder, history, summary)`."""
    out = str(tmp_path_factory.mktemp("probed") / "run")
    history, summary = experiments.run(TINY, out, verbose=0, probe_every=PROBE_EVERY)
    return out, history, summary


def test_history_json_is_standard_json_with_null_where_a_key_was_not_logged(probed_run):
    out, history, _ = probed_run
    unlogged = [epoch for epoch, value in enumerate(history["hessian_top_eig"])
                if math.isnan(value)]
    assert unlogged  # the epochs between probes
    saved = read_standard_json(out, "history.json")
    assert [epoch for epoch, value in enumerate(saved["hessian_top_eig"])
            if value is None] == unlogged
    assert same(run_checkpoint.read_history(out), history)


def test_summary_json_is_standard_json(probed_run):
    out, _, summary = probed_run
    assert read_standard_json(out, "summary.json") == standard(summary)


def test_resuming_a_finished_run_with_instruments_returns_its_nans(probed_run, monkeypatch):
    out, history, summary = probed_run
    monkeypatch.setattr(experiments, "build", lambda *a, **k: pytest.fail("trained again"))
    again, again_summary = experiments.run(TINY, out, verbose=0, probe_every=PROBE_EVERY,
                                           resume=True)
    assert same(again, history) and same(again_summary, summary)


def test_a_fresh_run_discards_what_an_earlier_run_left(tmp_path):
    out = str(tmp_path / "run")
    experiments.run(TINY, out, verbose=0, epochs=2)
    os.makedirs(os.path.join(out, experiments.RESUME_DIR), exist_ok=True)
    history, _ = experiments.run(TINY, out, verbose=0, epochs=1)
    assert len(history["loss"]) == 1
    assert len(read_json(out, "history.json")["loss"]) == 1
    assert not os.path.exists(os.path.join(out, experiments.RESUME_DIR))


@pytest.mark.parametrize("refused, message", [
    # The posterior tracker would refuse a window of one step only when
    # training starts.
    (dict(experiment=TINY.replace(epochs=1, batch_size=128), probe_every=1),
     r"at least 2 training steps.*Received: batch_size=128"),
    # The curves without their seed count would fail when curves.png is drawn.
    (dict(experiment=TINY.replace(epochs=1), reference={"val_robust_loss": ([0.5], [0.1])}),
     r"pair \(curves, seeds\).*Received: reference=<dict of 1 keys>"),
], ids=["instruments", "reference"])
def test_a_refused_setting_leaves_the_earlier_run_in_the_folder_as_it_was(
        tmp_path, refused, message):
    out = str(tmp_path / "run")
    experiments.run(TINY.replace(epochs=1), out, verbose=0)
    before = folder_contents(out)
    refused = dict(refused)
    with pytest.raises((ValueError, TypeError), match=message):
        experiments.run(refused.pop("experiment"), out, verbose=0, **refused)
    assert folder_contents(out) == before


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def test_resuming_a_run_a_callback_stopped_early_returns_it_without_training(
        tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    history, summary = experiments.run(TINY, out, verbose=0,
                                       callbacks=[StopAfterFirstEpoch()])
    assert len(history["loss"]) == 1 < TINY.epochs
    monkeypatch.setattr(experiments, "build", lambda *a, **k: pytest.fail("trained again"))
    again, again_summary = experiments.run(TINY, out, verbose=0, resume=True)
    assert same(again, history) and again_summary == summary


def test_results_longer_than_the_run_are_not_taken_for_it(tmp_path):
    # Files of a longer run left in the folder (a fresh run removes them
    # before it starts; these were copied in) are not this run's results.
    out = str(tmp_path / "run")
    history, _ = experiments.run(TINY, out, verbose=0, epochs=1)
    longer = {key: values * 2 for key, values in history.items()}
    with open(os.path.join(out, "history.json"), "w") as f:
        json.dump(longer, f)
    summary = read_json(out, "summary.json")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(dict(summary, epochs=2), f)
    resumed, _ = experiments.run(TINY, out, verbose=0, epochs=1, resume=True)
    assert same(resumed, history)
    assert same(read_json(out, "history.json"), history)


class Killed(BaseException):
    """What a SIGKILL does to the process, in this one."""


def test_a_run_killed_while_drawing_its_figure_is_finished_by_resume(tmp_path, monkeypatch):
    import matplotlib.figure

    out = str(tmp_path / "run")

    def killed_halfway(figure, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x89PNG half a figure")
        raise Killed

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", killed_halfway)
    with pytest.raises(Killed):
        experiments.run(TINY, out, verbose=0, epochs=1)
    monkeypatch.undo()
    # Not finished: summary.json, written last, marks a finished run.
    assert not os.path.exists(os.path.join(out, "summary.json"))
    assert not os.path.exists(os.path.join(out, "curves.png"))
    experiments.run(TINY, out, verbose=0, epochs=1, resume=True)
    with open(os.path.join(out, "curves.png"), "rb") as f:
        figure = f.read()
    assert figure.startswith(b"\x89PNG\r\n\x1a\n") and figure.endswith(b"IEND\xaeB`\x82")
    assert sorted(os.listdir(out)) == [
        "config.json", "curves.png", "history.csv", "history.json", "summary.json"]


# -- the checkpoint itself --------------------------------------------------------------


def dense_model():
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    net.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    return net


XY = (np.linspace(0, 1, 24, dtype="float32").reshape(8, 3), np.ones((8, 2), "float32"))


def test_a_checkpoint_only_counts_once_latest_names_it(tmp_path):
    folder = str(tmp_path)
    model = dense_model()
    model.fit(*XY, epochs=2, verbose=0, shuffle=False,
              callbacks=[run_checkpoint.EpochCheckpoint(folder)])
    # A kill after epoch 3's files were written, before latest.json named them.
    for name in ("epoch00003.state.npz", "epoch00003.json",
                 "epoch00003.state.npz.partial", "latest.json.partial"):
        with open(os.path.join(folder, name), "w") as f:
            f.write("garbage")
    restored = dense_model()
    epoch, history, _ = run_checkpoint.restore_checkpoint(restored, folder)
    assert epoch == 2 and len(history["loss"]) == 2
    for a, b in zip(model.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_the_checkpoint_keeps_only_the_newest_epoch_and_other_files(tmp_path):
    folder = str(tmp_path)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "hessian_probe.npz"), "w") as f:
        f.write("an instrument's state")
    dense_model().fit(*XY, epochs=3, verbose=0,
                      callbacks=[run_checkpoint.EpochCheckpoint(folder)])
    assert [re.sub(r"-[0-9a-f]{8}\.", ".", name) for name in sorted(os.listdir(folder))] == [
        "epoch00003.json", "epoch00003.state.npz", "hessian_probe.npz", "latest.json"]


def test_a_new_run_in_an_old_runs_folder_never_mixes_their_checkpoints(tmp_path, monkeypatch):
    # Both named their first checkpoint epoch00001: the new run wrote its
    # state over the file latest.json still named, and a kill before its
    # epoch00001.json came restored the new weights with the old history.
    folder = str(tmp_path)
    old = dense_model()
    old.fit(*XY, epochs=1, verbose=0, shuffle=False,
            callbacks=[run_checkpoint.EpochCheckpoint(folder)])
    old_history = run_checkpoint.restore_checkpoint(dense_model(), folder)[1]
    writes = []

    def killed_at_the_json(path, payload, indent=None):
        writes.append(path)
        raise KeyboardInterrupt  # the kill, after the state file was renamed into place

    monkeypatch.setattr(run_checkpoint, "write_json_atomically", killed_at_the_json)
    new = dense_model()
    new.set_weights([w + 1.0 for w in new.get_weights()])
    with pytest.raises(KeyboardInterrupt):
        new.fit(*XY, epochs=1, verbose=0, shuffle=False,
                callbacks=[run_checkpoint.EpochCheckpoint(folder)])
    assert writes, "the kill came before the checkpoint's json"
    monkeypatch.undo()
    restored = dense_model()
    epoch, history, _ = run_checkpoint.restore_checkpoint(restored, folder)
    assert epoch == 1 and history == old_history
    for a, b in zip(old.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("directory, error", [(None, TypeError), (5, TypeError), ("", ValueError)])
def test_restore_names_a_directory_that_is_not_a_folder(directory, error):
    # os.fspath's TypeError named nothing, and "" restored the current folder's.
    with pytest.raises(error, match=r"`directory` must be .*Received: directory="):
        run_checkpoint.restore_checkpoint(dense_model(), directory)


@pytest.mark.parametrize("history, error, match", [
    ([("loss", [1.0])], TypeError, r"must be None or a dict.*Received: history of type list"),
    ({"loss": 3}, TypeError, r"a list of numbers per key\. Received: history\['loss'\]=3"),
    ({"loss": ["a"]}, TypeError, r"a list of numbers per key\. Received: history\['loss'\]"),
    ({"loss": [1.0, 2.0], "acc": [0.5]}, ValueError,
     r"one value per finished epoch.*Received: history with lengths \{'loss': 2, 'acc': 1\}")])
def test_a_checkpoint_names_a_history_that_is_not_one(tmp_path, history, error, match):
    # A list of pairs raised AttributeError, a number "'int' object is not
    # iterable", and lists of different lengths stayed misaligned.
    with pytest.raises(error, match=match):
        run_checkpoint.EpochCheckpoint(str(tmp_path), history=history)


def test_a_checkpoint_of_another_model_is_refused(tmp_path):
    folder = str(tmp_path)
    dense_model().fit(*XY, epochs=1, verbose=0,
                      callbacks=[run_checkpoint.EpochCheckpoint(folder)])
    wider = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4)])
    wider.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    with pytest.raises(ValueError, match="holds the state of another model"):
        run_checkpoint.restore_checkpoint(wider, folder)


def test_nothing_to_restore_starts_at_epoch_zero(tmp_path):
    assert run_checkpoint.restore_checkpoint(dense_model(), str(tmp_path / "none")) == (0, {}, 0.0)


def test_a_fit_that_does_not_start_where_the_checkpoint_ended_is_refused(tmp_path):
    folder = str(tmp_path)
    model = dense_model()
    model.fit(*XY, epochs=2, verbose=0, callbacks=[run_checkpoint.EpochCheckpoint(folder)])
    _, history, _ = run_checkpoint.restore_checkpoint(model, folder)
    with pytest.raises(ValueError, match="Received: initial_epoch=1"):
        model.fit(*XY, epochs=3, initial_epoch=1, verbose=0,
                  callbacks=[run_checkpoint.EpochCheckpoint(folder, history)])


# -- robustlab reproduce ----------------------------------------------------------------


@kills_processes
def test_a_reproduction_killed_midway_and_resumed_gives_the_uninterrupted_results(tmp_path):
    epochs = "2"
    reference = studies.reproduce("robust-overfitting", 1, str(tmp_path / "uninterrupted"),
                                  epochs=int(epochs), verbose=0)
    out = str(tmp_path / "killed")
    args = ("reproduce", "robust-overfitting", "--quick", "--seeds", "1", "--epochs", epochs,
            "--out", out, "--quiet")
    second_arm = os.path.join(out, "runs", f"quick_lr01-v2-e{epochs}", "seed0")
    # Killed in the second run, after the first finished and the second
    # checkpointed an epoch.
    kill_when(start(*args), lambda: checkpointed_epoch(second_arm) >= 1)
    assert os.path.exists(os.path.join(out, "runs", f"quick-v2-probe5-e{epochs}", "seed0",
                                       "history.json"))
    done = subprocess.run(robustlab_command(*args, "--resume"), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    saved = read_json(out, f"robust-overfitting-e{epochs}", "results.json")
    assert same(saved["table"], standard(reference.table()))
    for arm in reference.study.arms:
        folder = arm.folder(out, 0, int(epochs))
        np.testing.assert_array_equal(
            read_json(folder, "history.json")["val_robust_accuracy"],
            reference.runs(arm.experiment)[0]["val_robust_accuracy"])


# -- forks ------------------------------------------------------------------------------


@pytest.fixture
def tiny_study(monkeypatch):
    monkeypatch.setitem(experiments.EXPERIMENTS, "tiny", TINY)
    monkeypatch.setitem(studies.STUDIES, "tiny-study", TINY_STUDY)
    return TINY_STUDY


@bookkeeping
@pytest.mark.parametrize("fail_at_window", [0, 1])
def test_forks_interrupted_at_a_window_resume_to_the_uninterrupted_windows(
        tiny_study, tmp_path, monkeypatch, fail_at_window):
    uninterrupted = studies.reproduce("tiny-study", [0], str(tmp_path / "a"), verbose=0)
    out = str(tmp_path / "b")
    real_fork, calls = forks.fork, []

    def fork_interrupted_once(*args, **kwargs):
        calls.append(kwargs["epoch"])
        if len(calls) == fail_at_window + 1:
            raise KeyboardInterrupt("killed")
        return real_fork(*args, **kwargs)

    monkeypatch.setattr(forks, "fork", fork_interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        studies.reproduce("tiny-study", [0], out, verbose=0)
    resumed = studies.reproduce("tiny-study", [0], out, resume=True, verbose=0)
    # The windows finished before the interruption are not forked again.
    assert calls == [1, 2, 2] if fail_at_window else calls == [1, 1, 2]
    for a, b in zip(resumed.forks[0], uninterrupted.forks[0]):
        assert same(as_json(a.to_dict()), as_json(b.to_dict()))
    folder = TINY_STUDY.forks.folder(out)
    assert sorted(os.listdir(folder)) == ["seed0.json"]


@bookkeeping
def test_forks_left_by_another_configuration_are_not_resumed(tiny_study, tmp_path, monkeypatch):
    out = str(tmp_path)
    studies.reproduce("tiny-study", [0], out, verbose=0)
    shutil.copy(os.path.join(TINY_STUDY.forks.folder(out), "seed0.json"), tmp_path / "saved")
    other = studies.Forks("tiny", epochs=(1, 2), replicas=3, steps=1)
    monkeypatch.setitem(studies.STUDIES, "tiny-study",
                        studies.Study(**{**TINY_STUDY.__dict__, "forks": other}))
    again = studies.reproduce("tiny-study", [0], out, resume=True, verbose=0)
    assert [w.steps for w in again.forks[0]] == [1, 1]


@bookkeeping
def test_a_partial_fork_of_another_configuration_is_started_again(tiny_study, tmp_path,
                                                                   monkeypatch):
    out = str(tmp_path)
    real_fork, calls = forks.fork, []

    def fork_interrupted_at_the_second_window(*args, **kwargs):
        calls.append((kwargs["epoch"], kwargs["steps"]))
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real_fork(*args, **kwargs)

    monkeypatch.setattr(forks, "fork", fork_interrupted_at_the_second_window)
    with pytest.raises(KeyboardInterrupt):
        studies.reproduce("tiny-study", [0], out, verbose=0)
    other = studies.Forks("tiny", epochs=(1, 2), replicas=3, steps=1)
    monkeypatch.setitem(studies.STUDIES, "tiny-study",
                        studies.Study(**{**TINY_STUDY.__dict__, "forks": other}))
    # The folder name differs with the steps; put the partial fork where the
    # new configuration looks, as an older robustlab might have left it.
    shutil.move(os.path.join(TINY_STUDY.forks.folder(out), "seed0.resume"),
                os.path.join(other.folder(out), "seed0.resume"))
    resumed = studies.reproduce("tiny-study", [0], out, resume=True, verbose=0)
    assert calls[2:] == [(1, 1), (2, 1)]  # both windows again, none reused
    assert [w.steps for w in resumed.forks[0]] == [1, 1]
