"""TensorFlow side of the cases: chain models, the timed forward and train steps and generation
calls, the matmul peak.

TensorFlow is imported lazily so that the CLI and the torch cases start without it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import importlib.metadata
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ragged_common.checks import check_choice

from bench._workloads import (BEAM_WIDTH, CELLS, GATES, GENERATE_PHASES, SAMPLING, XLA_STRATEGIES, Case, Sizes,
                              padded_targets, token_width)

if TYPE_CHECKING:
    from chain import Chain

_CONFIGURED_THREADS: list[int] = []


def tf_versions() -> dict[str, str]:
    """Installed TensorFlow and Keras versions, read without importing them."""
    out = {}
    for key, dist in (("tensorflow_version", "tensorflow"), ("keras_version", "keras")):
        try:
            out[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[key] = "absent"
    return out


def configure_threads(threads: int) -> None:
    """Sets TensorFlow's intra- and inter-op pools once, before its first op runs."""
    import tensorflow as tf

    if not _CONFIGURED_THREADS:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        _CONFIGURED_THREADS.append(threads)


def gpu_count() -> int:
    """Number of GPUs TensorFlow sees."""
    import tensorflow as tf

    return len(tf.config.list_physical_devices("GPU"))


def tf_device(device: str) -> str:
    """TensorFlow device string for ``"cpu"`` or ``"gpu"``."""
    return "/GPU:0" if device == "gpu" else "/CPU:0"


TENSOR_MEMORY_ENV = "TF_CPU_ALLOCATOR_USE_BFC"
"""Set to ``true`` (``bench run --tensor-memory``), TensorFlow allocates host tensors through a
counting allocator, so the CPU's peak tensor bytes can be read like a GPU's."""


class TensorFlowAllocatorMemory:
    """`DeviceMemory` from TensorFlow's allocator statistics of one device, e.g. ``"GPU:0"``."""

    def __init__(self, device: str = "GPU:0", field: str = "peak_device_bytes") -> None:
        self.device = device
        self.field = field
        self._start = 0

    def reset(self) -> None:
        """Resets the allocator peak and notes the bytes in use."""
        import tensorflow as tf

        tf.config.experimental.reset_memory_stats(self.device)
        self._start = tf.config.experimental.get_memory_info(self.device)["current"]

    def peak_bytes(self) -> int | None:
        """Peak bytes since `reset`, above those in use at the reset."""
        import tensorflow as tf

        return max(tf.config.experimental.get_memory_info(self.device)["peak"] - self._start, 0)


@functools.lru_cache(maxsize=None)
def matmul_peak_gflops(m: int, k: int, n: int, device: str = "cpu", repeats: int = 64) -> float:
    """Measured GFLOP/s of ``(m, k) @ (k, n)`` float32 matmuls, the roofline for cell steps.

    A `tf.function` runs `repeats` independent matmuls of the same shape per call, so Python and
    dispatch overhead are amortised; the best of 5 timed calls counts. Call
    `configure_threads` first to measure with the sweep's thread count.

    Args:
        m: Rows (active runs or samples per step).
        k: Shared dimension (hidden units).
        n: Columns (gates * hidden: 3 for a GRU, 4 for an LSTM, 1 for a SimpleRNN).
        device: ``"cpu"`` or ``"gpu"``.
        repeats: Matmuls per timed call.

    Returns:
        GFLOP/s, counting ``2 * m * k * n`` FLOPs per matmul.
    """
    import tensorflow as tf

    with tf.device(tf_device(device)):
        a = tf.random.stateless_normal((repeats, m, k), seed=(1, 2))
        b = tf.random.stateless_normal((k, n), seed=(3, 4))

        @tf.function
        def many(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
            return tf.add_n([tf.reduce_sum(tf.matmul(a[i], b)) for i in range(repeats)])

        many(a, b).numpy()
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            many(a, b).numpy()
            best = min(best, time.perf_counter() - start)
    return 2.0 * m * k * n * repeats / best / 1e9


def build_model_b(cell: str, hidden: int, ir_size: int) -> Any:
    """Model B of `cell` (one of `bench._workloads.CELLS`) with `hidden` units.

    ``functional`` is the question's slice model: ``Model([ipt, state], [out, new_state])``
    around one ``SimpleRNNCell``, whose call returns ``(output, [new_state])`` in Keras 3.
    """
    import keras

    cell = check_choice("cell", cell, CELLS)
    if cell == "gru":
        return keras.layers.GRUCell(hidden)
    if cell == "lstm":
        return keras.layers.LSTMCell(hidden)
    if cell == "rnn":
        return keras.layers.SimpleRNNCell(hidden)
    if cell == "stacked":
        return keras.layers.StackedRNNCells([keras.layers.GRUCell(hidden), keras.layers.GRUCell(hidden)])
    ipt, state = keras.Input((ir_size,)), keras.Input((hidden,))  # functional
    out, new = keras.layers.SimpleRNNCell(hidden)(ipt, [state])
    return keras.Model([ipt, state], [out, new[0]])


def build_chain(case: Case, sizes: Sizes, seed: int, *, strategy: str, compiled: bool, max_steps: int | None = None) -> Any:
    """A `chain.Chain` of a GRU (model A), `case.cell` (model B) and a dense head.

    Model A and model B have ``case.hidden`` units; model A's output (IR) has as many features.
    In the generation phases it is a token chain with feedback over ``V = sizes.output_size``
    tokens: B reads ``[IR, embedding of the previous token]``.

    Returns:
        The Chain; called on ``x`` (batch, T, input_size) and ``steps`` (batch, T) it returns a
        RaggedTensor of shape (batch, T, None, output_size).
    """
    import keras
    from chain import Chain

    keras.utils.set_random_seed(seed)
    tokens = case.phase in GENERATE_PHASES
    feedback = tokens or case.phase == "train-feedback"  # B then reads [IR, previous output]
    fed_width = (token_width(sizes) if tokens else sizes.output_size) if feedback else 0
    return Chain(
        keras.layers.GRU(case.hidden, return_sequences=True),
        build_model_b(case.cell, case.hidden, case.hidden + fed_width),
        output_size=None if tokens else sizes.output_size,
        vocab_size=sizes.output_size if tokens else None,
        state=case.state,
        strategy=strategy,
        compiled=compiled,
        feedback=feedback,
        max_steps=max_steps,
    )


def decoder_for(phase: str, seed: int) -> Any:
    """The `chain.Decoder` of a generation phase (`bench._workloads.GENERATE_PHASES`)."""
    import chain

    phase = check_choice("phase", phase, GENERATE_PHASES)
    if phase == "generate-greedy":
        return chain.Greedy()
    if phase == "generate-sampling":
        return chain.Sampler(**SAMPLING, seed=seed)
    return chain.Beam(BEAM_WIDTH)


def chain_values(net: "Chain", x: Any, steps: Any, training: bool) -> Any:
    """The flat values of ``net(x, steps)``; with `training` False the flag is left out entirely."""
    out = net(x, steps, training=True) if training else net(x, steps)
    return out.flat_values


def _forward(values: Callable[..., Any], x: Any, steps: Any) -> Any:
    import tensorflow as tf

    return tf.reduce_sum(values(x, steps, False))


def teacher_forced_values(net: "Chain", x: Any, steps: Any, training: bool, y_values: Any) -> Any:
    """The flat values of ``net(x, steps, targets=y_values)``: a feedback chain fed the targets."""
    return net(x, steps, training=True, targets=y_values).flat_values


def _train(values: Callable[..., Any], net: "Chain", optimizer: Any, x: Any, steps: Any, y_values: Any, flag: bool = True,
           teacher: bool = False) -> Any:  # fmt: skip
    import tensorflow as tf

    with tf.GradientTape() as tape:
        # `fit` calls the model with training=True; many custom loops leave the flag out.
        out = values(x, steps, flag, y_values) if teacher else values(x, steps, flag)
        loss = tf.reduce_mean(tf.square(out - y_values))
    grads = tape.gradient(loss, net.trainable_variables)
    optimizer.apply_gradients(zip(grads, net.trainable_variables))
    return loss


def step_program(
    net: "Chain", workload: dict[str, Any], phase: str, *, graph: bool, values: Callable[..., Any] | None = None,
    jit_compile: bool = False,
) -> Callable[[], float]:
    """The timed callable of one forward call or one train step (Adam) of `net`.

    Args:
        net: A Chain.
        workload: ``x`` (batch, T, input_size), ``steps`` (batch, T), ``y_values``
            (sum(steps), output_size).
        phase: ``"forward"``, ``"train"`` (``training=True``), ``"train-notraining"`` (the same
            train step, calling the model without the flag) or ``"train-feedback"`` (the train
            step of a ``feedback=True`` chain, fed the targets).
        graph: Wrap the step in a `tf.function` with ``None`` batch, T and row dimensions;
            otherwise it runs eagerly (an eager GradientTape for training).
        values: ``values(x, steps, training) -> (sum(steps), output_size)`` flat outputs computed
            with `net`'s weights; default `chain_values` of `net`.
        jit_compile: With `graph`, compile the step with XLA (once per input shape; the warm-up
            rounds hold the compilation for the timed shape).

    Returns:
        A callable that runs one step and returns its scalar as a Python float (which waits for
        the device). The model and optimizer variables exist, and with `graph` the step is traced
        and its graph optimised (by one call on a one-sample input), before it is first called.
    """
    import keras
    import tensorflow as tf

    x, steps = tf.constant(workload["x"]), tf.constant(workload["steps"])
    y_values = tf.constant(workload["y_values"])
    # Variables made before tracing: a tf.function that creates them traces twice.
    if not net.built:
        net.build(tuple(x.shape))
    teacher = phase == "train-feedback"
    values = values or functools.partial(teacher_forced_values if teacher else chain_values, net)
    if phase == "forward":
        fn, args = functools.partial(_forward, values), (x, steps)
    else:
        optimizer = keras.optimizers.Adam(1e-3)
        optimizer.build(net.trainable_variables)
        flag = phase != "train-notraining"
        fn, args = functools.partial(_train, values, net, optimizer, flag=flag, teacher=teacher), (x, steps, y_values)
    if graph:
        signature = [
            tf.TensorSpec((None, None, x.shape[-1]), tf.float32),
            tf.TensorSpec((None, None), tf.int32),
            tf.TensorSpec((None, y_values.shape[-1]), tf.float32),
        ][: len(args)]
        fn = tf.function(fn, input_signature=signature, jit_compile=jit_compile)
        # Trace and optimise the graph now, on one sample with one inner step, so that the build
        # rather than the first timed call holds that one-time work and its memory.
        one = (x[:1, :1], tf.ones([1, 1], tf.int32), y_values[:1])
        float(fn(*one[: len(args)]))
    return lambda: float(fn(*args))


def xla_train_program(net: "Chain", workload: dict[str, Any], longest_step: int) -> Callable[[], float]:
    """The timed callable of one train step (Adam) of `net`, compiled with
    ``jit_compile=True``, in a `tf.function(jit_compile=True)`, as `fit` runs it then.

    The loss is `Chain.compute_loss` (the compiled loss: the mean squared error over real steps)
    on targets padded to `longest_step` (`padded_targets`), so every shape in the step is fixed.
    """
    import keras
    import tensorflow as tf

    x, steps = tf.constant(workload["x"]), tf.constant(workload["steps"])
    y = tf.constant(padded_targets(workload, longest_step))
    if not net.built:
        net.build(tuple(x.shape))
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(net.trainable_variables)

    @tf.function(jit_compile=True)
    def step(x: Any, steps: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = net.compute_loss(x=(x, steps), y=y, training=True)
        grads = tape.gradient(loss, net.trainable_variables)
        optimizer.apply_gradients(zip(grads, net.trainable_variables))
        return loss

    step.get_concrete_function(x, steps, y)  # traced now; XLA compiles at the first call
    return lambda: float(step(x, steps, y))


def _generated_sum(net: "Chain", decoder: Any, x: Any, steps: Any) -> Any:
    import tensorflow as tf

    return tf.reduce_sum(net.generate(x, steps, decoder=decoder).flat_values)


def generate_program(net: "Chain", workload: dict[str, Any], decoder: Any, *, graph: bool) -> Callable[[], float]:
    """The timed callable of one ``net.generate(x, steps, decoder=decoder)`` of a token chain.

    Args:
        net: A token chain with feedback.
        workload: ``x`` (batch, T, input_size) and ``steps`` (batch, T).
        decoder: A `chain.Decoder`.
        graph: Call `generate` inside a user `tf.function` with ``None`` batch and T dimensions
            (traced and optimised on a one-sample input before it is returned); otherwise call
            it eagerly, as the chain's own compiled graph runs it.

    Returns:
        A callable that generates the tokens and returns their sum as a Python float (which
        waits for the device).
    """
    import tensorflow as tf

    x, steps = tf.constant(workload["x"]), tf.constant(workload["steps"])
    net.build(tuple(x.shape))
    fn = functools.partial(_generated_sum, net, decoder)
    if graph:
        signature = [tf.TensorSpec((None, None, x.shape[-1]), tf.float32), tf.TensorSpec((None, None), tf.int32)]
        fn = tf.function(fn, input_signature=signature)
        float(fn(x[:1, :1], tf.ones([1, 1], tf.int32)))
    return lambda: float(fn(x, steps))


class TensorFlowFramework:
    """`bench._measure.Framework` for chain strategies, called from a graph or eagerly."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def versions(self) -> dict[str, str]:
        """TensorFlow and Keras versions."""
        return tf_versions()

    def skip_reason(self, device: str) -> str | None:
        """Why `device` cannot run: only a GPU can be missing."""
        configure_threads(self.threads)
        if device == "gpu" and not gpu_count():
            return "TensorFlow sees no GPU (tf.config.list_physical_devices('GPU') is empty)"
        return None

    def scope(self, device: str) -> contextlib.AbstractContextManager[Any]:
        """``tf.device`` of `device`."""
        import tensorflow as tf

        return tf.device(tf_device(device))

    def device_memory(self, device: str) -> Any:
        """Allocator statistics on a GPU; on the CPU only under `TENSOR_MEMORY_ENV`."""
        from bench._measure import NoDeviceMemory

        if device == "gpu":
            return TensorFlowAllocatorMemory("GPU:0")
        if os.environ.get(TENSOR_MEMORY_ENV) == "true":
            return TensorFlowAllocatorMemory("CPU:0", "peak_tensor_bytes")
        return NoDeviceMemory()

    def matmul_figures(self, sizes: Sizes, device: str, cell: str = "gru") -> dict[str, float]:
        """Matmul peaks at `cell`'s step shapes ``(rows, H) @ (H, gates * H)``: rows = batch, and
        rows = batch * T."""
        k, n = sizes.hidden, GATES[cell] * sizes.hidden
        return {
            "matmul_batch_gflop_per_s": matmul_peak_gflops(sizes.batch, k, n, device),
            "matmul_peak_gflop_per_s": matmul_peak_gflops(sizes.batch * sizes.timesteps, k, n, device),
        }

    def build(self, case: Case, sizes: Sizes, workload: dict[str, Any], seed: int) -> Callable[[], float]:
        """A chain strategy in a user `tf.function`, called eagerly for ``eager-*``, or compiled with
        XLA for `XLA_STRATEGIES` (a chain with ``max_steps = longest_step``, compiled with
        ``jit_compile=True``): a forward call or train step (`step_program`), or a generation
        call (`generate_program`)."""
        eager = case.strategy.startswith("eager-")
        xla = case.strategy in XLA_STRATEGIES
        strategy = case.strategy.removeprefix("eager-").removeprefix("xla-")
        net = build_chain(case, sizes, seed, strategy=strategy, compiled=True,
                          max_steps=case.longest_step if xla else None)  # fmt: skip
        if xla:  # what `predict`, `evaluate` and `fit` run: buffers sized by `max_steps`, one program per shape
            net.build((None, None, sizes.input_size))  # weights drawn as for the other strategies
            net.compile(jit_compile=True)
        if case.phase in GENERATE_PHASES:
            return generate_program(net, workload, decoder_for(case.phase, seed), graph=not eager)
        if xla and case.phase == "train":
            return xla_train_program(net, workload, case.longest_step)
        return step_program(net, workload, case.phase, graph=not eager, jit_compile=xla)


def chain_strategies() -> tuple[str, ...]:
    """The strategy names chain offers (``chain.STRATEGIES``)."""
    import chain

    return tuple(chain.STRATEGIES)
