"""Which law made a dataset, and the check that a run is scored on data of its own law (no TensorFlow).

A dataset's law digest is the sha256 of its manifest's `law` and `truth` (the task, its state
mode and sizes, the teacher's weights file or the closed form's parameters). It does not depend
on the samples, their count, lengths, noise or storage, so data made by `datagen make` with the
same task, seed and law options shares it; data of another task or seed (another teacher) does not.
A token law's figures, which its manifest sums from the samples (`cross_entropy_floor`,
`greedy_miss_rate`, `runs`, `heldout_fraction`), are left out of it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import datagen


class OtherLaw(ValueError):
    """Data made by another law than the one a run was trained on; its MSE says nothing of the fit."""


SAMPLE_FIGURES = ("cross_entropy_floor", "greedy_miss_rate", "runs", "heldout_fraction")
"""A token law's entries that its manifest sums from the samples (`datagen`'s token figures)."""


def law_digest(manifest: dict[str, Any]) -> str:
    """The sha256 of a manifest's `law` (less a token law's sample figures) and `truth`, as canonical JSON."""
    law = manifest.get("law")
    if isinstance(law, dict) and law.get("task") in datagen.TOKEN_TASKS:
        law = {key: value for key, value in law.items() if key not in SAMPLE_FIGURES}
    text = json.dumps({"law": law, "truth": manifest.get("truth")}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def trained_law(state: dict[str, Any]) -> str | None:
    """The law digest of a run's training data, or None when it cannot be known.

    A run records it in `state.json`; for a run from before it did, the training dataset's
    manifest is read, if it is still there.
    """
    info = state.get("train_info")
    recorded = info.get("law_digest") if isinstance(info, dict) else None
    if isinstance(recorded, str):
        return recorded
    try:
        return law_digest(datagen.info(Path(state["data_dir"]))["manifest"])
    except (ValueError, OSError):  # datagen.DatasetError is a ValueError
        return None


def check_same_law(state: dict[str, Any], data_dir: Path, scored: str) -> None:
    """Raises OtherLaw, naming both digests, when `data_dir`, of law digest `scored`, was made by
    another law than the run's training data.

    Nothing is checked when the run's law cannot be known (see `trained_law`).
    """
    trained = trained_law(state)
    if trained is not None and trained != scored:
        raise OtherLaw(f"{data_dir} was made by another law (law digest {scored[:12]}) than the run's "
                       f"training data (law digest {trained[:12]}): its scores say nothing of the fit")  # fmt: skip
