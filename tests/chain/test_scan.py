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

