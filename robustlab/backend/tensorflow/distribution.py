"""Random draws under `tf.distribute` that match one device's.

A replica of a `tf.distribute` step sees only its shard of the batch, and
every replica holds the same copy of a seed generator's state: drawn per
shard, the noise would be the same on every replica (the halves of a batch
would get identical random starts) and other than one device's. Each replica
therefore draws the noise of the whole global batch from the shared state and
keeps its own rows, so that N replicas use exactly the numbers one device
draws, and the seed advances once per draw, as on one device.
"""

import tensorflow as tf

__all__ = [
    "draw_replica_rows",
]


def draw_replica_rows(draw, batch_size):
    """This replica's rows of `draw(n)`, the noise for the global batch of `n`
    examples; `batch_size` is the number of examples of this replica.

    Outside a replica context of several replicas this is `draw(batch_size)`.
    """
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return draw(batch_size)
    # The local sizes, not `num_replicas * batch_size`: the shards of an
    # uneven last batch differ in size.
    sizes = context.all_gather(tf.reshape(tf.cast(batch_size, "int32"), [1]), axis=0)
    offset = tf.reduce_sum(sizes[: context.replica_id_in_sync_group])
    rows = draw(tf.reduce_sum(sizes))
    return rows[offset : offset + tf.cast(batch_size, "int32")]
