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


def _import_robustlab(tmp_path, configured, **variables):
    """`import robustlab` in a fresh interpreter whose Keras configuration
    file names `configured` (None: no file), with KERAS_BACKEND as given."""
    home = tmp_path / "keras_home"
    home.mkdir()
    if configured is not None:
        (home / "keras.json").write_text('{"backend": "%s"}' % configured)
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update(KERAS_HOME=str(home), **variables)
    return subprocess.run(
        [sys.executable, "-c", "import robustlab, keras; print(keras.backend.backend())"],
        env=env, capture_output=True, text=True, timeout=300)


def test_an_unsupported_backend_in_keras_json_is_refused_as_the_variable_is(tmp_path):
    result = _import_robustlab(tmp_path, "torch")
    assert result.returncode != 0
    assert "ImportError: robustlab supports the Keras backends" in result.stderr
    assert "Received: backend='torch'" in result.stderr


@pytest.mark.parametrize("configured, variables, expected", [
    ("torch", {"KERAS_BACKEND": "jax"}, "jax"),  # the variable wins, as in Keras
    (None, {"KERAS_BACKEND": ""}, "tensorflow"),  # empty: unset, as in Keras
    ("jax", {"KERAS_BACKEND": ""}, "jax"),
])
def test_the_backend_checked_is_the_one_keras_loads(tmp_path, configured, variables,
                                                    expected):
    result = _import_robustlab(tmp_path, configured, **variables)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == expected


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

