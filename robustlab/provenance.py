"""Which code produced a result: robustlab's sources, Keras and the backend;
and on how many CPU threads it ran.

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

Example:

>>> identity = code_identity()
>>> sorted(identity)
['backend', 'keras', 'robustlab', 'robustlab_sources']
>>> len(identity["robustlab_sources"])
16
"""

import hashlib
import importlib.metadata
import os

import keras

from robustlab import backend as _backend
from robustlab._version import __version__

__all__ = [
    "code_identity",
    "cpu_threads",
    "source_digest",
]

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
_BACKEND_DISTRIBUTIONS = {"tensorflow": "tensorflow", "jax": "jaxlib"}


def source_digest(package_dir=_PACKAGE_DIR):
    """A 16-hex-digit SHA-256 digest of every `.py` file under `package_dir`
    (its path relative to `package_dir` and its bytes, in sorted order),
    leaving out the `course` subpackage."""
    digest = hashlib.sha256()
    paths = []
    for root, dirs, files in os.walk(package_dir):
        dirs[:] = sorted(d for d in dirs if d not in ("course", "__pycache__"))
        paths += [os.path.join(root, f) for f in files if f.endswith(".py")]
    for path in sorted(paths):
        digest.update(os.path.relpath(path, package_dir).replace(os.sep, "/").encode())
        digest.update(b"\0")
        with open(path, "rb") as f:
            digest.update(f.read())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


# Read once, when robustlab is imported: an edit made while a process runs
# does not change the code that process runs.
_SOURCES = source_digest()


def code_identity():
    """The code a result produced now comes from: robustlab's version and
    source digest, the Keras version, and the backend with its version."""
    backend = keras.backend.backend()
    distribution = _BACKEND_DISTRIBUTIONS.get(backend, backend)
    try:
        backend_version = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover
        backend_version = "unknown"
    return {
        "robustlab": __version__,
        "robustlab_sources": _SOURCES,
        "keras": keras.__version__,
        "backend": f"{backend} {backend_version}",
    }


def cpu_threads():
    """The CPU threads the backend's kernels split their sums across in this
    process (`robustlab.backend.<name>.threads`). Like the code, it decides
    the last digits of a CPU run, and so the run's trajectory: a run is
    resumed or reused only with the same count."""
    return int(_backend.get().cpu_threads())
