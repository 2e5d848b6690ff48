"""The engine imports no qgis / PyQt: checked in the import graph of a fresh process and in the source."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

from .conftest import REPO

ENGINE = REPO / "clip_search_plugin" / "engine"
FORBIDDEN = ("qgis", "PyQt5", "PyQt6", "PySide2", "PySide6", "sip")


def test_no_engine_module_imports_qgis_or_qt_in_its_source() -> None:
    offenders = []
    for path in sorted(ENGINE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in FORBIDDEN]
    assert offenders == []
    assert len(list(ENGINE.rglob("*.py"))) >= 10


def test_importing_every_engine_module_loads_no_qgis_or_qt() -> None:
    modules = [f"clip_search_plugin.engine.{p.stem}" for p in ENGINE.glob("*.py") if p.stem != "__main__"]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(len(sys.modules)); assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
