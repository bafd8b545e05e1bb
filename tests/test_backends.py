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
