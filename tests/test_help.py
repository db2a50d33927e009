"""Help: `-h` and `--help` on every `chain` and `datagen` command, and `chain --help` without TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from chain_app.cli import main as chain_main
from datagen.cli import main as datagen_main

HEAVY = ("tensorflow", "keras", "chain_app.fit", "chain_app.report", "chain_app.data", "chain_app.generate")


def _commands(group: click.Group) -> list[list[str]]:
    return [[], *([name] for name in group.commands)]


@pytest.mark.parametrize("group", [chain_main, datagen_main], ids=["chain", "datagen"])
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_every_command_answers_help(group, flag):
    for command in _commands(group):
        result = CliRunner().invoke(group, [*command, flag])
        assert result.exit_code == 0, (command, result.output)
        assert result.output.startswith("Usage: ") and "-h, --help" in result.output


@pytest.mark.parametrize("args", [["--help"], ["fit", "-h"], ["evaluate", "--help"], ["generate", "--help"]])
def test_chain_help_imports_no_tensorflow(args):
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['chain', *{args!r}]\n"
        "try:\n"
        "    runpy.run_module('chain_app.cli', run_name='__main__')\n"
        "except SystemExit as stop:\n"
        "    assert stop.code == 0, stop.code\n"
        f"print([m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m in {HEAVY!r}])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Usage: chain" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_python_m_chain_app_is_the_chain_command():
    result = subprocess.run([sys.executable, "-m", "chain_app", "-h"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and all(name in result.stdout for name in ("fit", "evaluate", "generate"))
