"""``datagen.load`` and TFRecord parsing with TensorFlow."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import datagen
from datagen._tfrecord import feature_spec


def test_batches_are_ragged_with_uniform_timesteps(small_npz):
    dataset = datagen.load(small_npz, batch_size=32)
    (x_spec, steps_spec), y_spec = dataset.element_spec
    assert x_spec.shape.as_list() == [None, 6, 4] and x_spec.dtype == tf.float32
    assert steps_spec.shape.as_list() == [None, 6] and steps_spec.dtype == tf.int32
    assert isinstance(y_spec, tf.RaggedTensorSpec)
    assert y_spec.shape.as_list() == [None, 6, None, 4] and y_spec.ragged_rank == 2 and y_spec.dtype == tf.float32
    (x, steps), y = next(iter(dataset))
    assert str(y.shape) == "(32, 6, None, 4)"
    np.testing.assert_array_equal(y.row_lengths(axis=2).numpy(), steps.numpy())


def test_batches_hold_the_stored_values_in_order(small_tfrecord):
    data = datagen.read(small_tfrecord)
    xs, steps, values = [], [], []
    for (x, s), y in datagen.load(small_tfrecord, batch_size=64):
        xs.append(x.numpy()), steps.append(s.numpy()), values.append(y.flat_values.numpy())
    np.testing.assert_array_equal(np.concatenate(xs), data["x"])
    np.testing.assert_array_equal(np.concatenate(steps), data["steps"])
    np.testing.assert_array_equal(np.concatenate(values), data["y_values"])


def test_shuffle_with_a_seed_is_reproducible_and_splits_are_disjoint(small_npz):
    def first_x(**kwargs):
        return next(iter(datagen.load(small_npz, batch_size=300, **kwargs)))[0][0].numpy()

    shuffled = first_x(shuffle=True, seed=5)
    np.testing.assert_array_equal(shuffled, first_x(shuffle=True, seed=5))
    assert not np.array_equal(shuffled, first_x())
    np.testing.assert_array_equal(np.sort(shuffled.reshape(300, -1), axis=0), np.sort(first_x().reshape(300, -1), axis=0))
    heldout = first_x(split="heldout", heldout_fraction=0.2)
    train = first_x(split="train", heldout_fraction=0.2)
    assert len(heldout) == 60 and len(train) == 240
    np.testing.assert_array_equal(np.concatenate([train, heldout]), first_x())


def test_drop_remainder_gives_a_static_batch(small_npz):
    dataset = datagen.load(small_npz, batch_size=64, drop_remainder=True)
    assert dataset.element_spec[1].shape.as_list() == [64, 6, None, 4]
    assert sum(1 for _ in dataset) == 4


def test_corrupt_or_missing_shard_fails_naming_the_file(tmp_path):
    datagen.make(tmp_path / "d", n_samples=20, shard_size=10)
    shard = tmp_path / "d" / "shard-00001.npz"
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(datagen.DatasetError, match="shard-00001.npz: sha256 does not match"):
        datagen.load(tmp_path / "d", verify=True)
    shard.unlink()
    with pytest.raises(datagen.DatasetError, match="shard-00001.npz: cannot read"):
        datagen.load(tmp_path / "d")


@pytest.mark.parametrize("kwargs,match", [
    ({"batch_size": 0}, r"`batch_size` must be an integer >= 1; received 0"),
    ({"seed": -1}, r"`seed` must be an integer in \[0, "),
    ({"shuffle": "yes"}, r"`shuffle` must be True or False; received 'yes'"),
    ({"verify": "no"}, r"`verify` must be True or False; received 'no'"),
    ({"drop_remainder": 1}, r"`drop_remainder` must be True or False; received 1"),
])  # fmt: skip
def test_bad_arguments_are_refused(small_npz, kwargs, match):
    with pytest.raises(ValueError, match=match):
        datagen.load(small_npz, **kwargs)


def test_tfrecord_parses_with_tf_io_ragged_feature(small_tfrecord):
    data = datagen.read(small_tfrecord)
    spec = feature_spec(6, 4, 4)
    records = tf.data.TFRecordDataset(sorted(str(p) for p in small_tfrecord.glob("shard-*.tfrecord")))
    offset = 0
    for index, record in enumerate(records):
        example = tf.io.parse_single_example(record, spec)
        steps = data["steps"][index]
        rows = slice(offset, offset + int(steps.sum()))
        offset = rows.stop
        np.testing.assert_array_equal(example["x"].numpy(), data["x"][index])
        np.testing.assert_array_equal(example["steps"].numpy(), steps)
        assert example["y_values"].shape.as_list() == [6, None, 4]
        np.testing.assert_array_equal(example["y_values"].row_lengths().numpy(), steps)
        np.testing.assert_array_equal(example["y_values"].flat_values.numpy(), data["y_values"][rows])
        np.testing.assert_array_equal(example["y_clean_values"].flat_values.numpy(), data["y_clean_values"][rows])
    assert index == 299 and offset == len(data["y_values"])
