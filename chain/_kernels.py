"""Fast paths of cells: each cell's step and its hand-written backward step, and their registry.

A *kernel* (:class:`Kernel`) is what :func:`chain._scan.scan` needs of a cell to run it on the
fast path: B's input projection outside the inner loop, one forward step that also returns the
few tensors its backward step needs, and that backward step. The packed strategy then runs one
loop forward and one back, instead of TensorFlow's autodiff through a `tf.while_loop`.

A kernel is registered for a cell class with :func:`register_kernel`, the way a Keras cell plugs
into `keras.layers.RNN`. The built-in kernels are registered the same way: ``GRUCell`` (both
``reset_after`` conventions), ``LSTMCell``, ``SimpleRNNCell`` (tanh, relu, sigmoid and linear),
each with or without bias and with the default activations, and ``StackedRNNCells`` of
registered cells. :func:`kernel_for` says which kernel a cell gets, or why none.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Protocol, runtime_checkable

import keras
import tensorflow as tf

_TANH = keras.activations.get("tanh")
_SIGMOID = keras.activations.get("sigmoid")
_RELU = keras.activations.get("relu")
_LINEAR = keras.activations.get("linear")


def _cast(variable, dtype) -> tf.Tensor:
    return tf.cast(tf.convert_to_tensor(variable), dtype)


class KernelStep(NamedTuple):
    """What a kernel's backward step knows of one forward step.

    Attributes:
        states: the states before the step, `(n, s)` each.
        out: the step's output `(n, H)`.
        records: what the kernel's `forward` returned as records.
        params: the tensors that `params` gave, in the compute dtype.
    """

    states: list[tf.Tensor]  # the states before the step, `(n, s)` each
    out: tf.Tensor  # the step's output `(n, H)`
    records: list[tf.Tensor]  # what `forward` returned as records
    params: list[tf.Tensor]


class _CellKernel:
    """Shared parts: the cell, its input projection and its output width."""

    out_is_state = True
    bounded = True  # gates and outputs through sigmoid and tanh: the states stay finite

    def __init__(self, cell: keras.layers.Layer) -> None:
        self.cell = cell
        self.units = int(cell.units)
        self.width = self.units

    def _input_bias(self):
        return self.cell.bias if self.cell.use_bias else None

    def project(self, ir: tf.Tensor) -> tf.Tensor:
        xp = tf.matmul(ir, _cast(self.cell.kernel, ir.dtype))
        bias = self._input_bias()
        return xp if bias is None else xp + _cast(bias, ir.dtype)

    def project_fed(self, ir: tf.Tensor, rows: tf.Tensor, prev: tf.Tensor) -> tf.Tensor:
        """`project([ir[rows], prev])`, the IR part projected once per IR row, then gathered."""
        return tf.gather(self.project_ir(ir), rows) + self.project_prev(prev)

    def project_ir(self, ir: tf.Tensor) -> tf.Tensor:
        """IR's part of `project([ir, prev])`, the bias included: `ir @ kernel[:ir_size] + bias`."""
        xp = tf.matmul(ir, _cast(self.cell.kernel, ir.dtype)[: ir.shape[-1]])
        bias = self._input_bias()
        return xp if bias is None else xp + _cast(bias, ir.dtype)

    def project_prev(self, prev: tf.Tensor) -> tf.Tensor:
        """`prev`'s part of `project([ir, prev])`: `prev @ kernel[-D:]`, `prev` `(n, D)`."""
        return tf.matmul(prev, _cast(self.cell.kernel, prev.dtype)[-prev.shape[-1] :])


class GRUKernel(_CellKernel):
    """``GRUCell`` with ``reset_after=True`` (Keras' default): gates z, r, h.

    Params: the recurrent kernel `(H, 3H)` and, with bias, the recurrent bias `(3H,)`.
    """

    def __init__(self, cell):
        super().__init__(cell)
        self.state_sizes = [self.units]
        self.name = "GRUCell (reset_after=True)"
        self.record_widths = [self.units] * 4
        self.n_params = 1 + int(cell.use_bias)

    def _input_bias(self):
        return self.cell.bias[0] if self.cell.use_bias else None

    def params(self, dtype):
        cell = self.cell
        weights = [_cast(cell.recurrent_kernel, dtype)]
        return weights + ([_cast(cell.bias[1], dtype)] if cell.use_bias else [])

    def forward(self, x, states, params):
        return self.forward_blocks(tf.split(x, 3, axis=-1), states, params)

    def forward_blocks(self, xs, states, params):
        (h,) = states
        inner = tf.matmul(h, params[0])
        if len(params) > 1:
            inner = inner + params[1]
        x_z, x_r, x_h = xs
        r_z, r_r, i_h = tf.split(inner, 3, axis=-1)
        z = tf.sigmoid(x_z + r_z)
        r = tf.sigmoid(x_r + r_r)
        hh = tf.tanh(x_h + r * i_h)
        new = hh + z * (h - hh)
        return new, [new], [z, r, i_h, hh]

    def backward(self, step, d_out, d_new):
        (h,), (d_h,), params = step.states, d_new, step.params
        z, r, i_h, hh = step.records
        d_az = d_h * (h - hh) * z * (1.0 - z)
        d_ah = d_h * (1.0 - z) * (1.0 - hh * hh)
        d_ar = d_ah * i_h * r * (1.0 - r)
        g = tf.concat([d_az, d_ar, d_ah * r], -1)  # the recurrent matmul's outputs
        d_prev = d_h * z + tf.matmul(g, params[0], transpose_b=True)
        d_params = [tf.matmul(h, g, transpose_a=True)]
        if len(params) > 1:
            d_params.append(tf.reduce_sum(g, 0))
        return tf.concat([d_az, d_ar, d_ah], -1), [d_prev], d_params


class GRUv1Kernel(_CellKernel):
    """``GRUCell`` with ``reset_after=False``: the reset gate applies before the matmul.

    Params: the recurrent kernel's z and r columns `(H, 2H)` and its h columns `(H, H)`.
    """

    def __init__(self, cell):
        super().__init__(cell)
        self.state_sizes = [self.units]
        self.name = "GRUCell (reset_after=False)"
        self.record_widths = [self.units] * 3
        self.n_params = 2

    def params(self, dtype):
        kernel = _cast(self.cell.recurrent_kernel, dtype)
        return [kernel[:, : 2 * self.units], kernel[:, 2 * self.units :]]

    def forward(self, x, states, params):
        return self.forward_blocks(tf.split(x, 3, axis=-1), states, params)

    def forward_blocks(self, xs, states, params):
        (h,) = states
        u_zr, u_h = params
        x_z, x_r, x_h = xs
        r_z, r_r = tf.split(tf.matmul(h, u_zr), 2, axis=-1)
        z = tf.sigmoid(x_z + r_z)
        r = tf.sigmoid(x_r + r_r)
        hh = tf.tanh(x_h + tf.matmul(r * h, u_h))
        new = hh + z * (h - hh)
        return new, [new], [z, r, hh]

    def backward(self, step, d_out, d_new):
        (h,), (d_h,) = step.states, d_new
        z, r, hh = step.records
        u_zr, u_h = step.params
        d_az = d_h * (h - hh) * z * (1.0 - z)
        d_ah = d_h * (1.0 - z) * (1.0 - hh * hh)
        d_rh = tf.matmul(d_ah, u_h, transpose_b=True)
        d_ar = d_rh * h * r * (1.0 - r)
        g = tf.concat([d_az, d_ar], -1)
        d_prev = d_h * z + d_rh * r + tf.matmul(g, u_zr, transpose_b=True)
        d_params = [tf.matmul(h, g, transpose_a=True), tf.matmul(r * h, d_ah, transpose_a=True)]
        return tf.concat([d_az, d_ar, d_ah], -1), [d_prev], d_params


class LSTMKernel(_CellKernel):
    """``LSTMCell``: gates i, f, c, o; states `[h, c]`. Params: the recurrent kernel `(H, 4H)`."""

    def __init__(self, cell):
        super().__init__(cell)
        self.state_sizes = [self.units, self.units]
        self.name = "LSTMCell"
        self.record_widths = [self.units] * 5
        self.n_params = 1

    def params(self, dtype):
        return [_cast(self.cell.recurrent_kernel, dtype)]

    def forward(self, x, states, params):
        # one add over the whole row, then the gates: fewer ops than adding gate by gate
        h, c = states
        z = x + tf.matmul(h, params[0])
        return self._gates(tf.split(z, 4, axis=-1), c)

    def forward_blocks(self, xs, states, params):
        # gate by gate: the step's input blocks are never joined into one row
        h, c = states
        inner = tf.split(tf.matmul(h, params[0]), 4, axis=-1)
        return self._gates([x + r for x, r in zip(xs, inner)], c)

    def _gates(self, z, c):
        z_i, z_f, z_c, z_o = z
        i, f, o = tf.sigmoid(z_i), tf.sigmoid(z_f), tf.sigmoid(z_o)
        g = tf.tanh(z_c)
        c_new = f * c + i * g
        t_c = tf.tanh(c_new)
        h_new = o * t_c
        return h_new, [h_new, c_new], [i, f, g, o, t_c]

    def backward(self, step, d_out, d_new):
        (h, c), params = step.states, step.params
        d_h, d_c = d_new
        i, f, g, o, t_c = step.records
        d_c = d_c + d_h * o * (1.0 - t_c * t_c)
        dz = tf.concat(
            [d_c * g * i * (1.0 - i), d_c * c * f * (1.0 - f), d_c * i * (1.0 - g * g),
             d_h * t_c * o * (1.0 - o)], -1,
        )  # fmt: skip
        d_prev = [tf.matmul(dz, params[0], transpose_b=True), d_c * f]
        return dz, d_prev, [tf.matmul(h, dz, transpose_a=True)]


def _derivative_from_output(activation):
    """`f'` as a function of `f`'s output, for the activations where that is exact."""
    if activation is _TANH:
        return lambda y: 1.0 - y * y
    if activation is _SIGMOID:
        return lambda y: y * (1.0 - y)
    if activation is _RELU:
        return lambda y: tf.cast(y > 0, y.dtype)
    if activation is _LINEAR or activation is None:
        return None  # the identity: f' = 1
    name = getattr(activation, "__name__", repr(activation))
    raise ValueError(f"no fast path for activation {name!r} (the fast path takes tanh, relu, sigmoid or linear)")


class SimpleRNNKernel(_CellKernel):
    """``SimpleRNNCell`` with tanh, relu, sigmoid or linear activation. Params: `(H, H)`."""

    record_widths: list[int] = []
    n_params = 1

    def __init__(self, cell):
        super().__init__(cell)
        self.state_sizes = [self.units]
        self.name = f"SimpleRNNCell ({getattr(cell.activation, '__name__', cell.activation)})"
        self.activation = cell.activation if cell.activation is not None else _LINEAR
        self.derivative = _derivative_from_output(self.activation)
        self.bounded = self.activation in (_TANH, _SIGMOID)

    def params(self, dtype):
        return [_cast(self.cell.recurrent_kernel, dtype)]

    def forward(self, x, states, params):
        new = x + tf.matmul(states[0], params[0])
        if self.activation is not _LINEAR:
            new = self.activation(new)
        return new, [new], []

    def backward(self, step, d_out, d_new):
        d_pre = d_new[0] if self.derivative is None else d_new[0] * self.derivative(step.out)
        d_prev = tf.matmul(d_pre, step.params[0], transpose_b=True)
        return d_pre, [d_prev], [tf.matmul(step.states[0], d_pre, transpose_a=True)]


class StackKernel:
    """``StackedRNNCells`` of cells that have kernels, run together at every step.

    Layer `l > 0` projects the output of layer `l - 1` inside the loop. Params: each layer's, and
    for `l > 0` its input kernel and bias first. Records: each layer's, and the output of every
    layer but the last (the input of the next).
    """

    out_is_state = False

    def __init__(self, cell: keras.layers.StackedRNNCells, layers: list) -> None:
        self.cell, self.layers = cell, layers
        self.name = f"StackedRNNCells of {', '.join(type(c).__name__ for c in cell.cells)}"
        self.width = layers[-1].width
        self.input_block = layers[0].width  # the gate blocks of `project`'s output, the first layer's
        self.state_sizes = [s for k in layers for s in k.state_sizes]
        self.record_widths = [w for k in layers for w in k.record_widths]
        self.record_widths += [k.width for k in layers[:-1]]
        self._param_sizes = [k.n_params + (0 if i == 0 else 1 + int(k.cell.use_bias)) for i, k in enumerate(layers)]
        self.n_params = sum(self._param_sizes)
        self.bounded = all(getattr(k, "bounded", False) for k in layers)

    def project(self, ir):
        return self.layers[0].project(ir)

    def project_fed(self, ir, rows, prev):
        return self.layers[0].project_fed(ir, rows, prev)

    def project_ir(self, ir):
        return self.layers[0].project_ir(ir)

    def project_prev(self, prev):
        return self.layers[0].project_prev(prev)

    def params(self, dtype):
        out = []
        for i, k in enumerate(self.layers):
            if i > 0:
                out += [_cast(k.cell.kernel, dtype)] + ([_cast(k._input_bias(), dtype)] if k.cell.use_bias else [])
            out += k.params(dtype)
        return out

    def _split(self, values, sizes):
        parts, i = [], 0
        for n in sizes:
            parts.append(list(values[i : i + n]))
            i += n
        return parts

    def _param_parts(self, params):
        return self._split(params, self._param_sizes)

    def forward(self, x, states, params):
        return self._forward(x, states, params, blocks=False)

    def forward_blocks(self, xs, states, params):
        return self._forward(xs, states, params, blocks=True)

    def _forward(self, x, states, params, blocks):
        per_states = self._split(states, [len(k.state_sizes) for k in self.layers])
        per_params = self._param_parts(params)
        new_all, records, outs = [], [], []
        for i, k in enumerate(self.layers):
            p = per_params[i]
            if i > 0:
                x = tf.matmul(outs[-1], p[0]) + (p[1] if k.cell.use_bias else 0.0)
                p = p[1 + int(k.cell.use_bias):]
            out, new, rec = forward_step(k, x, per_states[i], p) if blocks and i == 0 else k.forward(x, per_states[i], p)
            new_all += new
            records += rec
            outs.append(out)
        return out, new_all, records + outs[:-1]

    def backward(self, step, d_out, d_new):
        layers = self.layers
        per_states = self._split(step.states, [len(k.state_sizes) for k in layers])
        per_d_new = self._split(d_new, [len(k.state_sizes) for k in layers])
        per_params = self._param_parts(step.params)
        n_rec = [len(k.record_widths) for k in layers]
        per_records = self._split(step.records[: sum(n_rec)], n_rec)
        outs = list(step.records[sum(n_rec):]) + [step.out]
        d_params, d_states = [None] * len(layers), [None] * len(layers)
        d_above = d_out
        for i in range(len(layers) - 1, -1, -1):
            k, p = layers[i], per_params[i]
            has_bias = i > 0 and k.cell.use_bias
            own = p[1 + int(has_bias):] if i > 0 else p
            d_n = list(per_d_new[i])
            d_n[0] = d_n[0] + d_above
            d_x, d_prev, d_p = k.backward(KernelStep(per_states[i], outs[i], per_records[i], own), None, d_n)
            d_states[i] = d_prev
            if i == 0:
                d_params[i] = d_p
                break
            d_above = tf.matmul(d_x, p[0], transpose_b=True)
            extra = [tf.matmul(outs[i - 1], d_x, transpose_a=True)]
            if has_bias:
                extra.append(tf.reduce_sum(d_x, 0))
            d_params[i] = extra + d_p
        return d_x, [d for ds in d_states for d in ds], [g for gs in d_params for g in gs]


def _default_activations(cell) -> bool:
    recurrent = getattr(cell, "recurrent_activation", _SIGMOID)
    return cell.activation is _TANH and recurrent is _SIGMOID


@runtime_checkable
class Kernel(Protocol):
    """What the packed scan needs of a cell to run it on the fast path.

    Shapes: `n` rows (runs), `G` the width of the projected input, `H` the output width.

    Attributes:
        name: what `Chain.fast_path` reports, e.g. `"LSTMCell"`.
        width: `H`, the width of the step's output.
        state_sizes: the width of each state tensor, in the cell's flat order.
        record_widths: the width of each tensor `forward` records for `backward`.
        out_is_state: whether the output is the first new state (then `backward` gets its
            gradient in `d_new[0]` and `d_out` is None).

    Optional:

    - ``bounded``, True where the states stay finite whatever the inputs and the number of steps
      (gates and outputs through sigmoid and tanh). The `padded` strategy then runs a run's steps
      past its end without masking its states; absent means False.
    - ``forward_blocks(xs, states, params)``: `forward` on the step's inputs given as the
      equal blocks of columns that the `padded` strategy's loop holds them in where each step
      reads rows of its own (carry mode): `G / width` blocks of `width` columns, a cell's gates.
      They then need not be joined into one row at every step. Absent, `forward` gets them
      joined.
    """

    name: str
    width: int
    state_sizes: list[int]
    record_widths: list[int]
    out_is_state: bool

    def project(self, ir: tf.Tensor) -> tf.Tensor:
        """B's input projection of IR rows `(n, ir_size) -> (n, G)`, once per `(b, t)`."""

    def project_fed(self, ir: tf.Tensor, rows: tf.Tensor, prev: tf.Tensor) -> tf.Tensor:
        """`project([ir[rows], prev])` `(m, G)` for feedback, `prev` `(m, D)`."""

    def params(self, dtype: tf.DType) -> list[tf.Tensor]:
        """The tensors of the weights used inside the loop, in `dtype` (read from variables, so
        that autodiff carries their gradients back to the cell's weights)."""

    def forward(self, x: tf.Tensor, states: list[tf.Tensor],
                params: list[tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor], list[tf.Tensor]]:  # fmt: skip
        """One inner step on projected inputs `(n, G)`: `(out (n, H), new_states, records)`."""

    def backward(self, step: KernelStep, d_out: tf.Tensor | None,
                 d_new: list[tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor], list[tf.Tensor]]:  # fmt: skip
        """`(d_x (n, G), d_states, d_params)` of a step, given the gradients of its output
        (None when `out_is_state`) and of its new states."""


def forward_step(kernel: Kernel, blocks: list[tf.Tensor], states: list[tf.Tensor],
                 params: list[tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor], list[tf.Tensor]]:  # fmt: skip
    """`kernel.forward` on a step's inputs held as column blocks: `forward_blocks` where the
    kernel has it, else `forward` on the blocks joined."""
    if len(blocks) > 1 and hasattr(kernel, "forward_blocks"):
        return kernel.forward_blocks(list(blocks), states, params)
    return kernel.forward(blocks[0] if len(blocks) == 1 else tf.concat(blocks, -1), states, params)


KernelMaker = Callable[[Any], Kernel]
_REGISTRY: dict[type, KernelMaker] = {}


def register_kernel(cell_type: type, make: KernelMaker) -> None:
    """Registers the fast path of the cells of class `cell_type` (exactly: not its subclasses).

    Args:
        cell_type: a Keras cell class.
        make: `make(cell) -> Kernel`, called when a Chain is made with such a cell as model B
            (or inside a `StackedRNNCells`, or a functional model around one). It raises a
            `ValueError` whose message says why where a cell of that class has no fast path
            (e.g. an activation it does not know); that message is `Chain.fast_path`'s reason.

    Raises:
        ValueError: `cell_type` is not a class, or `make` is not callable.
    """
    if not isinstance(cell_type, type):
        raise ValueError(f"`cell_type` must be a cell class; received {cell_type!r}")
    if not callable(make):
        raise ValueError(f"`make` must be a callable cell -> Kernel; received {make!r}")
    _REGISTRY[cell_type] = make


def registered_kernels() -> dict[type, KernelMaker]:
    """The cell classes with a fast path, and what makes each kernel."""
    return dict(_REGISTRY)


def kernel_for(cell: Any) -> tuple[Kernel | None, str]:
    """The kernel registered for `cell`'s class, or None and the reason there is none.

    Returns:
        `(kernel, reason)`: `reason` names the fast path that runs, or says why `cell` has none.
    """
    name = type(cell).__name__
    make = _REGISTRY.get(type(cell))
    if make is None:
        known = ", ".join(kind.__name__ for kind in _REGISTRY)
        return None, f"{name} has no registered kernel (registered: {known}; see chain.register_kernel)"
    for attr in ("dropout", "recurrent_dropout"):
        if (getattr(cell, attr, 0.0) or 0.0) > 0:
            return None, f"{name} uses {attr}"
    try:
        kernel = make(cell)
    except ValueError as error:
        return None, str(error)
    return kernel, getattr(kernel, "name", name)


def _stack(cell: keras.layers.StackedRNNCells) -> "StackKernel":
    layers = []
    for inner in cell.cells:
        kernel, why = kernel_for(inner)
        if kernel is None:
            raise ValueError(f"StackedRNNCells: {why}")
        if not isinstance(kernel, _CellKernel):  # a stack projects each layer's input with the cell's own kernel
            raise ValueError(f"StackedRNNCells: {why} is not a built-in kernel, and a stack runs built-in kernels only")
        layers.append(kernel)
    return StackKernel(cell, layers)


def _simple_rnn(cell: keras.layers.SimpleRNNCell) -> "SimpleRNNKernel":
    try:
        return SimpleRNNKernel(cell)
    except ValueError as error:
        raise ValueError(f"SimpleRNNCell: {error}") from None


def _gated(make: KernelMaker) -> KernelMaker:
    """`make`, for a gated cell whose fast path needs its default activations."""
    def checked(cell):
        if not _default_activations(cell):
            raise ValueError(f"{type(cell).__name__} with non-default activations (the fast path needs tanh and sigmoid)")
        return make(cell)

    return checked


register_kernel(keras.layers.GRUCell, _gated(lambda cell: GRUKernel(cell) if cell.reset_after else GRUv1Kernel(cell)))
register_kernel(keras.layers.LSTMCell, _gated(lambda cell: LSTMKernel(cell)))
register_kernel(keras.layers.SimpleRNNCell, _simple_rnn)
register_kernel(keras.layers.StackedRNNCells, _stack)
