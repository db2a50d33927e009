"""State across calls: the question's own fixed-shape models, windows, streaming, stateful chains, TBPTT."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import chain
from chain import STRATEGIES, Chain
from ..tiers import each_once

ATOL = 1e-5


# ----------------------------------------------------------------------------- the question's own example


def _question_models(units=4):
    """The question's models, built the usual Keras way with `batch_shape`."""
    a_in = keras.Input(batch_shape=(2, 3, units))
    model_a = keras.Model(a_in, keras.layers.SimpleRNN(units, return_sequences=True)(a_in))
    ipt = keras.Input(batch_shape=(2, units))
    sipt = keras.Input(batch_shape=(2, units))
    out, state = keras.layers.SimpleRNNCell(units)(ipt, [sipt])
    model_b = keras.Model([ipt, sipt], [out, state[0]])
    return model_a, model_b


def _question_nested_loops(model_a, model_b, x, steps_at_t):
    """A transcription of the question's answer: outer loop over t, inner loop over steps[t],
    B's state carried through both, each Out[t] padded to the longest step."""
    ir = model_a(x)
    state = tf.zeros([x.shape[0], model_b.inputs[1].shape[-1]])
    longest = max(steps_at_t)
    outs = []
    for t, n in enumerate(steps_at_t):
        rows = []
        for _ in range(n):
            out, state = model_b([ir[:, t], state])
            rows.append(out)
        rows += [tf.zeros_like(state)] * (longest - n)
        outs.append(tf.stack(rows, 1) if rows else tf.zeros([x.shape[0], 0, state.shape[-1]]))
    return tf.stack(outs, 1), np.array(steps_at_t)  # (batch, T, longest, units)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("graph", [False, True])
def test_the_questions_own_example(strategy, graph):
    keras.utils.set_random_seed(0)
    model_a, model_b = _question_models()
    net = Chain(model_a, model_b, strategy=strategy)
    x = tf.constant(np.random.default_rng(0).normal(size=(2, 3, 4)), tf.float32)
    steps_at_t = [3, 4, 2]

    def ours(x):
        return net(x, steps_at_t).flat_values

    run = tf.function(ours) if graph else ours
    sources = [x, *model_a.trainable_weights, *model_b.trainable_weights]

    def theirs(x):
        dense, steps = _question_nested_loops(model_a, model_b, x, steps_at_t)
        return tf.boolean_mask(dense, tf.sequence_mask(np.broadcast_to(steps, (2, 3)), 4))

    def value_and_gradients(f):  # one plain tape each: a persistent tape makes TF build second-order graphs
        with tf.GradientTape() as tape:
            tape.watch(x)
            flat = f(x)
            loss = tf.reduce_sum(flat * tf.sin(flat))
        return flat, tape.gradient(loss, sources)

    (got, got_grads), (want, want_grads) = value_and_gradients(run), value_and_gradients(theirs)
    np.testing.assert_allclose(got.numpy(), want.numpy(), atol=ATOL)
    for g, w in zip(got_grads, want_grads):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-6, atol=ATOL)


def _slice_models(cell_type, n_states, units=4):
    """The question's models with the slice model B written the natural way, `[out, states]` with
    the cell's state list nested, and the same model with its states returned flat."""
    a_in = keras.Input(batch_shape=(2, 3, units))
    model_a = keras.Model(a_in, keras.layers.SimpleRNN(units, return_sequences=True)(a_in))
    ipt = keras.Input(batch_shape=(2, units))
    states = [keras.Input(batch_shape=(2, units)) for _ in range(n_states)]
    out, new = cell_type(units)(ipt, states)
    return model_a, keras.Model([ipt, *states], [out, new]), keras.Model([ipt, *states], [out, *new])


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("cell_type,n_states", [(keras.layers.SimpleRNNCell, 1), (keras.layers.LSTMCell, 2)])
@pytest.mark.parametrize("fused", ["auto", False])
def test_a_slice_model_b_may_return_its_states_nested_as_a_cell_does(strategy, cell_type, n_states, fused):
    keras.utils.set_random_seed(0)
    model_a, nested, flat = _slice_models(cell_type, n_states)
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype("float32")  # the declared batch of 2
    steps = [[3, 0, 2], [1, 4, 2]]
    got, got_states = Chain(model_a, nested, strategy=strategy, fused=fused)(x, steps, return_state=True)
    want, want_states = Chain(model_a, flat, strategy=strategy, fused=fused)(x, steps, return_state=True)
    np.testing.assert_allclose(got.flat_values.numpy(), want.flat_values.numpy(), atol=1e-6)
    assert [tuple(s.shape) for s in got_states["model_b"]] == [(2, 4)] * n_states
    for g, w in zip(got_states["model_b"], want_states["model_b"]):
        np.testing.assert_allclose(g.numpy(), w.numpy(), atol=1e-6)


def test_a_slice_model_b_around_one_cell_with_nested_states_keeps_the_fast_path():
    _, nested, _ = _slice_models(keras.layers.LSTMCell, 2)
    net = Chain(keras.layers.GRU(4, return_sequences=True), nested, strategy="packed")
    assert net.fast_path == (True, "fast path: a functional model around one LSTMCell")


@pytest.mark.filterwarnings("error::UserWarning")  # Keras warns of flat inputs to nested ones
def test_a_slice_model_b_with_nested_state_inputs_runs_as_the_flat_one():
    keras.utils.set_random_seed(0)
    model_a, _, flat = _slice_models(keras.layers.LSTMCell, 2)
    ipt, h, c = flat.inputs
    nested_in = keras.Model([ipt, [h, c]], flat.outputs)
    x = np.random.default_rng(1).normal(size=(2, 3, 4)).astype("float32")
    got = Chain(model_a, nested_in, fused=False)(x, [2, 1, 3])
    want = Chain(model_a, flat, fused=False)(x, [2, 1, 3])
    np.testing.assert_allclose(got.flat_values.numpy(), want.flat_values.numpy(), atol=1e-6)


def test_a_shape_that_conflicts_with_model_as_declared_input_is_refused():
    model_a, model_b = _question_models()
    net = Chain(model_a, model_b)
    with pytest.raises(ValueError, match=r"`x` has shape \(2, 5, 4\) but model A declares its input as \(2, 3, 4\)"):
        net(np.zeros((2, 5, 4), "float32"), [1] * 5)


@pytest.mark.parametrize("graph", [False, True])
@pytest.mark.parametrize("later_t", [5, 2])
def test_a_later_call_whose_t_conflicts_with_model_as_declared_input_is_refused(graph, later_t):
    model_a, model_b = _question_models()
    net = Chain(model_a, model_b)
    net(np.zeros((2, 3, 4), "float32"), [1] * 3)  # built at the declared T = 3
    call = tf.function(lambda x: net(x, [1] * later_t)) if graph else lambda x: net(x, [1] * later_t)
    with pytest.raises(ValueError, match=rf"`x` has shape \(2, {later_t}, 4\) but model A declares its input as \(2, 3, 4\)"):
        call(np.zeros((2, later_t, 4), "float32"))


def test_generate_and_fit_check_x_against_model_as_declared_input():
    model_a, model_b = _question_models()
    net = Chain(model_a, model_b, output_size=4, max_steps=3, lengths=chain.LengthHead())
    x, steps = np.zeros((2, 3, 4), "float32"), np.ones((2, 3), "int32")
    net.compile("sgd")
    net.fit((x, steps), net(x, steps), epochs=1, verbose=0)
    longer = np.zeros((2, 5, 4), "float32")
    with pytest.raises(ValueError, match=r"`x` has shape \(2, 5, 4\) but model A declares"):
        net.generate(longer)
    with pytest.raises(ValueError, match=r"`x` has shape \(None, 5, 4\) but model A declares"):  # fit's batch
        net.fit((longer, np.ones((2, 5), "int32")), tf.ragged.constant(np.zeros((2, 5, 1, 4)), ragged_rank=2),
                epochs=1, verbose=0)


def test_model_a_without_return_sequences_is_named():
    net = Chain(keras.layers.GRU(4), keras.layers.GRUCell(4))
    with pytest.raises(ValueError, match=r"model A must return IR of shape \(batch, T, ir_size\).*return_sequences=True"):
        net(np.zeros((2, 3, 4), "float32"), [1, 1, 1])


def test_model_b_that_returns_only_its_output_is_named():
    ipt, h = keras.Input((4,)), keras.Input((4,))
    out = keras.layers.Dense(4)(keras.layers.Concatenate()([ipt, h]))
    with pytest.raises(ValueError, match=r"model B must return `\[outputs, \*new_states\]`.*2 inputs and 1 output"):
        Chain(keras.layers.GRU(4, return_sequences=True), keras.Model([ipt, h], out))


class _OutputOnlyCell(keras.layers.Layer):
    """A cell that returns its output without the new states."""

    def __init__(self, state_width=3, **kwargs):
        super().__init__(**kwargs)
        self.state_size = state_width

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], 3), name="w")

    def call(self, inputs, states):
        return tf.tanh(inputs @ self.w)


class _NarrowStateCell(_OutputOnlyCell):
    """A cell that declares a state of 5 and returns one of 3."""

    def call(self, inputs, states):
        h = tf.tanh(inputs @ self.w)
        return h, [h]


def test_a_cell_that_returns_only_its_output_is_named():
    net = Chain(keras.layers.GRU(4, return_sequences=True), _OutputOnlyCell())
    with pytest.raises(ValueError, match=r"model B must return `\[outputs, \*new_states\]` with one new state per "
                                         r"state input \(1 of sizes \[3\]\); calling it on IR rows of size 4 failed: "
                                         r"a cell must return `\(output, new_states\)`; received KerasTensor"):
        net.build((None, None, 4))


def test_a_cell_whose_new_state_has_another_size_is_named():
    net = Chain(keras.layers.GRU(4, return_sequences=True), _NarrowStateCell(state_width=5))
    with pytest.raises(ValueError, match=r"new states of sizes \[5\]; received outputs of shape \(None, 3\) and new "
                                         r"states of sizes \[3\]"):
        net.build((None, None, 4))


# ----------------------------------------------------------------------------- windows and streaming


def _functional_b(units=5, ir=6):
    ipt, s = keras.Input((ir,)), keras.Input((units,))
    h = keras.layers.Dense(units, activation="tanh")(keras.layers.Concatenate()([ipt, s]))
    return keras.Model([ipt, s], [keras.layers.Dense(3)(h), h])


B_WINDOW_KINDS = {
    "gru": lambda: keras.layers.GRUCell(5),
    "lstm": lambda: keras.layers.LSTMCell(5),
    "functional": _functional_b,
}


def _net(kind, strategy, **kwargs):
    keras.utils.set_random_seed(0)
    return Chain(keras.layers.LSTM(6, return_sequences=True), B_WINDOW_KINDS[kind](), output_size=2,
                 strategy=strategy, **kwargs)  # fmt: skip


def _data(batch=3, big_t=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, big_t, 4)).astype("float32")
    steps = rng.integers(0, 4, size=(batch, big_t)).astype("int32")
    steps[1, 4:8] = 0  # a window with no step at all for one sample
    return x, steps


def _joined(parts) -> np.ndarray:
    return tf.concat(parts, axis=1).flat_values.numpy()


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("kind", B_WINDOW_KINDS)
def test_three_windows_with_state_carried_equal_one_call(kind, strategy):
    net = _net(kind, strategy)
    x, steps = _data()
    whole = net(x, steps).flat_values.numpy()
    state, parts = None, []
    for w in range(3):
        out, state = net(x[:, 4 * w : 4 * w + 4], steps[:, 4 * w : 4 * w + 4], initial_state=state, return_state=True)
        parts.append(out)
    np.testing.assert_allclose(_joined(parts), whole, atol=ATOL)
    assert [len(state["model_a"]), len(state["model_b"])] == [2, len(net.step_adapter().state_sizes)]
    # without the state, windows differ: the state really crosses
    alone = [net(x[:, 4 * w : 4 * w + 4], steps[:, 4 * w : 4 * w + 4]) for w in range(3)]
    assert np.abs(_joined(alone) - whole).max() > 1e-3


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_stateful_chain_keeps_state_across_calls_and_resets(strategy):
    plain = _net("lstm", strategy, compiled=False)  # the reference, called eagerly
    x, steps = _data()
    whole = plain(x, steps).flat_values.numpy()
    net = Chain(plain.model_a, plain.model_b, output_size=2, strategy=strategy, stateful=True)
    net(x[:, :1], steps[:, :1])
    net.set_weights(plain.get_weights())
    net.reset_states()
    windows = [net(x[:, 4 * w : 4 * w + 4], steps[:, 4 * w : 4 * w + 4]) for w in range(3)]
    np.testing.assert_allclose(_joined(windows), whole, atol=ATOL)
    net.reset_states()
    streamed = [net(x[:, t : t + 1], steps[:, t : t + 1]) for t in range(12)]  # streaming: T = 1
    np.testing.assert_allclose(_joined(streamed), whole, atol=ATOL)
    with pytest.raises(ValueError, match=r"keeps states for a batch of 3; received x of shape \(2, 4, 4\)"):
        net(x[:2, :4], steps[:2, :4])


def test_stateful_model_a_of_its_own_works_and_resets():
    keras.utils.set_random_seed(0)
    a_in = keras.Input(batch_shape=(3, None, 4))
    model_a = keras.Model(a_in, keras.layers.GRU(6, return_sequences=True, stateful=True)(a_in))
    net = Chain(model_a, keras.layers.GRUCell(5), output_size=2, stateful=True)
    x, steps = _data()
    first = [net(x[:, 4 * w : 4 * w + 4], steps[:, 4 * w : 4 * w + 4]) for w in range(3)]
    net.reset_states()
    again = [net(x[:, 4 * w : 4 * w + 4], steps[:, 4 * w : 4 * w + 4]) for w in range(3)]
    np.testing.assert_allclose(_joined(again), _joined(first), atol=ATOL)
    net.reset_states()
    plain = Chain(model_a, net.model_b, output_size=2)
    plain(x[:, :1], steps[:, :1])
    plain.set_weights(net.get_weights())
    model_a.layers[-1].reset_state()
    np.testing.assert_allclose(plain(x, steps).flat_values.numpy(), _joined(first), atol=ATOL)


def test_stateful_chain_saves_and_loads(tmp_path):
    net = _net("gru", "packed", stateful=True)
    x, steps = _data()
    net(x[:, :4], steps[:, :4])
    net.reset_states()
    want = [net(x[:, 4 * w : 4 * w + 4], steps[:, 4 * w : 4 * w + 4]) for w in range(3)]
    net.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.stateful
    got = [loaded(x[:, 4 * w : 4 * w + 4], steps[:, 4 * w : 4 * w + 4]) for w in range(3)]
    np.testing.assert_allclose(_joined(got), _joined(want), atol=ATOL)


# ----------------------------------------------------------------------------- truncated BPTT


def _stop_gradient_reference(net, x, steps, window):
    """The whole sequence in one pass of windows, `tf.stop_gradient` on both states at each edge."""
    state, parts = None, []
    for start in range(0, x.shape[1], window):
        if state is not None:
            state = tf.nest.map_structure(tf.stop_gradient, state)
        out, state = net(x[:, start : start + window], steps[:, start : start + window],
                         initial_state=state, return_state=True)  # fmt: skip
        parts.append(out)
    return tf.concat(parts, axis=1).flat_values


@pytest.mark.parametrize(
    "kind, strategy", [("gru", s) for s in STRATEGIES] + [("lstm", "packed"), ("functional", "packed")]
)
def test_gradients_stop_at_window_edges(kind, strategy):
    net = _net(kind, strategy)
    x, steps = _data()
    x = tf.constant(x)
    sources = [x, *net.trainable_weights]

    def windows():
        state, parts = None, []
        for w in range(3):
            out, state = net(x[:, 4 * w : 4 * w + 4], steps[:, 4 * w : 4 * w + 4], initial_state=state,
                             return_state=True)  # fmt: skip
            parts.append(out)
        return parts

    def gradients(loss_of):  # one plain tape each: a persistent tape makes TF build second-order graphs
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = loss_of()
        return tape.gradient(loss, sources)

    def wavy(flat):
        return tf.reduce_sum(flat * tf.sin(flat))

    got = gradients(lambda: wavy(tf.concat(windows(), axis=1).flat_values))
    want = gradients(lambda: wavy(_stop_gradient_reference(net, x, steps, 4)))
    for g, w in zip(got, want):
        if w is None:
            assert g is None
            continue
        np.testing.assert_allclose(tf.convert_to_tensor(g).numpy(), tf.convert_to_tensor(w).numpy(), atol=ATOL)
    d_x = gradients(lambda: tf.reduce_sum(windows()[-1].flat_values))[0].numpy()  # the last window alone
    assert np.all(d_x[:, :8] == 0) and np.abs(d_x[:, 8:]).max() > 0  # nothing reaches earlier windows


def test_stateful_training_steps_truncate_at_the_window_edge():
    net = _net("gru", "packed", stateful=True)
    x, steps = _data()
    net(x[:, :4], steps[:, :4])
    xt = tf.constant(x[:, 4:8])
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(net(xt, steps[:, 4:8], training=True).flat_values)
    grads = tape.gradient(loss, [xt, *net.trainable_weights])
    assert grads[0] is not None and np.abs(grads[0].numpy()).max() > 0
    assert all(g is not None for g in grads[1:])


# ----------------------------------------------------------------------------- bad state


@pytest.fixture(scope="module")
def carry_net():
    """A built and called chain in carry mode; a refused state leaves it as it was."""
    net = _net("lstm", "packed")
    net(*[a[:, :2] for a in _data()])
    return net


@pytest.mark.parametrize(
    "state,match",
    [
        ({"model_b": [np.zeros((3, 5), "float32")]}, r"`initial_state\['model_b'\]` must hold 2 tensor\(s\) of sizes \[5, 5\]; received 1"),
        ({"model_b": [np.zeros((3, 4), "float32")] * 2}, r"`initial_state\['model_b'\]\[0\]` must have shape \(batch, 5\) = \(3, 5\); received shape \(3, 4\)"),
        ({"model_b": [np.zeros((2, 5), "float32")] * 2}, r"must have shape \(batch, 5\) = \(3, 5\); received shape \(2, 5\)"),
        ({"model_b": [np.zeros((3, 5), "int32")] * 2}, r"`initial_state\['model_b'\]\[0\]` must hold floats; received dtype int32"),
        ({"model_c": []}, r"`initial_state` keys must be 'model_a' and 'model_b'; received \['model_c'\]"),
        ("zeros", r"`initial_state` must be a dict .*; received str"),
    ],
)
def test_bad_initial_state_is_named(carry_net, state, match):
    x, steps = _data()
    with pytest.raises(ValueError, match=match):
        carry_net(x, steps, initial_state=state)


def test_initial_state_for_b_in_reset_mode_is_refused():
    net = _net("gru", "packed", state="reset")
    x, steps = _data()
    with pytest.raises(ValueError, match=r"`initial_state\['model_b'\]` is only taken in carry mode.*state='reset'"):
        net(x, steps, initial_state={"model_b": [np.zeros((3, 5), "float32")]})
    out, state = net(x, steps, return_state=True)  # what return_state gives can be passed back
    assert state["model_b"] == []
    net(x, steps, initial_state=state)


def test_stateful_needs_a_known_batch():
    net = _net("gru", "packed", stateful=True)
    with pytest.raises(ValueError, match=r"`stateful=True` needs a fixed batch size.*received a batch of unknown size"):
        net.build((None, None, 4))


def test_state_of_a_model_a_with_none_is_refused():
    net = Chain(keras.layers.Dense(6), keras.layers.GRUCell(5))
    x, steps = _data()
    with pytest.raises(ValueError, match=r"this model A has no state the chain can carry.*received 1 tensor"):
        net(x, steps, initial_state={"model_a": [np.zeros((3, 6), "float32")]})


# ----------------------------------------------------------------------------- streaming generation


@pytest.mark.parametrize("lengths", [dict(predict_lengths=True), dict(stop="token")], ids=["length-head", "stop-token"])
def test_generation_streams_one_outer_step_at_a_time(lengths):
    net = _net("lstm", "packed", max_steps=3, **lengths)
    x, _ = _data()
    whole = net.generate(x)
    state, parts = None, []
    for t in range(x.shape[1]):
        out, state = net.generate(x[:, t : t + 1], initial_state=state, return_state=True)
        parts.append(out)
    streamed = tf.concat(parts, axis=1)
    np.testing.assert_array_equal(streamed.row_lengths(axis=2).numpy(), whole.row_lengths(axis=2).numpy())
    assert int(tf.reduce_sum(whole.row_lengths(axis=2))) > 0
    np.testing.assert_allclose(streamed.flat_values.numpy(), whole.flat_values.numpy(), atol=ATOL)


def test_summary_shows_the_shapes_of_the_first_call():
    net = Chain(keras.layers.GRU(16, return_sequences=True), keras.layers.GRUCell(16), output_size=4)
    net(np.zeros((2, 3, 8), "float32"), [1, 2, 0])
    lines = []
    net.summary(print_fn=lambda line, **_: lines.append(line))
    text = "\n".join(lines)
    assert "(2, 3, 16)" in text and "(1, 1, 16)" not in text


# The default tier carries windows for every model B once (strategies in turn) and checks the
# window edges on every strategy with the GRU and on the LSTM's fast path; it runs the nested states
# of a slice model B with fused="auto" on the packed strategy only, the one where `fused` picks
# another path (elsewhere "auto" runs what fused=False runs). `-m slow` runs the rest.
DEFAULT_TIER = {
    "test_a_slice_model_b_may_return_its_states_nested_as_a_cell_does": lambda p: (
        p["fused"] is False or p["strategy"] == "packed"),
    "test_three_windows_with_state_carried_equal_one_call": each_once(
        {"kind": list(B_WINDOW_KINDS)}, {"strategy": list(STRATEGIES)}
    ),
    "test_gradients_stop_at_window_edges": lambda p: p["kind"] in {"gru", "lstm"},
}
