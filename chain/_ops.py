"""Graph helpers that trace to a few ops where TensorFlow's own build dozens.

A chain's graph is traced on its first call and whenever a new kind of call comes; every op it
holds costs tracing, Grappler's rewrites and the executor's set-up. `tf.repeat` with tensor
counts and `tf.boolean_mask` are each about thirty to fifty ops (a mask of every row's longest
run, reshapes and shape checks); these do the same work in two to six.
"""

from __future__ import annotations

import tensorflow as tf


def segment_ids(counts: tf.Tensor) -> tf.Tensor:
    """Each index `i` of `counts` `(n,)` int32, `counts[i]` times: `(sum(counts),)` int32.

    What `tf.repeat(tf.range(n), counts)` gives, in a few ops: each position finds its segment
    by a binary search of the segments' ends. `tf.repeat` builds a `(n, max(counts))` mask and
    masks it, about fifty graph ops each, which a traced chain paid many times over.
    """
    ends = tf.reshape(tf.cumsum(counts), [1, -1])
    positions = tf.reshape(tf.range(tf.reduce_sum(counts)), [1, -1])
    return tf.reshape(tf.raw_ops.UpperBound(sorted_inputs=ends, values=positions, out_type=tf.int32), [-1])


def repeat_rows(values: tf.Tensor, counts: tf.Tensor) -> tf.Tensor:
    """`values[i]` `counts[i]` times, along the first axis (`tf.repeat(values, counts, axis=0)`)."""
    return tf.gather(values, segment_ids(counts))


def masked(values: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    """The entries of `values` where `mask` (rank k, its shape a prefix of `values`') is True,
    in row-major order: `tf.boolean_mask(values, mask)`."""
    return tf.gather_nd(values, tf.where(mask))
