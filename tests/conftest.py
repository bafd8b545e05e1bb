import os

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


@pytest.fixture(scope="session")
def digits():
    import robustlab.data

    return robustlab.data.load("digits", train_size=1000, seed=0)
