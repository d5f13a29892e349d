"""The layers import one way (docs/architecture.md), checked on the source of every module.

Each module is parsed, not imported, and every import is read: at module level, inside functions,
under `if TYPE_CHECKING:`, relative ones resolved, and `importlib.import_module("...")` calls with
a literal name. A function-level import does not hide a dependency from this test.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("tfrs_model", "export", "serving", "benchmarks", "twotower")

# What each package may import from the others; None means the whole package.
ALLOWED: dict[str, dict[str, tuple[str, ...] | None]] = {
    "tfrs_model": {},
    "export": {"tfrs_model": None},
    # The servers and the client need the export contract, the SavedModel loader, the tensor
    # specs and the shared errors; `import tfrs_model` itself selects Keras 2.
    "serving": {
        "tfrs_model": ("tfrs_model.errors", "tfrs_model.keras2"),
        "export": ("export.contract", "export.loading", "export.specs"),
    },
    "benchmarks": {"tfrs_model": None, "export": None, "serving": None},
    "twotower": {"tfrs_model": None, "export": None, "serving": None, "benchmarks": None},
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, wherever it stands."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # `from export import contract` imports the module export.contract.
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def violations(path: Path) -> list[str]:
    """Imports of `path` that point against the direction of the layers."""
    own = _module_name(path).split(".")[0]
    rules = ALLOWED[own]
    problems = []
    for line, module in _imports(path):
        target = module.split(".")[0]
        if target == own or target not in PACKAGES:
            continue
        if target not in rules:
            problems.append(f"{path.relative_to(REPO)}:{line} imports {module}")
            continue
        allowed = rules[target]
        if allowed is not None and not _is_allowed(module, allowed):
            problems.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    return problems


def _is_allowed(module: str, allowed: tuple[str, ...]) -> bool:
    # `from export import contract` is recorded as "export" and "export.contract": the bare package
    # (its __init__) is always fine, the second entry says whether the submodule is.
    return "." not in module or any(module == a or module.startswith(f"{a}.") for a in allowed)


def _modules(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_imports_against_the_layers(package):
    problems = [problem for path in _modules(package) for problem in violations(path)]
    assert not problems, "imports against docs/architecture.md:\n" + "\n".join(problems)


def _violations_of(source: str, relative: str, tmp_path: Path, monkeypatch) -> list[str]:
    """What `violations` says of `source` written at `relative` in a scratch repository."""
    module = tmp_path / relative
    module.parent.mkdir(parents=True)
    module.write_text(source)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    return violations(module)


def test_the_checker_sees_function_level_relative_and_dynamic_imports(tmp_path, monkeypatch):
    source = (
        "import importlib\n"
        "def late():\n"
        "    from export import savedmodel\n"
        "    return importlib.import_module('serving.server')\n"
        "from ..sub import sibling\n"
    )
    assert _violations_of(source, "tfrs_model/sub/bad.py", tmp_path, monkeypatch) == [
        "tfrs_model/sub/bad.py:3 imports export",
        "tfrs_model/sub/bad.py:3 imports export.savedmodel",
        "tfrs_model/sub/bad.py:4 imports serving.server",
    ]


def test_serving_may_use_only_the_contract_the_loader_and_the_specs(tmp_path, monkeypatch):
    source = (
        "from export import contract\n"
        "from export.specs import TensorSpec\n"
        "from tfrs_model.errors import ConfigError\n"
        "from export.savedmodel import export_run\n"
        "from tfrs_model.training import train\n"
    )
    assert _violations_of(source, "serving/thing.py", tmp_path, monkeypatch) == [
        "serving/thing.py:4 imports export.savedmodel",
        "serving/thing.py:4 imports export.savedmodel.export_run",
        "serving/thing.py:5 imports tfrs_model.training",
        "serving/thing.py:5 imports tfrs_model.training.train",
    ]


def test_library_packages_hold_no_benchmark_or_cli_modules():
    for package in ("tfrs_model", "export", "serving"):
        stems = {path.stem for path in _modules(package)}
        assert not {s for s in stems if "bench" in s or s in {"cli", "demo", "loadtest"}}
