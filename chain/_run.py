"""One run of a chain: the states it starts from, the forward pass, and the states it ends with.

A :class:`Runner` serves `Chain.call`, the train and test steps and `Chain.generate`. Eager
calls go through traced graph functions (`chain._graphs`) unless the chain was made with
`compiled=False`; a stateful chain starts from the states it keeps and keeps the new ones
(`chain._state`).
"""

from __future__ import annotations

from typing import Any, Protocol

import keras
import tensorflow as tf

from . import _build, _feedback, _ragged, _state
from ._beam import Beam
from ._feedback import Feed
from ._forward import Forward, Result
from ._generate import Generated, Generation
from ._graphs import Graphs
from ._options import ChainOptions
from ._state import StateVariables

States = dict[str, list]


class Host(Protocol):
    """What a runner reads of the chain it runs: its public options, build and optimizer."""

    options: ChainOptions
    built: bool
    model_a: keras.layers.Layer

    def build(self, input_shape: Any) -> None: ...


class Runner:
    """Runs one chain (see the module docstring).

    Args:
        host: the chain.
        forward: its forward pass.
        dtype: its compute dtype.
    """

    def __init__(self, host: Host, forward: Forward, dtype: str) -> None:
        self.host, self.forward, self.dtype = host, forward, dtype
        self.graphs = Graphs(forward, dtype)
        self.kept_vars: StateVariables | None = None

    def keep_states(self, batch: int | None) -> None:
        """Makes the variables of a stateful chain's states, for a batch of `batch`."""
        self.kept_vars = StateVariables(self.forward, batch, self.dtype)

    @property
    def kept(self) -> StateVariables | None:
        """The kept states while the chain is stateful (`stateful` may be set aside for a while)."""
        return self.kept_vars if self.host.options.stateful else None

    def states_in(self, initial_state: Any, x: tf.Tensor) -> tuple[list | None, list | None]:
        """The starting states (see `chain._state.states_in`); builds the chain on its first call,
        and checks `x` against model A's declared input on every later one."""
        if not self.host.built:
            self.host.build(tuple(x.shape))
        else:
            _build.model_a_shape(self.host.model_a, tuple(x.shape))
        return _state.states_in(self.forward, self.kept, initial_state, x, self.dtype)

    def states_out(self, a_out: list, b_out: list) -> States:
        """The final states as a call returns them; a stateful chain keeps them."""
        if self.kept is not None:
            self.kept.assign(a_out, b_out)
        return {"model_a": list(a_out), "model_b": list(b_out)}

    def defaults(self, a_in: list | None, b_in: list | None, x: tf.Tensor) -> tuple[list, list]:
        """The given states, zeros where none are given."""
        a_zero, b_zero = self.forward.zero_states(x, self.dtype)
        return (list(a_in) if a_in is not None else a_zero), (list(b_in) if b_in is not None else b_zero)

    def no_outputs(self) -> tf.Tensor:
        """The flat output `(0, output_size)` of a call with no outer step."""
        return tf.zeros([0, self.host.options.output_size or self.forward.generic.output_size], self.dtype)

    def feed(self, targets: tf.Tensor | None, training: bool) -> Feed:
        """What feeds B's `prev` in this call: nothing, targets, or targets mixed with own outputs."""
        options = self.host.options
        if targets is None or not options.feedback:
            return Feed(None, None)
        if not training or options.feedback_sampling == 0.0:
            return Feed(targets, None)
        optimizer = getattr(self.host, "optimizer", None)
        if optimizer is None:
            return Feed(targets, _feedback.sampling_probability(options.feedback_sampling, 0))
        step = optimizer.iterations
        seed = tf.stack([tf.constant(options.sampling_seed, tf.int64), tf.cast(step, tf.int64)])
        return Feed(targets, _feedback.sampling_probability(options.feedback_sampling, step), seed)

    def run_flat(self, x: tf.Tensor, steps: tf.Tensor, training: bool, initial_state: Any, differentiable: bool,
                 head: bool, return_state: bool, targets: tf.Tensor | None) -> tuple[tf.Tensor, States]:  # fmt: skip
        """See `Chain.run_flat`."""
        a_in, b_in = self.states_in(initial_state, x)
        final = bool(return_state or self.host.options.stateful)
        if x.shape[1] == 0:  # no outer step: nothing runs, and the states pass through
            return self.no_outputs(), self.states_out(*self.defaults(a_in, b_in, x))
        feed = self.feed(targets, training)
        if tf.executing_eagerly() and self.host.options.compiled:
            b_in = b_in if b_in is not None else self.defaults(None, None, x)[1]
            result = self.graphs.run(x, steps, a_in, b_in, training, differentiable, final, head, feed)
        else:
            result = self.forward.run(x, steps, a_in, b_in, training, differentiable, final, head, feed)
        return result.flat, self.states_out(result.a_states, result.b_states)

    def forward_parts(self, x: tf.Tensor, steps: tf.Tensor, training: bool, differentiable: bool,
                      targets: tf.Tensor | None) -> Result:  # fmt: skip
        """See `Chain.forward_parts`; `targets` are flat, or None."""
        a_in, b_in = self.states_in(None, x)
        stateful = self.host.options.stateful
        result = self.forward.run(x, steps, a_in, b_in, training, differentiable, stateful, False,
                                  self.feed(targets, training))  # fmt: skip
        if stateful:
            self.states_out(result.a_states, result.b_states)
        return result

    def generate(self, x: tf.Tensor, initial_state: Any, steps: tf.Tensor | None = None,
                 decoder: Any = None) -> tuple[tf.RaggedTensor, States, tf.RaggedTensor | None]:  # fmt: skip
        """See `Chain.generate`: `x` is a float tensor of the compute dtype; `steps` validated, or
        None for the lengths part's; `decoder` a token chain's. Returns `(out, states, scores)`,
        `scores` a token chain's log probabilities (None otherwise)."""
        a_in, b_in = self.states_in(initial_state, x)
        if self.host.options.state == "carry" and b_in is None:
            b_in = self.defaults(None, None, x)[1]
        if x.shape[1] == 0:  # no outer step, as in a call: nothing runs, and the states pass through
            a_out, b_out = self.defaults(a_in, b_in, x)
            none = tf.zeros([0], tf.int32) if decoder is not None else self.no_outputs()
            shape = [tf.shape(x)[0], *([decoder.width] if isinstance(decoder, Beam) else []), 0]
            made = Generated(none, tf.zeros(tf.stack(shape), tf.int32), a_out, b_out,
                             tf.zeros([0]) if decoder is not None else None)  # fmt: skip
        else:
            run = lambda x, a, b, s: self._generated(x, a, b, s, decoder)  # noqa: E731
            if tf.executing_eagerly() and self.host.options.compiled:
                made = self.graphs.generate(run, x, a_in, b_in, steps, decoder.key() if decoder is not None else ())
            else:
                made = run(x, a_in, b_in, steps)
        states = self.states_out([tf.stop_gradient(s) for s in made.a_states],
                                 [tf.stop_gradient(s) for s in made.b_states])  # fmt: skip
        scores = None if made.scores is None else _ragged.ragged_from_flat(made.scores, made.steps)
        return _ragged.ragged_from_flat(made.flat, made.steps), states, scores

    def _generated(self, x: tf.Tensor, a_in: list | None, b_in: list | None, steps: tf.Tensor | None,
                   decoder: Any) -> Generated:  # fmt: skip
        forward = self.forward
        generation = Generation(forward, x, a_in, b_in or None, forward.parts.length_layers, decoder)
        if steps is not None:
            return generation.run_at(steps)
        return self.host.options.lengths.generate(generation)
