"""What a run is scored by, and against which floor (no TensorFlow).

A run on real-valued data is scored by its masked MSE against the dataset's noise floor
(`noise ** 2`, the MSE of the true law). A run on token data (`datagen make --task tokens` or
`tokens-reset`) is scored by its cross-entropy in nats per token against the law's
(`manifest["law"]["cross_entropy_floor"]`: the true law's negative log-likelihood of the sampled
tokens). Both are reported the same way: the score, the floor and the score over the floor.
Imported data (`datagen import chorales`) has no law and no floor; its scores are set beside the
baselines its manifest holds instead (`chain_app.report`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import datagen


@dataclasses.dataclass(frozen=True)
class Floor:
    """The names of a run's score, its floor and their ratio, in reports and in the epoch logs.

    Attributes:
        score: the score in reports, `"mse"` or `"cross_entropy"`.
        floor: the floor in reports and in `data.describe`, `"noise_floor"` or `"cross_entropy_floor"`.
        ratio: the score over the floor, in reports and in the epoch logs.
        log: the epoch logs' key of the score.
        source: the key of Keras' logs the score comes from: the masked MSE itself, or the
            perplexity (`exp` of the mean cross-entropy over real tokens), whose log it is.
        label: the score as the loss plot's axis names it.
        scale: the loss plot's y scale: log for the MSE, which falls by decades; linear for the
            cross-entropy, which ends a few percent above its floor.
        floor_label: the floor as the loss plot's legend names it.
        omitted: why the ratio is left out when the floor is 0 or unknown.
    """

    score: str
    floor: str
    ratio: str
    log: str
    source: str
    label: str
    scale: str
    floor_label: str
    omitted: str

    def score_in(self, logs: dict[str, Any], prefix: str = "") -> float:
        """The score in Keras' logs (`prefix` `"val_"` for the held-out one's)."""
        value = float(logs[f"{prefix}{self.source}"])
        return math.log(value) if self.source == "perplexity" else value

    def ratio_of(self, score: float, floor: float | None) -> float | None:
        """`score / floor`, or None where the floor is 0 or unknown."""
        return score / floor if floor else None


REAL = Floor("mse", "noise_floor", "mse_over_noise_floor", "masked_mse", "masked_mse", "masked MSE", "log", "noise floor",
             "the noise floor is 0 (a dataset made with noise 0), so the ratio is undefined")  # fmt: skip
TOKENS = Floor("cross_entropy", "cross_entropy_floor", "cross_entropy_over_floor", "cross_entropy", "perplexity",
               "cross-entropy (nats per token)", "linear", "law's floor",
               "the law's floor is unknown (the split holds no token), so the ratio is undefined")  # fmt: skip
RATIOS = (REAL.ratio, TOKENS.ratio)
IMPORTED = ("no law made the data (it was imported), so there is no floor: the baselines of its manifest "
            "are the figures to compare with")  # fmt: skip


def of(info: dict[str, Any]) -> Floor:
    """The floor of a dataset described by `chain_app.data.describe`: TOKENS where it has a vocabulary."""
    return TOKENS if info.get("vocab_size") is not None else REAL


def omitted(info: dict[str, Any]) -> str:
    """Why a dataset's score has no ratio to its floor: imported data has none at all."""
    return IMPORTED if info.get("task") in datagen.IMPORTED_TASKS else of(info).omitted
