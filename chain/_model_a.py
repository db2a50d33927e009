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

from . import _scan
from ._kernels import kernel_for


class ModelAState:
    """Runs model A with a state in and out (see the module docstring).

    Attributes:
        kind: `"rnn"`, `"slice"` or `"none"`.
        state_sizes: the size of each state tensor, `[]` for `"none"`.
    """

    def __init__(self, model_a: Any, fused: Any = True) -> None:
        self.model_a = model_a
        self.rnn = _recurrent_layer(model_a)
        self.kernel, self.fast_path_reason = _layer_kernel(self.rnn, fused)
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

    def call(self, x, states, training: bool, fast: bool = False, differentiable: bool = True) -> tuple[Any, list]:  # noqa: D401
        """`(ir, final_states)` of model A on `x`, starting from `states` (None: its default).

        With `fast`, a recurrent layer whose cell has a kernel runs on it (see `fast_path_reason`);
        `differentiable=False` then records nothing for a backward pass.
        """
        model_a = self.model_a
        if self.kind == "none":
            return model_a(x, training=training), []
        if self.kind == "slice":
            if states is None:
                states = [tf.zeros(tf.stack([tf.shape(x)[0], s]), x.dtype) for s in self.state_sizes]
            outs = model_a([x, *states], training=training)
            return outs[0], list(outs[1:])
        if fast and self.kernel is not None and self.rnn.built:
            return self._on_kernel(x, states, differentiable)
        return self._rnn(x, states, training)

    def _rnn(self, x, states, training):
        layer = self.rnn
        kwargs = {} if states is None else {"initial_state": _nested(layer.cell.state_size, list(states))}
        returns = layer.return_state
        layer.return_state = True  # for this call only: the chain needs the final state
        try:
            outs = layer(x, training=training, **kwargs)
        finally:
            layer.return_state = returns
        return outs[0], [tf.convert_to_tensor(s) for s in tf.nest.flatten(list(outs[1:]))]

    def _on_kernel(self, x, states, differentiable):
        """The layer's outputs and final states, run on its cell's kernel over the `T` steps:
        the input projection once for all `(b, t)`, one loop forward, and the kernel's backward
        step in one loop back (``chain._scan.padded_scan``), as model B runs under `padded`."""
        kernel, layer = self.kernel, self.rnn
        dtype = tf.as_dtype(layer.compute_dtype)
        x = tf.cast(x, dtype)
        batch, steps = tf.shape(x)[0], x.shape[1] if x.shape[1] is not None else tf.shape(x)[1]
        if states is None:
            states = [tf.zeros(tf.stack([batch, s]), dtype) for s in self.state_sizes]
        xp = kernel.project(tf.reshape(x, [-1, x.shape[-1]]))  # once per (b, t), outside the loop
        xp = tf.transpose(tf.reshape(xp, tf.stack([batch, steps, xp.shape[-1]])), [1, 0, 2])  # (T, batch, G)
        states, params = [tf.cast(s, dtype) for s in states], kernel.params(dtype)
        if differentiable:
            outs, finals = _scan.padded_scan(kernel, xp, steps, steps, states, params)
        else:
            outs, finals = _scan.padded_forward(kernel, xp, steps, states, params)
        return tf.transpose(outs, [1, 0, 2]), finals

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


def _nested(state_size: Any, states: list) -> list:
    """Flat states in the structure of a cell's `state_size`, as a list (a stack's: one entry per cell)."""
    packed = tf.nest.pack_sequence_as(state_size, states)
    return packed if isinstance(packed, list) else [packed]


def _layer_kernel(layer: Any, fused: Any) -> tuple[Any, str]:
    """The kernel that model A's recurrent layer runs on under `packed` and `padded`, and why.

    Returns:
        `(kernel, reason)`: kernel None where the layer runs as it is; `reason` says which path
        runs.
    """
    if layer is None:
        return None, "model A is not a Keras recurrent layer (or a model of one): it runs as it is"
    if fused is False:
        return None, "fused=False: model A runs as it is"
    name = type(layer).__name__
    for attr, plain in (("return_sequences", True), ("go_backwards", False), ("stateful", False)):
        if bool(getattr(layer, attr, plain)) != plain:
            return None, f"{name} with {attr}={not plain} runs as it is"
    if tf.config.list_logical_devices("GPU") and getattr(layer, "use_cudnn", False) in ("auto", True):
        return None, f"{name} runs as it is, on cuDNN where Keras can"
    kernel, reason = kernel_for(layer.cell)
    if kernel is None:
        return None, f"{name} runs as it is: {reason}"
    return kernel, f"fast path: {name} on the kernel of {reason}"
