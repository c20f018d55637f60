"""Two builds of pqlkit in one process, for comparisons within one run.

``pqlkit`` is whichever build is first on ``sys.path``: ``make bench`` puts the
mypyc-compiled one (``make mypyc``: ``build/mypyc``) there. Beside it, a copy of
pqlkit's sources can be imported under another name (its imports are relative),
so the pure-Python build (or an earlier commit's, see ``bench/ab.py``) runs in the
same process, with its own classes, clients and stores.
"""

from __future__ import annotations

import atexit
import functools
import importlib
import importlib.util
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

import workload

PURE = "pqlkit_pure"


def build_of(package: ModuleType) -> str:
    """``"mypyc"`` when ``package`` runs compiled modules, else ``"pure"``."""
    core = importlib.import_module(f"{package.__name__}._core")
    return "pure" if str(core.__file__).endswith(".py") else "mypyc"


def describe(package: ModuleType) -> str:
    """What the machine notes of a run say about the build measured."""
    where = Path(str(package.__file__)).resolve().parent
    if build_of(package) == "mypyc":
        return f"mypyc-compiled (`make mypyc`), from `{where}`"
    return f"pure Python, from `{where}`"


def export(rev: str | None, name: str, into: Path) -> None:
    """``src/pqlkit`` as the package ``name`` in ``into``: at commit ``rev`` (``git
    archive``), or as the working tree has it (None; compiled modules left out)."""
    target = into / name
    if rev is None:
        shutil.copytree(
            workload.ROOT / "src" / "pqlkit",
            target,
            ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"),
        )
        return
    archive = into / f"{name}.tar"
    with archive.open("wb") as out:
        subprocess.run(
            ["git", "archive", rev, "src/pqlkit"], cwd=workload.ROOT, stdout=out, check=True
        )
    unpacked = into / f"{name}-src"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    shutil.move(str(unpacked / "src" / "pqlkit"), str(target))


def model_for(package: str, tmp: Path) -> Any:
    """``examples/data_tooling.py``'s model, built with ``package``'s DSL."""
    source = (workload.ROOT / "examples" / "data_tooling.py").read_text()
    source = source.replace("import pqlkit\n", f"import {package} as pqlkit\n")
    source = source.replace("from pqlkit", f"from {package}")
    path = tmp / f"data_tooling_{package}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.model


@functools.cache
def pure() -> tuple[ModuleType, Any]:
    """The working tree's sources imported as ``pqlkit_pure`` (pure Python whatever
    ``pqlkit`` is), and the workload's model built with them."""
    tmp = Path(tempfile.mkdtemp(prefix="pqlkit-pure-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    export(None, PURE, tmp)
    sys.path.insert(0, str(tmp))
    return importlib.import_module(PURE), model_for(PURE, tmp)
