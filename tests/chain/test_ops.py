"""The few-op graph helpers equal the TensorFlow functions they stand for, eagerly and in a graph."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from chain import _ops

COUNTS = [[], [0], [0, 0], [3], [0, 3, 1, 0, 2], [1, 1, 1], [5, 0, 0, 4]]


@pytest.mark.parametrize("counts", COUNTS)
def test_segment_ids_and_repeat_rows_are_tf_repeat(counts):
    counts = tf.constant(counts, tf.int32)
    values = tf.reshape(tf.range(2 * tf.size(counts), dtype=tf.float32), [-1, 2])
    graph = tf.function(lambda c, v: (_ops.segment_ids(c), _ops.repeat_rows(v, c)), autograph=False)
    for ids, rows in (graph(counts, values), (_ops.segment_ids(counts), _ops.repeat_rows(values, counts))):
        np.testing.assert_array_equal(ids.numpy(), tf.repeat(tf.range(tf.size(counts)), counts).numpy())
        np.testing.assert_array_equal(rows.numpy().reshape(-1, 2), tf.repeat(values, counts, axis=0).numpy())


@pytest.mark.parametrize("shape", [(0,), (4,), (2, 5)])
def test_masked_is_boolean_mask_and_so_is_its_gradient(shape):
    rng = np.random.default_rng(0)
    values = tf.constant(rng.normal(size=(*shape, 2)).astype("float32"))
    mask = tf.constant(rng.random(shape) < 0.5)
    grads = []
    for select in (_ops.masked, tf.boolean_mask):
        with tf.GradientTape() as tape:
            tape.watch(values)
            picked = select(values, mask)
            loss = tf.reduce_sum(tf.sin(picked) * tf.range(tf.size(picked) // 2, dtype=tf.float32)[:, None])
        grads.append((picked.numpy(), tf.convert_to_tensor(tape.gradient(loss, values)).numpy()))
    np.testing.assert_array_equal(grads[0][0], grads[1][0])
    np.testing.assert_array_equal(grads[0][1], grads[1][1])
    assert len(grads[0][0]) == int(tf.reduce_sum(tf.cast(mask, tf.int32)))
