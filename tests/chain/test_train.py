"""Training on ragged targets: the loss, the metrics, and the numbers `fit` reports."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import chain
from chain import Chain, NoiseFloorRatio, ragged_mse

from .conftest import make_chain, ragged_dataset


def manual_mse(net, x, steps, y):
    pred = net(x, steps)
    return float(np.mean((pred.flat_values.numpy() - y.flat_values.numpy()) ** 2))


def test_ragged_mse_golden_value():
    y = tf.ragged.constant([[[[1.0], [3.0]], []], [[], [[2.0]]]], ragged_rank=2)
    assert float(ragged_mse(y, y * 0)) == pytest.approx((1 + 9 + 4) / 3)
    assert float(ragged_mse(y.flat_values, y.flat_values)) == 0.0


def test_ragged_mse_rejects_other_output_size():
    with pytest.raises(ValueError, match="output_size is 3 but the model's output_size is 2"):
        ragged_mse(tf.zeros([4, 3]), tf.zeros([4, 2]))


def test_noise_floor_ratio_golden_and_config():
    metric = NoiseFloorRatio(0.25)
    metric.update_state(tf.ones([2, 2]), tf.zeros([2, 2]))
    metric.update_state(tf.zeros([2, 2]), tf.zeros([2, 2]))
    assert float(metric.result()) == pytest.approx(0.5 / 0.25)
    again = NoiseFloorRatio.from_config(metric.get_config())
    assert again.noise_floor == 0.25


def test_noise_floor_ratio_rejects_non_positive_floor():
    with pytest.raises(ValueError, match="`noise_floor` must be a finite number > 0; received 0"):
        NoiseFloorRatio(0)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), -1.0, "0.1", None, True])
def test_noise_floor_ratio_rejects_a_floor_that_is_not_a_finite_positive_number(value):
    with pytest.raises(ValueError, match=rf"`noise_floor` must be a finite number > 0; received {value!r}"):
        NoiseFloorRatio(value)


def test_fit_reports_the_masked_mse_of_a_manual_evaluation():
    data, (x, steps, y) = ragged_dataset()
    net = make_chain(strategy="packed")
    net.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse",
                metrics=[NoiseFloorRatio(0.01)])  # fmt: skip
    expected = manual_mse(net, x, steps, y)
    history = net.fit(data, epochs=2, validation_data=data, verbose=0).history
    for key in ("loss", "masked_mse", "val_loss", "val_masked_mse"):
        np.testing.assert_allclose(history[key], expected, rtol=1e-5)
    np.testing.assert_allclose(history["mse_over_noise_floor"], expected / 0.01, rtol=1e-5)
    logs = net.evaluate(data, return_dict=True, verbose=0)
    assert logs["masked_mse"] == pytest.approx(expected, rel=1e-5)
    assert logs["loss"] == pytest.approx(expected, rel=1e-5)


def test_fit_uses_real_steps_only():
    """Padding never counts: one batch with lengths 0 everywhere but one step is exact."""
    data, (x, steps, y) = ragged_dataset(n=8, batch_size=8)
    net = make_chain(strategy="padded")
    net.compile(optimizer=keras.optimizers.SGD(0.0), loss=ragged_mse)
    logs = net.evaluate(data, return_dict=True, verbose=0)
    flat = net(x, steps).flat_values.numpy()
    assert flat.shape[0] == int(steps.sum())
    assert logs["loss"] == pytest.approx(np.mean((flat - y.flat_values.numpy()) ** 2), rel=1e-5)


def test_tiny_fit_cuts_the_loss_tenfold():
    data, _ = ragged_dataset(n=16, batch_size=16, scale=1.0)
    net = make_chain(strategy="packed", output_size=2)
    net.compile(optimizer=keras.optimizers.Adam(3e-2), loss="mse")
    history = net.fit(data.repeat(10), epochs=15, verbose=0).history
    assert history["loss"][-1] < history["loss"][0] / 10


def test_callbacks_and_history_see_the_logs():
    data, _ = ragged_dataset()
    net = make_chain(strategy="packed")
    net.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    seen = []
    callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append(logs))
    stop = keras.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0)
    history = net.fit(data, epochs=5, callbacks=[callback, stop], verbose=0).history
    assert len(seen) == 2 and len(history["loss"]) == 2
    assert seen[0]["loss"] > 0 and seen[0]["masked_mse"] > 0


def test_fit_builds_an_unbuilt_model():
    data, _ = ragged_dataset()
    net = Chain(keras.layers.GRU(4, return_sequences=True), keras.layers.GRUCell(4), output_size=2)
    net.compile(optimizer="adam", loss="mse")
    history = net.fit(data, epochs=1, verbose=0).history
    assert history["loss"][0] > 0 and net.built


def test_fit_rejects_a_dataset_of_another_output_size():
    data, _ = ragged_dataset(out=3)
    net = make_chain(strategy="packed", output_size=2)
    net.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="dataset's output_size is 3 but the model's output_size is 2"):
        net.fit(data, epochs=1, verbose=0)


def test_fit_rejects_a_dataset_of_another_input_size():
    data, _ = ragged_dataset()
    data = data.map(lambda inputs, y: ((tf.concat([inputs[0], inputs[0]], -1), inputs[1]), y))
    net = make_chain(strategy="packed")
    net.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="`x` must have input_size 4.*received shape"):
        net.fit(data, epochs=1, verbose=0)


def test_fit_rejects_elements_without_steps():
    data = tf.data.Dataset.from_tensor_slices((np.zeros((4, 3, 4), "float32"), np.zeros((4, 3)))).batch(2)
    net = make_chain(strategy="packed")
    net.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match=r"expect inputs \(x, steps\)"):
        net.fit(data, epochs=1, verbose=0)


def test_unpack_rejects_a_lone_tensor():
    with pytest.raises(ValueError, match=r"expect a dataset of \(\(x, steps\), y\)"):
        chain._train.unpack(tf.zeros([2]))


def test_custom_training_loop_from_the_docs():
    data, (x, steps, y) = ragged_dataset()
    keras.utils.set_random_seed(0)
    # --- docs/training.md: a custom training loop ---
    net = chain.Chain(keras.layers.GRU(16, return_sequences=True), keras.layers.GRUCell(16),
                      output_size=2)
    optimizer = keras.optimizers.Adam(1e-2)

    @tf.function
    def train_step(x, steps, y):
        with tf.GradientTape() as tape:
            loss = chain.ragged_mse(y, net(x, steps, training=True))
        grads = tape.gradient(loss, net.trainable_variables)
        optimizer.apply_gradients(zip(grads, net.trainable_variables))
        return loss

    for epoch in range(20):
        for (x_batch, steps_batch), y_batch in data:
            loss = train_step(x_batch, steps_batch, y_batch)
    # --- end ---
    first = ragged_mse(y, make_chain(strategy="packed", output_size=2)(x, steps))
    assert float(ragged_mse(y, net(x, steps))) < float(first) / 3
    assert float(loss) > 0
