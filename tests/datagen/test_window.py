"""``datagen.load(..., window=W)``: consecutive windows along T, each sample in one batch slot."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import datagen


# small_npz: 300 samples, T = 6 (tests/datagen/conftest.py)


def groups(dataset, count: int):
    """The dataset's elements, cut into lists of ``count`` consecutive windows."""
    elements = list(dataset)
    assert len(elements) % count == 0
    return [elements[start : start + count] for start in range(0, len(elements), count)]


def concatenated(windows):
    x = tf.concat([w[0][0] for w in windows], axis=1)
    steps = tf.concat([w[0][1] for w in windows], axis=1)
    y = tf.concat([w[1] for w in windows], axis=1)
    return x, steps, y


def assert_same_batch(actual, expected):
    (x, steps), y = expected
    np.testing.assert_array_equal(actual[0].numpy(), x.numpy())
    np.testing.assert_array_equal(actual[1].numpy(), steps.numpy())
    assert actual[2].ragged_rank == y.ragged_rank == 2 and actual[2].shape[0] == y.shape[0]
    np.testing.assert_array_equal(actual[2].row_lengths(axis=2).numpy(), y.row_lengths(axis=2).numpy())
    np.testing.assert_array_equal(actual[2].flat_values.numpy(), y.flat_values.numpy())


@pytest.mark.parametrize("window,shuffle", [(1, False), (4, True), (5, False), (6, True)])
def test_windows_of_a_group_concatenate_to_the_unwindowed_batch(small_npz, window, shuffle):
    count = datagen.windows_per_sample(6, window)
    windowed = datagen.load(small_npz, batch_size=128, shuffle=shuffle, seed=3, window=window)
    whole = list(datagen.load(small_npz, batch_size=128, shuffle=shuffle, seed=3, drop_remainder=True))
    found = groups(windowed, count)
    assert len(found) == len(whole) == 300 // 128  # only full batches
    for group, batch in zip(found, whole):
        for index, ((x, steps), y) in enumerate(group):
            width = min(window, 6 - index * window)
            assert x.shape == (128, width, 4) and steps.shape == (128, width)
            assert y.shape[0] == 128 and y.shape[-1] == 4 and y.ragged_rank == 2
            assert y.bounding_shape()[:2].numpy().tolist() == [128, width]
            np.testing.assert_array_equal(y.row_lengths(axis=2).numpy(), steps.numpy())
        assert_same_batch(concatenated(group), batch)


def test_each_slot_holds_one_sample_across_its_windows_and_windows_are_in_order(small_npz):
    data = datagen.read(small_npz)
    windowed = datagen.load(small_npz, batch_size=50, shuffle=True, seed=11, window=4)
    for group in groups(windowed, 2):
        first, second = group
        x = np.concatenate([first[0][0].numpy(), second[0][0].numpy()], axis=1)
        # every slot's two windows are outer steps 0-3 and 4-5 of one stored sample
        rows = [int(np.flatnonzero((data["x"] == sample).all(axis=(1, 2)))[0]) for sample in x]
        np.testing.assert_array_equal(x, data["x"][rows])
        np.testing.assert_array_equal(first[0][1].numpy(), data["steps"][rows, :4])
        np.testing.assert_array_equal(second[0][1].numpy(), data["steps"][rows, 4:])


def test_shuffled_windows_change_sample_order_between_passes_but_not_window_order(small_npz):
    dataset = datagen.load(small_npz, batch_size=100, shuffle=True, seed=2, window=3)
    passes = [[element[0][0].numpy() for element in dataset] for _ in range(2)]
    assert not np.array_equal(passes[0][0], passes[1][0])
    for elements in passes:
        assert [e.shape[1] for e in elements] == [3, 3] * 3


def test_element_spec_has_a_fixed_batch_and_free_window_length(small_npz):
    (x_spec, steps_spec), y_spec = datagen.load(small_npz, batch_size=8, window=4).element_spec
    assert x_spec.shape.as_list() == [8, None, 4] and steps_spec.shape.as_list() == [8, None]
    assert y_spec.shape.as_list() == [8, None, None, 4] and y_spec.ragged_rank == 2


@pytest.mark.parametrize(
    "window,match",
    [
        (0, r"`window` must be an integer >= 1; received 0"),
        (-2, r"`window` must be an integer >= 1; received -2"),
        (2.5, r"`window` must be an integer >= 1; received 2.5"),
        ("4", r"`window` must be an integer >= 1; received '4'"),
        (True, r"`window` must be an integer >= 1; received True"),
        (7, r"`window` must be an integer in \[1, 6\]; received 7"),
    ],
)
def test_a_window_that_is_not_a_positive_integer_up_to_t_is_refused(small_npz, window, match):
    with pytest.raises(ValueError, match=match) as caught:
        datagen.load(small_npz, batch_size=8, window=window)
    assert caught.value.name == "window"


def test_a_batch_larger_than_the_split_is_refused_with_a_window(small_npz):
    with pytest.raises(ValueError, match=r"`batch_size` must be <= 30, the samples of the split, with `window`"):
        datagen.load(small_npz, batch_size=31, split="heldout", window=2)
    assert len(list(datagen.load(small_npz, batch_size=30, split="heldout", window=2))) == 3


@pytest.mark.parametrize(
    "timesteps,window,count",
    [(16, 5, 4), (16, 16, 1), (16, 1, 16), (32, 8, 4), (7, 3, 3)],
)
def test_windows_per_sample_is_the_ceiling_of_t_over_w(timesteps, window, count):
    assert datagen.windows_per_sample(timesteps, window) == count


@pytest.mark.parametrize(
    "timesteps,window,match",
    [(0, 1, r"`timesteps` must be an integer >= 1; received 0"), (4, 5, r"`window` must be an integer in \[1, 4\]; received 5"),
     (4, None, r"`window` must be an integer in \[1, 4\]; received None")],
)  # fmt: skip
def test_windows_per_sample_refuses_bad_values(timesteps, window, match):
    with pytest.raises(ValueError, match=match):
        datagen.windows_per_sample(timesteps, window)
