"""The documentation's examples run, so a wrong one fails.

The python blocks of README.md and of every page under docs/ run one by one, each in a fresh
namespace, in a temporary folder where `teacher-data` is a small teacher dataset (64 samples) made
with `datagen.make`. A block that cannot run here is preceded in its page by a marker line

    <!-- docs-test: skip: REASON -->

and is reported as skipped with that reason (`pytest -ra` lists it). Every `>>>` example in the
packages runs too.
"""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("chain", "chain_app", "datagen", "bench")
PAGES = ("README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md")))
_BLOCK = re.compile(
    r"(?:^<!-- docs-test: skip: (?P<reason>[^\n]+?) -->\n)?^```python\n(?P<code>.*?)^```", re.S | re.M
)


def python_blocks(page: str) -> list:
    text = (ROOT / page).read_text()
    blocks = []
    for match in _BLOCK.finditer(text):
        line = text[: match.start("code")].count("\n") + 1
        blocks.append(pytest.param(page, match["code"], match["reason"], id=f"{page}:{line}"))
    return blocks


def modules_with_examples() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if ">>>" in path.read_text():
                parts = path.relative_to(ROOT).with_suffix("").parts
                names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


@pytest.fixture(scope="session")
def teacher_data(tmp_path_factory) -> Path:
    import datagen

    out = tmp_path_factory.mktemp("docs") / "teacher-data"
    datagen.make(out, task="teacher", n_samples=64, noise=0.05)
    return out


def test_the_readme_and_the_guide_have_python_blocks():
    assert len(python_blocks("README.md")) >= 1
    guide = ("model", "state", "training", "feedback", "lengths", "extending")
    assert all(python_blocks(f"docs/{page}.md") for page in guide)


@pytest.mark.parametrize(("page", "code", "reason"), [block for page in PAGES for block in python_blocks(page)])
def test_doc_block_runs(page, code, reason, teacher_data, tmp_path, monkeypatch):
    if reason:
        pytest.skip(f"{page} block marked docs-test skip: {reason}")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "teacher-data").symlink_to(teacher_data, target_is_directory=True)
    exec(compile(code, page, "exec"), {"__name__": "__docs__"})


def test_every_package_module_with_examples_is_collected():
    found = modules_with_examples()
    assert "chain._model" in found and "chain_app.options" in found and "datagen" in found


def test_a_wrong_example_fails_the_runner():
    # The runner below is the one the module test uses: an example whose output differs fails it.
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    wrong = parser.get_doctest(">>> 1 + 1\n3\n", {}, "wrong", "wrong.py", 0)
    runner.run(wrong, out=lambda _: None)
    assert runner.summarize(verbose=False).failed == 1


@pytest.mark.parametrize("name", modules_with_examples())
def test_module_examples_run(name):
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(module, name, globs=vars(module).copy())
    if not any(not ex.options.get(doctest.SKIP) for test in tests for ex in test.examples):
        pytest.skip(f"every `>>>` example of {name} is marked `# doctest: +SKIP`")
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    assert runner.summarize(verbose=False).failed == 0, "".join(report)
