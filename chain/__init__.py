"""chain: run model B for `steps[b, t]` inner steps on each output of model A.

>>> from chain import Chain
"""

from ._model import STATES as STATES
from ._model import Chain as Chain
from ._ragged import from_padded as from_padded
from ._ragged import to_padded as to_padded
from ._strategies import STRATEGIES as _STRATEGY_FUNCTIONS

STRATEGIES: tuple[str, ...] = tuple(_STRATEGY_FUNCTIONS)

__all__ = ["Chain", "STATES", "STRATEGIES", "from_padded", "to_padded"]
