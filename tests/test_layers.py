"""Architecture rules: layers import one way, and modules stay small.

``engines`` (models, weights, transform, backends, export, build) is the lower layer and
imports nothing from ``pipeline`` (the runtime); ``pipeline`` may import ``engines``. Tools
that need both (training, benchmarks, engine builds from a source) live in ``pipeline``.
The check reads the source with ``ast``, so it also sees imports inside functions and
``importlib.import_module("...")`` / ``__import__("...")`` with a literal name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 400
# Modules allowed to be longer than MAX_LINES, each with the reason. Keep this list short:
# split a module rather than add it here; remove an entry once its module is split.
LONG_MODULES: dict[str, str] = {}


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports_in(source: str, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source`` of ``module``, at any depth."""
    tree = ast.parse(source)
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = package[: len(package) - node.level + 1]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            yield node.lineno, name
            for alias in node.names:  # ``from pipeline import errors`` names pipeline.errors
                yield node.lineno, f"{name}.{alias.name}"
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            if called in ("import_module", "__import__") and isinstance(arg, ast.Constant):
                if isinstance(arg.value, str):
                    yield node.lineno, arg.value


def _imported_names(path: Path) -> Iterator[tuple[int, str]]:
    source = path.read_text(encoding="utf-8")
    return _imports_in(source, _module_name(path), path.name == "__init__.py")


def _is_pipeline(module: str) -> bool:
    return module == "pipeline" or module.startswith("pipeline.")


def test_the_checker_sees_every_kind_of_import() -> None:
    source = (
        "import os\n"
        "from engines import registry\n"
        "def f():\n"
        "    import pipeline.sources\n"
        "    from pipeline import errors\n"
        "    import importlib\n"
        "    importlib.import_module('pipeline.synthetic')\n"
        "    __import__('pipeline')\n"
        "from ... import pipeline\n"
    )
    found = [m for _, m in _imports_in(source, "engines.models.probe", is_package=False)]
    assert [m for m in found if _is_pipeline(m)] == [
        "pipeline.sources", "pipeline", "pipeline.errors", "pipeline.synthetic", "pipeline",
    ]  # fmt: skip
    assert "engines.registry" in found and "os" in found


def test_engines_import_nothing_from_pipeline() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: {module}"
        for path in _modules("engines")
        for line, module in _imported_names(path)
        if _is_pipeline(module)
    ]
    assert not offenders, "engines/ must not import pipeline/:\n" + "\n".join(offenders)


@pytest.mark.parametrize("package", ["engines", "pipeline"])
def test_modules_stay_small(package: str) -> None:
    too_long, stale = [], []
    for path in _modules(package):
        rel = path.relative_to(ROOT).as_posix()
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines >= MAX_LINES and rel not in LONG_MODULES:
            too_long.append(f"{rel}: {lines} lines")
        if rel in LONG_MODULES and lines < MAX_LINES:
            stale.append(rel)
    assert not too_long, f"modules of {MAX_LINES}+ lines (split them):\n" + "\n".join(too_long)
    assert not stale, f"now under {MAX_LINES} lines, drop from LONG_MODULES: {stale}"


def test_long_module_list_is_current() -> None:
    missing = [rel for rel in LONG_MODULES if not (ROOT / rel).is_file()]
    assert not missing, f"LONG_MODULES names files that no longer exist: {missing}"


MAX_FUNCTION_LINES = 60


@pytest.mark.parametrize("package", ["pipeline", "engines"])
def test_long_functions_say_why(package):
    """A function over ~60 lines carries a "Long on purpose: ..." comment right above it
    (above its decorators), saying why it is not split."""
    unexplained = []
    for path in _modules(package):
        text = path.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text)):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            if node.end_lineno - node.lineno + 1 <= MAX_FUNCTION_LINES:
                continue
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
            above = lines[max(0, first - 3) : first]
            if not any("Long on purpose" in line or "long on purpose" in line for line in above):
                unexplained.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not unexplained, "functions over 60 lines without a reason above them:\n" + "\n".join(unexplained)
