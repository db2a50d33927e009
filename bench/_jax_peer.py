"""The JAX peer: the bench workload written for `jax.jit`, `jax.lax.scan` and optax, in float32.

The strategy ``jax`` is what a JAX engineer would write for this model by hand:

- one `jax.jit` over the whole step: the forward pass, its gradient and an optax Adam update
  (``optax.adam(1e-3)``, as chain's train step uses ``keras.optimizers.Adam(1e-3)``), or the
  forward pass alone;
- model A (a GRU, as chain's) as one input matmul over all ``(b, t)`` plus a `jax.lax.scan` over
  ``T`` of the recurrent part;
- model B's first input projection computed once per ``(b, t)`` (its input is ``IR[b, t]`` at every
  inner step), the same cell math as Keras' ``GRUCell`` (``reset_after=True``), ``LSTMCell``,
  ``SimpleRNNCell``, two stacked ``GRUCell`` and the functional model's ``SimpleRNNCell``;
- per state mode, the layout with the fewest sequential steps and no masking inside the loop:

  - reset: every ``(b, t)`` run is a row, all ``batch * T`` rows in one scan of ``L`` steps (the
    longest run), each fed its constant projection. Padding comes after a row's real steps, so it
    never reaches them, and a row needs no mask while it runs.
  - carry: each sample's real inner steps laid end to end, its state flowing through them in
    order (an empty outer step adds no step, so it passes the state on), padded at the end to a
    multiple of 8, one scan over the batch's ``batch`` rows.

- the loss compares B's padded outputs (after the head) with the targets gathered into the same
  padded layout, under a mask, so its gradient needs no scatter; the forward phase gathers
  the real outputs into chain's flat ``(sample, t, k)`` order.

The scan's bound (``L``, or a sample's longest real sequence rounded up to 8) is a static shape:
it is read from the host's copy of ``steps`` at every call, as a training loop over batches would,
and every distinct bound compiles once. The index bookkeeping from ``steps`` (offsets, which
``(b, t)`` feeds which carry-mode step) runs inside the compiled step, on the device.

`jax.value_and_grad` takes the gradient; the recurrent scans (model A's and model B's) bring a
hand-written backward scan (`bench._jax_cells`), measured 1.3 to 3 times faster than JAX's autodiff
of the same scan.

The generation phases' programs are in `bench._jax_generate`.

JAX is imported lazily: bench's CLI and the other frameworks' cases start without it. Before JAX
first runs, `prepare_environment` keeps it from taking memory or cores that are not its own, and
lets XLA's per-call buffers reuse heap memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.metadata
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from ragged_common.checks import check_choice

from bench._tf_framework import tf_versions
from bench._workloads import CELLS, GENERATE_PHASES, JAX_IN_TF, Case, Sizes, token_width

LAYERS_OF: dict[str, tuple[str, ...]] = {
    "gru": ("gru",), "lstm": ("lstm",), "rnn": ("rnn",), "stacked": ("gru", "gru"), "functional": ("rnn",),
}
"""The Keras cell kind of each layer of model B, per `bench._workloads.CELLS` value."""
CARRY_BUCKET = 8
"""Carry mode pads each sample's sequence to a multiple of this many steps."""
LEARNING_RATE = 1e-3


def prepare_environment(threads: int) -> None:
    """Sets up the process for JAX; call before JAX's first computation in the process.

    - ``XLA_PYTHON_CLIENT_PREALLOCATE=false`` (unless set): on a GPU, JAX otherwise takes 75% of
      the device's memory at start, starving TensorFlow in the same process (a bare
      ``pytest bench/cases`` runs every framework in one) and hiding its own peak.
    - XLA's CPU client runs one thread per CPU this process may use and has no thread setting;
      with fewer `threads` than that, the process is limited to `threads` CPUs (Linux), as
      TensorFlow's and torch's thread pools are limited to `threads` threads.
    - `keep_heap_memory`.
    """
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if hasattr(os, "sched_getaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) > threads:
            os.sched_setaffinity(0, cpus[:threads])
    keep_heap_memory()


MMAP_THRESHOLD = 32 * 2**20  # glibc's largest
TRIM_THRESHOLD = 512 * 2**20


def keep_heap_memory() -> bool:
    """Lets glibc's malloc reuse freed blocks up to `MMAP_THRESHOLD` instead of unmapping them.

    XLA's CPU runtime allocates every call's buffers afresh. Under glibc's defaults a block above
    128 KiB is a fresh ``mmap`` whose pages fault on first touch, at every call: on 2 busy cores
    that made the JAX peer's train step (GRU, reset mode, L 8) 1.3 to 2 times slower. TensorFlow's
    step measured the same either way. `bench._measure` still returns free heap memory to the
    system (``malloc_trim``) before it reads a peak.

    Returns:
        Whether glibc took the settings (False elsewhere).
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # from <malloc.h>
        return bool(libc.mallopt(m_mmap_threshold, MMAP_THRESHOLD) and libc.mallopt(m_trim_threshold, TRIM_THRESHOLD))
    except (OSError, AttributeError):
        return False


def jax_import_error() -> str | None:
    """Why jax or optax cannot be imported, or None when both can."""
    for name in ("jax", "optax"):
        try:
            importlib.import_module(name)
        except Exception as exc:  # a broken install raises more than ImportError
            return f"{name} cannot be imported ({type(exc).__name__}: {exc}); install the `peers` extra"
    return None


# --- parameters ------------------------------------------------------------------------------


def _layer(key: Any, kind: str, inputs: int, hidden: int) -> dict[str, Any]:
    """One recurrent layer's weights, initialised as Keras does: Glorot-uniform kernel, orthogonal
    recurrent kernel, zero biases (an LSTM's forget gate at 1); a GRU has input and recurrent bias
    rows (``reset_after=True``)."""
    import jax
    import jax.numpy as jnp

    from bench._jax_cells import GATE_BLOCKS

    width = GATE_BLOCKS[kind] * hidden
    k_in, k_rec = jax.random.split(key)
    bias = jnp.zeros((2, width) if kind == "gru" else (width,), jnp.float32)
    if kind == "lstm":
        bias = bias.at[hidden : 2 * hidden].set(1.0)
    return {
        "kernel": jax.nn.initializers.glorot_uniform()(k_in, (inputs, width), jnp.float32),
        "recurrent": jax.nn.initializers.orthogonal()(k_rec, (hidden, width), jnp.float32),
        "bias": bias,
    }


def init_params(seed: int, cell: str, sizes: Sizes, tokens: bool = False) -> dict[str, Any]:
    """The peer's weights: ``{"a": layer, "b": (layer, ...), "head": {"kernel", "bias"}}``.

    A layer is ``{"kernel": (inputs, G * H), "recurrent": (H, G * H), "bias"}`` with Keras' gate
    order and bias layout (`bench._jax_cells`); model A is a GRU layer, model B one layer per
    `LAYERS_OF` entry of `cell`. With `tokens`, the token chain of the generation phases: a
    vocabulary of ``V = sizes.output_size`` (the head gives the logits) and ``"embedding"``,
    (V + 1, E) with E = `bench._workloads.token_width` and the start token's row last, whose
    rows B's first layer reads after IR.
    """
    import jax
    import jax.numpy as jnp

    kinds = LAYERS_OF[check_choice("cell", cell, CELLS)]
    key_a, key_head, key_embedding, *keys_b = jax.random.split(jax.random.key(seed), 3 + len(kinds))
    h, width = sizes.hidden, token_width(sizes) if tokens else 0
    params = {
        "a": _layer(key_a, "gru", sizes.input_size, h),
        "b": tuple(_layer(k, kind, h + (width if i == 0 else 0), h) for i, (k, kind) in enumerate(zip(keys_b, kinds))),
        "head": {
            "kernel": jax.nn.initializers.glorot_uniform()(key_head, (h, sizes.output_size), jnp.float32),
            "bias": jnp.zeros((sizes.output_size,), jnp.float32),
        },
    }
    if tokens:  # Keras' Embedding initialiser: uniform on [-0.05, 0.05]
        shape = (sizes.output_size + 1, width)
        params["embedding"] = jax.random.uniform(key_embedding, shape, jnp.float32, -0.05, 0.05)
    return params


def model_a(layer: dict[str, Any], x: Any) -> Any:
    """Model A, a GRU over ``T``: one input matmul, then a scan of the recurrent part.

    Args:
        x: (batch, T, input_size).

    Returns:
        IR, time-major: (T, batch, H).
    """
    import jax.numpy as jnp

    from bench._jax_cells import project, recurrent

    return recurrent(("gru",), (layer,), project("gru", layer, jnp.swapaxes(x, 0, 1)))


# --- layouts ---------------------------------------------------------------------------------


def scan_bound(steps: np.ndarray, carry: bool) -> int:
    """The scan's length for `steps` (host int array (batch, T)): the longest run in reset mode,
    the longest sample's real steps rounded up to `CARRY_BUCKET` in carry mode."""
    if steps.size == 0:
        return 0
    if not carry:
        return int(steps.max())
    longest = int(steps.sum(axis=1).max())
    return -(-longest // CARRY_BUCKET) * CARRY_BUCKET


def _runs(steps: Any, carry: bool) -> tuple[Any, Any, Any]:
    """The runs of model B in chain's flat output order, and the scan row each runs in.

    Reset mode: one run per ``(b, t)``, in scan row ``t * batch + b`` (IR is time-major); carry
    mode: one run per sample, all its real steps, in scan row ``b``.

    Returns:
        ``row_of_run``, ``lengths`` and ``starts`` (runs,): each run's scan row, real steps, and
        the index of its first output in the flat values.
    """
    import jax.numpy as jnp

    batch, big_t = steps.shape
    lengths = steps.sum(axis=1) if carry else steps.reshape(-1)
    starts = jnp.cumsum(lengths) - lengths
    run = jnp.arange(lengths.shape[0])
    return (run if carry else (run % big_t) * batch + run // big_t), lengths, starts


def _by_row(per_run: Any, steps: Any, carry: bool) -> Any:
    """A per-run array of `_runs` in scan-row order."""
    return per_run if carry else per_run.reshape(steps.shape).T.reshape(-1)


def _b_outputs(cell: str, layers: tuple[dict[str, Any], ...], ir: Any, steps: Any, bound: int, carry: bool) -> Any:
    """Model B over the scan rows, its first projection computed once per ``(b, t)``.

    Returns:
        B's outputs at every padded step, (bound, rows, H).
    """
    import jax.numpy as jnp

    from bench._jax_cells import project, recurrent

    kinds = LAYERS_OF[cell]
    big_t, batch, h = ir.shape
    if not carry:  # every row's input is the same at each of its steps
        return recurrent(kinds, layers, project(kinds[0], layers[0], ir.reshape(big_t * batch, h)), length=bound)
    xp = jnp.concatenate(project(kinds[0], layers[0], ir.reshape(big_t * batch, h)), axis=-1)
    xs = carry_inputs(xp, steps, bound)
    return recurrent(kinds, layers, tuple(jnp.split(xs, xp.shape[-1] // h, axis=-1)))


def carry_inputs(per_run: Any, steps: Any, bound: int) -> Any:
    """Carry mode's per-step inputs: each sample's rows of `per_run` ((T * batch, C), time-major),
    repeated for each of its real inner steps, laid end to end and padded to `bound`.

    Returns:
        (bound, batch, C); padding repeats the last outer step's row.
    """
    import jax
    import jax.numpy as jnp

    batch, big_t = steps.shape
    ends = jnp.cumsum(steps, axis=1)  # (batch, T): a sample's step p belongs to the first t with p < ends[t]
    positions = jnp.arange(bound)
    t_of = jax.vmap(lambda e: jnp.searchsorted(e, positions, side="right"))(ends)
    t_of = jnp.minimum(t_of, big_t - 1).T  # (bound, batch)
    return per_run[t_of * batch + jnp.arange(batch)]


def padded_outputs(cell: str, params: dict[str, Any], x: Any, steps: Any, bound: int, carry: bool) -> tuple[Any, Any, Any]:
    """The head's outputs at every padded step, and where each real one goes in the flat values.

    Args:
        cell: One of `CELLS`.
        params: `init_params`' structure.
        x: float32 (batch, T, input_size).
        steps: int32 (batch, T).
        bound: `scan_bound` of `steps`.
        carry: Carry mode (state through every real step of a sample) or reset mode.

    Returns:
        ``out`` (bound, rows, output_size); ``position`` and ``real`` (bound, rows): the flat
        index of each padded step's output, and whether it is a real step.
    """
    import jax.numpy as jnp

    outs = _b_outputs(cell, params["b"], model_a(params["a"], x), steps, bound, carry)
    out = outs @ params["head"]["kernel"] + params["head"]["bias"]
    _, lengths, starts = _runs(steps, carry)
    k = jnp.arange(bound)[:, None]
    return out, _by_row(starts, steps, carry)[None, :] + k, k < _by_row(lengths, steps, carry)[None, :]


def flat_values(out: Any, steps: Any, carry: bool, count: int) -> Any:
    """The real outputs of `padded_outputs`' ``out``, (count, output_size) in (sample, t, k) order."""
    import jax.numpy as jnp

    row_of_run, lengths, starts = _runs(steps, carry)
    run = jnp.repeat(jnp.arange(lengths.shape[0]), lengths, total_repeat_length=count)
    k = jnp.arange(count) - starts[run]
    rows = out.shape[1]
    return out.reshape(-1, out.shape[-1])[k * rows + row_of_run[run]]


def values(cell: str, params: dict[str, Any], x: Any, steps: Any, *, count: int, bound: int, carry: bool) -> Any:
    """The peer's output: (count, output_size) in (sample, t, k) order, count = sum(steps)."""
    out, _, _ = padded_outputs(cell, params, x, steps, bound, carry)
    return flat_values(out, steps, carry, count)


def loss_and_values(cell: str, params: dict[str, Any], x: Any, steps: Any, y_values: Any, *, bound: int,
                    carry: bool) -> tuple[Any, Any]:  # fmt: skip
    """The mean squared error against `y_values` (sum(steps), output_size), and the values.

    The loss is taken in the padded layout (the targets gathered into it, padding masked out), so
    its gradient needs no scatter; the values are gathered from the same outputs for callers
    that want them (a train step does not, and XLA drops them).
    """
    import jax.numpy as jnp

    out, position, real = padded_outputs(cell, params, x, steps, bound, carry)
    count = y_values.shape[0]
    targets = y_values[jnp.clip(position, 0, max(count - 1, 0))]
    error = jnp.where(real[..., None], out - targets, 0.0)
    loss = jnp.sum(jnp.square(error)) / y_values.size
    return loss, flat_values(out, steps, carry, count)


# --- the timed steps -------------------------------------------------------------------------


def forward_program(cell: str, carry: bool) -> Any:
    """``jit(params, x, steps, count=, bound=) -> (values, their sum)``."""
    import jax
    import jax.numpy as jnp

    def forward(params: Any, x: Any, steps: Any, *, count: int, bound: int) -> tuple[Any, Any]:
        out = values(cell, params, x, steps, count=count, bound=bound, carry=carry)
        return out, jnp.sum(out)

    return jax.jit(forward, static_argnames=("count", "bound"))


def grad_program(cell: str, carry: bool) -> Any:
    """``jit(params, x, steps, y_values, bound=) -> ((loss, values), grads)``."""
    import jax

    loss = functools.partial(loss_and_values, cell, carry=carry)
    return jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnames=("bound",))


def train_program(cell: str, carry: bool, optimizer: Any) -> Any:
    """``jit(params, opt_state, x, steps, y_values, bound=) -> (params, opt_state, loss)``: one
    Adam step, the old params and optimizer state donated to the new ones."""
    import jax
    import optax

    loss = functools.partial(loss_and_values, cell, carry=carry)

    def train(params: Any, opt_state: Any, x: Any, steps: Any, y_values: Any, *, bound: int) -> tuple[Any, Any, Any]:
        (value, _), grads = jax.value_and_grad(loss, has_aux=True)(params, x, steps, y_values, bound=bound)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return jax.jit(train, static_argnames=("bound",), donate_argnums=(0, 1))


def jax_device(device: str) -> Any:
    """JAX's first device of `device` (``"cpu"`` or ``"gpu"``); RuntimeError when it has none."""
    import jax

    return jax.devices("gpu" if device == "gpu" else "cpu")[0]


def build_step(case: Case, sizes: Sizes, workload: dict[str, Any], seed: int, threads: int | None = None,
               ) -> Callable[[], float]:  # fmt: skip
    """The timed callable of one forward call, Adam train step or generation call of the peer,
    compiled here.

    Each call reads the scan bound and the count of real steps from the host's ``steps``
    (`scan_bound`) and returns the step's scalar (the values' or tokens' sum, or the loss) as a
    float, which waits for the device.
    """
    import jax
    import optax

    if case.strategy == JAX_IN_TF:
        return build_in_tensorflow(case, sizes, workload, seed, threads)
    device = jax_device(case.device)
    carry = case.state == "carry"
    host_steps = np.asarray(workload["steps"])
    generating = case.phase in GENERATE_PHASES
    params = jax.device_put(init_params(seed, case.cell, sizes, tokens=generating), device)
    x, steps, y_values = (jax.device_put(workload[k], device) for k in ("x", "steps", "y_values"))
    shapes = lambda: {"count": int(host_steps.sum()), "bound": scan_bound(host_steps, carry)}  # noqa: E731
    if generating:
        from bench._jax_generate import generate_program

        generate, key = generate_program(case.cell, carry, case.phase), jax.device_put(jax.random.key(seed), device)
        generate.lower(params, x, steps, key, **shapes()).compile()
        return lambda: float(generate(params, x, steps, key, **shapes())[1])
    if case.phase == "forward":
        forward = forward_program(case.cell, carry)
        forward.lower(params, x, steps, **shapes()).compile()
        return lambda: float(forward(params, x, steps, **shapes())[1])
    optimizer = optax.adam(LEARNING_RATE)
    state = [params, jax.device_put(optimizer.init(params), device)]
    train = train_program(case.cell, carry, optimizer)
    train.lower(*state, x, steps, y_values, bound=shapes()["bound"]).compile()

    def run() -> float:
        state[0], state[1], loss = train(*state, x, steps, y_values, bound=scan_bound(host_steps, carry))
        return float(loss)

    return run


class JaxDeviceMemory:
    """`DeviceMemory` from a JAX device's ``memory_stats()`` (a GPU's; the CPU has none).

    JAX cannot reset its peak: a window's peak is known only when it rises above the peak before
    the window; otherwise it is reported as None.
    """

    def __init__(self, device: Any) -> None:
        self.device = device
        self._start = 0
        self._peak_before = 0

    def _stats(self) -> dict[str, int]:
        return self.device.memory_stats() or {}

    def reset(self) -> None:
        """Notes the bytes in use and the peak so far."""
        stats = self._stats()
        self._start = stats.get("bytes_in_use", 0)
        self._peak_before = stats.get("peak_bytes_in_use", 0)

    def peak_bytes(self) -> int | None:
        """Peak bytes since `reset` above those in use then, or None when it is not known."""
        peak = self._stats().get("peak_bytes_in_use")
        if peak is None or peak <= self._peak_before:
            return None
        return max(peak - self._start, 0)


class JaxFramework:
    """`bench._measure.Framework` of the JAX peer."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def versions(self) -> dict[str, str]:
        """jax, optax, TensorFlow and Keras versions (read from package metadata)."""
        return {**tf_versions(), "jax_version": importlib.metadata.version("jax"),
                "optax_version": importlib.metadata.version("optax")}  # fmt: skip

    def skip_reason(self, device: str) -> str | None:
        """Why the case cannot run: jax or optax missing, or no GPU for a GPU case."""
        prepare_environment(self.threads)
        reason = jax_import_error()
        if reason:
            return reason
        try:
            jax_device(device)
        except RuntimeError as exc:
            return f"JAX sees no {device.upper()} (jax.devices({device!r}) failed: {str(exc)[:200]})"
        return None

    def scope(self, device: str) -> contextlib.AbstractContextManager[Any]:
        """``jax.default_device`` of `device` (the arrays are also placed explicitly)."""
        import jax

        return jax.default_device(jax_device(device))

    def device_memory(self, device: str) -> Any:
        """The device's allocator statistics on a GPU, nothing on the CPU."""
        from bench._measure import NoDeviceMemory

        return JaxDeviceMemory(jax_device(device)) if device == "gpu" else NoDeviceMemory()

    def matmul_figures(self, sizes: Sizes, device: str, cell: str) -> dict[str, float]:
        """None: the roofline is measured with TensorFlow on chain's cases."""
        return {}

    def build(self, case: Case, sizes: Sizes, workload: dict[str, Any], seed: int) -> Callable[[], float]:
        """`build_step`."""
        return build_step(case, sizes, workload, seed, self.threads)


# --- the same programs, run by TensorFlow ------------------------------------------------------


def in_tensorflow(cell: str, carry: bool, phase: str, *, count: int, bound: int, device: str = "cpu") -> Any:
    """The peer's forward call or Adam train step as a TensorFlow function, by `jax2tf.convert`.

    The JAX program is lowered once (its StableHLO, for this ``count`` and ``bound``, for
    `device`'s platform) and TensorFlow compiles and runs it with its own XLA: the same program
    as the ``jax`` strategy on another runtime.

    Returns:
        Forward: ``fn(params, x, steps) -> (values, their sum)``. Train: ``fn(params, opt_state,
        x, steps, y_values) -> (params, opt_state, loss)``; params and optimizer state are
        nested structures of tensors, as `init_params` and optax's Adam state are of arrays.
    """
    import jax
    import optax
    from jax.experimental import jax2tf

    platforms = ("cuda",) if device == "gpu" else ("cpu",)
    if phase == "forward":
        def forward(params: Any, x: Any, steps: Any) -> tuple[Any, Any]:
            out = values(cell, params, x, steps, count=count, bound=bound, carry=carry)
            return out, jax.numpy.sum(out)

        return jax2tf.convert(forward, with_gradient=False, native_serialization_platforms=platforms)
    optimizer = optax.adam(LEARNING_RATE)
    loss = functools.partial(loss_and_values, cell, carry=carry, bound=bound)

    def train(params: Any, opt_state: Any, x: Any, steps: Any, y_values: Any) -> tuple[Any, Any, Any]:
        (value, _), grads = jax.value_and_grad(loss, has_aux=True)(params, x, steps, y_values)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    return jax2tf.convert(train, with_gradient=False, native_serialization_platforms=platforms)


def build_in_tensorflow(case: Case, sizes: Sizes, workload: dict[str, Any], seed: int,
                        threads: int | None = None) -> Callable[[], float]:  # fmt: skip
    """The timed callable of `JAX_IN_TF`: `in_tensorflow`'s function in a
    ``tf.function(jit_compile=True)``, the weights and Adam's state in `tf.Variable`s that a
    train step assigns, as a TensorFlow user would hold them.

    It reads the scan bound and count from the host's ``steps`` once: like the ``jax`` strategy's
    programs, it serves that one bound, which the sweep's workload keeps.
    """
    import jax
    import optax
    import tensorflow as tf

    from bench._tf_framework import configure_threads, tf_device

    check_choice("phase", case.phase, ("forward", "train"))
    if threads is not None:
        # A bench child has not run TensorFlow yet; a process where it already ran keeps its pools.
        with contextlib.suppress(RuntimeError):
            configure_threads(threads)
    carry = case.state == "carry"
    host_steps = np.asarray(workload["steps"])
    shapes = {"count": int(host_steps.sum()), "bound": scan_bound(host_steps, carry)}
    fn = in_tensorflow(case.cell, carry, case.phase, **shapes, device=case.device)
    params = init_params(seed, case.cell, sizes)
    with tf.device(tf_device(case.device)):
        x, steps, y_values = (tf.constant(workload[k]) for k in ("x", "steps", "y_values"))
        as_variables = lambda tree: jax.tree_util.tree_map(lambda a: tf.Variable(np.asarray(a)), tree)  # noqa: E731
        weights = as_variables(params)
        if case.phase == "forward":
            program = tf.function(lambda: fn(weights, x, steps)[1], autograph=False, jit_compile=True)
        else:
            opt_state = as_variables(optax.adam(LEARNING_RATE).init(params))

            def step() -> Any:
                new_weights, new_state, loss = fn(weights, opt_state, x, steps, y_values)
                for variable, value in zip(jax.tree_util.tree_leaves((weights, opt_state)),
                                           jax.tree_util.tree_leaves((new_weights, new_state))):  # fmt: skip
                    variable.assign(value)
                return loss

            program = tf.function(step, autograph=False, jit_compile=True)
        program.get_concrete_function()  # traced and converted now, not in the first timed call
    return lambda: float(program())
