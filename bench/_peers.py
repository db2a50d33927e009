"""What chain is compared with: the reference approach, and PyTorch as a peer framework.

- ``reference``: the question's nested loops (`bench._reference`), op by op in plain eager mode
  (an eager GradientTape for training), the way the widely cited answer was run: at each ``t``
  the inner loop runs ``max_b steps[b, t]`` steps, the longest run at that ``t``.
- ``per-sample``: the generation phases' baseline (`bench._per_sample`), one sample, one outer
  step and one inner step at a time through a compiled step.
- ``torch-packed`` / ``torch-padded``: the same workload in PyTorch, float32, with ``nn.GRU`` as
  model A, the same cell type as chain's model B (``nn.GRU``, ``nn.LSTM``, ``nn.RNN``, a 2-layer
  ``nn.GRU``; see `torch_model_b`; its input projection is fused over all steps) and an
  ``nn.Linear`` head. The outputs are gathered in (sample, t, k) order and trained with Adam on
  the same mean squared error.

  - reset, packed: the non-empty ``(b, t)`` runs, each ``IR[b, t]`` repeated ``steps[b, t]``
    times, go through ``pack_padded_sequence``.
  - reset, padded: every ``(b, t)`` run, empty ones included, padded to L; a mask picks the
    real outputs (padding sits after the real steps, so it cannot change them).
  - carry, packed: one flattened sequence per sample (all its real inner steps in order),
    packed.
  - carry, padded: the same flattened sequences padded at the end to the longest, plus a mask.

  The index bookkeeping from ``steps`` is done inside the timed step with torch ops.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
from collections.abc import Callable
from typing import Any

import numpy as np

from ragged_common.checks import check_choice

from bench._tf_framework import TensorFlowFramework, build_chain, step_program, tf_versions
from bench._workloads import BEAM_PHASE, BEAM_WIDTH, Case, Sizes


class ReferenceFramework(TensorFlowFramework):
    """`bench._measure.Framework` of the reference approach (the question's eager nested loops)."""

    def build(self, case: Case, sizes: Sizes, workload: dict[str, Any], seed: int) -> Callable[[], float]:
        """`bench._reference.reference_values` with a Chain's weights, called eagerly."""
        from bench._reference import reference_values

        net = build_chain(case, sizes, seed, strategy="loop", compiled=False)
        values = functools.partial(reference_values, net)
        return step_program(net, workload, case.phase, graph=False, values=values)


class PerSampleFramework(TensorFlowFramework):
    """`bench._measure.Framework` of the generation baseline (`bench._per_sample`)."""

    def build(self, case: Case, sizes: Sizes, workload: dict[str, Any], seed: int) -> Callable[[], float]:
        """`bench._per_sample.PerSampleGenerator` (or `PerSampleBeam`) with a token chain's
        weights; its step traced and its first sample run on a one-step input before it is
        returned."""
        from bench._per_sample import PICKS, PerSampleBeam, PerSampleGenerator

        net = build_chain(case, sizes, seed, strategy="loop", compiled=False)
        x, steps = workload["x"], workload["steps"]
        net.build(x.shape)
        beam = case.phase == BEAM_PHASE
        generator = PerSampleBeam(net, BEAM_WIDTH) if beam else PerSampleGenerator(net, PICKS[case.phase], seed)
        generator.generate(x[:1, :1], np.ones([1, 1], np.int32))
        return lambda: float(np.sum(generator.generate(x, steps)))


def torch_import_error() -> str | None:
    """Why torch cannot be imported, or None when it can."""
    try:
        import torch  # noqa: F401
    except Exception as exc:  # torch raises more than ImportError when broken
        return f"torch cannot be imported ({type(exc).__name__}: {exc}); install the `peers` extra"
    return None


def torch_model_b(cell: str, hidden: int) -> Any:
    """PyTorch's layer of the same cell type as chain's model B `cell` (`bench._workloads.CELLS`):
    ``nn.GRU``, ``nn.LSTM``, ``nn.RNN`` (tanh), a 2-layer ``nn.GRU`` for the stack, and ``nn.RNN``
    for the functional model around a ``SimpleRNNCell``."""
    import torch

    layers = {
        "gru": lambda: torch.nn.GRU(hidden, hidden, batch_first=True),
        "lstm": lambda: torch.nn.LSTM(hidden, hidden, batch_first=True),
        "rnn": lambda: torch.nn.RNN(hidden, hidden, nonlinearity="tanh", batch_first=True),
        "stacked": lambda: torch.nn.GRU(hidden, hidden, num_layers=2, batch_first=True),
        "functional": lambda: torch.nn.RNN(hidden, hidden, nonlinearity="tanh", batch_first=True),
    }
    return layers[check_choice("cell", cell, tuple(layers))]()


def _torch_model(sizes: Sizes, seed: int, cell: str = "gru") -> Any:
    import torch

    torch.manual_seed(seed)
    return torch.nn.ModuleDict(
        {
            "a": torch.nn.GRU(sizes.input_size, sizes.hidden, batch_first=True),
            "b": torch_model_b(cell, sizes.hidden),
            "head": torch.nn.Linear(sizes.hidden, sizes.output_size),
        }
    )


def _run_b(model: Any, inputs: Any, lengths: Any, packed: bool) -> Any:
    """B over padded runs (rows, L, H); returns its outputs at real positions in row-major order."""
    import torch
    from torch.nn.utils import rnn

    if packed:
        seq = rnn.pack_padded_sequence(inputs, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = model["b"](seq)
        out, _ = rnn.pad_packed_sequence(out, batch_first=True, total_length=inputs.shape[1])
    else:
        out, _ = model["b"](inputs)
    mask = torch.arange(inputs.shape[1], device=inputs.device)[None, :] < lengths[:, None]
    return out[mask]


def reset_values(model: Any, x: Any, steps: Any, packed: bool) -> Any:
    """Reset mode: one independent B run per ``(b, t)``.

    Args:
        model: Modules ``a``, ``b`` and ``head``.
        x: float32 (batch, T, input_size).
        steps: int64 (batch, T).
        packed: Drop empty runs and pack, or pad every run to L.

    Returns:
        float32 (sum(steps), output_size) in (sample, t, k) order.
    """
    ir, _ = model["a"](x)
    runs, lengths = ir.reshape(-1, ir.shape[-1]), steps.reshape(-1)
    if packed:
        keep = lengths > 0
        runs, lengths = runs[keep], lengths[keep]
    longest = int(lengths.max())
    inputs = runs[:, None, :].expand(-1, longest, -1)
    return model["head"](_run_b(model, inputs, lengths, packed))


def carry_values(model: Any, x: Any, steps: Any, packed: bool) -> Any:
    """Carry mode: one flattened sequence of all real inner steps per sample.

    Args and Returns: as `reset_values`.
    """
    import torch
    from torch.nn.utils import rnn

    ir, _ = model["a"](x)
    flat = ir.reshape(-1, ir.shape[-1]).repeat_interleave(steps.reshape(-1), dim=0)
    per_sample = steps.sum(dim=1)
    # Packing rejects empty sequences; padding keeps them (they are all mask).
    lengths = per_sample[per_sample > 0] if packed else per_sample
    inputs = rnn.pad_sequence(list(torch.split(flat, lengths.tolist())), batch_first=True)
    return model["head"](_run_b(model, inputs, lengths, packed))


class TorchFramework:
    """`bench._measure.Framework` of the PyTorch peer."""

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def versions(self) -> dict[str, str]:
        """torch, TensorFlow and Keras versions (the latter read from package metadata)."""
        return {**tf_versions(), "torch_version": importlib.metadata.version("torch")}

    def skip_reason(self, device: str) -> str | None:
        """Why the case cannot run: torch missing, or no CUDA for a GPU case."""
        reason = torch_import_error()
        if reason:
            return reason
        import torch

        torch.set_num_threads(self.threads)
        if device == "gpu" and not torch.cuda.is_available():
            return "torch sees no CUDA device (torch.cuda.is_available() is False)"
        return None

    def scope(self, device: str) -> contextlib.AbstractContextManager[Any]:
        """Nothing: tensors are placed explicitly."""
        return contextlib.nullcontext()

    def device_memory(self, device: str) -> Any:
        """CUDA allocator statistics on a GPU, nothing on the CPU."""
        from bench._measure import NoDeviceMemory

        return TorchCudaMemory() if device == "gpu" else NoDeviceMemory()

    def matmul_figures(self, sizes: Sizes, device: str, cell: str) -> dict[str, float]:
        """None: the roofline is measured with TensorFlow on chain's cases."""
        return {}

    def build(self, case: Case, sizes: Sizes, workload: dict[str, Any], seed: int) -> Callable[[], float]:
        """One forward call or Adam train step of the peer, synced to the host."""
        import torch

        dev = torch.device("cuda" if case.device == "gpu" else "cpu")
        model = _torch_model(sizes, seed, case.cell).to(dev)
        x = torch.from_numpy(workload["x"]).to(dev)
        steps = torch.from_numpy(workload["steps"]).long().to(dev)
        y_values = torch.from_numpy(workload["y_values"]).to(dev)
        values_fn = carry_values if case.state == "carry" else reset_values
        packed = case.strategy == "torch-packed"
        if case.phase == "forward":
            return _torch_forward(model, values_fn, x, steps, packed)
        return _torch_train(model, values_fn, x, steps, y_values, packed)


def _torch_forward(model: Any, values_fn: Callable[..., Any], x: Any, steps: Any, packed: bool) -> Callable[[], float]:
    import torch

    def run() -> float:
        with torch.no_grad():
            return float(values_fn(model, x, steps, packed).sum())

    return run


def _torch_train(
    model: Any, values_fn: Callable[..., Any], x: Any, steps: Any, y_values: Any, packed: bool
) -> Callable[[], float]:
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def run() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = torch.mean(torch.square(values_fn(model, x, steps, packed) - y_values))
        loss.backward()
        optimizer.step()
        return float(loss.detach())

    return run


class TorchCudaMemory:
    """`DeviceMemory` of torch's CUDA allocator."""

    def __init__(self) -> None:
        self._start = 0

    def reset(self) -> None:
        """Resets the peak and notes the bytes in use."""
        import torch

        torch.cuda.reset_peak_memory_stats()
        self._start = torch.cuda.memory_allocated()

    def peak_bytes(self) -> int | None:
        """Peak bytes since `reset`, above those in use then."""
        import torch

        return max(torch.cuda.max_memory_allocated() - self._start, 0)
