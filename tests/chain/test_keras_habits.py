"""The Keras habits a user brings to a Chain: each works, or says clearly why not."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import chain
from chain import Chain
from chain._losses import FlatLoss, sample_weights
from chain._train import predict_inputs, unpack

from ..tiers import each_once
from .conftest import INPUT_SIZE, make_chain, ragged_dataset

ROOT = Path(__file__).resolve().parents[2]


def _errors(net, x, steps, y):
    """Per real inner step and channel, `(N, D)` errors of `net` against `y`."""
    return net(x, steps).flat_values.numpy() - y.flat_values.numpy()


def _per_step(w, steps):
    """Weights `(batch,)` or `(batch, T)` repeated over each real inner step, `(N,)`."""
    w = np.broadcast_to(w.reshape(len(steps), -1), steps.shape)
    return np.repeat(w.reshape(-1), steps.reshape(-1))


@pytest.fixture(scope="module")
def frozen():
    """A packed chain compiled with a learning rate of 0: `fit` leaves its weights as they are, so
    the tests share it (and the functions Keras traced for it)."""
    net = make_chain(strategy="packed")
    net.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    return net


# ----------------------------------------------------------------------------- summary, metrics


def test_summary_of_a_built_called_chain(adam_chain):
    net = make_chain(strategy="packed")
    net(np.zeros((2, 3, INPUT_SIZE), "float32"), np.ones((2, 3), "int32"))
    lines = []
    net.summary(print_fn=lambda line, *_: lines.append(line))
    text = "\n".join(lines)
    assert "Total params: 423" in text and "head (Dense)" in text
    net = adam_chain  # the same chain, compiled
    net.fit(ragged_dataset()[0], epochs=1, verbose=0)
    lines.clear()
    net.summary(print_fn=lambda line, *_: lines.append(line))
    assert any("Optimizer params" in line for line in lines)


def test_the_compiled_option_is_not_keras_compile_flag():
    net = make_chain(strategy="packed", compiled=False)
    net.compile(optimizer="adam", loss="mse")
    assert net.get_config()["compiled"] is False and net.compiled is True
    fresh = make_chain(strategy="packed")
    assert fresh.compiled is False and fresh.get_config()["compiled"] is True
    with pytest.raises(ValueError, match="must call `compile\\(\\)`"):
        fresh.fit(ragged_dataset()[0], epochs=1, verbose=0)


def test_evaluate_lists_each_metric_once():
    data, _ = ragged_dataset()
    net = make_chain(strategy="packed")
    net.compile(optimizer="adam", loss="mse", metrics=["mae"])
    values = net.evaluate(data, verbose=0)
    logs = net.evaluate(data, verbose=0, return_dict=True)
    assert net.metrics_names == list(logs) and len(values) == len(logs) == 3
    np.testing.assert_allclose(values, list(logs.values()), rtol=1e-6)


# ----------------------------------------------------------------------------- predict


def test_predict_keeps_t_and_equals_a_call(frozen):
    data, (x, steps, y) = ragged_dataset(n=24, batch_size=8)
    net = frozen
    want = net(x, steps)
    for given in (data, (x, steps), data.map(lambda inputs, y: inputs)):
        out = net.predict(given, batch_size=8, verbose=0) if isinstance(given, tuple) else net.predict(given, verbose=0)
        assert out.shape.as_list() == [24, 5, None, 2]
        np.testing.assert_array_equal(out.values.row_lengths().numpy(), steps.reshape(-1))
        np.testing.assert_allclose(out.flat_values.numpy(), want.flat_values.numpy(), atol=1e-6)


def test_predict_of_batches_with_other_t_leaves_t_unknown(frozen):
    rng = np.random.default_rng(0)
    parts = [(rng.normal(size=(2, t, INPUT_SIZE)).astype("float32"), np.ones((2, t), "int32"))
             for t in (3, 5)]  # fmt: skip
    data = tf.data.Dataset.from_generator(
        lambda: iter(parts),
        output_signature=(tf.TensorSpec([None, None, INPUT_SIZE]), tf.TensorSpec([None, None], tf.int32)),
    )
    out = frozen.predict(data, verbose=0)
    assert out.shape.as_list() == [4, None, None, 2]
    assert out.row_lengths().numpy().tolist() == [3, 3, 5, 5]


def test_predict_inputs_read_a_lone_tensor_as_x_without_steps():
    x = tf.zeros([2, 3, 4])
    for given in (x, (x,), [x]):
        got_x, steps = predict_inputs(given)
        assert got_x is x and steps is None


def test_predict_inputs_reject_other_structures():
    with pytest.raises(ValueError, match=r"Chain.predict expects inputs \(x, steps\).*received a tuple of 3 parts"):
        predict_inputs((tf.zeros([2, 3, 4]), tf.zeros([2, 3]), tf.zeros([2])))


# ----------------------------------------------------------------------------- sample weights


@pytest.mark.parametrize("per", ["sample", "outer step"])
def test_sample_weight_changes_the_loss_as_the_weighted_formula_says(per):
    data, (x, steps, y) = ragged_dataset(n=24, batch_size=8)
    net = make_chain(strategy="packed")  # its own: weights of another rank than the last call's are retraced
    net.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    rng = np.random.default_rng(3)
    w = rng.uniform(0.5, 2.0, size=(24,) if per == "sample" else (24, 5)).astype("float32")
    w[:7] = 0.0
    rows = np.mean(_errors(net, x, steps, y) ** 2, axis=-1)
    expected = float(np.sum(_per_step(w, steps) * rows) / rows.size)
    unweighted = float(np.mean(rows))
    weighted = tf.data.Dataset.from_tensor_slices(((x, steps), y, w)).batch(8)
    got = net.evaluate(weighted, verbose=0, return_dict=True)
    assert got["loss"] == pytest.approx(expected, rel=1e-5)
    assert got["masked_mse"] == pytest.approx(unweighted, rel=1e-5)  # metrics are unweighted
    assert abs(expected - unweighted) > 1e-3
    arrays = net.evaluate((x, steps), y, sample_weight=w, batch_size=8, verbose=0, return_dict=True)
    assert arrays["loss"] == pytest.approx(expected, rel=1e-5)
    history = net.fit((x, steps), y, sample_weight=w, batch_size=8, epochs=1, verbose=0).history
    assert history["loss"][0] == pytest.approx(expected, rel=1e-5)
    assert net.predict(weighted, verbose=0).shape.as_list() == [24, 5, None, 2]


def test_zero_weights_give_no_gradient():
    data, (x, steps, y) = ragged_dataset(n=16, batch_size=8)
    net = make_chain(strategy="packed")
    net.compile(optimizer=keras.optimizers.SGD(1.0), loss="mse")
    before = [w.copy() for w in net.get_weights()]
    net.fit((x, steps), y, sample_weight=np.zeros(16, "float32"), batch_size=8, epochs=1, verbose=0)
    for a, b in zip(before, net.get_weights()):
        np.testing.assert_array_equal(a, b)
    net.fit((x, steps), y, sample_weight=np.ones(16, "float32"), batch_size=8, epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, net.get_weights()))


def test_weighted_metrics_see_the_weights():
    _, (x, steps, y) = ragged_dataset(n=16)
    net = make_chain(strategy="packed")
    net.compile(optimizer="adam", loss="mse", metrics=["mae"], weighted_metrics=["mae"])
    w = np.r_[np.zeros(8), np.ones(8)].astype("float32")
    logs = net.evaluate((x, steps), y, sample_weight=w, batch_size=16, verbose=0, return_dict=True)
    err = np.abs(_errors(net, x, steps, y)).mean(axis=-1)
    ws = _per_step(w, steps)
    assert logs["mean_absolute_error"] == pytest.approx(err.mean(), rel=1e-5)
    assert logs["weighted_mean_absolute_error"] == pytest.approx(np.sum(ws * err) / ws.sum(), rel=1e-5)


def test_sample_weights_broadcast_per_sample_and_per_outer_step():
    steps = tf.constant([[1, 2], [0, 3]])
    _, per_sample = sample_weights(np.array([2.0, 5.0]), steps)
    _, per_step = sample_weights(np.array([[1.0, 2.0], [3.0, 4.0]]), steps)
    assert per_sample.numpy().tolist() == [2.0, 2.0, 2.0, 5.0, 5.0, 5.0]
    assert per_step.numpy().tolist() == [1.0, 2.0, 2.0, 4.0, 4.0, 4.0]


def test_sample_weights_of_unknown_rank_in_a_retraced_graph_broadcast_too():
    steps = tf.constant([[1, 2], [0, 3]])
    inner = tf.function(lambda w: sample_weights(w, steps)[1], input_signature=[tf.TensorSpec(None, tf.float32)])
    assert inner(tf.constant([2.0, 5.0])).numpy().tolist() == [2.0, 2.0, 2.0, 5.0, 5.0, 5.0]
    assert inner(tf.constant([[1.0, 2.0], [3.0, 4.0]])).numpy().tolist() == [1.0, 2.0, 2.0, 4.0, 4.0, 4.0]


@pytest.mark.parametrize("shape", [(2, 3), (3,), (2, 2, 1)])
def test_sample_weights_of_another_shape_are_refused(shape):
    with pytest.raises(ValueError, match=r"`sample_weight` must have shape \(batch,\).*received shape"):
        sample_weights(np.ones(shape), tf.constant([[1, 2], [0, 3]]))


def test_ragged_sample_weights_are_refused():
    with pytest.raises(ValueError, match="`sample_weight` must be dense.*RaggedTensor"):
        sample_weights(tf.ragged.constant([[1.0], [2.0, 3.0]]), tf.constant([[1, 2], [0, 3]]))


def test_unpack_rejects_four_parts():
    with pytest.raises(ValueError, match=r"or \(\(x, steps\), y, sample_weight\).*with 4 parts"):
        unpack((1, 2, 3, 4))


# ----------------------------------------------------------------------------- losses


def _absolute(y_true, y_pred):
    return tf.abs(y_true - y_pred)  # one value per element, (N, D)


class _Elementwise(keras.losses.Loss):
    def call(self, y_true, y_pred):
        return tf.abs(y_true - y_pred) * tf.constant([1.0, 3.0])


def _sum_w(values, w):
    return float(np.sum(w.reshape((-1,) + (1,) * (values.ndim - 1)) * values))


LOSSES = {
    # name: (loss, values from errors e (N, D), reduce(values, w))
    "mse-mean": (keras.losses.MeanSquaredError(), lambda e: (e**2).mean(-1), lambda v, w: _sum_w(v, w) / v.size),
    "mse-sum": (keras.losses.MeanSquaredError(reduction="sum"), lambda e: (e**2).mean(-1), _sum_w),
    "mse-none": (keras.losses.MeanSquaredError(reduction=None), lambda e: (e**2).mean(-1), _sum_w),
    "mse-sum-over-batch": (keras.losses.MeanSquaredError(reduction="sum_over_batch_size"),
                           lambda e: (e**2).mean(-1), lambda v, w: _sum_w(v, w) / v.size),  # fmt: skip
    "mse-mean-with-weights": (keras.losses.MeanSquaredError(reduction="mean_with_sample_weight"),
                              lambda e: (e**2).mean(-1), lambda v, w: _sum_w(v, w) / w.sum()),  # fmt: skip
    "elementwise-function": (_absolute, np.abs, lambda v, w: _sum_w(v, w) / v.size),
    "elementwise-loss-sum": (_Elementwise(reduction="sum"), lambda e: np.abs(e) * [1.0, 3.0], _sum_w),
    "plain-function": (keras.losses.mean_absolute_error, lambda e: np.abs(e).mean(-1),
                       lambda v, w: _sum_w(v, w) / v.size),  # fmt: skip
    "name": ("mae", lambda e: np.abs(e).mean(-1), lambda v, w: _sum_w(v, w) / v.size),
    "default": (None, lambda e: e**2, lambda v, w: _sum_w(v, w) / v.size),
    "ragged_mse": (chain.ragged_mse, lambda e: e**2, lambda v, w: _sum_w(v, w) / v.size),
}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_each_loss_is_honoured_with_its_own_reduction(name):
    loss, values, reduce = LOSSES[name]
    _, (x, steps, y) = ragged_dataset(n=12)
    net = make_chain(strategy="packed")
    net.compile(optimizer="adam", loss=loss)
    w = np.random.default_rng(1).uniform(0.0, 2.0, size=12).astype("float32")
    w[:3] = 0.0
    v = values(_errors(net, x, steps, y))
    got = net.evaluate((x, steps), y, sample_weight=w, batch_size=12, verbose=0, return_dict=True)
    assert got["loss"] == pytest.approx(reduce(v, _per_step(w, steps)), rel=1e-5)
    plain = net.evaluate((x, steps), y, batch_size=12, verbose=0, return_dict=True)
    assert plain["loss"] == pytest.approx(reduce(v, np.ones(int(steps.sum()))), rel=1e-5)


def test_loss_weights_scale_the_output_loss():
    _, (x, steps, y) = ragged_dataset(n=12)
    net = make_chain(strategy="packed")
    net.compile(optimizer="adam", loss="mse")
    once = net.evaluate((x, steps), y, batch_size=12, verbose=0, return_dict=True)["loss"]
    net.compile(optimizer="adam", loss="mse", loss_weights=2.5)
    assert net.evaluate((x, steps), y, batch_size=12, verbose=0, return_dict=True)["loss"] == pytest.approx(2.5 * once)


def test_loss_weights_other_than_one_number_are_refused():
    with pytest.raises(ValueError, match=r"`loss_weights` must be one number.*received \[1.0, 2.0\]"):
        make_chain(strategy="packed").compile(optimizer="adam", loss="mse", loss_weights=[1.0, 2.0])


def test_a_scalar_loss_cannot_be_weighted():
    _, (x, steps, y) = ragged_dataset(n=12)
    net = make_chain(strategy="packed")
    net.compile(optimizer="adam", loss=lambda t, p: tf.reduce_mean(tf.abs(t - p)))
    plain = net.evaluate((x, steps), y, batch_size=12, verbose=0, return_dict=True)["loss"]
    assert plain == pytest.approx(float(np.abs(_errors(net, x, steps, y)).mean()), rel=1e-5)
    with pytest.raises(ValueError, match="returns one scalar per batch, so `sample_weight` cannot"):
        net.evaluate((x, steps), y, sample_weight=np.ones(12), batch_size=12, verbose=0)


def test_a_loss_that_is_not_callable_is_refused():
    with pytest.raises(ValueError, match="`loss` must be a Keras loss name.*received 3"):
        FlatLoss(3)


def test_an_unknown_reduction_is_refused():
    loss = keras.losses.MeanSquaredError()
    loss.reduction = "median"
    with pytest.raises(ValueError, match="`loss.reduction` must be one of.*received 'median'"):
        FlatLoss(loss)


# ----------------------------------------------------------------------------- fit's arguments


def test_class_weight_says_why_it_does_not_apply():
    _, (x, steps, y) = ragged_dataset()
    net = make_chain(strategy="packed")
    net.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="`class_weight` does not apply.*`sample_weight` of shape"):
        net.fit((x, steps), y, class_weight={0: 1.0, 1: 2.0}, epochs=1, verbose=0)


@pytest.mark.parametrize("padded", [False, True])
def test_validation_split_holds_out_the_last_samples(padded, frozen):
    _, (x, steps, y) = ragged_dataset(n=24)
    net = frozen
    target = y.to_tensor() if padded else y
    history = net.fit((x, steps), target, validation_split=0.25, batch_size=8, epochs=1, verbose=0).history
    held = np.mean(_errors(net, x[18:], steps[18:], y[18:]) ** 2)
    train = np.mean(_errors(net, x[:18], steps[:18], y[:18]) ** 2)
    assert history["val_loss"][0] == pytest.approx(held, rel=1e-5)
    assert history["loss"][0] == pytest.approx(train, rel=1e-5)


# ----------------------------------------------------------------------------- callbacks


def test_early_stopping_on_val_loss_restores_the_best_weights(adam_chain):
    data, _ = ragged_dataset()
    net = adam_chain
    net.optimizer.learning_rate = 5.0  # too large: the loss gets worse
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    history = net.fit(data, validation_data=data, epochs=8, callbacks=[stop], verbose=0).history
    assert len(history["val_loss"]) < 8
    best = min(history["val_loss"])
    assert net.evaluate(data, verbose=0, return_dict=True)["loss"] == pytest.approx(best, rel=1e-4)


def test_model_checkpoint_keras_file_and_weights_only(adam_chain, tmp_path):
    data, (x, steps, _) = ragged_dataset()
    net = adam_chain
    whole = keras.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"), monitor="loss", save_best_only=True)
    weights = keras.callbacks.ModelCheckpoint(str(tmp_path / "w.weights.h5"), save_weights_only=True)
    net.fit(data, epochs=2, callbacks=[whole, weights], verbose=0)
    want = net(x, steps).flat_values.numpy()
    loaded = keras.models.load_model(tmp_path / "best.keras")
    np.testing.assert_allclose(loaded(x, steps).flat_values.numpy(), want, atol=1e-6)
    assert loaded.compiled and loaded.optimizer.iterations.numpy() == net.optimizer.iterations.numpy()
    other = make_chain(strategy="packed", seed=9)
    other.load_weights(tmp_path / "w.weights.h5")
    np.testing.assert_allclose(other(x, steps).flat_values.numpy(), want, atol=1e-6)


def test_tensorboard_writes_epoch_scalars(adam_chain, tmp_path):
    data, _ = ragged_dataset()
    net = adam_chain
    net.fit(data, validation_data=data, epochs=2, verbose=0,
            callbacks=[keras.callbacks.TensorBoard(str(tmp_path))])  # fmt: skip
    tags = set()
    for event_file in tmp_path.rglob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags.update(value.tag for value in event.summary.value)
    assert {"epoch_loss", "epoch_masked_mse"} <= tags
    assert (tmp_path / "validation").is_dir()


def test_reduce_lr_on_plateau_lowers_the_rate(adam_chain):
    data, _ = ragged_dataset()
    net = adam_chain
    net.optimizer.learning_rate = 1e-2
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="loss", factor=0.5, patience=0, min_delta=10.0)
    history = net.fit(data, epochs=3, callbacks=[plateau], verbose=0).history
    # Logged at each epoch's end, before that epoch's reduction; the first epoch sets the best.
    assert history["learning_rate"] == pytest.approx([1e-2, 1e-2, 5e-3])
    assert float(net.optimizer.learning_rate) == pytest.approx(2.5e-3)


class _Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise RuntimeError("interrupted")


def test_backup_and_restore_resumes_after_an_interruption(adam_chain, tmp_path):
    data, _ = ragged_dataset()
    net = adam_chain
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="interrupted"):
        net.fit(data, epochs=4, callbacks=[backup, _Interrupt()], verbose=0)
    steps_done = int(net.optimizer.iterations.numpy())
    fresh = make_chain(strategy="packed", seed=5)
    fresh.compile(optimizer="adam", loss="mse")
    history = fresh.fit(data, epochs=4, callbacks=[backup], verbose=0)
    assert history.epoch == [2, 3]  # epochs 0 and 1 were backed up
    assert int(fresh.optimizer.iterations.numpy()) == steps_done + 2 * 3


# ----------------------------------------------------------------------------- XLA


def test_jit_compile_defaults_to_off():
    net = make_chain(strategy="padded")
    net.compile(optimizer="adam", loss="mse")
    assert net.jit_compile is False


def test_jit_compile_refuses_the_packed_strategy_at_compile():
    net = make_chain(strategy="packed")
    with pytest.raises(ValueError, match="`jit_compile=True` cannot compile the 'packed' strategy: its shapes"):
        net.compile(optimizer="adam", loss="mse", jit_compile=True)
    assert net.resolved_strategy() == "packed"


def test_jit_compile_needs_max_steps_and_says_why():
    net = make_chain(strategy="padded")
    with pytest.raises(ValueError, match=r"`jit_compile=True` needs the chain's `max_steps`.*one compilation per batch; "
                                         r"received max_steps=None"):  # fmt: skip
        net.compile(optimizer="adam", loss="mse", jit_compile=True)
    assert getattr(net, "optimizer", None) is None  # nothing was compiled


@pytest.mark.parametrize("strategy", ["loop", "padded"])
@pytest.mark.parametrize("state", ["carry", "reset"])
def test_under_jit_compile_the_program_does_not_depend_on_the_values_of_steps(strategy, state):
    """One XLA program serves every batch of a shape: none of its buffers is sized by `steps`."""
    x, steps, _ = ragged_dataset(n=8, big_t=5, longest=4)[1]
    net = make_chain(strategy=strategy, state=state, max_steps=4)
    net.compile(optimizer="adam", loss="mse", jit_compile=True)
    run = tf.function(lambda x, s: net(x, s).flat_values, jit_compile=True)
    fewer = np.minimum(steps[:8], 2)
    fewer[0, 0] = 0
    programs = [run.experimental_get_compiler_ir(tf.constant(x[:8]), tf.constant(s))(stage="hlo") for s in (steps[:8], fewer)]
    assert programs[0] == programs[1]
    np.testing.assert_allclose(run(tf.constant(x[:8]), tf.constant(fewer)).numpy(), net(x[:8], fewer).flat_values.numpy(),
                               atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("strategy", ["loop", "padded"])
def test_after_jit_compile_calls_outside_xla_run_any_steps_and_none(strategy):
    """Eager calls and a plain `tf.function` of a chain compiled with `jit_compile=True`, all-zero
    steps included: nothing written to buffers sized by `max_steps` is still an empty output."""
    x, steps, _ = ragged_dataset(n=8, big_t=5, longest=3)[1]
    net = make_chain(strategy=strategy, state="carry", max_steps=3)
    want = net(x, steps).flat_values.numpy()
    net.compile(optimizer="adam", loss="mse", jit_compile=True)
    plain = tf.function(lambda x, s: net(x, s).flat_values)
    for run in (lambda x, s: net(x, s).flat_values, plain):
        assert run(x, np.zeros_like(steps)).shape[0] == 0
        np.testing.assert_allclose(run(x, steps).numpy(), want, atol=1e-5)


def test_under_jit_compile_predict_and_evaluate_check_steps_before_xla_drops_the_checks():
    """XLA drops a call's asserts, and a value above `max_steps` would overrun the buffers it sizes."""
    data, (x, steps, y) = ragged_dataset(longest=4)
    net = make_chain(strategy="padded", max_steps=3)
    net.compile(optimizer="adam", loss="mse", jit_compile=True)
    assert steps.max() == 4
    with pytest.raises(ValueError, match=r"`steps` must be in \[0, 3\] \(max_steps\); received a value of 4 at"):
        net.predict((x, steps), verbose=0)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`steps` must be in \[0, 3\] \(max_steps\)"):
        net.evaluate(data, verbose=0)
    fine = np.minimum(steps, 3)
    assert net.predict((x, fine), verbose=0).flat_values.shape[0] == fine.sum()


@pytest.mark.parametrize(("state", "under_xla"), [("carry", "padded"), ("reset", "padded"), ("init", "padded")])
def test_auto_picks_a_strategy_that_xla_compiles_under_jit_compile(state, under_xla):
    data, _ = ragged_dataset()
    net = make_chain(strategy="auto", state=state, max_steps=4)
    net.compile(optimizer="adam", loss="mse")
    want = net.evaluate(data, verbose=0, return_dict=True)
    assert net.resolved_strategy() == "packed"
    net.compile(optimizer="adam", loss="mse", jit_compile=True)
    assert net.resolved_strategy() == under_xla and net.strategy == "auto"
    assert net.get_config()["strategy"] == "auto"
    got = net.evaluate(data, verbose=0, return_dict=True)
    assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
    net.compile(optimizer="adam", loss="mse")  # and back
    assert net.resolved_strategy() == "packed"


@pytest.mark.parametrize("state", ["carry", "reset"])
def test_jit_compile_trains_and_evaluates_as_without_it(state):
    """`fit` under XLA follows the trajectory of `fit` without it, from ragged targets (padded to
    `max_steps` for XLA) and from padded ones, and `evaluate` gives the same loss."""
    data, _ = ragged_dataset()
    histories, evaluations = {}, {}
    for jit in (False, True):
        keras.utils.set_random_seed(0)
        net = make_chain(state=state, strategy="padded", max_steps=4)
        net.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse", jit_compile=jit)
        histories[jit] = net.fit(data, epochs=2, verbose=0).history["loss"]
        evaluations[jit] = net.evaluate(data, verbose=0, return_dict=True)["loss"]
    assert histories[True] == pytest.approx(histories[False], rel=1e-4)
    assert histories[True][-1] < histories[True][0]
    assert evaluations[True] == pytest.approx(evaluations[False], rel=1e-4)


def test_under_jit_compile_fit_pads_ragged_targets_to_max_steps_for_one_shape_per_batch_size():
    data, _ = ragged_dataset()
    net = make_chain(strategy="auto", max_steps=4)
    net.compile(optimizer="adam", loss="mse", jit_compile=True)
    seen = []
    step = net.train_step
    net.train_step = lambda batch: (seen.append(batch[1]), step(batch))[1]  # runs as the step is traced
    net.fit(data, epochs=1, verbose=0)
    assert seen and all(isinstance(y, tf.Tensor) and y.shape[1:] == (5, 4, 2) for y in seen)


def test_targets_padded_for_xla_keep_a_token_chains_rank_and_refuse_rows_that_are_not_steps():
    steps = tf.constant([[2, 0, 1]])
    tokens = tf.RaggedTensor.from_uniform_row_length(tf.ragged.constant([[3, 4], [], [5]]), 3)  # (1, 3, None)
    np.testing.assert_array_equal(chain._train.padded(tokens, 4, steps), [[[3, 4, 0, 0], [0] * 4, [5, 0, 0, 0]]])
    values = tf.RaggedTensor.from_uniform_row_length(tf.ragged.constant([[[1.0]], [[2.0]], [[3.0]]], ragged_rank=1), 3)
    with pytest.raises(ValueError, match=r"`y` must have steps\[b, t\] rows at every \(b, t\)"):
        chain._train.padded(values, 4, steps)  # one row at (0, 0) where steps says 2


def test_under_jit_compile_fit_refuses_the_loop_strategy_and_steps_above_max_steps():
    data, _ = ragged_dataset()
    net = make_chain(strategy="loop", max_steps=4)
    net.compile(optimizer="adam", loss="mse", jit_compile=True)
    with pytest.raises(ValueError, match="`fit` under `jit_compile=True` trains the 'padded' strategy.*received strategy='loop'"):
        net.fit(data, epochs=1, verbose=0)
    net = make_chain(strategy="padded", max_steps=2)
    net.compile(optimizer="adam", loss="mse", jit_compile=True)
    before = [v.numpy() for v in net.weights] if net.built else None
    with pytest.raises(tf.errors.InvalidArgumentError, match="max_steps"):
        net.fit(data, epochs=1, verbose=0)
    if before is not None:
        assert all((a == v.numpy()).all() for a, v in zip(before, net.weights))


# ----------------------------------------------------------------------------- backend


def test_another_backend_is_refused_by_name():
    with pytest.raises(ValueError, match="chain needs Keras' TensorFlow backend.*received the 'jax'"):
        chain._backend.check_backend("jax")


def test_import_chain_under_another_backend_fails_clearly():
    backend = "jax" if importlib.util.find_spec("jax") else "torch"
    if importlib.util.find_spec(backend) is None:
        pytest.skip("neither jax nor torch is installed")
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", "import chain"], capture_output=True, text=True,
                          env=env, timeout=120, check=False)  # fmt: skip
    assert done.returncode != 0
    assert f"ValueError: chain needs Keras' TensorFlow backend" in done.stderr
    assert f"received the '{backend}' backend. Set KERAS_BACKEND=tensorflow" in done.stderr


# The default tier checks one loss of each kind (a Keras loss object with its reduction, an
# element-wise function, a name, the default); `-m slow` checks every reduction.
# Under XLA it compiles carry mode with `auto`, and each strategy and mode once for the program's
# independence of `steps`; `-m slow` compiles every case and trains in both modes.
DEFAULT_TIER = {
    "test_each_loss_is_honoured_with_its_own_reduction": lambda p: p["name"] in {
        "mse-sum", "mse-mean-with-weights", "elementwise-loss-sum", "name", "default"},
    "test_auto_picks_a_strategy_that_xla_compiles_under_jit_compile": lambda p: p["state"] == "carry",
    "test_under_jit_compile_the_program_does_not_depend_on_the_values_of_steps":
        each_once({"state": ("carry", "reset")}, {"strategy": ("loop", "padded")}),
    "test_jit_compile_trains_and_evaluates_as_without_it": lambda p: False,
}
