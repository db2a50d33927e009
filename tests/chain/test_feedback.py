"""`Chain(feedback=True)`: model B fed `[IR, prev]`, against a reference that feeds `prev` by hand."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from chain import Chain

from .conftest import shared
from .reference import reference_feedback_flat
from ..tiers import each_once

ATOL = 1e-5
D = 2
IR = 6


def _slice_model(cell_fn, units=5, width=IR + D):
    cell = cell_fn(units)
    ipt = keras.Input((width,))
    states = [keras.Input((units,)) for _ in range(2 if isinstance(cell, keras.layers.LSTMCell) else 1)]
    out, new = cell(ipt, states if len(states) > 1 else [states[0]])
    return keras.Model([ipt, *states], [out, *new])


def _dense_b(width=IR + D):
    """A functional model B that is not one cell (the generic path)."""
    inp, h = keras.Input((width,)), keras.Input((5,))
    new_h = keras.layers.Dense(5, activation="tanh")(keras.layers.Concatenate()([inp, h]))
    return keras.Model([inp, h], [keras.layers.Dense(3)(new_h), new_h])


KINDS = {
    "gru": lambda: keras.layers.GRUCell(5),
    "lstm": lambda: keras.layers.LSTMCell(5),
    "rnn": lambda: keras.layers.SimpleRNNCell(5),
    "stacked": lambda: keras.layers.StackedRNNCells([keras.layers.GRUCell(4), keras.layers.LSTMCell(5)]),
    "functional-lstm": lambda: _slice_model(keras.layers.LSTMCell),
    "functional-dense": _dense_b,
}
STATES = ("carry", "reset", "init")
# Every model B on the packed strategy (the fast path where it has one), and the GRU on each of
# the other strategies.
CASES = [(k, "packed") for k in KINDS] + [("gru", "loop"), ("gru", "padded")]

# The default tier runs every case once, with the state modes in turn (other turns for the
# free-running check); `-m slow` runs every case in every mode.
DEFAULT_TIER = {
    "test_teacher_forcing_equals_the_reference": each_once({"kind": list(KINDS)}, {"state": STATES}),
    "test_free_running_equals_the_reference": each_once({"kind": list(KINDS)}, {"state": STATES[1:] + STATES[:1]}),
}



def _net(kind="gru", state="carry", strategy="packed", seed=0, batch=None, model_a=None, **kwargs):
    keras.utils.set_random_seed(seed)
    model_a = model_a or keras.layers.GRU(IR, return_sequences=True)
    net = Chain(model_a, KINDS[kind](), output_size=D, state=state, strategy=strategy, feedback=True, **kwargs)
    net.build((batch, None, 4))
    net.feedback_start.assign([0.4, -0.3])  # not zeros: a start vector that matters
    return net


def _data(batch=3, big_t=4, longest=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, big_t, 4)).astype("float32")
    steps = rng.integers(0, longest + 1, size=(batch, big_t)).astype("int32")
    steps[0, 0] = 0
    steps[1, 1:3] = 0  # a run with nothing between two real ones
    steps[-1, -1] = longest
    y_flat = rng.normal(size=(int(steps.sum()), D)).astype("float32")
    return x, steps, y_flat


def _ragged(flat, steps):
    inner = tf.RaggedTensor.from_row_lengths(flat, steps.reshape(-1))
    return tf.RaggedTensor.from_uniform_row_length(inner, steps.shape[1])


def _value_and_grads(fn, net, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        flat = fn(x)
        loss = tf.reduce_sum(flat * tf.sin(flat + 0.5))
    grads = tape.gradient(loss, [x, *net.trainable_weights])
    return flat.numpy(), [np.zeros(1) if g is None else tf.convert_to_tensor(g).numpy() for g in grads]


def _assert_same(got, want):
    np.testing.assert_allclose(got[0], want[0], atol=ATOL)
    assert len(got[1]) == len(want[1])
    for g, w in zip(got[1], want[1]):
        np.testing.assert_allclose(g, w, atol=ATOL)


def _grid_net(kind, state, strategy):
    """The grid's chain: model B's feedback is its subject, so model A is a Dense layer, whose
    graph traces in a fraction of a GRU's time; a recurrent model A and its state across calls
    with feedback are the other tests' (and test_state's)."""
    return _net(kind, state, strategy, model_a=keras.layers.Dense(IR))


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("kind, strategy", CASES)
def test_teacher_forcing_equals_the_reference(kind, strategy, state):
    net = _grid_net(kind, state, strategy)
    x, steps, y = _data()
    want = _value_and_grads(lambda x: reference_feedback_flat(net, x, steps, y), net, x)
    training = state != "init"  # with and without the flag
    got = _value_and_grads(lambda x: net(x, steps, targets=_ragged(y, steps), training=training).flat_values, net, x)
    _assert_same(got, want)
    # the gradient reaches the start vector and every weight of B
    assert np.abs(got[1][1 + [w.name for w in net.trainable_weights].index("feedback_start")]).sum() > 0


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("kind, strategy", CASES)
def test_free_running_equals_the_reference(kind, strategy, state):
    net = _grid_net(kind, state, strategy)
    x, steps, _ = _data(seed=1)
    want = _value_and_grads(lambda x: reference_feedback_flat(net, x, steps), net, x)
    got = _value_and_grads(lambda x: net(x, steps).flat_values, net, x)
    _assert_same(got, want)


@pytest.mark.parametrize("strategy", ["loop", "packed"])
def test_teacher_forcing_inside_tf_function_and_with_padded_targets(strategy):
    net = _net("lstm", "carry", strategy)
    x, steps, y = _data(seed=2)
    want = reference_feedback_flat(net, x, steps, y).numpy()
    padded = _ragged(y, steps).to_tensor()

    @tf.function
    def run(x, steps, y):
        return net(x, steps, targets=y, training=True).flat_values

    np.testing.assert_allclose(run(x, steps, padded).numpy(), want, atol=ATOL)


def test_teacher_forced_training_stays_on_the_fast_path():
    net = _net("lstm")
    assert net.fast_path.fused and "teacher-forced" in net.fast_path.reason
    assert not _net("functional-dense").fast_path.fused


def test_sampling_at_the_extremes_is_teacher_forcing_and_free_running():
    x, steps, y = _data(seed=3)
    targets = _ragged(y, steps)
    never, always = _net(feedback_sampling=0.0), _net(feedback_sampling=1.0)
    teacher = reference_feedback_flat(never, x, steps, y).numpy()
    free = reference_feedback_flat(always, x, steps).numpy()
    np.testing.assert_allclose(never(x, steps, targets=targets, training=True).flat_values, teacher, atol=ATOL)
    np.testing.assert_allclose(always(x, steps, targets=targets, training=True).flat_values, free, atol=ATOL)
    # sampling is a training-time choice: evaluation with targets is teacher-forced
    np.testing.assert_allclose(always(x, steps, targets=targets).flat_values, teacher, atol=ATOL)


def test_sampling_feeds_the_own_output_with_the_given_probability():
    """Reset mode, two steps per run: step 1's output is one of two known values, per run.

    The teacher-forced values come from the same weights with `feedback_sampling=0`, held to the
    step-by-step reference on the first two samples (the reference runs a step a millisecond).
    """
    net = _net(state="reset", feedback_sampling=0.3, seed=4)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 25, 4)).astype("float32")
    steps = np.full((40, 25), 2, "int32")
    y = rng.normal(size=(int(steps.sum()), D)).astype("float32")
    never = _net(state="reset", feedback_sampling=0.0, seed=4, compiled=False)  # called eagerly
    never.set_weights(net.get_weights())
    teacher = never(x, steps, targets=_ragged(y, steps), training=True).flat_values.numpy()
    head = 2 * 25 * 2  # the rows of the first two samples
    np.testing.assert_allclose(teacher[:head], reference_feedback_flat(net, x[:2], steps[:2], y[:head]), atol=ATOL)
    teacher = teacher[1::2]
    free = net(x, steps).flat_values.numpy()[1::2]
    got = net(x, steps, targets=_ragged(y, steps), training=True).flat_values.numpy()[1::2]
    is_teacher = np.all(np.abs(got - teacher) < ATOL, axis=1)
    is_free = np.all(np.abs(got - free) < ATOL, axis=1)
    assert np.all(is_teacher | is_free)  # never anything else
    share = is_free.mean()  # 1000 runs: 0.3 +- 0.06 at 4 standard deviations
    assert 0.24 < share < 0.36, share


def test_a_sampling_schedule_follows_the_optimizer_step():
    schedule = keras.optimizers.schedules.PiecewiseConstantDecay([2], [0.0, 1.0])
    net = _net(feedback_sampling=schedule)
    net.compile(keras.optimizers.SGD(0.0))  # the weights stay: only the step moves
    x, steps, y = _data(seed=5)
    targets = _ragged(y, steps)
    teacher = reference_feedback_flat(net, x, steps, y).numpy()
    free = reference_feedback_flat(net, x, steps).numpy()
    np.testing.assert_allclose(net(x, steps, targets=targets, training=True).flat_values, teacher, atol=ATOL)
    net.optimizer.iterations.assign(5)
    np.testing.assert_allclose(net(x, steps, targets=targets, training=True).flat_values, free, atol=ATOL)


def test_sampling_draws_follow_the_seed_and_the_optimizer_step():
    """With an optimizer, a step's draws depend on (sampling_seed, iterations) alone: a model
    loaded from a checkpoint draws what the one that wrote it would have."""
    x, steps, y = _data(batch=8, big_t=6, seed=11)
    targets = _ragged(y, steps)

    def draws(net, step):
        net.optimizer.iterations.assign(step)
        return net(x, steps, targets=targets, training=True).flat_values.numpy()

    net = _net(feedback_sampling=0.5, sampling_seed=7)
    net.compile(keras.optimizers.SGD(0.0))
    first = draws(net, 3)
    np.testing.assert_array_equal(draws(net, 3), first)
    assert not np.allclose(draws(net, 4), first)  # the next step draws anew
    again = Chain.from_config(net.get_config())
    again.build((None, None, 4))
    again.set_weights(net.get_weights())
    again.compile(keras.optimizers.SGD(0.0))
    again.optimizer.iterations.assign(3)
    np.testing.assert_array_equal(again(x, steps, targets=targets, training=True).flat_values.numpy(), first)
    other = _net(feedback_sampling=0.5, sampling_seed=8)
    other.set_weights(net.get_weights())
    other.compile(keras.optimizers.SGD(0.0))
    assert not np.allclose(draws(other, 3), first)


@pytest.mark.parametrize("value", [-1, 2**63, 1.5, True])
def test_a_sampling_seed_that_is_no_integer_at_least_0_is_refused(value):
    message = rf"`sampling_seed` must be an integer in \[0, {2**63 - 1}\]; received {value}"
    with pytest.raises(ValueError, match=message):
        _net(feedback_sampling=0.5, sampling_seed=value)


@pytest.mark.parametrize("teacher", [True, False])
def test_windows_with_state_equal_one_call(teacher):
    net = shared(_net, "gru", "carry", "packed")
    x, steps, y = _data(big_t=6, seed=6)
    whole = net(x, steps, targets=_ragged(y, steps) if teacher else None).flat_values.numpy()
    parts, state = [], None
    for t0, t1 in ((0, 2), (2, 5), (5, 6)):
        s = steps[:, t0:t1]
        window_y = _ragged(y[_window_rows(steps, t0, t1)], s) if teacher else None
        out, state = net(x[:, t0:t1], s, targets=window_y, initial_state=state, return_state=True)
        parts.append(out)
    np.testing.assert_allclose(tf.concat(parts, axis=1).flat_values.numpy(), whole, atol=ATOL)
    assert state["model_b"][-1].shape == (3, D + 1)  # [prev, seen]


@pytest.mark.parametrize("strategy", ["loop", "padded", "packed"])
@pytest.mark.parametrize("graph", [False, True])
def test_a_window_without_real_steps_passes_the_state_through(strategy, graph):
    net = shared(_net, "gru", "carry", strategy)
    x, steps, y = _data(seed=9)
    _, given = net(x, steps, targets=_ragged(y, steps), return_state=True)  # a state that is not zeros
    zero = np.zeros_like(steps)
    no_targets = _ragged(np.zeros((0, D), "float32"), zero)

    def call(x, steps, targets, state):
        return net(x, steps, targets=targets, initial_state=state, return_state=True)

    run = tf.function(call) if graph else call
    for targets in (no_targets, None):  # teacher-forced and free-running
        out, state = run(x, tf.constant(zero), targets, given)
        assert out.shape.as_list() == [3, 4, None, D] and out.flat_values.shape[0] == 0
        for got, want in zip(state["model_b"], given["model_b"]):
            np.testing.assert_allclose(got.numpy(), want.numpy(), atol=0)


def test_fit_on_a_window_without_real_steps_keeps_the_state_and_the_weights():
    net = _net("gru", "carry", stateful=True, batch=3)
    x, steps, y = _data(seed=10)
    zero = np.zeros_like(steps)
    net.compile(keras.optimizers.SGD(0.1))
    net.fit(tf.data.Dataset.from_tensors(((x, steps), _ragged(y, steps))), verbose=0)  # the kept state moves on
    kept = [s.numpy() for s in net(x, zero, return_state=True)[1]["model_b"]]  # read without a step
    assert np.abs(kept[0]).max() > 0
    weights = net.get_weights()
    empty = tf.data.Dataset.from_tensors(((x, zero), _ragged(np.zeros((0, D), "float32"), zero)))
    history = net.fit(empty, verbose=0).history
    assert history["loss"] == [0.0]
    for got, want in zip(net(x, zero, return_state=True)[1]["model_b"], kept):
        np.testing.assert_allclose(got.numpy(), want, atol=0)
    for got, want in zip(net.get_weights(), weights):
        np.testing.assert_allclose(got, want, atol=0)


def _window_rows(steps, t0, t1):
    """Flat rows of the whole call that fall in outer steps `[t0, t1)`, in the window's order."""
    starts = np.cumsum(steps.reshape(-1)) - steps.reshape(-1)
    starts = starts.reshape(steps.shape)
    return np.concatenate(
        [np.arange(starts[b, t], starts[b, t] + steps[b, t]) for b in range(steps.shape[0]) for t in range(t0, t1)]
    ).astype(int)


def test_a_stateful_chain_resets_to_the_start_vector():
    net = _net("gru", "carry", stateful=True, batch=3)
    x, steps, _ = _data(seed=7)
    first = net(x, steps).flat_values.numpy()
    assert not np.allclose(net(x, steps).flat_values.numpy(), first)  # the kept state carries on
    net.reset_states()
    np.testing.assert_allclose(net(x, steps).flat_values.numpy(), first, atol=ATOL)


def test_fit_trains_with_teacher_forcing_and_evaluate_uses_it():
    net = _net("gru", "reset")
    x, steps, y = _data(batch=16, seed=8)
    targets = _ragged(y, steps)
    net.compile(keras.optimizers.Adam(0.02))
    before = net.evaluate((x, steps), targets, verbose=0, return_dict=True)["masked_mse"]
    teacher = reference_feedback_flat(net, x, steps, y)
    np.testing.assert_allclose(before, float(tf.reduce_mean(tf.square(teacher - y))), rtol=1e-4)
    net.fit((x, steps), targets, epochs=30, batch_size=16, verbose=0)
    after = net.evaluate((x, steps), targets, verbose=0, return_dict=True)["masked_mse"]
    assert after < 0.7 * before


def test_save_and_load_keep_feedback(tmp_path):
    schedule = keras.optimizers.schedules.ExponentialDecay(0.5, 10, 0.9)
    net = _net("lstm", "carry", feedback_sampling=schedule)
    x, steps, y = _data(seed=9)
    path = str(tmp_path / "net.keras")
    net.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.feedback and isinstance(loaded.feedback_sampling, keras.optimizers.schedules.ExponentialDecay)
    np.testing.assert_allclose(loaded(x, steps).flat_values, net(x, steps).flat_values, atol=ATOL)
    targets = _ragged(y, steps)
    np.testing.assert_allclose(loaded(x, steps, targets=targets).flat_values,
                               net(x, steps, targets=targets).flat_values, atol=ATOL)  # fmt: skip


# ----------------------------------------------------------------------------- bad input


def test_targets_that_do_not_match_steps_are_refused():
    net = _net()
    x, steps, y = _data(seed=10)
    other = steps.copy()
    other[0, 1] += 1
    with pytest.raises(ValueError, match=r"`targets` must have steps\[b, t\] rows"):
        net(x, other, targets=_ragged(y, steps))
    with pytest.raises(ValueError, match=r"padded `targets` must be \(batch, T, L, 2\).*received shape \(3, 3, 3, 2\)"):
        net(x, steps, targets=np.zeros((3, 3, 3, D), "float32"))
    with pytest.raises(ValueError, match=r"flat `targets` must have sum\(steps\) = \d+ rows; received shape \(1, 2\)"):
        net(x, steps, targets=np.zeros((1, D), "float32"))
    with pytest.raises(ValueError, match=r"`targets` must have 2 channels.*\(\d+, 3\)"):
        net(x, steps, targets=np.zeros((int(steps.sum()), 3), "float32"))
    with pytest.raises(ValueError, match=r"`targets` must be \(batch, T, None, 2\); received shape \(5,\)"):
        net(x, steps, targets=np.zeros((5,), "float32"))


def test_targets_without_feedback_are_refused():
    keras.utils.set_random_seed(0)
    net = Chain(keras.layers.GRU(IR, return_sequences=True), keras.layers.GRUCell(5), output_size=D)
    x, steps, y = _data()
    with pytest.raises(ValueError, match="needs a Chain built with feedback=True; received targets with feedback=False"):
        net(x, steps, targets=_ragged(y, steps))


@pytest.mark.parametrize("value", [1.5, -0.1])
def test_sampling_outside_zero_one_is_refused(value):
    with pytest.raises(ValueError, match=rf"`feedback_sampling` must be a number in \[0, 1\]; received {value}"):
        Chain(keras.layers.GRU(IR, return_sequences=True), keras.layers.GRUCell(5), output_size=D,
              feedback=True, feedback_sampling=value)  # fmt: skip


@pytest.mark.parametrize("value", ["half", True, None])
def test_sampling_that_is_no_probability_is_refused(value):
    with pytest.raises(ValueError, match=rf"must be a probability in \[0, 1\] or a schedule.*received {value!r}"):
        Chain(keras.layers.GRU(IR, return_sequences=True), keras.layers.GRUCell(5), output_size=D,
              feedback=True, feedback_sampling=value)  # fmt: skip


def test_sampling_without_feedback_is_refused():
    with pytest.raises(ValueError, match="needs feedback=True; received feedback_sampling=0.5"):
        Chain(keras.layers.GRU(IR, return_sequences=True), keras.layers.GRUCell(5), output_size=D,
              feedback_sampling=0.5)  # fmt: skip


def test_a_model_b_with_no_room_for_prev_is_refused():
    net = Chain(keras.layers.GRU(IR, return_sequences=True), _dense_b(width=IR), output_size=D, feedback=True)
    with pytest.raises(ValueError, match=r"ir_size \+ D = 6 \+ 2 = 8; received a model B \(Functional .*\) whose input has size 6"):
        net.build((None, None, 4))


def test_feedback_without_a_known_output_width_asks_for_output_size():
    class Bare(keras.layers.Layer):
        state_size = 3

        def call(self, inputs, states):
            return inputs[:, :3], [inputs[:, :3]]

    net = Chain(keras.layers.GRU(IR, return_sequences=True), Bare(), feedback=True)
    with pytest.raises(ValueError, match="give the Chain an `output_size`"):
        net.build((None, None, 4))


@pytest.mark.parametrize("state", ["carry", "reset"])
def test_generate_at_given_steps_equals_a_step_by_step_reference(state):
    net = _net("lstm", state)
    x, steps, _ = _data(seed=11)
    want = reference_feedback_flat(net, x, steps).numpy()
    out = net.generate(x, steps)
    assert out.row_lengths(axis=2).numpy().reshape(steps.shape).tolist() == steps.tolist()
    np.testing.assert_allclose(out.flat_values.numpy(), want, atol=ATOL)


@pytest.mark.parametrize("lengths", [{"predict_lengths": True}, {"stop": "token"}])
def test_generate_at_predicted_lengths_feeds_the_own_outputs(lengths):
    net = _net("gru", "carry", max_steps=3, **lengths)
    x, _, _ = _data(seed=12)
    out = net.generate(x)
    steps = out.row_lengths(axis=2).numpy().reshape(x.shape[:2])
    assert 0 < steps.sum() and len(np.unique(steps)) > 1  # lengths that differ: a real test
    np.testing.assert_allclose(out.flat_values.numpy(), reference_feedback_flat(net, x, steps).numpy(), atol=ATOL)
    # streaming one outer step at a time, the feedback state carried, gives the same
    parts, state = [], None
    for t in range(x.shape[1]):
        part, state = net.generate(x[:, t : t + 1], initial_state=state, return_state=True)
        parts.append(part)
    np.testing.assert_allclose(tf.concat(parts, axis=1).flat_values.numpy(), out.flat_values.numpy(), atol=ATOL)
