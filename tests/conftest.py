import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PYTHONHASHSEED", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


def softmax_regression(weights, bias, dtype="float32"):
    """A linear classifier with exactly the given weights (logits out)."""
    weights = np.asarray(weights, dtype)
    layer = keras.layers.Dense(weights.shape[1], dtype=dtype)
    model = keras.Sequential([keras.Input((weights.shape[0],), dtype=dtype), layer])
    layer.set_weights([weights, np.asarray(bias, dtype)])
    return model


_JAX_CACHE_VARIABLE = "ROBUSTLAB_TESTS_JAX_COMPILATION_CACHE"
_JAX_CACHE_MADE_HERE = pytest.StashKey[str]()


def pytest_configure(config):
    # On JAX nearly half of the suite's time was XLA compiling the same
    # training steps, attacks and products again for every test: each test
    # builds its own model, and JAX's in-memory cache is keyed on the Python
    # function. JAX's persistent cache is keyed on the computation itself, so
    # a test that compiles what an earlier one compiled loads the executable
    # XLA made then (the same machine code, so the same numbers bit for bit).
    # One cache for the run, shared by the xdist workers (they inherit the
    # variable) and removed when the run ends. Turned on in the pytest
    # processes only (jax.config, not JAX's environment variables): the
    # `robustlab` processes that tests start, and kill, compile as a user's.
    if keras.backend.backend() != "jax":
        return
    import jax

    directory = os.environ.get(_JAX_CACHE_VARIABLE)
    if directory is None:
        directory = tempfile.mkdtemp(prefix="robustlab-tests-jax-cache-")
        os.environ[_JAX_CACHE_VARIABLE] = directory
        config.stash[_JAX_CACHE_MADE_HERE] = directory
    jax.config.update("jax_compilation_cache_dir", directory)
    # Not the hundreds of tiny functions some tests compile: writing each
    # costs more than compiling it (with the lock below, JAX lists the
    # folder at every write).
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    # A size limit turns on the cache's file lock (the `filelock` package):
    # without it one worker could read an entry another is still writing.
    jax.config.update("jax_compilation_cache_max_size", 8 * 2**30)


def pytest_unconfigure(config):
    directory = config.stash.get(_JAX_CACHE_MADE_HERE, None)
    if directory is not None:
        shutil.rmtree(directory, ignore_errors=True)
        os.environ.pop(_JAX_CACHE_VARIABLE, None)


@pytest.fixture(scope="session")
def digits():
    import robustlab.data

    return robustlab.data.load("digits", train_size=1000, seed=0)


# Module fixtures that train models: the tests that use one run in one xdist
# worker, so that it is built once rather than once per worker.
SHARED_TRAINING_FIXTURES = {"run", "bare_fit", "forked", "reproduced", "contract"}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        shared = SHARED_TRAINING_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if shared and not item.get_closest_marker("xdist_group"):
            module = item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(f"{module}:{min(shared)}"))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_finish(session):
    # The tests that start Jupyter kernels must run in one xdist worker (see
    # tests/course/test_round_trip.py); pytest-xdist groups them by tagging
    # node ids, which some pytest releases silently ignore. Fail loudly then.
    if not getattr(session.config.option, "loadgroup", False):
        return
    untagged = [item.nodeid for item in session.items
                if item.get_closest_marker("xdist_group") and "@" not in item.nodeid]
    if untagged:
        message = (
            f"pytest-xdist did not group {len(untagged)} tests marked xdist_group "
            f"(pytest {pytest.__version__}); e.g. {untagged[0]}")
        # A worker's exception reaches the controller only as 'no active workers'.
        os.write(2, f"\nERROR: {message}\n".encode())
        raise pytest.UsageError(message)
