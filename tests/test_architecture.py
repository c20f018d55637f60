"""The layout of the package: which module may import which, and no reaching into privates.

The layers below are the package's architecture (docs/architecture.md draws them): a
module imports only from layers below its own (imports made only for type checking,
under ``if TYPE_CHECKING:``, are exempt), and no module uses another module's
private names (``_name``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "pqlkit"

LAYERS: list[set[str]] = [
    {"exceptions", "_clock", "_convert", "_process", "_retry", "_version", "_shutdown"},
    {"_events"},
    {"_validation", "_dsl", "stores", "_observe", "sinks"},
    {"_model", "_dispatch"},
    {"_engine", "_settings", "_loading"},
    {"_session"},
    {"_traits", "_ranking", "_suppression"},
    {"_firing", "_replay"},
    {"_rebuild", "_retention"},
    {"_core"},
    {"_client"},
    {"_lab"},
    {"_async", "_default", "cli"},
    {"testing", "integrations"},
    {"__init__", "_pytest_plugin"},
]
"""From the bottom up: each set may import the sets before it."""

SUBPACKAGE_LAYERS = {
    "_engine": ["state", "accumulators", "evaluate", "plan", "explain", "__init__"],
    "stores": ["_base", "_rows", "memory", "sqlite", "postgres", "_url", "__init__"],
    "integrations": ["__init__", "web", "flask", "fastapi", "django"],
    "_lab": [
        "stats",
        "simulation",
        "source",
        "outcome",
        "replay",
        "table",
        "page",
        "report",
        "backtesting",
        "calibration",
        "holdout",
        "__init__",
    ],
}
"""Inside a subpackage: each module may import the ones before it. A package inside a
subpackage (``integrations/django/``) counts as one module there; its own modules may
import each other."""


def _layer(name: str) -> int:
    for i, layer in enumerate(LAYERS):
        if name in layer:
            return i
    raise AssertionError(f"{name} is in no layer: add it to LAYERS (and to the docs)")


def _modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def _unit(path: Path) -> tuple[str, str | None]:
    """(top-level unit: a module or a subpackage, module or package inside the subpackage)."""
    rel = path.relative_to(SRC)
    if len(rel.parts) == 1:
        return rel.stem, None
    if len(rel.parts) == 2:
        return rel.parts[0], rel.stem
    return rel.parts[0], rel.parts[1]


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in ast.walk(node):
                if hasattr(child, "lineno"):
                    lines.add(child.lineno)
    return lines


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, the module imported relative to the package, the names taken) of each
    module-level or function-level relative import outside ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_lines(tree)
    package = list(path.relative_to(SRC).parts[:-1])  # where the module is, inside pqlkit
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or not node.level or node.lineno in skipped:
            continue
        names = [a.name for a in node.names]
        base = package[: len(package) - (node.level - 1)]
        if node.module:
            out.append((node.lineno, ".".join([*base, node.module]), names))
        else:  # from . import x: x is a module, or a name of the package's __init__
            for name in names:
                where = SRC.joinpath(*base, name)
                if where.is_dir() or where.with_suffix(".py").exists():
                    out.append((node.lineno, ".".join([*base, name]), []))
                else:
                    out.append((node.lineno, ".".join([*base, "__init__"]), [name]))
    return out


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_a_module_imports_only_from_below(path: Path) -> None:
    """Every import of the package's own modules goes down the layers."""
    unit, inner = _unit(path)
    for line, target, _ in _imports(path):
        top, _, rest = target.partition(".")
        if top == unit and inner is not None:  # within its subpackage
            first = rest.partition(".")[0] or "__init__"
            if first == inner and len(path.relative_to(SRC).parts) > 2:
                continue  # inside a package of the subpackage: free
            order = SUBPACKAGE_LAYERS[unit]
            assert order.index(first) < order.index(inner), (
                f"{path.name}:{line} imports {target}, not below it in {unit}"
            )
            continue
        assert _layer(top) < _layer(unit), f"{unit}:{line} imports {target}, not below it"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_no_module_uses_another_modules_private_names(path: Path) -> None:
    """No ``from .x import _name`` and no ``x._name`` on another module of the package."""
    tree = ast.parse(path.read_text())
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            for alias in node.names:
                private = alias.name.startswith("_") and not alias.name.startswith("__")
                is_module = node.module is None  # from . import _process
                assert not private or is_module, (
                    f"{path.name}:{node.lineno} imports the private name {alias.name}"
                )
                if is_module:
                    modules.add(alias.asname or alias.name)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            raise AssertionError(
                f"{path.name}:{node.lineno} uses {node.value.id}.{node.attr}, a private name"
            )
