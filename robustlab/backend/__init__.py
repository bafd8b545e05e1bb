"""Where robustlab does what depends on the Keras backend.

Everything outside this package is written with `keras.ops`; what cannot be
(gradients with respect to inputs or weights, Hessian-vector products, the
stateless plumbing of a training step, robustlab's own input pipelines) lives
in one package per backend, `robustlab.backend.tensorflow` and
`robustlab.backend.jax`, which expose the same functions. `get()` returns the
one of the active backend.

Four places outside it know about a framework, none of them autodiff:
`model_validation` checks a user's `tf.data.Dataset` batch by batch (a
TensorFlow object that Keras accepts on either backend); `data` loads
tensorflow-datasets (which needs TensorFlow on either backend);
`AdversarialModel` attaches the state Keras's JAX trainer keeps apart from
the variables while it loops, where an exception ends a `fit`, `evaluate` or
`predict` early and where one of its own methods is called while one runs;
`_keras_compat` holds the JAX details of Keras's private API that this
takes (that state, and the mark of a variable whose value was lost).
"""

import importlib
import json
import os

__all__ = [
    "SUPPORTED_BACKENDS",
    "available_cpus",
    "check_requested",
    "check_supported",
    "get",
    "name",
]

SUPPORTED_BACKENDS = ("tensorflow", "jax")


def available_cpus():
    """The CPUs this process may run on: what TensorFlow's and XLA's CPU
    thread pools size themselves to by default."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1  # pragma: no cover (macOS, Windows)


def _unsupported(backend):
    return ImportError(
        "robustlab supports the Keras backends "
        f"{', '.join(repr(b) for b in SUPPORTED_BACKENDS)}; set KERAS_BACKEND "
        f"to one of them before importing keras. Received: backend={backend!r}"
    )


def check_requested():
    """Raise `ImportError` when the backend Keras is about to load is one
    robustlab does not support, before Keras is imported (Keras would
    otherwise fail first, on torch, with an error about a missing package
    rather than about robustlab). That backend is, as Keras reads it,
    KERAS_BACKEND when set and not empty, else the "backend" of Keras's
    configuration file (`$KERAS_HOME/keras.json`, or `~/.keras/keras.json`)."""
    requested = os.environ.get("KERAS_BACKEND") or _configured_backend()
    if requested is not None and requested not in SUPPORTED_BACKENDS:
        raise _unsupported(requested)


def _configured_backend():
    """The "backend" of the keras.json Keras reads at import, or None."""
    if "KERAS_HOME" in os.environ:
        folder = os.environ["KERAS_HOME"]
    else:
        home = os.path.expanduser("~")
        folder = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    try:
        with open(os.path.expanduser(os.path.join(folder, "keras.json"))) as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None  # Keras too falls back to its default then
    backend = config.get("backend") if isinstance(config, dict) else None
    return backend if isinstance(backend, str) else None


def name():
    """The active Keras backend's name, e.g. `"tensorflow"`."""
    import keras

    return keras.backend.backend()


def check_supported():
    """Raise `ImportError` unless Keras runs on a backend robustlab supports."""
    active = name()
    if active not in SUPPORTED_BACKENDS:
        raise _unsupported(active)


_MODULES = {}


def get():
    """The backend package (`robustlab.backend.tensorflow` or `.jax`)."""
    active = name()
    module = _MODULES.get(active)
    if module is None:
        check_supported()
        module = importlib.import_module(f"robustlab.backend.{active}")
        _MODULES[active] = module
    return module
