"""Adversarial training (and AWP) under the backends' data parallelism, on two
logical CPU devices, agrees with training on one device."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

SCRIPT = os.path.join(os.path.dirname(__file__), "distributed_fit.py")


def run_distributed(*args):
    env = dict(os.environ, KERAS_BACKEND=keras.backend.backend())
    result = subprocess.run(
        [sys.executable, SCRIPT, *args], env=env, capture_output=True, text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("awp", [False, True], ids=["pgd", "pgd+awp"])
def test_two_devices_train_like_one(awp):
    # TensorFlow: tf.distribute.MirroredStrategy; JAX: keras.distribution.DataParallel.
    result = run_distributed(*(["--awp"] if awp else []))
    assert result["replicas"] == 2
    assert result["max_weight_difference"] < 1e-4
    for key, values in result["single_device_history"].items():
        np.testing.assert_allclose(result["history"][key], values, rtol=1e-4,
                                   atol=1e-5, err_msg=key)
