"""Which code produced a result: robustlab's sources, Keras, the backend and
NumPy; and on what hardware (which accelerator, or which kind of CPU on how
many threads) it ran.

A finished run or fork is reused by `--resume` only when it was produced by
the same code as the one resuming: results are "those of an uninterrupted
run" only then. The version number alone cannot tell (it does not change
with every edit), so the identity holds a digest of robustlab's own Python
sources. The course's notebook machinery (`robustlab/course/`) is left out:
it never runs inside a training run.

Why it matters: a change in how TensorFlow traces the attack the
instruments craft their probe sets with (an unknown batch size instead of
each concrete one) changed their values in the last digits; runs trained
before it were reused by a `--resume` after it, and results holding both
were written as if one code had produced them.

The hardware decides the last digits too. Measured on two 2-core machines
that both call themselves "AMD EPYC", on 2 threads with the same code and
versions: the one with AVX-512 (family 25 model 17) matched the other's
`quick` run of seed 0 at epoch 1 and no later (681 of its 2,700 stored
values). A likely cause, not isolated: oneDNN, which many of TensorFlow's
CPU kernels use, picks its kernels by the instruction sets a CPU has
(`ONEDNN_MAX_CPU_ISA=AVX2` changed the numbers again, and still did not give
the other machine's). So a run is resumed or reused only on the same
hardware: `hardware()` names it.

Example:

>>> from robustlab.provenance import code_identity
>>> identity = code_identity()
>>> sorted(identity)
['backend', 'keras', 'numpy', 'robustlab', 'robustlab_sources']
>>> len(identity["robustlab_sources"])
16
"""

import hashlib
import importlib
import os
import platform

import keras
import numpy as np

from robustlab import backend as _backend
from robustlab._version import __version__

__all__ = [
    "code_identity",
    "cpu_kind",
    "cpu_threads",
    "hardware",
    "run_cpu_threads",
    "source_digest",
]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def source_digest(package_dir=_PACKAGE_DIR):
    """A 16-hex-digit SHA-256 digest of every `.py` file under `package_dir`
    (its path relative to `package_dir` and its bytes, in sorted order),
    leaving out the `course` subpackage and hidden files and folders (an
    editor's lock file, which may be a dangling link, or JupyterLab's
    `.ipynb_checkpoints/` copies: not the code that runs). Line endings are
    read as Python reads source files, so a checkout with CRLF endings
    (git's autocrlf on Windows) has the digest of the same code with LF."""
    if not os.path.isdir(package_dir):
        # os.walk of a missing folder yields nothing: the digest of no code.
        raise ValueError("Argument `package_dir` must be a folder. "
                         f"Received: package_dir={package_dir!r}")
    digest = hashlib.sha256()
    paths = []
    for root, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs
                         if d not in ("course", "__pycache__") and not d.startswith("."))
        paths += [os.path.join(root, f) for f in files
                  if f.endswith(".py") and not f.startswith(".")]
    for path in sorted(paths):
        digest.update(os.path.relpath(path, package_dir).replace(os.sep, "/").encode())
        digest.update(b"\0")
        with open(path, "rb") as f:
            # Python's tokenizer reads \r\n and a lone \r as \n.
            digest.update(f.read().replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
        digest.update(b"\0")
    return digest.hexdigest()[:16]


# Read once, when robustlab is imported: an edit made while a process runs
# does not change the code that process runs.
_SOURCES = source_digest()


def code_identity():
    """The code a result produced now comes from: robustlab's version and
    source digest, the Keras version, the backend with its version, and
    NumPy's version (it draws each epoch's order and the data's label noise,
    and NumPy promises its random streams only within a version)."""
    backend = keras.backend.backend()
    # The imported modules' own versions: TensorFlow is also distributed as
    # tensorflow-cpu, tf-nightly and others, whose metadata "tensorflow"
    # does not name; JAX's tracing is the jax package's, its kernels jaxlib's.
    backend_version = importlib.import_module(backend).__version__
    if backend == "jax":
        backend_version += f", jaxlib {importlib.import_module('jaxlib').__version__}"
    return {
        "robustlab": __version__,
        "robustlab_sources": _SOURCES,
        "keras": keras.__version__,
        "backend": f"{backend} {backend_version}",
        "numpy": np.__version__,
    }


def cpu_threads():
    """The CPU threads the backend's kernels split their sums across in this
    process (`robustlab.backend.<name>.threads`). Like the code, it decides
    the last digits of a CPU run, and so the run's trajectory: a run is
    resumed or reused only with the same count."""
    return int(_backend.get().cpu_threads())


def run_cpu_threads():
    """The CPU thread count a run records and is resumed or reused with:
    `cpu_threads()` where the CPU computes the run, None where an
    accelerator does (its kernels, not the host's thread count, compute the
    model's sums), so that a GPU run resumes on a host with another number
    of cores."""
    return None if _backend.get().accelerator() else cpu_threads()


# The instruction-set extensions that change which kernels oneDNN, Eigen and
# XLA run (x86 "flags", aarch64 "Features"); the rest of the flags don't.
_KERNEL_FLAG_PREFIXES = {
    "flags": ("sse4", "avx", "fma", "f16c", "amx"),
    "Features": ("asimd", "sve", "sme", "fphp", "bf16", "i8mm"),
}


def cpu_kind(cpuinfo=None):
    """The kind of CPU this process computes on, as its kernels see it: the
    model, its family and model numbers, and the instruction-set extensions
    kernels choose by, e.g. `"AMD EPYC (AuthenticAMD family 25 model 17;
    avx avx2 avx512f ... fma)"`.

    Args:
        cpuinfo: the text of Linux's `/proc/cpuinfo`; None reads it. Where
            there is none (macOS, Windows), the platform's own names.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:  # pragma: no cover (not Linux)
            return f"{platform.machine()} {platform.processor()}".strip() or "unknown"
    # Every core of one machine reports the same kind: the first one's block.
    fields = {}
    for line in cpuinfo.split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    kernel_flags = sorted({flag for key, prefixes in _KERNEL_FLAG_PREFIXES.items()
                           for flag in fields.get(key, "").split() if flag.startswith(prefixes)})
    name = fields.get("model name") or fields.get("CPU part", platform.machine() or "unknown")
    vendor = fields.get("vendor_id", fields.get("CPU implementer", ""))
    numbers = " ".join(f"{label} {fields[key]}"
                       for key, label in (("cpu family", "family"), ("model", "model"))
                       if key in fields)
    identity = " ".join(part for part in (vendor, numbers) if part)
    return f"{name} ({identity}; {' '.join(kernel_flags)})"


def hardware():
    """What a result's numbers are computed on: the accelerator the backend
    uses (`"gpu: NVIDIA H200"`), else `"cpu: "` and `cpu_kind()`; then, in
    brackets, those of the environment variables that choose other kernels
    (`TF_ENABLE_ONEDNN_OPTS`, `ONEDNN_MAX_CPU_ISA` and its older name
    `DNNL_MAX_CPU_ISA`, `XLA_FLAGS`) that are set. Like the
    code, it decides a run's last digits and so its trajectory: a run is
    resumed or reused only on the same hardware (and, on a CPU, the same
    `cpu_threads()`: `run_cpu_threads()`)."""
    accelerator = _backend.get().accelerator()
    device = accelerator if accelerator else f"cpu: {cpu_kind()}"
    settings = [f"{name}={os.environ[name]}" for name in _KERNEL_SETTINGS
                if name in os.environ]
    return f"{device} [{' '.join(settings)}]" if settings else device


# Environment variables that choose other kernels, so other last digits:
# oneDNN on or off in TensorFlow (measured: another trajectory on the same
# machine), oneDNN's instruction sets (see the module's docstring; oneDNN
# obeys DNNL_MAX_CPU_ISA, its older name, alike: measured, the same numbers as
# ONEDNN_MAX_CPU_ISA=AVX2, and unrecorded a resume mixed two trajectories),
# and XLA's flags (turning YNNPACK convolutions off changed the last bits of
# JAX's Hessian-vector products).
_KERNEL_SETTINGS = ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
                    "XLA_FLAGS")
