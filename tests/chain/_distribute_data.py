"""Data shared by the distribute children: batches whose halves hold uneven real steps.

The first half of every batch has at most one inner step per outer step, so the replicas or
workers that receive the halves see different counts of real steps.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

STEPS = 3


def dataset(global_batch: int) -> tf.data.Dataset:
    """`((x, steps), y)` batches: x `(batch, 5, 4)`, y ragged `(batch, 5, None, 2)`, repeated."""
    rng = np.random.default_rng(0)
    n, big_t = global_batch * STEPS, 5
    x = rng.normal(size=(n, big_t, 4)).astype("float32")
    steps = rng.integers(0, 4, size=(n, big_t)).astype("int32")
    steps[: n // 2] = np.minimum(steps[: n // 2], 1)
    values = rng.normal(size=(int(steps.sum()), 2)).astype("float32")
    y = tf.RaggedTensor.from_uniform_row_length(
        tf.RaggedTensor.from_row_lengths(values, steps.reshape(-1)), big_t
    )
    return tf.data.Dataset.from_tensor_slices(((x, steps), y)).batch(global_batch).repeat()
