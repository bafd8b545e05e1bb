"""The only place in robustlab that knows which Keras backend is running.

Everything outside this package is written with `keras.ops`; what cannot be
(gradients with respect to inputs or weights, Hessian-vector products, the
stateless plumbing of a training step) lives in one module per backend:
`robustlab.backend.tensorflow` and `robustlab.backend.jax`, which expose the
same functions. `get()` returns the module for the active Keras backend.
"""

import importlib

import keras

SUPPORTED_BACKENDS = ("tensorflow", "jax")


def name():
    """The active Keras backend's name, e.g. `"tensorflow"`."""
    return keras.backend.backend()


def check_supported():
    """Raise `ImportError` unless Keras runs on a backend robustlab supports."""
    active = name()
    if active not in SUPPORTED_BACKENDS:
        raise ImportError(
            "robustlab supports the Keras backends "
            f"{', '.join(repr(b) for b in SUPPORTED_BACKENDS)}; set "
            "KERAS_BACKEND to one of them before importing keras. "
            f"Received: backend={active!r}"
        )


_MODULES = {}


def get():
    """The backend module (`robustlab.backend.tensorflow` or `.jax`)."""
    active = name()
    module = _MODULES.get(active)
    if module is None:
        check_supported()
        module = importlib.import_module(f"robustlab.backend.{active}")
        _MODULES[active] = module
    return module
