"""Model A's state: which kinds of model A carry a state from one call to the next, and how.

- A Keras recurrent layer (``keras.layers.GRU``, ``LSTM``, ``SimpleRNN`` or ``RNN(cell)``, with
  ``return_sequences=True``), or a functional or Sequential model made of exactly one such layer
  (``Model(inp, GRU(..., return_sequences=True)(inp))``): its state is its cell's, ``(batch, s)``
  per state tensor. The chain passes it as ``initial_state`` and reads the final state by running
  the layer with ``return_state`` for the call.
- A functional "slice" model ``Model([x, *states], [ir, *new_states])``: its state is its state
  inputs, the same convention as a model B.
- Anything else has no state the chain can see. Keras layers inside it with ``stateful=True``
  keep their own state across calls, and ``Chain.reset_states`` resets them.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf


class ModelAState:
    """Runs model A with a state in and out (see the module docstring).

    Attributes:
        kind: `"rnn"`, `"slice"` or `"none"`.
        state_sizes: the size of each state tensor, `[]` for `"none"`.
    """

    def __init__(self, model_a: Any) -> None:
        self.model_a = model_a
        self.rnn = _recurrent_layer(model_a)
        if self.rnn is not None:
            self.kind = "rnn"
            size = self.rnn.cell.state_size
            self.state_sizes = [int(s) for s in tf.nest.flatten(size)]
        elif isinstance(model_a, keras.Model) and len(getattr(model_a, "inputs", None) or []) > 1:
            self.kind = "slice"
            self.state_sizes = [int(t.shape[-1]) for t in model_a.inputs[1:]]
        else:
            self.kind = "none"
            self.state_sizes = []

    def call(self, x, states, training: bool) -> tuple[Any, list]:  # noqa: D401
        """`(ir, final_states)` of model A on `x`, starting from `states` (None: its default)."""
        model_a = self.model_a
        if self.kind == "none":
            return model_a(x, training=training), []
        if self.kind == "slice":
            if states is None:
                states = [tf.zeros(tf.stack([tf.shape(x)[0], s]), x.dtype) for s in self.state_sizes]
            outs = model_a([x, *states], training=training)
            return outs[0], list(outs[1:])
        return self._rnn(x, states, training)

    def _rnn(self, x, states, training):
        layer = self.rnn
        kwargs = {} if states is None else {"initial_state": list(states)}
        returns = layer.return_state
        layer.return_state = True  # for this call only: the chain needs the final state
        try:
            outs = layer(x, training=training, **kwargs)
        finally:
            layer.return_state = returns
        return outs[0], [tf.convert_to_tensor(s) for s in tf.nest.flatten(list(outs[1:]))]

    def symbolic(self, shape) -> Any:
        """Model A's output on a symbolic input of `shape`, without running it on numbers."""
        x = keras.KerasTensor(shape)
        if self.kind == "slice":
            batch = shape[0]
            outs = self.model_a([x, *[keras.KerasTensor((batch, s)) for s in self.state_sizes]])
            return outs[0]
        return self.model_a(x)


def declared_input_shape(model_a: Any) -> tuple | None:
    """The `(batch, T, input_size)` that a functional model A declares for `x`, if any."""
    inputs = getattr(model_a, "inputs", None) if isinstance(model_a, keras.Model) else None
    if not inputs:
        return None
    try:
        return tuple(inputs[0].shape)
    except (AttributeError, TypeError):
        return None


def stateful_layers(layer: Any) -> list:
    """Every Keras layer with `stateful=True` inside `layer` (itself included)."""
    found = [layer] if getattr(layer, "stateful", False) and hasattr(layer, "reset_state") else []
    for inner in getattr(layer, "layers", []) or []:
        if inner is not layer:
            found += stateful_layers(inner)
    return found


def _recurrent_layer(model_a: Any):
    """The Keras recurrent layer that model A is, or that a model of just that layer wraps."""
    if isinstance(model_a, keras.layers.RNN):
        return model_a
    if isinstance(model_a, keras.Model) and len(getattr(model_a, "inputs", None) or [None]) == 1:
        layers = [layer for layer in model_a.layers if not isinstance(layer, keras.layers.InputLayer)]
        if len(layers) == 1 and isinstance(layers[0], keras.layers.RNN):
            return layers[0]
    return None
