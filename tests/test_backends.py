"""robustlab runs on the TensorFlow and JAX backends and says so otherwise."""

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize("backend", ["torch", "numpy"])
def test_an_unsupported_backend_is_refused_at_import_naming_the_supported_ones(backend):
    env = dict(os.environ, KERAS_BACKEND=backend)
    result = subprocess.run([sys.executable, "-c", "import robustlab"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "ImportError: robustlab supports the Keras backends 'tensorflow', 'jax'" in (
        result.stderr)
    assert f"Received: backend='{backend}'" in result.stderr


def test_both_backend_packages_declare_the_same_interface():
    # Each backend package is imported in a fresh interpreter with its own
    # Keras backend (the JAX package imports JAX-only Keras internals).
    exported = {}
    for backend in ("tensorflow", "jax"):
        code = (f"import robustlab.backend.{backend} as b; "
                "missing = [n for n in b.__all__ if not hasattr(b, n)]; "
                "assert not missing, missing; print(' '.join(sorted(b.__all__)))")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                env=dict(os.environ, KERAS_BACKEND=backend), timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        exported[backend] = result.stdout.split()
    assert exported["tensorflow"] == exported["jax"]
    assert "make_hessian_vector_product" in exported["tensorflow"]

