"""The accelerator TensorFlow computes on, if any.

Keras on TensorFlow places its work on the first visible GPU when there is
one; a run's numbers then depend on that GPU, not on the host's CPU.
"""

import tensorflow as tf

__all__ = [
    "accelerator",
]


def accelerator():
    """`"gpu: <name>"` for the first GPU TensorFlow may use, else None (the
    CPU computes). Reads the visible devices only, so it can be called before
    the thread counts are set."""
    gpus = tf.config.get_visible_devices("GPU")
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"gpu: {details.get('device_name', gpus[0].name)}"
