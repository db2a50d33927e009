"""The layout bookkeeping of the packed GRU's backward pass, on a layout worked out by hand."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from chain import _scan


def test_run_starts_find_each_change_of_source_row():
    # Three samples, longest first, reading source rows 10.., 20.. and 30.. along their steps:
    #   sample 0: 10 10 11 12;  sample 1: 20 21 21;  sample 2: 30 30
    active = tf.constant([3, 3, 2, 1])
    rows = tf.constant([10, 20, 30, 10, 21, 30, 11, 21, 12])  # step-major
    runs = _scan._RunStarts(rows, active, tf.float32)
    # every run's source row, in the order of its first entry
    np.testing.assert_array_equal(runs.rows.numpy(), [10, 20, 30, 21, 11, 12])
    # for steps 1, 2 and 3: the samples that start a run there, and the mask that zeroes their sums
    assert [runs.starts.read(j).numpy().tolist() for j in range(3)] == [[1], [0], [0]]
    assert [runs.keep.read(j).numpy().tolist() for j in range(3)] == [[1, 0, 1], [0, 1], [0]]


def test_a_padded_scan_that_gathers_its_rows_equals_one_fed_them_gathered():
    """`index` form: each step gathers its rows of a small source, and the backward pass sums
    their gradients into those rows, as autodiff of one gather before the loop would."""
    import keras

    from chain import _kernels

    cell = keras.layers.GRUCell(3)
    cell.build((None, 4))
    kernel = _kernels.GRUKernel(cell)
    rng = np.random.default_rng(0)
    source = tf.constant(rng.normal(size=(5, 9)).astype("float32"))
    index = tf.constant(rng.integers(0, 5, size=(6, 2)).astype("int32"))  # 6 steps, 2 rows
    h0 = [tf.constant(rng.normal(size=(2, 3)).astype("float32"))]
    size, longest = 6, 4  # buffers of 6 steps, 4 run: the last two rows of outputs are zeros

    def loss_of(gathered):
        with tf.GradientTape() as tape:
            tape.watch(source)
            params = kernel.params(tf.float32)
            if gathered:
                outs, _ = _scan.padded_scan(kernel, source, size, longest, h0, params, index=index)
            else:
                outs, _ = _scan.padded_scan(kernel, tf.gather(source, index), size, longest, h0, params)
            loss = tf.reduce_sum(tf.sin(outs) * tf.range(1.0, 4.0))
        return outs, tape.gradient(loss, [source, *cell.trainable_weights])

    (got, got_grads), (want, want_grads) = loss_of(True), loss_of(False)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)
    assert not np.any(got.numpy()[longest:])
    assert np.any(got_grads[0].numpy())
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(tf.convert_to_tensor(g).numpy(), tf.convert_to_tensor(w).numpy(), atol=1e-6)
