"""Building a chain from the first call's shape: model A, model B, the head and the parts' layers.

Model A and model B are only called on symbolic tensors of the shapes the call gives (or model A
declares), never on made-up numbers.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf

from . import _cells, _model_a
from ._forward import Forward, Parts

# Chain attributes a length part may not take for its layers.
_TAKEN = frozenset({"head", "init_layers", "model_a", "model_b", "feedback_start", "lengths", "trackers",
                    "token_embedding"})


def x_shape(input_shape: Any, model_a: Any) -> tuple:
    """`x`'s shape `(batch, T, input_size)` from a build's `input_shape`, model A's sizes filled in.

    Raises:
        ValueError: a size of `x` differs from the one model A declares.
    """
    if input_shape and isinstance(input_shape[0], (list, tuple, tf.TensorShape)):
        input_shape = input_shape[0]
    return model_a_shape(model_a, tuple(tf.TensorShape(input_shape).as_list()))


def model_a_shape(model_a: Any, shape: tuple) -> tuple:
    """`x`'s shape, with the sizes that a functional model A declares filled in.

    Raises:
        ValueError: a size of `x` differs from the one model A declares.
    """
    declared = _model_a.declared_input_shape(model_a)
    if declared is None:
        return shape
    if len(declared) != len(shape) or any(
        d is not None and s is not None and d != s for d, s in zip(declared[1:], shape[1:])
    ):
        raise ValueError(
            f"`x` has shape {shape} but model A declares its input as {declared}: pass x of that "
            "shape, or build model A with `keras.Input(shape=(None, input_size))` for any T"
        )
    return tuple(s if s is not None else d for s, d in zip(shape, declared))


def build_parts(forward: Forward, model_b: Any, shape: tuple, dtype: str) -> Parts:
    """Builds model B and makes the head, the init layers and the length part's layers.

    Raises:
        ValueError: model A does not return `(batch, T, ir_size)`, model B does not return
            `[outputs, *states]`, or feedback cannot know the width of B's outputs.
    """
    options = forward.options
    ir = forward.model_a.symbolic(shape)
    if len(ir.shape) != 3:
        raise ValueError(
            "model A must return IR of shape (batch, T, ir_size), one vector per outer step; "
            f"received an output of shape {tuple(ir.shape)} for x of shape {shape}. For a "
            "Keras recurrent layer, set `return_sequences=True`"
        )
    ir_size = int(ir.shape[-1])
    feedback_size = None
    if options.feedback:
        feedback_size = options.token_width or feedback_width(options.output_size, model_b)
    b_size = build_b(forward.generic, model_b, shape[0], ir_size, feedback_size, dtype)
    for adapter in (forward.generic, forward.fast):
        adapter.output_size = b_size
    init_layers = [
        keras.layers.Dense(s, activation="tanh", name=f"init_{i}") for i, s in enumerate(forward.generic.state_sizes)
    ] if options.state == "init" else []  # fmt: skip
    for layer in init_layers:
        layer.build((None, ir_size))
    head = keras.layers.Dense(options.output_size, name="head") if options.output_size else None
    if head is not None:
        head.build((None, b_size))
    length_layers = options.lengths.layers(options.max_steps, ir_size, b_size) if options.lengths is not None else {}
    for name in length_layers:
        if name in _TAKEN or not name.isidentifier():
            raise ValueError(
                f"a length part's layers need names of their own; received {name!r} from "
                f"{options.lengths!r}, a name the Chain uses or not an identifier"
            )
    parts = Parts(int(shape[-1]), ir_size, feedback_size, head, init_layers, length_layers)
    if options.vocab_size is not None and options.feedback:
        parts.embedding = keras.layers.Embedding(options.vocab_size + 1, feedback_size, name="token_embedding")
        parts.embedding.build((None,))
    return parts


def feedback_width(output_size: int | None, model_b: Any) -> int:
    """D, the width of `prev`: `output_size`, or B's output width without a head."""
    if output_size:
        return output_size
    outputs = getattr(model_b, "outputs", None)
    width = outputs[0].shape[-1] if outputs else getattr(model_b, "output_size", None)
    if not isinstance(width, int):
        raise ValueError(
            "feedback=True feeds model B its previous output, whose width is not known before "
            f"model B is built (received a {type(model_b).__name__} with output_size "
            f"{width!r}): give the Chain an `output_size`"
        )
    return width


def build_b(generic: _cells.StepAdapter, model_b: Any, batch: int | None, ir_size: int,
            feedback_size: int | None, dtype: str) -> int:  # fmt: skip
    """Builds model B on symbolic `(batch, ir_size [+ D])` inputs; returns its output width.

    Raises:
        ValueError: model B's input size is not what it is fed, it does not return
            `[outputs, *new_states]` of the sizes of its states, or its states are not of `dtype`.
    """
    sizes = generic.state_sizes
    width = ir_size + (feedback_size or 0)
    fed = (f"`[IR, prev]`, inputs of size ir_size + D = {ir_size} + {feedback_size} = {width}" if feedback_size
           else f"IR rows, inputs of size ir_size = {width} (model A's output size)")  # fmt: skip
    declared = _cells.declared_input_size(model_b)
    if declared is not None and declared != width:
        raise ValueError(
            f"`model_b` is fed {fed}; received a model B ({_cells.describe(model_b)}) whose input has "
            f"size {declared}. Build it for inputs of size {width}: a model on `keras.Input(shape=({width},))`, a new cell"
        )
    x = keras.KerasTensor((batch, width))
    states = [keras.KerasTensor((batch, s)) for s in sizes]
    try:
        out, new = generic.step(x, states, False)
    except TypeError as error:
        raise ValueError(
            "model B must return `[outputs, *new_states]` with one new state per state input "
            f"({len(sizes)} of sizes {sizes}); calling it on IR rows of size {ir_size} failed: "
            f"{error}. A functional model B is `keras.Model([x, *states], [out, *new_states])`"
        ) from None
    except ValueError as error:  # Keras' own, e.g. a shape its layers refuse
        raise ValueError(
            f"`model_b` ({_cells.describe(model_b)}) failed when fed {fed} and states of sizes "
            f"{sizes}: {_cells.keras_reason(error)}"
        ) from error
    got = [int(t.shape[-1]) for t in new]
    if got != sizes or len(out.shape) != 2:
        raise ValueError(
            "model B must return `[outputs (batch, H), *new_states]` with new states of sizes "
            f"{sizes}; received outputs of shape {tuple(out.shape)} and new states of sizes {got}"
        )
    dtypes = [keras.backend.standardize_dtype(t.dtype) for t in new]
    if any(d != dtype for d in dtypes):
        raise ValueError(
            f"`model_b` must return new states of dtype {dtype}, the chain's compute dtype, "
            f"as it feeds them back in; received new states of dtypes {dtypes} from "
            f"{type(model_b).__name__} {model_b.name!r}. Cast them, or build model B under the "
            "chain's dtype policy"
        )
    return int(out.shape[-1])
