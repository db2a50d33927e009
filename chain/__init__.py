"""chain: run model B for `steps[b, t]` inner steps on each output of model A.

Examples:
    >>> from chain import Chain
"""

from ._backend import check_backend as _check_backend

_check_backend()

from ._beam import Beam as Beam
from ._callbacks import WindowedStates as WindowedStates
from ._context import decode_runs as decode_runs
from ._decoding import Decoder as Decoder
from ._decoding import Greedy as Greedy
from ._decoding import Sampler as Sampler
from ._generate import Generated as Generated
from ._generate import Generation as Generation
from ._kernels import Kernel as Kernel
from ._kernels import KernelStep as KernelStep
from ._kernels import register_kernel as register_kernel
from ._lengths import EndToken as EndToken
from ._lengths import LengthHead as LengthHead
from ._lengths import Lengths as Lengths
from ._lengths import StopToken as StopToken
from ._model import STATES as STATES
from ._model import Chain as Chain
from ._ragged import from_padded as from_padded
from ._ragged import to_padded as to_padded
from ._strategies import STRATEGIES as _STRATEGY_FUNCTIONS
from ._train import NoiseFloorRatio as NoiseFloorRatio
from ._train import Perplexity as Perplexity
from ._train import pad_targets as pad_targets
from ._losses import replica_mean as replica_mean
from ._train import ragged_mse as ragged_mse

STRATEGIES: tuple[str, ...] = tuple(_STRATEGY_FUNCTIONS)
"""The ways of running model B that `Chain(strategy=...)` takes besides `"auto"`; all compute the same."""

# The application layer (run directories, the `chain` command) lives in `chain_app`, which
# depends on this library; these names reach it on first use only, so `import chain` does not
# import it, nor datagen.
_APPLICATION = {
    "FitOptions": "chain_app.options",
    "TrainingDiverged": "chain_app.options",
    "fit_run": "chain_app.fit",
    "evaluate_run": "chain_app.report",
}


def __getattr__(name: str):
    if name in _APPLICATION:
        import importlib

        return getattr(importlib.import_module(_APPLICATION[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_APPLICATION])


__all__ = ["Beam", "Chain", "Decoder", "EndToken", "Generated", "Generation", "Greedy", "Perplexity", "Sampler", "Kernel", "KernelStep", "LengthHead", "Lengths", "STATES", "STRATEGIES",
           "StopToken", "WindowedStates", "decode_runs", "from_padded", "register_kernel", "replica_mean", "to_padded"]
__all__ += ["FitOptions", "NoiseFloorRatio", "TrainingDiverged", "evaluate_run", "fit_run", "pad_targets", "ragged_mse"]
