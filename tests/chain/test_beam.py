"""Beam search (`chain.Beam`): against greedy at width 1, an exhaustive search on tiny cases, and a
per-sample reference written independently, in outputs and scores."""

from __future__ import annotations

import itertools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import chain
from chain import Beam, Chain, EndToken, Sampler

from .test_tokens import IR, MAX, V, _data, _log_softmax, _net


def _by_beam(tokens, scores):
    """`[[(flat tokens of beam k), total log probability]] per sample` of a beam's ragged output."""
    totals = tf.reduce_sum(tf.reduce_sum(scores, axis=-1), axis=-1).numpy()
    per_beam = tokens.merge_dims(2, 3).to_list()
    return [[(tuple(per_beam[b][k]), totals[b, k]) for k in range(totals.shape[1])] for b in range(totals.shape[0])]


class _Stepper:
    """Model B stepped by hand on one hypothesis: `[IR[b, t], embedding of prev]` in, `(log p (V,), state)` out."""

    def __init__(self, net):
        self.net = net
        self.table = net.token_embedding.embeddings.numpy()

    def start(self):
        return [tf.zeros((1, 5))], V  # zero state, the start row

    def __call__(self, ir_row, state, prev):
        inp = np.concatenate([ir_row, self.table[prev]])[None].astype("float32")
        out, state = self.net.model_b(inp, state)
        state = list(state) if isinstance(state, (list, tuple)) else [state]
        return _log_softmax(self.net.head(out).numpy()[0].astype("float64")), state


def _reference_beam(net, ir_rows, caps, width, penalty=0.0, end=None, start=None):
    """One search over the segments `ir_rows` `(S, ir)` (a sample in carry mode, a run otherwise),
    hypothesis by hypothesis: `[(tokens per segment, total log p)]`, best first."""
    step = _Stepper(net)
    state, prev = start if start is not None else step.start()
    hyps = [{"runs": [], "logp": 0.0, "n": 0, "state": state, "prev": prev}]
    rank = lambda logp, n: logp / ((5.0 + n) / 6.0) ** penalty  # noqa: E731
    for ir_row, cap in zip(ir_rows, caps):
        for h in hyps:
            h.update(runs=[*h["runs"], ()], done=cap == 0)
        for _ in range(MAX):
            if all(h["done"] for h in hyps):
                break
            candidates = []
            for i, h in enumerate(hyps):
                if h["done"]:
                    candidates.append((rank(h["logp"], h["n"]), i * V, h))
                    continue
                logp, state = step(ir_row, h["state"], h["prev"])
                for v in range(V):
                    run = (*h["runs"][-1], v)
                    grown = {"runs": [*h["runs"][:-1], run], "logp": h["logp"] + logp[v], "n": h["n"] + 1,
                             "state": state, "prev": v, "done": v == end or len(run) == cap}  # fmt: skip
                    candidates.append((rank(grown["logp"], grown["n"]), i * V + v, grown))
            candidates.sort(key=lambda c: (-c[0], c[1]))
            hyps = [c[2] for c in candidates[:width]]
    return [(h["runs"], h["logp"]) for h in hyps]


def _flat(runs):
    return tuple(token for run in runs for token in run)


X, STEPS, _ = _data(batch=2, big_t=3, seed=1)


@pytest.mark.parametrize("state", ["carry", "reset", "init"])
def test_width_one_is_greedy_exactly(state):
    net = _net(state=state, seed=2)
    greedy, greedy_scores = net.generate(X, STEPS, return_scores=True)
    tokens, scores = net.generate(X, STEPS, decoder=Beam(1), return_scores=True)
    assert tokens.shape.as_list() == [2, 1, 3, None] and tokens.dtype == tf.int32
    np.testing.assert_array_equal(tokens.flat_values.numpy(), greedy.flat_values.numpy())
    np.testing.assert_array_equal(tokens.row_lengths(axis=3).numpy().reshape(2, 3), STEPS)
    np.testing.assert_allclose(scores.flat_values.numpy(), greedy_scores.flat_values.numpy(), atol=1e-6)


def test_width_one_is_greedy_exactly_with_an_end_token():
    net = _net(seed=4, lengths=EndToken(2))
    greedy = net.generate(X)
    tokens = net.generate(X, decoder=Beam(1))
    np.testing.assert_array_equal(tokens.flat_values.numpy(), greedy.flat_values.numpy())
    np.testing.assert_array_equal(tokens.row_lengths(axis=3).numpy()[:, 0], greedy.row_lengths(axis=2).numpy())


def test_in_carry_mode_a_wide_beam_is_an_exhaustive_search_over_the_whole_sample():
    keras.utils.set_random_seed(5)
    net = Chain(keras.layers.GRU(6, return_sequences=True), keras.layers.GRUCell(5), vocab_size=2, feedback=True,
                max_steps=MAX)  # fmt: skip
    net.build((None, None, 3))
    x, steps = X[:1, :2], np.array([[1, 2]], "int32")  # L = 3 tokens across two outer steps
    tokens, scores = net.generate(x, steps, decoder=Beam(2**3), return_scores=True)
    found = _by_beam(tokens, scores)[0]
    every = sorted(((seq, _sequence_logp(net, net.model_a(x).numpy()[0], steps[0], seq)) for seq in itertools.product(range(2), repeat=3)),
                   key=lambda item: -item[1])  # fmt: skip
    assert [seq for seq, _ in found] == [seq for seq, _ in every]
    np.testing.assert_allclose([s for _, s in found], [s for _, s in every], atol=1e-5)
    # a wider beam than there are outputs pads with outputs of log probability -inf
    wider = _by_beam(*net.generate(x, steps, decoder=Beam(10), return_scores=True))[0]
    assert [seq for seq, _ in wider[:8]] == [seq for seq, _ in every]
    assert [s for _, s in wider[8:]] == [-math.inf, -math.inf]


def _sequence_logp(net, ir, steps, seq):
    """Log probability of the tokens `seq`, the runs of `steps` at the IR rows `ir` one after
    another, B's state carried from the zero state (V = 2)."""
    table = net.token_embedding.embeddings.numpy()
    state, prev, total, tokens = [tf.zeros((1, 5))], table[2], 0.0, iter(seq)
    for t, n in enumerate(steps):
        for _ in range(n):
            out, state = net.model_b(np.concatenate([ir[t], prev])[None].astype("float32"), state)
            state = list(state) if isinstance(state, (list, tuple)) else [state]
            token = next(tokens)
            total += _log_softmax(net.head(out).numpy()[0].astype("float64"))[token]
            prev = table[token]
    return total


def test_in_reset_mode_each_run_is_searched_exhaustively_on_its_own():
    keras.utils.set_random_seed(6)
    net = Chain(keras.layers.GRU(6, return_sequences=True), keras.layers.GRUCell(5), vocab_size=2, feedback=True,
                state="reset", max_steps=MAX)  # fmt: skip
    net.build((None, None, 3))
    x, steps = X[:1, :2], np.array([[2, 2]], "int32")
    tokens, scores = net.generate(x, steps, decoder=Beam(4), return_scores=True)
    runs = tokens.to_list()[0]  # (K, T, k)
    run_scores = tf.reduce_sum(scores, axis=-1).numpy()[0]  # (K, T)
    ir = net.model_a(x).numpy()[0]
    for t in range(2):  # each run alone: its 4 sequences, best first
        every = sorted(((seq, _sequence_logp(net, ir[t:t + 1], [2], seq)) for seq in itertools.product(range(2), repeat=2)),
                       key=lambda item: -item[1])  # fmt: skip
        assert [tuple(runs[k][t]) for k in range(4)] == [seq for seq, _ in every]
        np.testing.assert_allclose(run_scores[:, t], [s for _, s in every], atol=1e-5)


@pytest.mark.parametrize("penalty", [0.0, 1.5])
def test_carry_beam_equals_the_per_sample_reference_with_an_end_token(penalty):
    net = _net(seed=7, lengths=EndToken(2))
    tokens, scores = net.generate(X, decoder=Beam(3, length_penalty=penalty), return_scores=True)
    ir = net.model_a(X).numpy()
    for b, beams in enumerate(_by_beam(tokens, scores)):
        want = _reference_beam(net, ir[b], [MAX] * 3, 3, penalty, end=2)
        assert [seq for seq, _ in beams] == [_flat(runs) for runs, _ in want]
        np.testing.assert_allclose([s for _, s in beams], [logp for _, logp in want], atol=1e-4)
        lengths = tokens.row_lengths(axis=3).numpy()[b]
        assert [tuple(row) for row in lengths] == [tuple(len(run) for run in runs) for runs, _ in want]


# The search moves the runs longest first and each step only those still going: lengths that
# repeat and empty runs between longer ones must come back in place.
@pytest.mark.parametrize("steps", [STEPS, np.array([[0, 3, 1], [3, 0, 3]], "int32")], ids=["distinct", "empty-and-ties"])
def test_reset_beam_equals_the_per_run_reference_at_given_lengths(steps):
    net = _net(state="reset", seed=8)
    tokens, scores = net.generate(X, steps, decoder=Beam(3), return_scores=True)
    ir = net.model_a(X).numpy()
    runs = tokens.to_list()
    run_scores = tf.reduce_sum(scores, axis=-1).numpy()
    for b, t in np.ndindex(*steps.shape):
        if steps[b, t] == 0:  # every beam's run is empty
            assert [runs[b][k][t] for k in range(3)] == [[]] * 3 and not run_scores[b, :, t].any()
            continue
        want = _reference_beam(net, ir[b, t:t + 1], [steps[b, t]], 3)
        assert [tuple(runs[b][k][t]) for k in range(3)] == [r[0] for r, _ in want]
        np.testing.assert_allclose(run_scores[b, :, t], [logp for _, logp in want], atol=1e-4)


def test_the_beams_are_different_outputs_ranked_by_penalised_log_probability():
    net = _net(seed=9, lengths=EndToken(2))
    tokens, scores = net.generate(X, decoder=Beam(4, length_penalty=1.0), return_scores=True)
    lengths = tf.reduce_sum(tokens.row_lengths(axis=3), axis=-1).numpy()
    for b, beams in enumerate(_by_beam(tokens, scores)):
        ranked = [s / ((5 + n) / 6) for (_, s), n in zip(beams, lengths[b])]
        assert ranked == sorted(ranked, reverse=True)
        assert len({seq for seq, _ in beams}) == 4  # four different outputs
        assert len(set(lengths[b])) > 1  # of different lengths, so the penalty did rank them


def test_beam_search_is_the_same_eagerly_and_in_a_graph_and_under_mixed_precision():
    graph, eager = _net(seed=10, lengths=EndToken(1)), _net(seed=10, lengths=EndToken(1), compiled=False)
    first = graph.generate(X, decoder=Beam(3, 0.5), return_scores=True)
    again = eager.generate(X, decoder=Beam(3, 0.5), return_scores=True)
    np.testing.assert_array_equal(first[0].flat_values.numpy(), again[0].flat_values.numpy())
    np.testing.assert_allclose(first[1].flat_values.numpy(), again[1].flat_values.numpy(), atol=1e-6)
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = _net(seed=10, lengths=EndToken(1))
        tokens = mixed.generate(X, decoder=Beam(3))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert tokens.shape.as_list() == [2, 3, 3, None] and tokens.dtype == tf.int32


def test_a_stateful_carry_chain_goes_on_from_the_best_beams_states():
    net, plain = _net(seed=11, stateful=True, batch=2), _net(seed=11)
    net.generate(X[:, :1], STEPS[:, :1], decoder=Beam(2))
    _, states = plain.generate(X[:, :1], STEPS[:, :1], decoder=Beam(2), return_state=True)
    after = net.generate(X[:, 1:], STEPS[:, 1:], decoder=Beam(2), return_scores=True)[1].flat_values.numpy()
    want = plain.generate(X[:, 1:], STEPS[:, 1:], decoder=Beam(2), initial_state=states, return_scores=True)
    np.testing.assert_allclose(after, want[1].flat_values.numpy(), atol=1e-6)
    fresh = plain.generate(X[:, 1:], STEPS[:, 1:], decoder=Beam(2), return_scores=True)[1].flat_values.numpy()
    assert not np.allclose(after, fresh, atol=1e-4)  # the states did carry over


def test_no_outer_step_gives_empty_beams():
    tokens = _net(seed=12).generate(X[:, :0], STEPS[:, :0], decoder=Beam(3))
    assert tokens.shape.as_list()[:3] == [2, 3, 0]


@pytest.mark.parametrize("kwargs, match", [
    ({"width": 0}, r"`width` \(the beam width\) must be an integer >= 1; received 0"),
    ({"width": 2.0}, r"`width` \(the beam width\) must be an integer >= 1; received 2.0"),
    ({"width": True}, r"`width` \(the beam width\) must be an integer >= 1; received True"),
    ({"width": 2, "length_penalty": -1}, r"`length_penalty` must be a finite number >= 0; received -1"),
    ({"width": 2, "length_penalty": math.nan}, r"`length_penalty` must be a finite number >= 0; received nan"),
])  # fmt: skip
def test_bad_beam_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Beam(**kwargs)


def test_beam_search_of_a_real_valued_chain_is_refused():
    real = Chain(keras.layers.GRU(4, return_sequences=True), keras.layers.GRUCell(4), output_size=2)
    with pytest.raises(ValueError, match=r"beam search needs a Chain built with `vocab_size`; received decoder=Beam\(width=2"):
        real.generate(X, STEPS, decoder=Beam(2))
    with pytest.raises(ValueError, match=r"Beam keeps several hypotheses per run"):
        Beam(2).next(tf.zeros([1, V]), 0)
    assert isinstance(Beam(2), chain.Decoder) and not isinstance(Beam(2), Sampler)


# ----------------------------------------------------------------------------- runs in context


def _teacher_forced(net, ir_rows, runs):
    """B's state and last token after the target `runs` at the IR rows `ir_rows`, by hand (carry)."""
    step = _Stepper(net)
    state, prev = step.start()
    for ir_row, run in zip(ir_rows, runs):
        for token in run:
            _, state = step(ir_row, state, prev)
            prev = token
    return state, prev


def _bidirectional_net(seed):
    """A token chain whose model A reads each sample both ways, and so has no state to carry."""
    keras.utils.set_random_seed(seed)
    model_a = keras.layers.Bidirectional(keras.layers.GRU(IR // 2, return_sequences=True))
    net = Chain(model_a, keras.layers.GRUCell(5), vocab_size=V, feedback=True, max_steps=MAX)
    net.build((None, None, 3))
    return net


@pytest.mark.parametrize("decoder, model_a", [(None, "gru"), (Beam(3), "gru"), (None, "bidirectional")])
def test_decode_runs_decodes_each_run_after_the_targets_before_it(decoder, model_a):
    net = _net(seed=13) if model_a == "gru" else _bidirectional_net(seed=13)
    _, _, y = _data(batch=2, big_t=3, seed=1)
    tokens, scores = chain.decode_runs(net, X, STEPS, y, decoder=decoder, return_scores=True)
    ir, targets = net.model_a(X).numpy(), y.to_list()
    width = 1 if decoder is None else 3
    want_shape = [2, 3, None] if decoder is None else [2, 3, 3, None]
    assert tokens.shape.as_list() == want_shape and scores.shape.as_list() == want_shape  # as generate's
    assert tokens[:, 0].shape.as_list() == want_shape[:1] + want_shape[2:]  # T (or K) is a uniform axis
    runs = tokens.to_list() if decoder is not None else [[row] for row in tokens.to_list()]
    run_scores = tf.reduce_sum(scores, axis=-1).numpy().reshape(2, width, 3)
    for b, t in [(0, 1), (1, 2)] if decoder is not None else np.ndindex(2, 3):  # runs after targets
        start = _teacher_forced(net, ir[b, :t], targets[b][:t])
        want = _reference_beam(net, ir[b, t:t + 1], [STEPS[b, t]], width, start=start)
        assert [tuple(runs[b][k][t]) for k in range(width)] == [r[0] for r, _ in want]
        np.testing.assert_allclose(run_scores[b, :, t], [logp for _, logp in want], atol=1e-4)
    free = net.generate(X, STEPS).flat_values.numpy()
    assert decoder is not None or not np.array_equal(free, tokens.flat_values.numpy())  # the context mattered


@pytest.mark.parametrize("model_a", ["gru", "bidirectional"])
def test_decode_runs_takes_padded_targets_as_it_takes_ragged_ones(model_a):
    net = _net(seed=13) if model_a == "gru" else _bidirectional_net(seed=13)
    _, _, y = _data(batch=2, big_t=3, seed=1)
    padded = y.to_tensor(default_value=V - 1)  # padding that would change the runs if it were read
    assert chain.decode_runs(net, X, STEPS, padded).to_list() == chain.decode_runs(net, X, STEPS, y).to_list()


def test_decode_runs_refuses_what_it_cannot_decode():
    real = Chain(keras.layers.GRU(4, return_sequences=True), keras.layers.GRUCell(4), output_size=2)
    with pytest.raises(ValueError, match=r"`decode_runs` needs a token chain"):
        chain.decode_runs(real, X, STEPS, None)
    with pytest.raises(ValueError, match=r"received a stateful chain"):
        chain.decode_runs(_net(seed=14, stateful=True, batch=2), X, STEPS, None)


def test_generate_traces_inside_a_users_tf_function_without_autograph_warnings(caplog):
    net = _net(seed=15)
    traced = tf.function(lambda x, steps: net.generate(x, steps, decoder=Beam(2)).flat_values)
    with caplog.at_level("WARNING", logger="tensorflow"):
        tokens = traced(tf.constant(X), tf.constant(STEPS))
    assert tokens.shape[0] == 2 * STEPS.sum()
    assert not [r for r in caplog.records if "could not transform" in r.getMessage()]
