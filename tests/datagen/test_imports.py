"""Importing datagen and running `datagen make` never import TensorFlow."""

from __future__ import annotations

import subprocess
import sys

import pytest

import datagen


def run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_import_and_make_do_not_import_tensorflow(tmp_path):
    out = run_python(
        "import sys, datagen\n"
        "from datagen.cli import main\n"
        f"try:\n    main(['make', '--samples', '20', '--out', {str(tmp_path / 'd')!r}, '--workers', '2',"
        " '--shard-size', '10'])\n"
        "except SystemExit as exit:\n    assert exit.code in (0, None), exit.code\n"
        f"datagen.read({str(tmp_path / 'd')!r})\n"
        "datagen.generate(10, task='teacher')\n"
        "print(sorted(name for name in sys.modules if name.split('.')[0] in ('tensorflow', 'keras')))\n"
    )
    assert out.strip().splitlines()[-1] == "[]"


def test_public_names():
    for name in ("generate", "make", "read", "load", "merge", "TASKS", "TOKEN_TASKS", "LENGTHS", "teacher_weights", "DatasetError",
                 "windows_per_sample", "DEFAULTS", "draw_lengths", "RANDOM_LENGTHS", "ParameterError"):
        assert name in datagen.__all__ and hasattr(datagen, name)
    assert datagen.TASKS == ("echo", "running", "bursts", "teacher", "ar", "ar-reset", "tokens", "tokens-reset")
    assert datagen.TOKEN_TASKS == ("tokens", "tokens-reset")
    assert datagen.LENGTHS == ("fixed", "uniform", "poisson", "geometric", "zipf", "input")
    assert issubclass(datagen.DatasetError, ValueError) and issubclass(datagen.ParameterError, ValueError)


def test_every_default_is_datagen_defaults():
    """`make`, `generate`, `read`, `info`, `load`, `datagen make` and chain fit take theirs from `datagen.DEFAULTS`."""
    import inspect

    from chain_app.options import FitOptions
    from datagen._params import Spec
    from datagen.cli import make

    def defaults(function):
        return {name: p.default for name, p in inspect.signature(function).parameters.items()
                if p.default is not inspect.Parameter.empty}  # fmt: skip

    options = {p.name: p.default for p in make.params}
    options["format"] = options.pop("file_format")
    for name, value in datagen.DEFAULTS.items():
        if name != "heldout_fraction":
            assert defaults(datagen.make)[name] == value and options[name] == value, name
    for name, value in defaults(datagen.generate).items():
        assert value == datagen.DEFAULTS.get(name, value), name
    assert Spec().to_dict() == {name: datagen.DEFAULTS[name] for name in Spec().to_dict()}
    for function in (datagen.read, datagen.info, datagen.load):
        assert defaults(function)["heldout_fraction"] == datagen.DEFAULTS["heldout_fraction"]
    assert FitOptions().heldout_fraction == datagen.DEFAULTS["heldout_fraction"]
    with pytest.raises(TypeError):
        datagen.DEFAULTS["seed"] = 1  # read-only
