"""Training on ragged targets: the loss, the metrics, and the numbers `fit` reports."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import chain
from chain import Chain, NoiseFloorRatio, ragged_mse

from .conftest import INPUT_SIZE, make_chain, ragged_dataset


def manual_mse(net, x, steps, y):
    pred = net(x, steps)
    return float(np.mean((pred.flat_values.numpy() - y.flat_values.numpy()) ** 2))


def test_ragged_mse_golden_value():
    y = tf.ragged.constant([[[[1.0], [3.0]], []], [[], [[2.0]]]], ragged_rank=2)
    assert float(ragged_mse(y, y * 0)) == pytest.approx((1 + 9 + 4) / 3)
    assert float(ragged_mse(y.flat_values, y.flat_values)) == 0.0


def test_ragged_mse_rejects_other_output_size():
    with pytest.raises(ValueError, match=r"`y_true` must have 2 channels in its last dimension, the chain's output size; "
                                         r"received y_true of shape \(4, 3\)"):
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


def test_tiny_fit_cuts_the_loss_tenfold(adam_chain):
    data, _ = ragged_dataset(n=16, batch_size=16, scale=1.0)
    net = adam_chain
    net.optimizer.learning_rate = 3e-2
    history = net.fit(data.repeat(10), epochs=15, verbose=0).history
    assert history["loss"][-1] < history["loss"][0] / 10


def test_callbacks_and_history_see_the_logs(adam_chain):
    data, _ = ragged_dataset()
    net = adam_chain
    net.optimizer.learning_rate = 1e-2
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


class CountingChain(Chain):
    """Counts the traces of its train and test steps (each runs in Python only while traced)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.traced = {"train": 0, "test": 0}

    def train_step(self, data):
        self.traced["train"] += 1
        return super().train_step(data)

    def test_step(self, data):
        self.traced["test"] += 1
        return super().test_step(data)


@pytest.mark.parametrize("given", ["dataset", "arrays"])
def test_a_first_evaluate_and_fit_trace_their_steps_once(given):
    """Weights and optimizer variables made while a step traces would make it trace twice."""
    data, (x, steps, y) = ragged_dataset()
    net = CountingChain(keras.layers.GRU(4, return_sequences=True), keras.layers.GRUCell(4), output_size=2)
    net.compile(optimizer="adam", metrics=["mae"])
    args = (data,) if given == "dataset" else ((x, steps), y)
    net.evaluate(*args, verbose=0)
    assert net.built and net.traced == {"train": 0, "test": 1}
    net.fit(*args, epochs=2, verbose=0, **({} if given == "dataset" else {"batch_size": 8}))
    assert net.optimizer.iterations.numpy() == 6 and net.traced == {"train": 1, "test": 1}


def test_fit_rejects_a_dataset_of_another_output_size():
    data, _ = ragged_dataset(out=3)
    net = make_chain(strategy="packed", output_size=2)
    net.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match=r"`y` must have 2 channels in its last dimension, the chain's output size; "
                                         r"received y of shape \(None, 5, None, 3\)"):
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


# ----------------------------------------------------------------------------- windows


class _ResetsAsTheCliDid(keras.callbacks.Callback):
    """What `chain fit --window` did before `chain.WindowedStates`: reset at each epoch's batch
    `i * windows`, and score validation data on whole sequences with the states set aside."""

    def __init__(self, windows):
        super().__init__()
        self.windows = windows

    def on_train_batch_begin(self, batch, logs=None):
        if batch % self.windows == 0:
            self.model.reset_states()

    def on_test_begin(self, logs=None):
        self.model.stateful = False

    def on_test_end(self, logs=None):
        self.model.stateful = True


@pytest.fixture(scope="module")
def windows(tmp_path_factory):
    import datagen

    path = tmp_path_factory.mktemp("windows") / "data"
    datagen.make(path, task="running", n_samples=12, timesteps=6, input_size=INPUT_SIZE, output_size=2)
    train = datagen.load(path, batch_size=4, split="train", window=4)
    held = datagen.load(path, batch_size=4, split="heldout")
    return train, held, datagen.windows_per_sample(6, 4)


def _fit_windows(windows, callbacks, validate=True):
    train, held, _ = windows
    keras.utils.set_random_seed(3)
    net = Chain(keras.layers.GRU(6, return_sequences=True), keras.layers.GRUCell(5), output_size=2, stateful=True)
    net.build((4, None, INPUT_SIZE))
    net.compile(keras.optimizers.SGD(0.1))
    history = net.fit(train, validation_data=held if validate else None, epochs=2, callbacks=callbacks,
                      verbose=0).history
    return net, history


def test_windowed_states_resets_per_sample_as_chain_fit_window_did(windows):
    per_sample = windows[2]
    assert per_sample == 2
    net, history = _fit_windows(windows, [chain.WindowedStates(per_sample)])
    cli, cli_history = _fit_windows(windows, [_ResetsAsTheCliDid(per_sample)])
    carried, _ = _fit_windows(windows, [], validate=False)  # held-out batches of 2 need the states set aside
    for got, want, other in zip(net.get_weights(), cli.get_weights(), carried.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    assert any(not np.allclose(got, other, atol=1e-6) for got, other in zip(net.get_weights(), carried.get_weights()))
    np.testing.assert_allclose(history["val_loss"], cli_history["val_loss"], rtol=1e-6)
    assert net.stateful  # set aside for validation only


def test_windowed_states_refuses_bad_windows_and_a_chain_without_states(windows):
    with pytest.raises(ValueError, match=r"`windows` must be a positive int, the windows per batch of samples; received 0"):
        chain.WindowedStates(0)
    net = make_chain(strategy="packed")
    net.compile("sgd")
    with pytest.raises(ValueError, match=r"WindowedStates resets the states .* received a Chain with stateful=False"):
        net.fit(windows[0], epochs=1, callbacks=[chain.WindowedStates(2)], verbose=0)
    stateful = Chain(keras.layers.GRU(6, return_sequences=True), keras.layers.GRUCell(5), output_size=2, stateful=True)
    stateful.build((4, None, INPUT_SIZE))
    stateful.compile("sgd")
    with pytest.raises(ValueError, match=r"`steps_per_epoch` must be a multiple of 2; received 3"):
        stateful.fit(windows[0].repeat(), steps_per_epoch=3, callbacks=[chain.WindowedStates(2)], verbose=0)


# ----------------------------------------------------------------------------- targets against steps


def _targets_of(lengths, big_t=3, out=2):
    lengths = np.asarray(lengths)
    cells = tf.RaggedTensor.from_row_lengths(tf.zeros([int(lengths.sum()), out]), lengths.reshape(-1))
    return tf.RaggedTensor.from_uniform_row_length(cells, big_t)


X_ROWS = np.random.default_rng(0).normal(size=(2, 3, INPUT_SIZE)).astype("float32")
STEPS_ROWS = np.array([[1, 2, 0], [2, 1, 1]], "int32")
SWAPPED = _targets_of([[1, 2, 0], [1, 2, 1]])  # the same total, other rows at (1, 0) and (1, 1)


def test_targets_whose_rows_differ_from_steps_are_named_at_the_first_such_cell():
    net = make_chain(strategy="packed")
    message = r"`y` must have steps\[b, t\] rows at every \(b, t\); received 1 at \(batch=1, t=0\) where steps\[1, 0\] = 2"
    with pytest.raises(ValueError, match=message):
        net.compute_loss(x=(X_ROWS, STEPS_ROWS), y=SWAPPED)
    net.compile("sgd", run_eagerly=True)
    with pytest.raises(ValueError, match=message):
        net.fit(tf.data.Dataset.from_tensors(((X_ROWS, STEPS_ROWS), SWAPPED)), verbose=0)
    with pytest.raises(ValueError, match=r"`y` must be \(batch, T, None, D\) with the \(batch, T\) of `steps` \(2, 3\); "
                                         r"received 3 samples with T in \[2\]"):
        net.compute_loss(x=(X_ROWS, STEPS_ROWS), y=_targets_of(np.ones((3, 2), "int32"), big_t=2))


def test_targets_whose_rows_differ_from_steps_are_refused_in_fit_graph_steps():
    net = make_chain(strategy="packed")
    net.compile("sgd")
    data = tf.data.Dataset.from_tensors(((X_ROWS, STEPS_ROWS), SWAPPED))
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"`y` must have steps\[b, t\] rows at every \(b, t\); received\] \[1\] \[at \(batch, t\) =\] \[1\] \[0\] "
                             r"\[where steps is\] \[2\]"):  # fmt: skip
        net.fit(data, verbose=0)
    before = [w.copy() for w in net.get_weights()]
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`y` must have steps\[b, t\] rows"):
        net.evaluate(data, verbose=0)
    net.fit(tf.data.Dataset.from_tensors(((X_ROWS, STEPS_ROWS), _targets_of(STEPS_ROWS))), verbose=0)  # rows that match
    assert any(not np.array_equal(a, b) for a, b in zip(before, net.get_weights()))
