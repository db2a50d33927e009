"""Token chains (`Chain(vocab_size=V)`): logits, the token loss and metrics, and the decoders,
against per-sample references that feed tokens by hand."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import chain
from chain import Chain, EndToken, Greedy, Sampler

V = 5
IR = 6
MAX = 4

# The default tier trains with scheduled sampling only; `-m slow` adds teacher forcing alone.
DEFAULT_TIER = {"test_fit_trains_in_each_state_mode_and_with_scheduled_sampling": lambda p: p["sampling"] == 0.5}


def _net(state="carry", feedback=True, seed=0, batch=None, **kwargs):
    keras.utils.set_random_seed(seed)
    net = Chain(keras.layers.GRU(IR, return_sequences=True), keras.layers.GRUCell(5), vocab_size=V,
                feedback=feedback, state=state, max_steps=MAX, **kwargs)  # fmt: skip
    net.build((batch, None, 3))
    if feedback:  # a start row that matters
        table = net.token_embedding.embeddings
        table.assign(np.random.default_rng(seed).normal(size=table.shape).astype("float32"))
    return net


def _data(batch=3, big_t=3, seed=0, least=1):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, big_t, 3)).astype("float32")
    steps = rng.integers(least, MAX + 1, size=(batch, big_t)).astype("int32")
    tokens = rng.integers(0, V, size=int(steps.sum())).astype("int32")
    return x, steps, _ragged(tokens, steps)


def _ragged(flat, steps):
    return tf.RaggedTensor.from_uniform_row_length(tf.RaggedTensor.from_row_lengths(flat, steps.reshape(-1)),
                                                   steps.shape[1])  # fmt: skip


@pytest.fixture(scope="module")
def net():
    return _net()


@pytest.fixture(scope="module")
def data():
    return _data()


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _reference(net, x, steps, pick, end=None):
    """Carry mode, one sample at a time: `pick(logits (V,), b, t, k) -> token`, fed back as its
    embedding row. Returns `(tokens, scores, lengths)`; `end` stops a run at that token."""
    ir = net.model_a(x).numpy()
    table = net.token_embedding.embeddings.numpy()
    tokens, scores, lengths = [], [], np.zeros_like(steps)
    for b in range(x.shape[0]):
        h, prev = [tf.zeros((1, 5))], table[V]
        for t in range(x.shape[1]):
            cap = MAX if end is not None else steps[b, t]
            for k in range(cap):
                out, h = net.model_b(np.concatenate([ir[b, t], prev])[None].astype("float32"), h)
                h = list(h) if isinstance(h, (list, tuple)) else [h]
                logits = net.head(out).numpy()[0]
                token = pick(logits, b, t, k)
                tokens.append(token)
                scores.append(_log_softmax(logits)[token])
                prev = table[token]
                lengths[b, t] += 1
                if token == end:
                    break
    return np.array(tokens), np.array(scores), lengths


# ----------------------------------------------------------------------------- calls and training


def test_a_call_returns_logits_and_teacher_forcing_feeds_the_previous_token(net, data):
    x, steps, y = data
    out = net(x, steps, targets=y)
    assert out.shape.as_list() == [3, 3, None, V] and net.output_size == V
    # teacher forcing: changing the target at the last step of a sample changes no output of it
    flat = y.flat_values.numpy().copy()
    flat[-1] = (flat[-1] + 1) % V
    again = net(x, steps, targets=_ragged(flat, steps))
    np.testing.assert_allclose(again.flat_values.numpy(), out.flat_values.numpy(), atol=1e-6)
    flat[0] = (flat[0] + 1) % V  # the first target feeds the second step
    moved = net(x, steps, targets=_ragged(flat, steps)).flat_values.numpy()
    assert np.abs(moved[1] - out.flat_values.numpy()[1]).max() > 1e-6
    np.testing.assert_allclose(moved[0], out.flat_values.numpy()[0], atol=1e-6)


@pytest.mark.parametrize("weights", [None, "sample", "outer"])
def test_the_loss_is_cross_entropy_over_real_tokens_with_sample_weights(net, data, weights):
    x, steps, y = data
    w = {None: None, "sample": np.array([1.0, 0.0, 2.0], "float32"),
         "outer": np.arange(9, dtype="float32").reshape(3, 3)}[weights]  # fmt: skip
    loss = float(net.compute_loss(x=(x, steps), y=y, sample_weight=w, training=False))
    logits = net(x, steps, targets=y).flat_values.numpy()
    ce = -_log_softmax(logits)[np.arange(len(logits)), y.flat_values.numpy()]
    per = np.ones_like(ce) if w is None else np.repeat(np.broadcast_to(w.reshape(3, -1), steps.shape).reshape(-1), steps.reshape(-1))
    assert loss == pytest.approx(float((ce * per).mean()), rel=1e-5)
    padded = float(net.compute_loss(x=(x, steps), y=y.to_tensor(), sample_weight=w, training=False))
    assert padded == pytest.approx(loss, rel=1e-6)


def test_evaluate_logs_token_accuracy_and_perplexity(data):
    x, steps, y = data
    net = _net(seed=1)
    net.compile("adam")
    logs = net.evaluate((x, steps), y, verbose=0, return_dict=True)
    logits = net(x, steps, targets=y).flat_values.numpy()
    labels = y.flat_values.numpy()
    ce = -_log_softmax(logits)[np.arange(len(logits)), labels]
    assert set(logs) == {"loss", "token_accuracy", "perplexity"}
    assert logs["perplexity"] == pytest.approx(math.exp(ce.mean()), rel=1e-5)
    assert logs["token_accuracy"] == pytest.approx(float((logits.argmax(-1) == labels).mean()))
    history = net.fit((x, steps), y, epochs=2, verbose=0).history
    assert history["loss"][1] < history["loss"][0]


@pytest.mark.parametrize("sampling", [0.0, 0.5])
def test_fit_trains_in_each_state_mode_and_with_scheduled_sampling(sampling):
    x, steps, y = _data(seed=2)
    for state in ("reset", "init"):
        net = _net(state=state, feedback_sampling=sampling)
        net.compile(keras.optimizers.Adam(0.05))
        history = net.fit((x, steps), y, epochs=3, verbose=0).history
        assert history["loss"][-1] < history["loss"][0]


# ----------------------------------------------------------------------------- decoders


def test_greedy_generation_equals_the_step_by_step_argmax_reference(net, data):
    x, steps, _ = data
    tokens, scores = net.generate(x, steps, return_scores=True)
    want, want_scores, _ = _reference(net, x, steps, lambda logits, *_: int(np.argmax(logits)))
    np.testing.assert_array_equal(tokens.flat_values.numpy(), want)
    np.testing.assert_allclose(scores.flat_values.numpy(), want_scores, atol=1e-5)
    assert tokens.dtype == tf.int32 and tokens.shape.as_list() == [3, 3, None]
    # a free call runs greedy too: its logits' argmax are the tokens
    np.testing.assert_array_equal(np.argmax(net(x, steps).flat_values.numpy(), -1), want)


@pytest.mark.parametrize("sampler", [Sampler(seed=7), Sampler(temperature=0.5, top_k=3, seed=1),
                                     Sampler(temperature=2.0, top_p=0.6, seed=2)])  # fmt: skip
def test_sampling_equals_the_reference_drawing_the_same_stateless_draws(net, data, sampler):
    x, steps, _ = data
    batch = x.shape[0]

    def draw(logits, b, t, k):  # the row of sample b in a draw over the whole batch
        z = np.zeros((batch, V), "float32")
        z[b] = chain._decoding.cut_logits(tf.constant([logits / sampler.temperature]), sampler.top_k, sampler.top_p)[0]
        seed = tf.constant([sampler.seed, t * MAX + k], tf.int64)
        return int(tf.random.stateless_categorical(z, 1, seed)[b, 0])

    tokens, scores = net.generate(x, steps, decoder=sampler, return_scores=True)
    want, want_scores, _ = _reference(net, x, steps, draw)
    np.testing.assert_array_equal(tokens.flat_values.numpy(), want)
    np.testing.assert_allclose(scores.flat_values.numpy(), want_scores, atol=1e-5)


def test_the_same_seed_gives_the_same_tokens_eagerly_and_in_a_graph(data):
    x, steps, _ = data
    graph, eager = _net(seed=3), _net(seed=3, compiled=False)
    decoder = Sampler(top_p=0.9, seed=11)
    first = graph.generate(x, steps, decoder=decoder).flat_values.numpy()
    np.testing.assert_array_equal(graph.generate(x, steps, decoder=decoder).flat_values.numpy(), first)
    np.testing.assert_array_equal(eager.generate(x, steps, decoder=decoder).flat_values.numpy(), first)
    other = graph.generate(x, steps, decoder=Sampler(top_p=0.9, seed=12)).flat_values.numpy()
    assert (other != first).any()


def test_temperature_one_sampling_follows_the_softmax():
    logits = np.array([1.0, 0.0, -1.0, 2.0, 0.5], "float32")
    n = 200_000
    drawn = Sampler(seed=5).next(tf.constant(np.tile(logits, (n, 1))), 3).numpy()
    counts = np.bincount(drawn, minlength=V)
    expected = n * np.exp(_log_softmax(logits))
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 18.47  # the 0.999 quantile of chi-square with V - 1 = 4 degrees of freedom


def test_top_k_and_top_p_never_leave_their_sets():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20_000, V)).astype("float32") * 2
    top2 = np.argsort(-logits, axis=1)[:, :2]
    drawn = Sampler(top_k=2, seed=1).next(tf.constant(logits), 0).numpy()
    assert ((drawn == top2[:, 0]) | (drawn == top2[:, 1])).all()
    probs = np.exp(_log_softmax(logits))
    order = np.argsort(-probs, axis=1)
    before = np.cumsum(np.take_along_axis(probs, order, 1), 1) - np.take_along_axis(probs, order, 1)
    allowed = np.zeros_like(probs, bool)
    np.put_along_axis(allowed, order, before < 0.5, 1)
    drawn = Sampler(top_p=0.5, seed=2).next(tf.constant(logits), 0).numpy()
    assert allowed[np.arange(len(drawn)), drawn].all()
    assert (allowed.sum(1) > 1).any()  # the test would pass vacuously if the set were the argmax alone


def test_greedy_is_the_argmax():
    logits = tf.constant([[0.0, 3.0, 1.0], [2.0, -1.0, 2.0]])
    assert Greedy().next(logits, 0).numpy().tolist() == [1, 0]


# ----------------------------------------------------------------------------- end token


def test_end_token_ends_each_run_at_that_token_like_the_reference(data):
    x, _, _ = data
    net = _net(seed=4, lengths=EndToken(2))
    tokens, scores = net.generate(x, return_scores=True)
    want, want_scores, lengths = _reference(net, x, np.zeros((3, 3), int), lambda z, *_: int(np.argmax(z)), end=2)
    np.testing.assert_array_equal(tokens.flat_values.numpy(), want)
    np.testing.assert_array_equal(tokens.row_lengths(axis=2).numpy().reshape(3, 3), lengths)
    assert (lengths < MAX).any()  # some runs did end at the token
    np.testing.assert_array_equal(net.predict(x, verbose=0).flat_values.numpy(), want)


def test_end_token_trains_from_the_token_loss():
    rng = np.random.default_rng(5)
    x, steps = rng.normal(size=(8, 3, 3)).astype("float32"), np.full((8, 3), 2, "int32")
    flat = rng.integers(0, V - 1, size=48).astype("int32")
    flat[1::2] = V - 1  # every run ends with the end token, which nothing else uses
    net = _net(state="reset", seed=5, lengths=EndToken(V - 1))
    net.compile(keras.optimizers.Adam(0.05))
    history = net.fit((x, steps), _ragged(flat, steps), epochs=20, verbose=0).history
    assert history["end_accuracy"][-1] == 1.0 > history["end_accuracy"][0]
    np.testing.assert_array_equal(net.generate(x).row_lengths(axis=2).numpy().reshape(8, 3), steps)


# ----------------------------------------------------------------------------- keeping working


def test_a_token_chain_saves_loads_and_exports(net, data, tmp_path):
    x, steps, y = data
    path = tmp_path / "tokens.keras"
    net.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.vocab_size == V and loaded.token_width == net.token_width
    np.testing.assert_array_equal(loaded.generate(x, steps).flat_values.numpy(), net.generate(x, steps).flat_values.numpy())
    np.testing.assert_allclose(loaded(x, steps, targets=y).flat_values.numpy(),
                               net(x, steps, targets=y).flat_values.numpy(), atol=1e-6)  # fmt: skip
    net.export_serving(str(tmp_path / "serving"))
    serving = tf.saved_model.load(str(tmp_path / "serving"))
    served = serving.serve(tf.constant(x), tf.constant(steps))
    np.testing.assert_allclose(served["flat_values"].numpy(), net(x, steps).flat_values.numpy(), atol=1e-5)


def test_generating_window_by_window_equals_one_generation(net, data):
    x, steps, _ = data
    whole = net.generate(x, steps).flat_values.numpy()
    first, states = net.generate(x[:, :1], steps[:, :1], return_state=True)
    rest = net.generate(x[:, 1:], steps[:, 1:], initial_state=states)
    joined = tf.concat([first, rest], axis=1).flat_values.numpy()
    np.testing.assert_array_equal(joined, whole)


def test_a_stateful_token_chain_keeps_its_states_between_windows(data):
    x, steps, _ = data
    net = _net(seed=6, stateful=True, batch=3)
    whole = _net(seed=6).generate(x, steps).flat_values.numpy()
    parts = [net.generate(x[:, t:t + 1], steps[:, t:t + 1]).flat_values for t in range(3)]
    joined = tf.concat([_ragged(p.numpy(), steps[:, t:t + 1]) for t, p in enumerate(parts)], 1).flat_values
    np.testing.assert_array_equal(joined.numpy(), whole)


def test_a_token_chain_trains_and_generates_under_mixed_precision(data):
    x, steps, y = data
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        net = _net(seed=7)
        net.compile("adam")
        history = net.fit((x, steps), y, epochs=1, verbose=0).history
        tokens = net.generate(x, steps, decoder=Sampler(seed=1))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(history["loss"][0]) and tokens.dtype == tf.int32
    assert 0 <= int(tf.reduce_min(tokens.flat_values)) and int(tf.reduce_max(tokens.flat_values)) < V


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("kwargs, match", [
    ({"vocab_size": 1}, r"`vocab_size` must be an integer >= 2 or None; received 1"),
    ({"vocab_size": 4, "output_size": 3}, r"excludes `output_size`; received output_size=3 and vocab_size=4"),
    ({"vocab_size": 4, "token_width": 3}, r"`token_width` .*needs vocab_size and feedback=True; received token_width=3"),
    ({"vocab_size": 4, "feedback": True, "token_width": 0}, r"`token_width` must be an integer >= 1 or None; received 0"),
    ({"vocab_size": 4, "max_steps": 3, "lengths": EndToken(4)}, r"end token must be in \[0, 4\).*EndToken\(4\)"),
    ({"output_size": 2, "max_steps": 3, "lengths": EndToken(1)}, r"needs a token chain.*received vocab_size=None"),
])  # fmt: skip
def test_conflicting_token_options_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Chain(keras.layers.GRU(4, return_sequences=True), keras.layers.GRUCell(4), **kwargs)


def test_end_token_must_be_a_token_id():
    with pytest.raises(ValueError, match=r"`token` must be an integer >= 0 .*received -1"):
        EndToken(-1)


@pytest.mark.parametrize("kwargs, match", [
    ({"temperature": 0.0}, r"`temperature` must be a finite number > 0; received 0.0"),
    ({"temperature": math.inf}, r"`temperature` must be a finite number > 0; received inf"),
    ({"top_k": 0}, r"`top_k` must be an integer >= 1 or None; received 0"),
    ({"top_p": 0.0}, r"`top_p` must be in \(0, 1\] or None; received 0.0"),
    ({"top_p": 1.5}, r"`top_p` must be in \(0, 1\] or None; received 1.5"),
])  # fmt: skip
def test_bad_sampler_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Sampler(**kwargs)


def test_generate_refuses_a_decoder_it_cannot_use(net, data):
    x, steps, _ = data
    with pytest.raises(ValueError, match=rf"`top_k` must be at most the vocabulary size {V}; received top_k=6"):
        net.generate(x, steps, decoder=Sampler(top_k=6))
    with pytest.raises(ValueError, match=r"`decoder` must be a chain.Decoder .*received 'greedy'"):
        net.generate(x, steps, decoder="greedy")
    real = Chain(keras.layers.GRU(4, return_sequences=True), keras.layers.GRUCell(4), output_size=2)
    with pytest.raises(ValueError, match=r"needs a Chain built with `vocab_size`; received decoder=Greedy\(\)"):
        real.generate(x, steps, decoder=Greedy())


def test_bad_token_targets_are_refused(net, data):
    x, steps, y = data
    floats = tf.cast(y, tf.float32)
    with pytest.raises(ValueError, match=r"`targets` of a token chain must be integer token ids in \[0, 5\).*received float32"):
        net(x, steps, targets=floats)
    with pytest.raises(ValueError, match=r"`y` of a token chain must be integer token ids.*received float32"):
        net.compute_loss(x=(x, steps), y=floats)
    flat = y.flat_values.numpy().copy()
    flat[3] = V
    with pytest.raises(ValueError, match=r"`y` must hold token ids in \[0, 5\) \(vocab_size\); received 5 at flat position 3"):
        net.compute_loss(x=(x, steps), y=_ragged(flat, steps))
    flat[3] = -1
    with pytest.raises(ValueError, match=r"`targets` must hold token ids in \[0, 5\).*received -1 at flat position 3"):
        net(x, steps, targets=_ragged(flat, steps))
