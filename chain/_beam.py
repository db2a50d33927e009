"""Beam search: the `width` most likely outputs of a token chain, kept side by side while generating.

A *hypothesis* is a partial output with its own model B state (and fed-back token), its total log
probability and, per inner run, whether that run has ended. At every inner step each live
hypothesis is extended by every token, and the `width` best of the `width * V` candidates of each
search survive, ranked by log probability divided by the length penalty. A hypothesis whose run
has ended (its given length reached, its end token or stop logit fired) stays in the beam as one
candidate of unchanged score, so the search moves in lockstep and compares finished and running
hypotheses fairly (as TF Addons' `BeamSearchDecoder` does).

What one search spans depends on the state mode:

- reset and init: one `(b, t)` run. All `batch * T` runs are searched at once.
- carry: a whole sample, across its outer steps. A hypothesis carries its B state and fed token
  from one outer step to the next, and is ranked by the log probability of everything it has
  emitted so far, so the best output of the whole hierarchy wins, not the best of each run.

With `width=1` this is greedy decoding exactly: `tf.math.top_k` breaks ties by the lower index, as
`argmax` does.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

import keras
import tensorflow as tf

from ._cells import StateList, StepAdapter
from ._decoding import Decoder, _is_int
from ._feedback import fed_state

if TYPE_CHECKING:
    from ._forward import Forward


@keras.saving.register_keras_serializable(package="chain")
class Beam(Decoder):
    """Beam search of `width` hypotheses; `Chain.generate(x, decoder=Beam(K))` returns the `K`
    best outputs of each sample, best first, as `(batch, K, T, None)` tokens.

    Hypotheses are ranked by `log p / ((5 + n) / 6) ** length_penalty`, `n` the tokens emitted
    (the GNMT length penalty, as in TF Addons). With lengths given or predicted from `IR` (a
    `LengthHead`), every hypothesis has the same `n` at every step and the penalty changes nothing;
    it matters where an end token or a stop logit ends runs, where 0 favours short outputs.

    In carry mode a beam spans the whole sample: it carries model B's state and fed-back token
    from one outer step to the next and is ranked by its total log probability. In reset and init
    modes each `(b, t)` run is searched on its own, and beam `k` of a sample is the `k`-th best
    of each of its runs.

    Args:
        width: the number of hypotheses kept, an integer >= 1. `Beam(1)` is greedy decoding.
        length_penalty: the exponent of the length penalty, a finite number >= 0.

    Raises:
        ValueError: an argument out of range, naming it and the value received.

    Examples:
        >>> Beam(4)
        Beam(width=4, length_penalty=0.0)
    """

    def __init__(self, width: int, length_penalty: float = 0.0) -> None:
        if not _is_int(width) or width < 1:
            raise ValueError(f"`width` (the beam width) must be an integer >= 1; received {width!r}")
        if isinstance(length_penalty, bool) or not isinstance(length_penalty, (int, float)) or not (
            math.isfinite(length_penalty) and length_penalty >= 0
        ):
            raise ValueError(f"`length_penalty` must be a finite number >= 0; received {length_penalty!r}")
        self.width, self.length_penalty = int(width), float(length_penalty)

    def next(self, logits, index):
        raise ValueError(
            "Beam keeps several hypotheses per run, so it has no single next token: pass it to "
            "`Chain.generate(..., decoder=chain.Beam(K))`"
        )

    def penalty(self, lengths: tf.Tensor) -> tf.Tensor:
        """The length penalty `((5 + n) / 6) ** length_penalty` of `lengths` `n` (int), float32."""
        return tf.pow((5.0 + tf.cast(lengths, tf.float32)) / 6.0, self.length_penalty)

    def get_config(self):
        return {"width": self.width, "length_penalty": self.length_penalty}


class Found(NamedTuple):
    """The result of a search over `R` searches of `S` segments (outer steps) each.

    Attributes:
        tokens, scores: `(R, K, G)` int32 and float32, every beam's token and its log probability
            at each of the `G` lockstep steps, zero where the beam emitted nothing; a beam that
            is padding (fewer outputs exist than `K`) scores -inf throughout.
        emitted: `(R, K, G)` bool, True where the beam emitted a token; in `(segment, k)` order.
        steps: `(R, K, S)` int32, each beam's length per segment.
        states: B's final states of the best beam `(R, s)` each.
    """

    tokens: tf.Tensor
    scores: tf.Tensor
    emitted: tf.Tensor
    steps: tf.Tensor
    states: StateList


class BeamSearch:
    """Runs `R` beam searches at once, each over `S` segments of inner steps.

    Args:
        beam: the search's width and length penalty.
        forward: the chain's forward pass (its head, embedding and vocabulary).
        adapter: the step adapter of model B.
        stop: maps one step's B outputs `(n, H)` or tokens `(n,)` (as `sees` says) to `(n,)`
            bool, True where the run ends there; None to run to the caps.
        sees: `"outputs"` or `"tokens"`.
        cap: the most inner steps of any run (a scalar).
    """

    def __init__(self, beam: Beam, forward: "Forward", adapter: StepAdapter,
                 stop: Callable[[tf.Tensor], tf.Tensor] | None, sees: str, cap: Any) -> None:  # fmt: skip
        self.beam, self.forward, self.adapter = beam, forward, adapter
        self.stop, self.sees, self.cap = stop, sees, cap
        self.vocab = forward.options.vocab_size
        self.only_first = tf.constant([0.0] + [-math.inf] * (self.vocab - 1))  # a finished hypothesis's one way on

    def run(self, xp: tf.Tensor, init: StateList, empty: tf.Tensor, caps: tf.Tensor, by_cap: bool = False) -> Found:
        """Searches `R` rows.

        Args:
            xp: `(R, S, P)` projected inputs of each segment.
            init: B's states at the start `(R, s)` each.
            empty: `(R, S)` bool, True where a segment emits nothing.
            caps: `(R, S)` int32, each segment's most steps (its length, where lengths are given).
            by_cap: the rows come sorted by their caps, longest first, one segment each, empty
                ones last (reset and init modes). The `k`-th lockstep step then moves only the
                prefix of rows whose cap exceeds `k`; the states of the finished rest are
                dropped, not carried (`Found.states` is then empty). The first step, where every
                row's hypotheses are still one, runs model B once per row.
        """
        width = self.beam.width
        rows, segments = tf.shape(xp)[0], tf.shape(xp)[1]
        kept = tf.tile(tf.range(width)[None] * (self.vocab + 1), tf.stack([rows, 1]))  # "own parent, no token"
        states = [tf.repeat(s, width, axis=0) for s in init]
        logp = tf.tile(tf.concat([[0.0], tf.fill([width - 1], -math.inf)], 0)[None], tf.stack([rows, 1]))
        count = tf.zeros(tf.stack([rows, width]), tf.int32)
        most = tf.maximum(segments * tf.cast(self.cap, tf.int32), 1)  # lockstep steps at most (by_cap writes one)
        arrays = [tf.TensorArray(d, size=most, element_shape=[None, width]) for d in (tf.int32, tf.float32)]
        seg_ids = tf.TensorArray(tf.int32, size=most, element_shape=[])

        def segment(s, g, states, logp, count, arrays, seg_ids):
            xk = tf.repeat(xp[:, s], width, axis=0)
            seg_caps = caps[:, s]
            moving = tf.where(empty[:, s], 0, seg_caps)  # the steps each row takes at most
            done = tf.tile((empty[:, s] | (seg_caps <= 0))[:, None], [1, width])
            n = tf.zeros_like(count)

            def step(k, g, states, logp, count, n, done, arrays, seg_ids, shared=False):
                if not by_cap:
                    states, logp, count, n, done, records = self._step(xk, states, logp, count, n, done, seg_caps)
                else:  # rows [0, m) move; the rest are finished for good
                    m = tf.reduce_sum(tf.cast(moving > k, tf.int32))
                    rest = [t[m:] for t in (logp, count, n, done)]
                    picked = self._step(xk[: m * width], [t[: m * width] for t in states],
                                        *(t[:m] for t in (logp, count, n, done)), seg_caps[:m], shared)  # fmt: skip
                    states = picked[0]
                    logp, count, n, done = (tf.concat([a, b], 0) for a, b in zip(picked[1:5], rest))
                    codes, scores = picked[5]
                    records = (tf.concat([codes, kept[m:]], 0), tf.concat([scores, tf.zeros_like(kept[m:], tf.float32)], 0))
                arrays = [a.write(g, r) for a, r in zip(arrays, records)]
                return k + 1, g + 1, states, logp, count, n, done, arrays, seg_ids.write(g, s)

            start = (0, g, states, logp, count, n, done, arrays, seg_ids)
            if by_cap:
                start = step(*start, shared=True)
            going = lambda k, g, states, logp, count, n, done, *_: (k < self.cap) & tf.reduce_any(~done)  # noqa: E731
            _, g, states, logp, count, _, _, arrays, seg_ids = tf.while_loop(
                going, step, start,
                shape_invariants=(*[tf.TensorShape([])] * 2, self._invariants(), *[tf.TensorShape([None, width])] * 4,
                                  [None] * 2, None),  # fmt: skip
            )
            return s + 1, g, states, logp, count, arrays, seg_ids

        _, g, states, logp, count, arrays, seg_ids = tf.while_loop(
            lambda s, *_: s < segments, segment, (0, 0, states, logp, count, arrays, seg_ids),
            shape_invariants=(*[tf.TensorShape([])] * 2, self._invariants(), *[tf.TensorShape([None, width])] * 2,
                              [None] * 2, None),  # fmt: skip
        )
        written = tf.range(g)
        tokens, scores, emitted = _backtrack(*(a.gather(written) for a in arrays), rows, width, self.vocab)
        # beyond the outputs that exist (width > V ** L) a beam is padding: log probability -inf
        scores = tf.where(tf.math.is_inf(logp)[..., None], -math.inf, scores)
        seg = tf.one_hot(seg_ids.gather(written), segments, dtype=tf.int32)  # (G, S)
        steps = tf.einsum("rkg,gs->rks", tf.cast(emitted, tf.int32), seg)
        best = [] if by_cap else [tf.reshape(s, tf.stack([rows, width, -1]))[:, 0] for s in states]
        return Found(tokens, scores, emitted, steps, best)

    def _invariants(self) -> list[tf.TensorShape]:
        return [tf.TensorShape([None, s]) for s in self.adapter.state_sizes]

    def _step(self, xk, states, logp, count, n, done, seg_caps, shared=False):
        """One lockstep inner step of every hypothesis: extend, rank, keep the best `width`.

        With `shared`, every row's hypotheses are one (its first, of log probability 0, and the
        others at -inf): model B and the head run once per row, and their result serves all.
        """
        width, vocab, forward = self.beam.width, self.vocab, self.forward
        rows = tf.shape(logp)[0]
        if shared:
            out, new = self.adapter.step(xk[::width], [t[::width] for t in states], False)
            token_logp = tf.nn.log_softmax(tf.cast(forward.parts.head(out), tf.float32))
            out, new = tf.repeat(out, width, axis=0), [tf.repeat(t, width, axis=0) for t in new]
            token_logp = tf.repeat(token_logp[:, None], width, axis=1)
        else:
            out, new = self.adapter.step(xk, states, False)
            token_logp = tf.reshape(tf.nn.log_softmax(tf.cast(forward.parts.head(out), tf.float32)), tf.stack([rows, width, vocab]))
        live = ~done
        # a finished hypothesis has one continuation (slot 0: "nothing"), of unchanged score
        candidates = tf.where(live[..., None], logp[..., None] + token_logp, logp[..., None] + self.only_first)
        flat = lambda r: tf.reshape(r, tf.stack([rows, width * vocab]))  # noqa: E731
        if self.beam.length_penalty:
            count = count + tf.cast(live, tf.int32)
            top = tf.math.top_k(flat(candidates / self.beam.penalty(count)[..., None]), width).indices
            logp = tf.gather(flat(candidates), top, batch_dims=1)
        else:  # ranked by log p itself (and the count is not needed)
            logp, top = tf.math.top_k(flat(candidates), width)
        parent, token = top // vocab, top % vocab
        pick = lambda values: tf.gather(values, parent, batch_dims=1)  # noqa: E731
        scores = tf.gather(flat(token_logp), top, batch_dims=1)
        emitted = pick(live)
        n = pick(n) + tf.cast(emitted, tf.int32)
        if self.beam.length_penalty:
            count = pick(count)
        moved = [tf.where(tf.reshape(live, [-1])[:, None], nw, old) for nw, old in zip(new, states)]
        flat_parent = tf.reshape(parent + tf.range(rows)[:, None] * width, [-1])
        states = [tf.gather(s, flat_parent) for s in moved]
        if forward.parts.embedding is not None:  # the chosen token feeds the next step
            fed = fed_state(tf.cast(forward.embed(tf.reshape(token, [-1])), states[-1].dtype))
            states[-1] = tf.where(tf.reshape(emitted, [-1])[:, None], fed, states[-1])
        done = pick(done) | (emitted & self._stops(out, token, pick)) | (n >= seg_caps[:, None])
        # one int per hypothesis: its parent and its token + 1 (0: it emitted nothing)
        records = (parent * (vocab + 1) + tf.where(emitted, token + 1, 0), tf.where(emitted, scores, 0.0))
        return states, logp, count, n, done, records

    def _stops(self, out: tf.Tensor, token: tf.Tensor, pick) -> tf.Tensor:
        if self.stop is None:
            return tf.zeros_like(token, tf.bool)
        if self.sees == "tokens":
            return tf.reshape(self.stop(tf.reshape(token, [-1])), tf.shape(token))
        return pick(tf.reshape(self.stop(out), tf.shape(token)))


def _backtrack(codes, scores, rows, width, vocab):
    """Each final beam's `(tokens, scores, emitted)` `(R, K, G)`, followed from its last step back
    through its parents; `codes` `(G, R, K)` as recorded, `parent * (V + 1) + token + 1`, with 0
    for the token where a hypothesis emitted nothing."""
    def back(acc, step):
        code, score = (tf.gather(r, acc[0], batch_dims=1) for r in step)
        return code // (vocab + 1), code % (vocab + 1), score

    start = tf.tile(tf.range(width)[None], tf.stack([rows, 1]))
    initial = (start, tf.zeros_like(start), tf.zeros_like(start, tf.float32))
    _, tokens, scores = tf.scan(back, (codes, scores), initial, reverse=True)
    to_rows = lambda r: tf.transpose(r, [1, 2, 0])  # noqa: E731
    tokens = to_rows(tokens)
    return tf.maximum(tokens - 1, 0), to_rows(scores), tokens > 0
