"""The CPU threads XLA's kernels split their work across, on JAX.

As on TensorFlow (see `robustlab.backend.tensorflow.threads`), the thread
count can change the last digits of a CPU run and, over many epochs, its
trajectory. JAX has no supported setting for XLA:CPU's thread count
(jax-ml/jax#1539). `--xla_cpu_multi_thread_eigen=false` in `XLA_FLAGS` does
not confine it to one: with JAX 0.10 on a 2-CPU machine, a jitted chain of
1500 x 1500 matrix products kept both of XLA's Eigen threads busy with the
flag as without it (counted in CPU time per thread, /proc/self/task).
"""

from robustlab.backend import available_cpus

__all__ = [
    "cpu_threads",
    "set_cpu_threads",
]


def cpu_threads():
    """The threads XLA:CPU's kernels use: one per CPU the process may run
    on, XLA's default, which no supported setting changes (see above)."""
    return available_cpus()


def set_cpu_threads(threads):
    """Not possible on JAX: raises `ValueError` unless the process already
    uses `threads` threads."""
    if cpu_threads() == threads:
        return
    raise ValueError(
        "Setting the CPU threads is supported on the TensorFlow backend only "
        "(JAX reads its thread settings when it starts, and has no supported "
        f"one for a count); this process runs on {cpu_threads()}. "
        f"Received: threads={threads}")
