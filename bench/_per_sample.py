"""The generation baseline: decoding one sample, one outer step and one inner step at a time.

It is the loop a careful user writes without chain: for each sample ``b``, model A on that sample;
for each outer step ``t``, for each of its ``steps[b, t]`` inner steps, one call of a compiled
step on one row: model B on ``[IR[b, t], embedding of the previous token]``, the head, the pick
of the next token (`greedy`, or `nucleus_sample`), and the token goes back in as the next step's
input. The step is an XLA-compiled `tf.function` with fixed ``(1, ...)`` shapes, traced once
(about 1.6x less time per call than a plain graph on a CPU; so sampling draws Gumbel noise, which
XLA compiles, rather than calling `tf.random.stateless_categorical`, which it does not);
the tokens stay on the device (no host round trip per step) and are gathered at the end. The
loop bounds are the host's ``steps`` array, as a user reads them. States follow the chain's mode:
in carry mode B's state and the previous token flow through all of a sample's outer steps; in
reset and init modes each ``(b, t)`` run starts afresh (zeros, or the init layers on ``IR[b, t]``)
from the start token. It uses a `chain.Chain`'s own layers, so greedy decoding gives the chain's
tokens.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

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


class PerSampleGenerator:
    """Generates a token chain's tokens sample by sample and step by step.

    Args:
        net: A built token chain with feedback (`chain.Chain(vocab_size=V, feedback=True)`).
        pick: ``pick(logits (1, V), seed (2,) int64) -> (1,) int32``, e.g. a value of `PICKS`.
        seed: The first half of every draw's seed; the second counts the steps of a call up.
    """

    def __init__(self, net: "Chain", pick: Callable[[tf.Tensor, tf.Tensor], tf.Tensor], seed: int = 0) -> None:
        self.net, self.pick, self.seed = net, pick, seed
        self.carry = net.state == "carry"
        ir_size = int(net.model_a.units)
        sizes = state_sizes(net.model_b)
        self._start_token = tf.constant([net.vocab_size], tf.int32)  # the embedding's start row
        self._zeros = [tf.zeros([1, s]) for s in sizes]
        self._index = tf.Variable(0, dtype=tf.int64, trainable=False)
        row = tf.TensorSpec([1, ir_size], tf.float32)
        self._model_a = tf.function(lambda x: net.model_a(x, training=False))
        self._init = tf.function(lambda ir: [layer(ir) for layer in net.init_layers], input_signature=[row])
        self._step = tf.function(  # XLA: about 1.6x less time per call than a plain graph on a CPU
            self._step_fn, input_signature=[row, tf.TensorSpec([1], tf.int32), [tf.TensorSpec([1, s]) for s in sizes]],
            jit_compile=True,
        )

    def _step_fn(self, ir: tf.Tensor, token: tf.Tensor, states: list[tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """One inner step of one run: the token after `token`, and B's new states."""
        net = self.net
        inputs = tf.concat([ir, net.token_embedding(token)], 1)
        out, new = b_step(net.model_b, inputs, states, False)
        logits = tf.cast(net.head(out), tf.float32)
        seed = tf.stack([tf.constant(self.seed, tf.int64), self._index.assign_add(1)])
        return self.pick(logits, seed), new

    def _start(self, ir: tf.Tensor) -> list[tf.Tensor]:
        return self._init(ir) if self.net.state == "init" else self._zeros

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
        ir = tf.unstack(self._model_a(x), axis=1)  # T rows (1, ir_size)
        tokens, states, token = [], self._zeros, self._start_token
        for t, count in enumerate(steps.tolist()):
            if not self.carry:
                states, token = self._start(ir[t]), self._start_token
            for _ in range(count):
                token, states = self._step(ir[t], token, states)
                tokens.append(token)
        return tokens
