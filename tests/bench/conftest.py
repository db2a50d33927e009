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
