"""The documentation holds: the site builds in strict mode, and its examples run.

The site (`mkdocs.yml`, `docs/`) is built once per session with `mkdocs build --strict`, so a
broken link or anchor, a page missing from the nav, or an API reference that no longer resolves
fails the build.

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
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("chain", "chain_app", "datagen", "bench", "ragged_common")
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


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "NO_MKDOCS_2_WARNING": "1"}  # fmt: skip
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)]
    return subprocess.run(command, cwd=config.parent, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def teacher_data(tmp_path_factory) -> Path:
    import datagen

    out = tmp_path_factory.mktemp("docs") / "teacher-data"
    datagen.make(out, task="teacher", n_samples=64, noise=0.05)
    return out


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = mkdocs_build(ROOT / "mkdocs.yml", out)
    assert result.returncode == 0, result.stderr[-4000:]
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


def test_the_site_builds_every_page_of_the_nav(site):
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav):
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            yield from pages(value) if isinstance(value, list) else [value]

    listed = list(pages(config["nav"]))
    assert sorted(listed) == sorted(str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md"))
    for page in listed:
        html = site / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        assert html.is_file(), page


def test_the_api_reference_renders_from_the_docstrings(site):
    chain_page = (site / "api/chain/index.html").read_text()
    for name in ("chain.Chain", "chain.Chain.call", "chain.Lengths", "chain.to_padded", "chain.STRATEGIES",
                 "chain_app.fit.fit_run", "chain_app.options.FitOptions"):  # fmt: skip
        assert f'id="{name}"' in chain_page, name
    assert "RaggedTensor of shape" in chain_page  # Chain.call's Returns section
    assert 'id="datagen.load"' in (site / "api/datagen/index.html").read_text()
    assert 'id="bench.run_sweep"' in (site / "api/bench/index.html").read_text()


def test_the_command_reference_renders_every_command(site):
    from bench.cli import main as bench_main
    from chain_app.cli import main as chain_main
    from datagen.cli import main as datagen_main

    page = (site / "cli/index.html").read_text()
    for prog, group in (("chain", chain_main), ("datagen", datagen_main), ("bench", bench_main)):
        for command in group.commands:
            assert f'id="{prog}-{command}"' in page, (prog, command)
    assert "--predict-lengths" in page and "--shard-index" in page and "--versus" in page


def test_a_broken_anchor_fails_the_strict_build(tmp_path):
    # The site's validation settings turn an unknown anchor (by default only logged) into a failure.
    validation = yaml.safe_load((ROOT / "mkdocs.yml").read_text())["validation"]
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs/index.md").write_text("# Home\n\nSee [the other page](other.md#no-such-heading).\n")
    (tmp_path / "docs/other.md").write_text("# Other\n")
    config = {"site_name": "t", "nav": ["index.md", "other.md"], "validation": validation}
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    result = mkdocs_build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode == 1
    assert "no-such-heading" in result.stderr


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
