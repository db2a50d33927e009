"""Checks on `x` and `steps`, made once where they enter the model.

Static problems (rank, dtype, sizes known at trace time) raise `ValueError`, also while tracing.
Value problems raise `ValueError` eagerly and `tf.errors.InvalidArgumentError` in graph mode.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ragged_common.bounds import INT32_MAX

from ._ops import masked


def check_inputs(x, steps, input_size: int | None, max_steps: int | None):
    """Converts and validates the inputs of a call.

    A rank-1 `steps` is always `(T,)`, shared by every sample (the reference answer's
    `steps_at_t`), also when batch == T: per-sample lengths need the `(batch, T)` form.

    Args:
        x: `(batch, T, input_size)` floats.
        steps: `(batch, T)` or `(T,)` integers in `[0, max_steps]`.
        input_size: the size the model was built for, or None before it is built.
        max_steps: the cap on `steps`, or None.

    Returns:
        `(x, steps)` as tensors, `steps` int32 of shape `(batch, T)`.

    Raises:
        ValueError: a bad rank, dtype, size, or (eagerly) value; values are checked in the
            dtype they came in, before any cast.
    """
    x = as_x(x)
    steps = _to_int_tensor(steps, max_steps)
    _check_static(x, steps, input_size)
    if steps.shape.rank == 1:
        steps = tf.broadcast_to(steps[None, :], tf.stack([tf.shape(x)[0], tf.shape(steps)[0]]))
    cap = INT32_MAX if max_steps is None else max_steps
    if tf.executing_eagerly():
        _check_values_eagerly(x, steps, max_steps, cap)
        return x, tf.cast(steps, tf.int32)
    return x, _with_graph_asserts(x, steps, max_steps, cap)


def as_x(x) -> tf.Tensor:
    """`x` as a float tensor: floats as they are, integers and booleans as float32.

    Raises:
        ValueError: `x` is not rectangular, or holds strings, objects or complex numbers (a cast
            would drop the imaginary part).
    """
    check_x(x)
    x = tf.convert_to_tensor(x)
    return x if x.dtype.is_floating else tf.cast(x, tf.float32)


def check_x(x) -> None:
    """Raises the ValueError of an `x` that is no array of real numbers; a symbolic `x` passes."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        dtype = as_array("x", x, "(batch, T, input_size) array").dtype
    real = _tf_dtype(dtype)
    if real is None or not (real.is_floating or real.is_integer or real.is_bool):
        raise ValueError(
            "`x` must hold real numbers (floats, or integers taken as float32); received dtype "
            f"{getattr(dtype, 'name', dtype)}"
        )


def _tf_dtype(dtype) -> tf.DType | None:
    """TensorFlow's dtype for a numpy, TensorFlow or Keras dtype; None for objects and strings."""
    if isinstance(dtype, np.dtype) and dtype.kind in "OUSV":
        return None
    try:
        return tf.as_dtype(dtype)
    except TypeError:
        return None


def as_array(name: str, value, shape: str) -> np.ndarray:
    """`value` as a numpy array, or the ValueError naming `name` when it is ragged."""
    try:
        return np.asarray(value)
    except ValueError:  # numpy refuses ragged nested lists
        raise ValueError(f"`{name}` must be a rectangular {shape}; received a ragged {type(value).__name__}: "
                         f"{_short(value)}") from None  # fmt: skip


def _short(value, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _to_int_tensor(steps, max_steps: int | None) -> tf.Tensor:
    if isinstance(steps, tf.Tensor) or isinstance(steps, tf.Variable):
        steps = tf.convert_to_tensor(steps)
        dtype = steps.dtype
    else:
        steps = as_array("steps", steps, "(batch, T) or (T,) array of integers")
        dtype = _tf_dtype(steps.dtype)
    if dtype is None or not dtype.is_integer:
        raise ValueError(f"`steps` must hold integers; received dtype {steps.dtype.name}")
    if dtype.is_unsigned or dtype.size > 4:
        return tf.cast(steps, tf.int64) if dtype != tf.uint64 else _uint64(steps, max_steps)
    return tf.cast(steps, tf.int32)


def _bound(max_steps: int | None) -> str:
    return f"[0, {max_steps}] (max_steps)" if max_steps is not None else f"[0, {INT32_MAX}] (int32)"


def _uint64(steps, max_steps: int | None) -> tf.Tensor:
    """uint64 `steps` as int64, refusing first the values that the cast would wrap to negatives."""
    int64_max = np.iinfo(np.int64).max
    if not tf.executing_eagerly():
        steps = tf.convert_to_tensor(steps)
        fits = tf.debugging.Assert(
            tf.reduce_all(steps <= tf.constant(int64_max, tf.uint64)),
            [f"`steps` must be in {_bound(max_steps)}; received a value of", tf.reduce_max(steps)],
            summarize=1,
        )
        with tf.control_dependencies([fits]):
            return tf.cast(steps, tf.int64)
    values = np.asarray(steps)
    if values.size and values.max() > int64_max:
        high = np.unravel_index(np.argmax(values), values.shape)
        where = f" at (batch={high[0]}, t={high[1]})" if len(high) == 2 else f" at (t={high[0]})" if high else ""
        raise ValueError(f"`steps` must be in {_bound(max_steps)}; received a value of {values[high]}{where}")
    return tf.constant(values.astype(np.int64))


def _check_static(x: tf.Tensor, steps: tf.Tensor, input_size: int | None) -> None:
    if x.shape.rank != 3:
        raise ValueError(
            f"`x` must have rank 3 (batch, T, input_size); received shape {tuple(x.shape)}"
        )
    if steps.shape.rank not in (1, 2):
        raise ValueError(
            "`steps` must have rank 2 (batch, T) or 1 (T,); received shape "
            f"{tuple(steps.shape)}"
        )
    if input_size is not None and x.shape[-1] is not None and x.shape[-1] != input_size:
        raise ValueError(
            f"`x` must have input_size {input_size}, the size the model was built for; "
            f"received shape {tuple(x.shape)}"
        )
    want = tuple(x.shape[:2]) if steps.shape.rank == 2 else tuple(x.shape[1:2])
    for have, need in zip(tuple(steps.shape), want):
        if have is not None and need is not None and have != need:
            raise ValueError(_mismatch(x.shape, steps.shape))


def _mismatch(x_shape, steps_shape) -> str:
    return (
        "`x` and `steps` must agree on (batch, T): received x of shape "
        f"{tuple(x_shape)} and steps of shape {tuple(steps_shape)}"
    )


def _check_values_eagerly(x: tf.Tensor, steps: tf.Tensor, max_steps: int | None, cap: int) -> None:
    if tuple(steps.shape) != tuple(x.shape[:2]):
        raise ValueError(_mismatch(x.shape, steps.shape))
    values = steps.numpy()
    if values.size == 0:
        return
    low = np.unravel_index(np.argmin(values), values.shape)
    if values[low] < 0:
        raise ValueError(
            f"`steps` must be >= 0; received a value of {values[low]} at "
            f"(batch={low[0]}, t={low[1]})"
        )
    high = np.unravel_index(np.argmax(values), values.shape)
    if values[high] > cap:
        bound = f"[0, {max_steps}] (max_steps)" if max_steps is not None else f"[0, {cap}] (int32)"
        raise ValueError(
            f"`steps` must be in {bound}; received a value of "
            f"{values[high]} at (batch={high[0]}, t={high[1]})"
        )


def _with_graph_asserts(x: tf.Tensor, steps: tf.Tensor, max_steps: int | None, cap: int) -> tf.Tensor:
    checks = [
        tf.debugging.Assert(  # int32 and string data: one op, where assert_equal builds dozens
            tf.reduce_all(tf.equal(tf.shape(x)[:2], tf.shape(steps))),
            ["`x` and `steps` must agree on (batch, T); received x of shape", tf.shape(x), "and steps of shape",
             tf.shape(steps)],  # fmt: skip
        ),
        tf.debugging.Assert(
            tf.reduce_all(steps >= 0),
            ["`steps` must be >= 0; received a value of", tf.reduce_min(steps)],
        ),
    ]
    if max_steps is not None or steps.dtype != tf.int32:
        bound = f"[0, {max_steps}] (max_steps)" if max_steps is not None else f"[0, {cap}] (int32)"
        checks.append(
            tf.debugging.Assert(
                tf.reduce_all(steps <= tf.cast(cap, steps.dtype)),
                [f"`steps` must be in {bound}; received a value of", tf.reduce_max(steps)],
            )
        )
    with tf.control_dependencies(checks):
        return tf.identity(tf.cast(steps, tf.int32))  # identity: a no-op cast drops the checks


def check_initial_state(initial_state, x: tf.Tensor, a_sizes: list[int], b_sizes: list[int], state: str,
                        dtype) -> tuple[list | None, list | None]:  # fmt: skip
    """Validates `initial_state`: `{"model_a": [...], "model_b": [...]}`, or a list for model B.

    Either key may be left out (that model starts from its default). An empty list stands for a
    model with no state, so the `states` that `return_state=True` gave can always be passed back.

    Returns:
        `(model A's states or None, model B's states or None)`, each `(batch, s)` in `dtype`.

    Raises:
        ValueError: an unknown key, a wrong count, shape or dtype, or B's state outside carry mode.
    """
    if initial_state is None:
        return None, None
    if isinstance(initial_state, (list, tuple)):
        initial_state = {"model_b": initial_state}
    if not isinstance(initial_state, dict):
        raise ValueError(
            "`initial_state` must be a dict {'model_a': [...], 'model_b': [...]} or a list of model "
            f"B's states; received {type(initial_state).__name__}"
        )
    unknown = sorted(set(initial_state) - {"model_a", "model_b"})
    if unknown:
        raise ValueError(f"`initial_state` keys must be 'model_a' and 'model_b'; received {unknown}")
    a = _states(initial_state.get("model_a"), "model_a", a_sizes, x, dtype, None)
    why = None if state == "carry" else f"model B's state starts anew at each run in state={state!r}"
    b = _states(initial_state.get("model_b"), "model_b", b_sizes, x, dtype, why)
    return a, b


def _states(given, key: str, sizes: list[int], x: tf.Tensor, dtype, why: str | None):
    if given is None:
        return None
    if not isinstance(given, (list, tuple)):
        given = [given]
    if not given and not sizes:
        return None
    if why is not None:
        raise ValueError(f"`initial_state['{key}']` is only taken in carry mode: {why}; received {len(given)} tensor(s)")
    if not sizes:
        raise ValueError(
            f"`initial_state['{key}']`: this model A has no state the chain can carry (see "
            f"docs/semantics.md); received {len(given)} tensor(s)"
        )
    if len(given) != len(sizes):
        raise ValueError(
            f"`initial_state['{key}']` must hold {len(sizes)} tensor(s) of sizes {sizes}; received {len(given)}"
        )
    out = []
    for i, (state, size) in enumerate(zip(given, sizes)):
        state = tf.convert_to_tensor(state)
        if not state.dtype.is_floating:
            raise ValueError(f"`initial_state['{key}'][{i}]` must hold floats; received dtype {state.dtype.name}")
        shape = tuple(state.shape)
        batch = x.shape[0]
        if len(shape) != 2 or shape[1] != size or (None not in (batch, shape[0]) and shape[0] != batch):
            raise ValueError(
                f"`initial_state['{key}'][{i}]` must have shape (batch, {size}) = ({batch}, {size}); "
                f"received shape {shape}"
            )
        out.append(tf.cast(state, dtype))
    return out


def check_targets(targets, steps: tf.Tensor, width: int, dtype) -> tf.Tensor:
    """The flat values `(sum(steps), D)` of the targets that feed model B's `prev`.

    Args:
        targets: ragged `(batch, T, None, D)`, padded `(batch, T, L, D)`, or flat `(sum(steps), D)`.
        steps: `(batch, T)` int32, validated.
        width: D, the width of the chain's output.
        dtype: the dtype to return.

    Raises:
        ValueError: `targets` has another rank or width, or (eagerly) rows that differ from `steps`.
    """
    shape = "ragged " + str(targets.shape) if isinstance(targets, tf.RaggedTensor) else None
    if isinstance(targets, tf.RaggedTensor):
        if targets.shape.rank != 4 or targets.ragged_rank > 2:
            raise ValueError(f"`targets` must be (batch, T, None, {width}); received a {shape}")
        flat = check_target_rows(targets, steps, "targets").flat_values
    else:
        targets = tf.convert_to_tensor(targets)
        shape = str(tuple(targets.shape))
        if targets.shape.rank == 4:
            if tf.executing_eagerly() and (
                tuple(targets.shape[:2]) != tuple(steps.shape)
                or int(tf.reduce_max(tf.concat([tf.reshape(steps, [-1]), [0]], 0))) > targets.shape[2]
            ):
                raise ValueError(
                    f"padded `targets` must be (batch, T, L, {width}) with batch and T of `steps` "
                    f"{tuple(steps.shape)} and L >= max(steps); received shape {shape}"
                )
            flat = masked(targets, tf.sequence_mask(steps, tf.shape(targets)[2]))
        elif targets.shape.rank == 2:
            flat = targets
            if tf.executing_eagerly() and targets.shape[0] != int(tf.reduce_sum(steps)):
                raise ValueError(
                    f"flat `targets` must have sum(steps) = {int(tf.reduce_sum(steps))} rows; "
                    f"received shape {shape}"
                )
        else:
            raise ValueError(f"`targets` must be (batch, T, None, {width}); received shape {shape}")
    check_width("targets", targets.shape, width)
    flat = tf.cast(flat, dtype)
    flat.set_shape([None, width])
    return flat


def check_target_rows(y, steps: tf.Tensor, name: str = "y"):
    """`y`, checked to have `steps[b, t]` rows at every `(b, t)` where it is ragged `(batch, T, None, D)`.

    Equal totals are not enough: rows of other lengths would pair outputs with the wrong targets.

    Args:
        y: a RaggedTensor `(batch, T, None, D)`, ragged_rank 2 (anything else is returned as is).
        steps: `(batch, T)` int32, validated.
        name: the argument's name in messages.

    Raises:
        ValueError: (eagerly) another batch or T, or the first `(b, t)` whose rows differ, with
            both lengths; `tf.errors.InvalidArgumentError` with the same in graph mode.
    """
    if not isinstance(y, tf.RaggedTensor) or y.ragged_rank != 2:
        return y
    outer, rows = tf.cast(y.row_lengths(), tf.int64), tf.cast(y.values.row_lengths(), tf.int64)
    want, big_t = tf.reshape(steps, [-1]), tf.shape(steps, out_type=tf.int64)[1]
    shape = f"`{name}` must be (batch, T, None, D) with the (batch, T) of `steps`"
    rows_message = f"`{name}` must have steps[b, t] rows at every (b, t); received"
    if tf.executing_eagerly():
        outer = outer.numpy()
        if len(outer) != steps.shape[0] or (outer != steps.shape[1]).any():
            raise ValueError(f"{shape} {tuple(steps.shape)}; received {len(outer)} samples with T in {sorted(set(outer.tolist()))}")
        rows, want = rows.numpy(), want.numpy()
        bad = np.flatnonzero(rows != want)
        if bad.size:
            b, t = divmod(int(bad[0]), steps.shape[1])
            raise ValueError(f"{rows_message} {rows[bad[0]]} at (batch={b}, t={t}) where steps[{b}, {t}] = {want[bad[0]]}")
        return y
    same_shape = tf.debugging.Assert(
        tf.reduce_all(outer == big_t) & tf.equal(tf.size(outer), tf.shape(steps)[0]),
        [f"{shape}; received T", tf.cast(outer, tf.int32), "for steps of shape", tf.shape(steps)],
    )
    with tf.control_dependencies([same_shape]):
        rows = tf.concat([tf.cast(rows, tf.int32), [0]], 0)  # one more, so that `first` exists
        want = tf.concat([want, [1]], 0)
        first = tf.argmax(tf.cast(tf.not_equal(rows, want), tf.int32), output_type=tf.int32)
        t_size = tf.cast(big_t, tf.int32)
        same_rows = tf.debugging.Assert(
            tf.equal(first, tf.size(want) - 1),
            [rows_message, rows[first], "at (batch, t) =", first // t_size, first % t_size, "where steps is", want[first]],
        )  # fmt: skip
    with tf.control_dependencies([same_rows]):
        return y.with_flat_values(tf.identity(y.flat_values))


def check_width(name: str, shape, want: int | None) -> None:
    """Raises the ValueError of targets `name` of `shape` whose last dimension is not `want`.

    Raises:
        ValueError: the last dimension is known and differs from `want`, naming both.
    """
    shape = tuple(shape) if shape is not None else ()
    have = shape[-1] if shape else None
    if have is not None and want is not None and have != want:
        raise ValueError(
            f"`{name}` must have {want} channels in its last dimension, the chain's output size; received "
            f"{name} of shape {shape}: build the chain with output_size equal to the targets' last dimension"
        )


def check_token_targets(targets, steps: tf.Tensor, vocab_size: int, name: str = "targets") -> tf.Tensor:
    """The flat token ids `(sum(steps),)` int32 of a token chain's targets.

    Args:
        targets: int tokens, ragged `(batch, T, None)`, padded `(batch, T, L)` or flat `(sum(steps),)`.
        steps: `(batch, T)` int32, validated.
        vocab_size: V; every id must be in `[0, V)`.
        name: the argument's name in messages.

    Raises:
        ValueError: float targets, another rank, rows that differ from `steps`, or (eagerly) an
            id outside `[0, V)`; `tf.errors.InvalidArgumentError` for the last in graph mode.
    """
    ragged = isinstance(targets, tf.RaggedTensor)
    targets = targets if ragged else tf.convert_to_tensor(targets)
    shape = ("ragged " if ragged else "") + str(tuple(targets.shape))
    if not (targets.dtype.is_integer):
        raise ValueError(
            f"`{name}` of a token chain must be integer token ids in [0, {vocab_size}), (batch, T, None); "
            f"received {targets.dtype.name} {name} of shape {shape}"
        )
    if targets.shape.rank == 3 and ragged:
        flat = check_target_rows(targets, steps, name).flat_values
    elif targets.shape.rank == 3:
        _check_padded(name, targets, steps, shape)
        flat = masked(targets, tf.sequence_mask(steps, tf.shape(targets)[2]))
    elif targets.shape.rank == 1 and not ragged:
        flat = targets
    else:
        raise ValueError(f"`{name}` of a token chain must be (batch, T, None) token ids; received shape {shape}")
    return _check_ids(name, tf.cast(flat, tf.int32), vocab_size)


def _check_padded(name: str, targets: tf.Tensor, steps: tf.Tensor, shape: str) -> None:
    if tf.executing_eagerly() and (
        tuple(targets.shape[:2]) != tuple(steps.shape)
        or int(tf.reduce_max(tf.concat([tf.reshape(steps, [-1]), [0]], 0))) > targets.shape[2]
    ):
        raise ValueError(
            f"padded `{name}` must be (batch, T, L) with batch and T of `steps` {tuple(steps.shape)} and "
            f"L >= max(steps); received shape {shape}"
        )


def _check_ids(name: str, flat: tf.Tensor, vocab_size: int) -> tf.Tensor:
    bad = (flat < 0) | (flat >= vocab_size)
    message = f"`{name}` must hold token ids in [0, {vocab_size}) (vocab_size); received"
    if tf.executing_eagerly():
        where = np.flatnonzero(bad.numpy())
        if where.size:
            raise ValueError(f"{message} {int(flat[where[0]])} at flat position {int(where[0])}")
        return flat
    first = tf.argmax(tf.cast(tf.concat([bad, [True]], 0), tf.int32), output_type=tf.int32)
    check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(bad)),
                                [message, tf.concat([flat, [0]], 0)[first], "at flat position", first])  # fmt: skip
    with tf.control_dependencies([check]):
        return tf.identity(flat)
