"""Generation at lengths the chain predicts: what a length part's `generate` works with.

A length part (`chain.Lengths`) gets a :class:`Generation`: model A's output for the call, the
part's own layers, and two ways to run model B free:

- :meth:`Generation.run_at` runs it at lengths the part computed, e.g. from `IR`;
- :meth:`Generation.run_until` runs every `(b, t)` until a test on B's output (or, in a token
  chain, on the token just chosen) fires, or until `max_steps`, with a finished flag per run.

In a token chain both run one loop (:class:`_StopRun`) in which a decoder (`chain.Greedy`,
`chain.Sampler`) picks every step's token from the head's logits, and model B is fed the
embedding of that token; they return the tokens and their log probabilities.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping, NamedTuple

import keras
import tensorflow as tf

from ._beam import Beam, BeamSearch
from ._cells import StateList, StepAdapter
from ._decoding import Greedy
from ._feedback import fed_state
from ._ops import masked

if TYPE_CHECKING:
    from ._decoding import Decoder
    from ._forward import Forward


class Generated(NamedTuple):
    """What a length part's `generate` returns.

    Attributes:
        flat: `(N, output_size)`, the outputs of every real inner step in `(b, t, k)` order; in a
            token chain the chosen tokens `(N,)` int32.
        steps: `(batch, T)` int32, the lengths generated.
        a_states: model A's final states.
        b_states: model B's final states (carry mode; `[]` otherwise).
        scores: a token chain's log probabilities of the chosen tokens `(N,)` float32 (under the
            model's softmax, before any temperature or cut); None otherwise.
    """

    flat: tf.Tensor
    steps: tf.Tensor
    a_states: list
    b_states: list
    scores: tf.Tensor | None = None


class Generation:
    """One generation call, as a length part sees it.

    Attributes:
        ir: model A's output `(batch, T, ir_size)`.
        layers: the part's own layers, by the names its `layers` gave them.
        max_steps: the chain's `max_steps`, the cap on every length.
        decoder: a token chain's decoder (a `chain.Decoder`); None in a real-valued chain.
    """

    def __init__(self, forward: "Forward", x: tf.Tensor, a_in: StateList | None, b_in: StateList | None,
                 layers: Mapping[str, keras.layers.Layer], decoder: "Decoder | None" = None) -> None:  # fmt: skip
        self._forward = forward
        self.ir, self._a_out = forward.run_model_a(x, a_in, False, differentiable=False)
        self._b_in = b_in
        self.layers = dict(layers)
        self.max_steps: int = forward.options.max_steps
        self.decoder = decoder

    def run_at(self, steps: tf.Tensor) -> Generated:
        """Runs model B free at `steps` `(batch, T)` int32, each in `[0, max_steps]`."""
        forward = self._forward
        if self.decoder is not None:
            cap = self.max_steps if self.max_steps is not None else tf.reduce_max(tf.concat([tf.reshape(steps, [-1]), [0]], 0))
            return self._loop(_Record(forward, None, "outputs", self.decoder), steps == 0, cap, steps)
        flat, b_out = forward.b_outputs(self.ir, steps, training=False, head=forward.parts.head,
                                        initial_state=self._b_in, final=True, differentiable=False)  # fmt: skip
        return Generated(flat, steps, self._a_out, b_out)

    def run_until(self, stop: Callable[[tf.Tensor], tf.Tensor], empty: tf.Tensor | None = None,
                  sees: str = "outputs") -> Generated:  # fmt: skip
        """Runs every `(b, t)` until `stop` fires or it reaches `max_steps`.

        In carry mode one loop walks `t` and, inside it, the inner steps of every sample, with a
        finished flag per sample; B's state only moves for samples still running. In reset and
        init modes all `(b, t)` runs go at once.

        Args:
            stop: maps what it sees at one inner step of `n` runs to `(n,)` bool, True where that
                step is the run's last: B's outputs `(n, H)` (before the head), or with
                `sees="tokens"` the tokens just chosen `(n,)` int32 (a token chain only).
            empty: `(batch, T)` bool, True where a run emits nothing; None for none.
            sees: `"outputs"` or `"tokens"`.

        Raises:
            ValueError: `sees` is neither, or `"tokens"` in a real-valued chain.
        """
        if sees not in ("outputs", "tokens"):
            raise ValueError(f"`sees` must be 'outputs' or 'tokens'; received {sees!r}")
        if sees == "tokens" and self.decoder is None:
            raise ValueError("`sees='tokens'` needs a token chain (built with `vocab_size`); received a real-valued chain")
        batch, big_t = tf.shape(self.ir)[0], tf.shape(self.ir)[1]
        empty = tf.zeros([batch, big_t], tf.bool) if empty is None else empty
        return self._loop(_Record(self._forward, stop, sees, self.decoder), empty, self.max_steps, None)

    def _loop(self, record: "_Record", empty: tf.Tensor, cap, lengths: tf.Tensor | None) -> Generated:
        """Runs the stop loop; `lengths` `(batch, T)` caps each run (None: `cap` only)."""
        forward, ir = self._forward, self.ir
        batch, big_t = tf.shape(ir)[0], tf.shape(ir)[1]
        ir_rows = tf.reshape(ir, [-1, ir.shape[-1]])
        adapter = forward.step_adapter()
        xp = adapter.project(ir_rows)
        caps = tf.fill([batch, big_t], tf.cast(cap, tf.int32)) if lengths is None else lengths
        if isinstance(self.decoder, Beam):
            return self._search(BeamSearch(self.decoder, forward, adapter, record.stop, record.sees, cap), xp, empty, caps)
        runner = _StopRun(adapter, record, cap)
        b_out: list = []
        if forward.options.state == "carry":
            b_in = self._b_in if self._b_in is not None else adapter.zero_states(batch, xp.dtype)
            dense, steps, b_out = runner.carry(xp, empty, caps, batch, big_t, b_in)
        else:
            init = forward.initial_states(ir_rows, batch, adapter)
            empty, caps = tf.reshape(empty, [-1]), tf.reshape(caps, [-1])
            if isinstance(self.decoder, Greedy):  # its tokens do not depend on a run's row
                sort, back = _longest_first(empty, caps)
                dense, found, _ = runner.run(sort(xp), [sort(s) for s in init], sort(empty), sort(caps), 0, by_cap=True)
                dense, found = [back(d) for d in dense], back(found)
            else:
                dense, found, _ = runner.run(xp, init, empty, caps, 0)
            dense = [tf.reshape(d, [batch, big_t, cap, *d.shape[2:]]) for d in dense]
            steps = tf.reshape(found, [batch, big_t])
        mask = tf.sequence_mask(steps, cap)
        flat = [masked(d, mask) for d in dense]
        if self.decoder is not None:
            return Generated(flat[0], steps, self._a_out, b_out, flat[1])
        head = forward.parts.head
        return Generated(flat[0] if head is None else head(flat[0]), steps, self._a_out, b_out)


    def _search(self, search: BeamSearch, xp: tf.Tensor, empty: tf.Tensor, caps: tf.Tensor) -> Generated:
        """A beam search: in carry mode one per sample across its outer steps, else one per `(b, t)`."""
        forward, ir = self._forward, self.ir
        batch, big_t, width = tf.shape(ir)[0], tf.shape(ir)[1], search.beam.width
        if forward.options.state == "carry":
            b_in = self._b_in if self._b_in is not None else search.adapter.zero_states(batch, xp.dtype)
            found = search.run(tf.reshape(xp, [batch, big_t, xp.shape[-1]]), b_in, empty, caps)
            return Generated(masked(found.tokens, found.emitted), found.steps, self._a_out, found.states,
                             masked(found.scores, found.emitted))  # fmt: skip
        init = forward.initial_states(tf.reshape(ir, [-1, ir.shape[-1]]), batch, search.adapter)
        empty, caps = tf.reshape(empty, [-1]), tf.reshape(caps, [-1])
        sort, back = _longest_first(empty, caps)
        found = search.run(sort(xp)[:, None], [sort(s) for s in init], sort(empty)[:, None], sort(caps)[:, None], by_cap=True)
        found = found._replace(**{k: back(getattr(found, k)) for k in ("tokens", "scores", "emitted", "steps")})
        by_sample = lambda r: tf.transpose(tf.reshape(r, tf.stack([batch, big_t, width, -1])), [0, 2, 1, 3])  # noqa: E731
        steps = by_sample(found.steps)[..., 0]
        emitted = by_sample(found.emitted)
        return Generated(masked(by_sample(found.tokens), emitted), steps, self._a_out, [],
                         masked(by_sample(found.scores), emitted))  # fmt: skip


class _Record:
    """What each inner step records and when it stops: B's output (a real-valued chain), or the
    decoder's token and its log probability, whose embedding then feeds the next step (a token chain)."""

    def __init__(self, forward: "Forward", stop, sees: str, decoder) -> None:
        self.forward, self.stop, self.sees, self.decoder = forward, stop, sees, decoder

    def specs(self, adapter: StepAdapter, dtype: tf.DType) -> list[tuple[tf.DType, list]]:
        if self.decoder is None:
            return [(dtype, [adapter.output_size])]
        return [(tf.int32, []), (tf.float32, [])]

    def __call__(self, out: tf.Tensor, states: StateList, index: tf.Tensor):
        """`(records, states, stops)` of one step of `n` runs."""
        if self.decoder is None:
            return [out], states, self._stops(out, out)
        forward = self.forward
        logits = tf.cast(forward.parts.head(out), tf.float32)
        tokens = self.decoder.next(logits, index)
        scores = tf.gather(tf.nn.log_softmax(logits), tokens, batch_dims=1)
        if forward.parts.embedding is not None:  # feed the chosen token on, not the greedy one
            states = [*states[:-1], fed_state(tf.cast(forward.embed(tokens), out.dtype))]
        return [tokens, scores], states, self._stops(out, tokens)

    def _stops(self, out: tf.Tensor, tokens: tf.Tensor) -> tf.Tensor:
        if self.stop is None:
            return tf.zeros(tf.shape(out)[:1], tf.bool)
        return self.stop(tokens if self.sees == "tokens" else out)


class _StopRun:
    """Inner steps of many runs at once, each until its record says stop or it reaches its cap,
    with finished flags."""

    def __init__(self, adapter: StepAdapter, record: _Record, cap) -> None:
        self.adapter, self.record, self.cap = adapter, record, cap

    def carry(self, xp, empty, caps, batch, big_t, states):
        """Carry mode: B's state flows through the real steps of each sample, t by t."""
        xp_bt = tf.reshape(xp, [batch, big_t, xp.shape[-1]])
        specs = self.record.specs(self.adapter, xp.dtype)
        blocks = [tf.TensorArray(d, size=big_t, element_shape=[None, None, *w]) for d, w in specs]
        lengths = tf.TensorArray(tf.int32, size=big_t, element_shape=[None])

        def outer(t, states, blocks, lengths):
            offset = tf.cast(t, tf.int64) * tf.cast(self.cap, tf.int64)
            dense, n, states = self.run(xp_bt[:, t], states, empty[:, t], caps[:, t], offset)
            return t + 1, states, [b.write(t, d) for b, d in zip(blocks, dense)], lengths.write(t, n)

        invariants = [tf.TensorShape([None, s]) for s in self.adapter.state_sizes]
        _, states, blocks, lengths = tf.while_loop(
            lambda t, *_: t < big_t, outer, (0, states, blocks, lengths),
            shape_invariants=(tf.TensorShape([]), invariants, [None] * len(blocks), None),
        )  # fmt: skip
        dense = [_swap(b.stack()) for b in blocks]
        return dense, tf.transpose(lengths.stack()), states

    def run(self, xp, states, done, caps, offset, by_cap=False):
        """`(dense records (rows, cap, ...) zero-padded, lengths (rows,) int32, final states)` of `rows` runs.

        `xp` `(rows, P)` projected inputs; `states` `(rows, s)` each; `done` `(rows,)` bool, True
        for runs that emit nothing; `caps` `(rows,)` int32, each run's most steps; `offset` the
        index of the first step (for the decoder's draws). With `by_cap`, the rows come sorted by
        their caps, longest first (empty ones last), and step `k` moves only the prefix of rows
        whose cap exceeds `k`; the decoder must then not depend on a run's row, and the final
        states returned are those of the rows still moving at the last step.
        """
        adapter, cap = self.adapter, self.cap
        lengths = tf.zeros(tf.shape(done), tf.int32)
        moving = tf.where(done, 0, caps)
        done = done | (caps <= 0)
        specs = self.record.specs(adapter, xp.dtype)
        outs = [tf.TensorArray(d, size=cap, element_shape=[None, *w]) for d, w in specs]

        def body(k, states, done, lengths, outs):
            if by_cap:  # rows [0, m) move; the rest are finished for good, and their states are dropped
                m = tf.reduce_sum(tf.cast(moving > k, tf.int32))
                states = [s[:m] for s in states]
            out, new = adapter.step(xp[:m] if by_cap else xp, states, False)
            records, new, stops = self.record(out, new, tf.cast(offset, tf.int64) + tf.cast(k, tf.int64))
            active = ~done[:m] if by_cap else ~done
            states = [tf.where(active[:, None], n, o) for n, o in zip(new, states)]
            if by_cap:
                rows = tf.shape(done)[0]
                records, active, stops = [_pad_rows(r, rows) for r in records], _pad_rows(active, rows), _pad_rows(stops, rows)
            lengths += tf.cast(active, tf.int32)
            done = done | (active & stops) | (lengths >= caps)
            outs = [ta.write(k, tf.where(_rows(active, r), r, tf.zeros_like(r))) for ta, r in zip(outs, records)]
            return k + 1, states, done, lengths, outs

        def running(k, states, done, *_):
            return (k < cap) & tf.reduce_any(~done)

        invariants = [tf.TensorShape([None, s]) for s in adapter.state_sizes]
        k, states, done, lengths, outs = tf.while_loop(
            running, body, (0, states, done, lengths, outs),
            shape_invariants=(tf.TensorShape([]), invariants, tf.TensorShape([None]), tf.TensorShape([None]), [None] * len(outs)),
        )  # fmt: skip
        rows = tf.shape(xp)[0]
        outs = [_fill(ta, k, cap, tf.zeros(tf.stack([rows, *w]), d)) for ta, (d, w) in zip(outs, specs)]
        return [_swap(ta.stack()) for ta in outs], lengths, states


def _longest_first(empty: tf.Tensor, caps: tf.Tensor) -> tuple[Callable, Callable]:
    """`(sort, back)`: `sort` gathers `(n, ...)` rows longest run first (by `caps`, empty runs
    `empty` last, ties in order), and `back` puts sorted rows back in place."""
    order = tf.argsort(tf.where(empty, 0, caps), direction="DESCENDING", stable=True)
    back = tf.math.invert_permutation(order)
    return (lambda rows: tf.gather(rows, order)), (lambda rows: tf.gather(rows, back))


def _pad_rows(values: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """`values` `(m, ...)` followed by zeros (False) up to `rows` rows."""
    zeros = tf.zeros(tf.concat([[rows - tf.shape(values)[0]], tf.shape(values)[1:]], 0), values.dtype)
    return tf.concat([values, zeros], 0)


def _rows(active: tf.Tensor, record: tf.Tensor) -> tf.Tensor:
    """`active` `(n,)` shaped to broadcast over `record` `(n, ...)`."""
    return tf.reshape(active, tf.concat([tf.shape(active), tf.ones([tf.rank(record) - 1], tf.int32)], 0))


def _swap(stacked: tf.Tensor) -> tf.Tensor:
    """`stacked` with its first two axes swapped."""
    return tf.transpose(stacked, [1, 0, *range(2, stacked.shape.rank)])


def _fill(outs: tf.TensorArray, k, cap, zeros: tf.Tensor) -> tf.TensorArray:
    """Writes `zeros` into the slots `[k, cap)` that an early exit left empty."""
    _, outs = tf.while_loop(lambda j, _: j < cap, lambda j, ta: (j + 1, ta.write(j, zeros)), (k, outs))
    return outs
