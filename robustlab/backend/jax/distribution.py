"""Random draws under `keras.distribution` that match one device's.

`keras.distribution.DataParallel` jit-compiles the step for the global batch
and shards its arrays: a draw inside the step is already the draw of the
whole batch, the one a single device makes, so nothing is to be done (the
TensorFlow package's `draw_replica_rows` is where replicas must cooperate).
"""

__all__ = [
    "draw_replica_rows",
]


def draw_replica_rows(draw, batch_size):
    """`draw(batch_size)`: the step sees the global batch (see above)."""
    return draw(batch_size)
