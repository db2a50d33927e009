"""`chain.fit_run` helpers: size checks and run-directory errors, through the Python API."""

from __future__ import annotations

import pytest

import chain
from chain import FitOptions, fit_run
from chain._fit import check_sizes, load_run

from .conftest import make_chain

INFO = {"input_size": 4, "output_size": 2, "longest_step": 3, "noise_floor": 0.01, "samples": 8}


def test_check_sizes_names_both_sizes():
    net = make_chain(strategy="packed", max_steps=3)
    check_sizes(net, INFO, "d")
    with pytest.raises(ValueError, match="d: the dataset's output_size is 5 but the model's output_size is 2"):
        check_sizes(net, {**INFO, "output_size": 5}, "d")
    with pytest.raises(ValueError, match="longest_step is 4 but the model's max_steps is 3"):
        check_sizes(net, {**INFO, "longest_step": 4}, "d")


def test_load_run_without_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_run(tmp_path)


def test_load_run_with_a_corrupt_checkpoint(tmp_path):
    (tmp_path / "model.keras").write_bytes(b"not a zip")
    (tmp_path / "state.json").write_text("{}")
    with pytest.raises(ValueError, match="unreadable checkpoint"):
        load_run(tmp_path)


def test_fit_run_refuses_to_overwrite_a_run(tmp_path):
    (tmp_path / "state.json").write_text("{}")
    with pytest.raises(ValueError, match="holds a run already; pass resume=True"):
        fit_run(tmp_path / "data", tmp_path, FitOptions())


def test_public_names():
    for name in ("fit_run", "evaluate_run", "FitOptions", "TrainingDiverged", "ragged_mse",
                 "NoiseFloorRatio", "pad_targets"):  # fmt: skip
        assert name in chain.__all__ and hasattr(chain, name)
