"""Fixtures shared by bench's tests."""

from __future__ import annotations

import os

import pytest

from bench import _runner

from .fake_cases import ROOT, write_cases


@pytest.fixture(scope="session")
def fake_cases_dir(tmp_path_factory):
    return write_cases(tmp_path_factory.mktemp("fake-cases"))


@pytest.fixture
def fake_cases(fake_cases_dir, monkeypatch):
    """`bench run` and `run_sweep` measure `FakeFramework` (see fake_cases.py) in their children."""
    monkeypatch.setattr(_runner, "CASES_DIR", fake_cases_dir)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return fake_cases_dir


def assert_draws_follow_the_cut_softmax(drawn, logits, temperature, top_p):
    """`drawn` tokens, each a draw from `logits` at `temperature` cut to the top-p set: they never
    leave that set, and their counts pass a chi-square test against its renormalised softmax."""
    import numpy as np

    counts = np.bincount(drawn, minlength=len(logits))
    probs = np.exp(logits / temperature) / np.exp(logits / temperature).sum()
    order = np.argsort(-probs)
    kept = order[np.cumsum(probs[order]) - probs[order] < top_p]
    assert set(np.flatnonzero(counts)) == set(kept.tolist())
    expected = len(drawn) * probs[kept] / probs[kept].sum()
    chi2 = float(((counts[kept] - expected) ** 2 / expected).sum())
    assert chi2 < 20.5  # above the 0.999 quantile of chi-square with up to 4 degrees of freedom
