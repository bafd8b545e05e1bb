"""The CPU threads a run's kernels use: recorded, settable on TensorFlow.

On a CPU the thread count changes the last digits of a run (measured: 1
thread against 2 differ from the first step), so it is recorded with every
run like the code, and `--threads` makes a machine run on the count another
one used.
"""

import json
import os
import subprocess
import sys

import keras
import pytest

from robustlab import backend
from robustlab import cli
from robustlab.backend.jax import threads as jax_threads

on_tensorflow = pytest.mark.skipif(keras.backend.backend() != "tensorflow",
                                   reason="TensorFlow's thread settings")


def _cpus():
    return len(os.sched_getaffinity(0))


@pytest.mark.parametrize("flags", [None, "--xla_cpu_multi_thread_eigen=false"])
def test_jax_counts_one_thread_per_cpu_whatever_its_flags(monkeypatch, flags):
    # The flag leaves XLA's Eigen pool at one thread per CPU (measured with
    # JAX 0.10), so a run made with it records the threads it really used.
    if flags is None:
        monkeypatch.delenv("XLA_FLAGS", raising=False)
    else:
        monkeypatch.setenv("XLA_FLAGS", flags)
    assert jax_threads.cpu_threads() == _cpus()


def test_jax_cannot_change_the_count_of_a_running_process(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    jax_threads.set_cpu_threads(_cpus())  # the count it has: nothing to do
    with pytest.raises(ValueError, match=r"TensorFlow backend only.*"
                                         rf"Received: threads={_cpus() + 1}"):
        jax_threads.set_cpu_threads(_cpus() + 1)


@on_tensorflow
def test_tensorflow_counts_its_environment_setting_when_none_was_made(monkeypatch):
    import tensorflow as tf

    assert tf.config.threading.get_intra_op_parallelism_threads() == 0
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    assert backend.get().cpu_threads() == _cpus()
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "3")
    assert backend.get().cpu_threads() == 3


@on_tensorflow
def test_tensorflow_refuses_a_new_count_once_it_runs():
    keras.ops.convert_to_numpy(keras.ops.ones(2) + 1)  # TensorFlow has run an operation
    backend.get().set_cpu_threads(backend.get().cpu_threads())
    with pytest.raises(ValueError, match=r"before TensorFlow runs its first operation.*"
                                         rf"Received: threads={_cpus() + 1}"):
        backend.get().set_cpu_threads(_cpus() + 1)


def test_the_command_checks_the_count(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--threads", "0", "--epochs", "1"])
    assert exit_info.value.code == 2
    assert "Received: threads=0" in capsys.readouterr().err


@on_tensorflow
def test_train_runs_and_records_the_count_it_was_given(tmp_path):
    # A fresh process: TensorFlow takes its thread count before its first
    # operation. One thread differs from this machine's default unless it has
    # one CPU, which the record then cannot tell apart.
    out = str(tmp_path / "run")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, "-m", "robustlab.cli", "train", "--threads", "1",
                    "--epochs", "1", "--probe-every", "0", "--quiet", "--out", out],
                   check=True, env=env, capture_output=True, timeout=600)
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["cpu_threads"] == 1
