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
    modules = [
        ".".join(("clip_search_plugin", "engine", *p.relative_to(ENGINE).with_suffix("").parts))
        for p in ENGINE.rglob("*.py")
        if p.stem not in ("__main__", "__init__")
    ]
    assert len(modules) >= 30
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(len(sys.modules)); assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def _keyword(call: ast.Call, name: str) -> object:
    """The constant given for keyword ``name`` in ``call`` (``...`` when absent or not a constant)."""
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else ...
    return ...


def test_the_security_rules_hold_in_every_source_file() -> None:
    """No shell, no pickle: every subprocess call without shell=True, every numpy load with
    allow_pickle=False, every torch.load with weights_only=True, no pickle / marshal / shelve, no eval or exec."""
    files = sorted([*(REPO / "clip_search_plugin").rglob("*.py"), *(REPO / "scripts").rglob("*.py")])
    offenders, loads = [], 0
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            where = f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                unsafe = ("pickle", "marshal", "shelve", "dill", "cloudpickle")
                offenders += [f"{where} imports {n}" for n in names if n.split(".")[0] in unsafe]
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            if _keyword(node, "shell") not in (..., False):
                offenders.append(f"{where} runs a shell")
            if isinstance(func, ast.Name) and name in ("eval", "exec"):
                offenders.append(f"{where} calls {name}")
            if owner in ("np", "numpy") and name == "load":
                loads += 1
                if _keyword(node, "allow_pickle") is not False:
                    offenders.append(f"{where} loads with numpy without allow_pickle=False")
            if owner == "torch" and name == "load" and _keyword(node, "weights_only") is not True:
                offenders.append(f"{where} calls torch.load without weights_only=True")
    assert offenders == []
    assert loads >= 4  # the scan sees the loads it is about
