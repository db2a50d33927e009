"""Config round trips, `.keras` save and load, and the serving export."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from chain import Chain

from .conftest import make_chain
from ..tiers import each_once

SAVED_KINDS = ("gru", "lstm", "stacked", "functional")
SAVED_STATES = ("carry", "init")


@pytest.mark.parametrize("kind", SAVED_KINDS)
@pytest.mark.parametrize("state", SAVED_STATES)
def test_keras_save_and_load_give_identical_outputs(tmp_path, kind, state, data):
    x, steps = data
    net = make_chain(kind, state, strategy="packed", max_steps=5)
    want = net(x, steps).flat_values.numpy()
    path = tmp_path / "m.keras"
    net.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, Chain)
    assert (loaded.state, loaded.strategy, loaded.max_steps) == (state, "packed", 5)
    np.testing.assert_array_equal(loaded(x, steps).flat_values.numpy(), want)


def test_config_round_trip_rebuilds_the_same_architecture(data):
    x, steps = data
    net = make_chain("lstm", "reset", strategy="padded", output_size=3)
    clone = Chain.from_config(net.get_config())
    clone.build((None, None, 4))
    clone.set_weights(net.get_weights())
    assert clone.get_config() == net.get_config()
    np.testing.assert_allclose(
        clone(x, steps).flat_values.numpy(), net(x, steps).flat_values.numpy(), atol=1e-6
    )


def test_serving_export_returns_flat_values_and_row_lengths(tmp_path, data):
    x, steps = data
    net = make_chain("gru", "carry", strategy="packed")
    net.export_serving(str(tmp_path / "served"))
    served = tf.saved_model.load(str(tmp_path / "served"))
    result = served.serve(tf.constant(x), tf.constant(steps))
    np.testing.assert_allclose(
        result["flat_values"].numpy(), net(x, steps).flat_values.numpy(), atol=1e-6
    )
    np.testing.assert_array_equal(result["row_lengths"].numpy(), steps)
    # A different batch, T and steps pattern runs through the same signature.
    other = served.serve(tf.zeros([2, 7, 4]), tf.fill([2, 7], 2))
    assert other["flat_values"].shape == (28, 2)


def _served_matches(path, net, x, steps):
    served = tf.saved_model.load(str(path))  # held: its functions need the loaded variables alive
    result = served.serve(tf.constant(x), tf.constant(steps))
    np.testing.assert_allclose(result["flat_values"].numpy(), net(x, steps).flat_values.numpy(), atol=1e-6)


def test_serving_export_that_fails_leaves_the_path_as_it_was(tmp_path, data, monkeypatch):
    x, steps = data
    net = make_chain("gru", "carry", strategy="packed")
    net(x, steps)
    real_save = tf.saved_model.save

    def failing_save(module, path, **kwargs):
        real_save(module, path, **kwargs)  # everything written, then the write fails
        raise OSError("disk full")

    monkeypatch.setattr(tf.saved_model, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        net.export_serving(str(tmp_path / "served"))
    assert list(tmp_path.iterdir()) == []  # no export, and nothing half-written beside it

    monkeypatch.setattr(tf.saved_model, "save", real_save)
    net.export_serving(str(tmp_path / "served"))
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    monkeypatch.setattr(tf.saved_model, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        net.export_serving(str(tmp_path / "served"))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    _served_matches(tmp_path / "served", net, x, steps)  # the earlier export still serves


def test_serving_export_replaces_an_earlier_one(tmp_path, data):
    x, steps = data
    net = make_chain("gru", "carry", strategy="packed")
    net(x, steps)
    net.export_serving(str(tmp_path / "served"))
    for variable in net.trainable_variables:
        variable.assign(variable * 0.5)
    net.export_serving(str(tmp_path / "served"))
    _served_matches(tmp_path / "served", net, x, steps)
    assert [p.name for p in tmp_path.iterdir()] == ["served"]
    assert oct((tmp_path / "served").stat().st_mode & 0o777) != oct(0o700)


def test_serving_export_into_a_file_is_refused(tmp_path, data):
    x, steps = data
    net = make_chain("gru", "carry", strategy="packed")
    net(x, steps)
    (tmp_path / "served").write_text("keep me")
    with pytest.raises(ValueError, match=r"`path` must be a directory .*received '.*served', a file"):
        net.export_serving(str(tmp_path / "served"))
    assert (tmp_path / "served").read_text() == "keep me"


def test_serving_export_needs_a_built_model(tmp_path):
    net = Chain(keras.layers.GRU(3, return_sequences=True), keras.layers.GRUCell(3))
    with pytest.raises(ValueError, match="needs a built model"):
        net.export_serving(str(tmp_path / "x"))


# The default tier saves every model B once, the modes in turn; `-m slow` runs both modes of each.
DEFAULT_TIER = {
    "test_keras_save_and_load_give_identical_outputs": each_once({"kind": SAVED_KINDS}, {"state": SAVED_STATES}),
}
