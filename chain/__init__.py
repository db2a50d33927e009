"""chain: run model B for `steps[b, t]` inner steps on each output of model A.

>>> from chain import Chain
"""

from ._backend import check_backend as _check_backend

_check_backend()

from ._model import STATES as STATES
from ._model import Chain as Chain
from ._ragged import from_padded as from_padded
from ._ragged import to_padded as to_padded
from ._strategies import STRATEGIES as _STRATEGY_FUNCTIONS
from ._train import NoiseFloorRatio as NoiseFloorRatio
from ._train import pad_targets as pad_targets
from ._train import ragged_mse as ragged_mse
from ._fit import FitOptions as FitOptions
from ._fit import TrainingDiverged as TrainingDiverged
from ._fit import evaluate_run as evaluate_run
from ._fit import fit_run as fit_run

STRATEGIES: tuple[str, ...] = tuple(_STRATEGY_FUNCTIONS)

__all__ = ["Chain", "STATES", "STRATEGIES", "from_padded", "to_padded"]
__all__ += ["FitOptions", "NoiseFloorRatio", "TrainingDiverged", "evaluate_run", "fit_run", "pad_targets", "ragged_mse"]
