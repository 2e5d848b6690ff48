"""The shape of the code, read from its syntax trees: sizes a newcomer can read, and the rules of the layout.

- no module of the package over 400 lines, no function over 50;
- the dock's widgets are touched only in ``ui/`` (everything else calls the dock's methods);
- an engine process is started only by the one engine session (``session/session.py``).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from .conftest import REPO

PACKAGE = REPO / "clip_search_plugin"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50
WIDGET = re.compile(r".*(Combo|Button|Check|Edit|Spin|Table|Label|Widget|Box|Bar|Slider)$")


def _modules() -> list[tuple[Path, ast.Module]]:
    found = [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(PACKAGE.rglob("*.py"))]
    assert len(found) > 60  # the walk sees the package
    return found


def test_no_module_over_400_lines_and_no_function_over_50() -> None:
    too_long = []
    for path, tree in _modules():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(REPO)}: {lines} lines")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {length} lines")
    assert too_long == []


def test_only_the_user_interface_touches_the_docks_widgets() -> None:
    touching = []
    for path, tree in _modules():
        if path.relative_to(PACKAGE).parts[0] == "ui":
            continue
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and WIDGET.match(node.attr)
                    and isinstance(node.value, ast.Attribute) and node.value.attr == "dock"):
                touching.append(f"{path.relative_to(REPO)}:{node.lineno} dock.{node.attr}")
    assert touching == []


def test_an_engine_process_is_started_only_by_the_engine_session() -> None:
    starters = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "EngineClient":
                starters.append(path.relative_to(PACKAGE).as_posix())
    assert starters == ["session/session.py"]
