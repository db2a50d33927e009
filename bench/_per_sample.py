"""The generation baselines: decoding one sample, one outer step and one inner step at a time.

It is the loop a careful user writes without chain: for each sample ``b``, model A on that sample;
for each outer step ``t``, for each of its ``steps[b, t]`` inner steps, one call of a compiled
step on one row: model B on ``[IR[b, t], embedding of the previous token]``, the head, the pick
of the next token (`greedy`, or `nucleus_sample`), and the token goes back in as the next step's
input. The step is an XLA-compiled `tf.function` with fixed ``(1, ...)`` shapes, traced once and
called as its concrete function (see `_PerSample.compiled`; sampling draws Gumbel noise, which XLA
compiles, rather than calling `tf.random.stateless_categorical`, which it does not);
the tokens stay on the device (no host round trip per step) and are gathered at the end. The
loop bounds are the host's ``steps`` array, as a user reads them. States follow the chain's mode:
in carry mode B's state and the previous token flow through all of a sample's outer steps; in
reset and init modes each ``(b, t)`` run starts afresh (zeros, or the init layers on ``IR[b, t]``)
from the start token. It uses a `chain.Chain`'s own layers, so greedy decoding gives the chain's
tokens. `PerSampleBeam` is the same loop for a beam search: each step carries the beam's
hypotheses as its rows.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from bench._reference import b_step, state_sizes
from bench._workloads import SAMPLING

if TYPE_CHECKING:
    from chain import Chain


def greedy(logits: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """The argmax of `logits` (n, V), int32 (n,); the lowest id on a tie, as `chain.Greedy`."""
    return tf.argmax(logits, axis=-1, output_type=tf.int32)


def nucleus_sample(logits: tf.Tensor, seed: tf.Tensor, temperature: float = 1.0, top_p: float = 1.0) -> tf.Tensor:
    """A draw from ``softmax(logits / temperature)`` cut to its nucleus, by the Gumbel-max trick.

    The nucleus is the most likely tokens whose probabilities first sum to at least `top_p` (what
    `chain.Sampler(top_p=...)` keeps; tokens tied with its least likely one stay in too).

    Args:
        logits: float32 (n, V).
        seed: int64 (2,), the stateless draw's seed.

    Returns:
        int32 (n,) tokens.
    """
    logits = logits / temperature
    ranked = tf.sort(logits, axis=-1, direction="DESCENDING")
    before = tf.cumsum(tf.nn.softmax(ranked), axis=-1, exclusive=True)  # what the likelier ones sum to
    least = tf.reduce_min(tf.where(before < top_p, ranked, ranked[:, :1]), axis=-1, keepdims=True)
    uniform = tf.random.stateless_uniform(tf.shape(logits), seed, minval=1e-20, maxval=1.0)
    gumbel = -tf.math.log(-tf.math.log(uniform))
    return tf.argmax(tf.where(logits >= least, logits + gumbel, -math.inf), axis=-1, output_type=tf.int32)


PICKS: dict[str, Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {
    "generate-greedy": greedy,
    "generate-sampling": functools.partial(nucleus_sample, **SAMPLING),
}
"""The baseline's pick of the next token in each generation phase: the argmax, or the same
nucleus sampling as the chain's `chain.Sampler(**SAMPLING)` (other random draws)."""


class _PerSample:
    """What both baselines share: model A per sample, and B's states at the start of a search.

    Args:
        net: A built token chain with feedback.
        rows: The hypotheses a step carries, 1, or a beam's width.
    """

    def __init__(self, net: "Chain", rows: int) -> None:
        self.net, self.rows = net, rows
        self.carry = net.state == "carry"
        self.sizes = state_sizes(net.model_b)
        self.row_spec = tf.TensorSpec([1, int(net.model_a.units)], tf.float32)
        self.start_token = tf.fill([rows], net.vocab_size)  # the embedding's start row
        self._zeros = [tf.zeros([rows, s]) for s in self.sizes]
        self._model_a = tf.function(lambda x: net.model_a(x, training=False))
        init = lambda ir: [tf.repeat(layer(ir), rows, axis=0) for layer in net.init_layers]  # noqa: E731
        self._init = tf.function(init, input_signature=[self.row_spec])

    def compiled(self, step: Callable[..., Any], *specs: Any) -> Callable[..., Any]:
        """`step` traced now as an XLA-compiled `tf.function` of `(ir (1, ir_size), *specs, B's
        states)`, and called as its concrete function.

        On a CPU, XLA takes about 1.6x less time per call than a plain graph, and calling the
        concrete function about 2.5x less than calling the `tf.function`, which matches its
        arguments against its signature at every call.
        """
        states = [tf.TensorSpec([self.rows, s]) for s in self.sizes]
        function = tf.function(step, input_signature=[self.row_spec, *specs, states], jit_compile=True)
        return function.get_concrete_function()

    def start(self, ir: tf.Tensor) -> list[tf.Tensor]:
        """B's states at the start of a search: the init layers on `ir` (1, ir_size), or zeros."""
        return self._init(ir) if self.net.state == "init" else self._zeros

    def b_logits(self, ir: tf.Tensor, token: tf.Tensor, states: list[tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """The head's logits (rows, V) after model B reads `[ir, embedding of token]`, and B's new states."""
        net = self.net
        inputs = tf.concat([tf.repeat(ir, self.rows, axis=0), net.token_embedding(token)], 1)
        out, new = b_step(net.model_b, inputs, states, False)
        return tf.cast(net.head(out), tf.float32), new

    def ir_rows(self, x: np.ndarray) -> list[tf.Tensor]:
        """Model A on one sample x (1, T, input_size): T rows (1, ir_size)."""
        return tf.unstack(self._model_a(x), axis=1)


class PerSampleGenerator(_PerSample):
    """Generates a token chain's tokens sample by sample and step by step.

    Args:
        net: A built token chain with feedback (`chain.Chain(vocab_size=V, feedback=True)`).
        pick: ``pick(logits (1, V), seed (2,) int64) -> (1,) int32``, e.g. a value of `PICKS`.
        seed: The first half of every draw's seed; the second counts the steps of a call up.
    """

    def __init__(self, net: "Chain", pick: Callable[[tf.Tensor, tf.Tensor], tf.Tensor], seed: int = 0) -> None:
        super().__init__(net, 1)
        self.pick, self.seed = pick, seed
        self._index = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._step = self.compiled(self._step_fn, tf.TensorSpec([1], tf.int32))

    def _step_fn(self, ir: tf.Tensor, token: tf.Tensor, states: list[tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """One inner step of one run: the token after `token`, and B's new states."""
        logits, new = self.b_logits(ir, token, states)
        seed = tf.stack([tf.constant(self.seed, tf.int64), self._index.assign_add(1)])
        return self.pick(logits, seed), new

    def generate(self, x: np.ndarray, steps: np.ndarray) -> tf.Tensor:
        """The tokens of every real inner step.

        Args:
            x: float32 (batch, T, input_size).
            steps: int (batch, T), read on the host.

        Returns:
            int32 (sum(steps),) in (sample, t, k) order, as ``net.generate(x, steps).flat_values``.
        """
        self._index.assign(0)  # each call draws alike from one seed, as `chain.Sampler` does
        tokens: list[tf.Tensor] = []
        for b in range(x.shape[0]):
            tokens += self._sample(x[b : b + 1], steps[b])
        return tf.concat(tokens, 0) if tokens else tf.zeros([0], tf.int32)

    def _sample(self, x: np.ndarray, steps: np.ndarray) -> list[tf.Tensor]:
        """The tokens of one sample: x (1, T, input_size), steps (T,)."""
        ir = self.ir_rows(x)
        tokens, states, token = [], self.start(ir[0]), self.start_token
        for t, count in enumerate(steps.tolist()):
            if not self.carry:
                states, token = self.start(ir[t]), self.start_token
            for _ in range(count):
                token, states = self._step(ir[t], token, states)
                tokens.append(token)
        return tokens


class PerSampleBeam(_PerSample):
    """Beam search of `width` hypotheses, sample by sample and step by step.

    One search spans a sample in carry mode and one ``(b, t)`` run otherwise, as `chain.Beam`'s
    does. At each inner step the compiled step runs model B on the `width` hypotheses (one row
    each), extends each by every token, keeps the `width` most likely of the ``width * V`` and
    reorders B's states to them. A search starts from one hypothesis (the others at log
    probability -inf). The tokens and parents stay on the device until the sample ends; then the
    host follows each final hypothesis back through its parents.

    Args:
        net: A built token chain with feedback.
        width: The beam width K.
    """

    def __init__(self, net: "Chain", width: int) -> None:
        super().__init__(net, width)
        self.width = width
        self._first_logp = tf.constant([0.0] + [-math.inf] * (width - 1))
        specs = (tf.TensorSpec([width], tf.int32), tf.TensorSpec([width], tf.float32))
        self._step = self.compiled(self._step_fn, *specs)

    def _step_fn(self, ir: tf.Tensor, token: tf.Tensor, logp: tf.Tensor, states: list[tf.Tensor]) -> tuple[Any, ...]:
        """One inner step of one search: `(tokens, parents, log probabilities, B's states)` of the
        `width` best continuations, best first."""
        logits, new = self.b_logits(ir, token, states)
        vocab = self.net.vocab_size
        candidates = tf.reshape(logp[:, None] + tf.nn.log_softmax(logits), [-1])  # (width * V,)
        logp, top = tf.math.top_k(candidates, self.width)
        parent = top // vocab
        return top % vocab, parent, logp, [tf.gather(s, parent) for s in new]

    def generate(self, x: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """The tokens of every beam.

        Args:
            x: float32 (batch, T, input_size).
            steps: int (batch, T), read on the host.

        Returns:
            int32 (width * sum(steps),) in (sample, beam, t, k) order, as
            ``net.generate(x, steps, decoder=chain.Beam(width)).flat_values``.
        """
        beams = [self._sample(x[b : b + 1], steps[b]).reshape(-1) for b in range(x.shape[0])]
        return np.concatenate(beams) if beams else np.zeros([0], np.int32)

    def _sample(self, x: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """The beams of one sample (width, sum(steps)), best first."""
        ir = self.ir_rows(x)
        records, searches = [], []  # each step's (tokens, parents); each search's number of steps
        for t, count in enumerate(steps.tolist()):
            if t == 0 or not self.carry:
                states, token, logp = self.start(ir[t]), self.start_token, self._first_logp
                searches.append(0)
            for _ in range(count):
                token, parent, logp, states = self._step(ir[t], token, logp, states)
                records.append(tf.stack([token, parent]))
            searches[-1] += count
        if not records:
            return np.zeros([self.width, 0], np.int32)
        found = tf.stack(records).numpy()  # (steps, 2, width): one transfer per sample
        bounds = np.cumsum([0, *searches])
        return np.concatenate([_backtrack(found[a:b]) for a, b in zip(bounds[:-1], bounds[1:])], axis=1)


def _backtrack(found: np.ndarray) -> np.ndarray:
    """Each final hypothesis's tokens (width, n), from its `found` (n, 2, width) tokens and parents."""
    n, _, width = found.shape
    beams, at = np.zeros([width, n], np.int32), np.arange(width)
    for i in reversed(range(n)):
        beams[:, i] = found[i, 0, at]
        at = found[i, 1, at]
    return beams
