"""The CPU threads TensorFlow's kernels split their work across.

On CPU the thread count is part of what a run's numbers depend on: the
kernels divide their work among the threads, and another count changes the
last digits of their results from the first training step on (measured; sums
added in another order is the likely cause, not isolated). Over 100 epochs of adversarial training those
digits grow into another trajectory (seed 0 of the quick setting with one
thread instead of two: a robust overfitting gap of 2.7 points instead of
6.8), as a different seed would. TensorFlow's default is one intra-op thread
per CPU the process may run on (or `TF_NUM_INTRAOP_THREADS`), so by default a
run's numbers depend on the machine.
"""

import os

import tensorflow as tf

from robustlab.backend import available_cpus

__all__ = [
    "cpu_threads",
    "set_cpu_threads",
]


def cpu_threads():
    """The intra-op threads TensorFlow's CPU kernels use in this process: the
    number `set_cpu_threads` set, else `TF_NUM_INTRAOP_THREADS`, else one per
    CPU the process may run on (TensorFlow's default)."""
    configured = tf.config.threading.get_intra_op_parallelism_threads()
    if configured > 0:
        return configured
    from_environment = os.environ.get("TF_NUM_INTRAOP_THREADS", "")
    if from_environment.strip().isdigit() and int(from_environment) > 0:
        return int(from_environment)
    return available_cpus()


def set_cpu_threads(threads):
    """Run TensorFlow's CPU kernels (and independent operations) on `threads`
    threads. Must come before TensorFlow runs its first operation."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError as error:
        if cpu_threads() == threads:
            return
        raise ValueError(
            "The CPU threads must be set before TensorFlow runs its first "
            f"operation; this process already runs on {cpu_threads()}. "
            f"Received: threads={threads}") from error
