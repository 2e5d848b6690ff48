"""Write the QGIS settings `make run` needs into a profile's QGIS3.ini, keeping the user's own choices.

    python3 scripts/prepare_profile.py INI ENGINE_PYTHON [MODEL [PRETRAINED]]

Enables the plugin (QGIS 3.22 has no `plugins enable`), turns off QGIS's start-up tips and version check,
sets CLIP Search's engine Python only when the profile has none or the one it names no longer exists (an
engine chosen in QGIS, or made by Set up engine, stays), and presets the model only when one is given.
Says in one line which engine Python the profile uses. Standard library only (it runs with the system's
python3, before QGIS starts).
"""

from __future__ import annotations

import configparser
import os
import re
import sys

FIXED = {
    "PythonPlugins": {"clip_search_plugin": "true"},
    "qgis": {"checkVersion": "false", "showTips322": "false", "allowVersionCheck": "false"},
    "migration": {"fileVersion": "2", "settings": "true"},
}


def qsettings_text(value: str) -> str:
    """A string as QSettings wrote it into an ini file, read back: quotes removed, \\xHHHH and \\\\ escapes
    undone (QSettings escapes characters outside ASCII that way)."""
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1]
    return re.sub(r"\\x([0-9a-fA-F]{1,4})|\\(.)", lambda m: chr(int(m[1], 16)) if m[1] else m[2], value)


def usable(python: str) -> bool:
    return bool(python) and os.path.isfile(python) and os.access(python, os.X_OK)


def prepare(ini: str, engine_python: str, model: str = "", pretrained: str = "") -> str:
    """Update ``ini`` in place; return what it says about the engine Python."""
    config = configparser.RawConfigParser(interpolation=None, delimiters=("=",))
    config.optionxform = str  # type: ignore[assignment,method-assign]  # QGIS's keys are case-sensitive
    config.read(ini, encoding="utf-8")
    values = {section: dict(keys) for section, keys in FIXED.items()}
    stored = qsettings_text(config.get("clip_search", "engine_python", fallback=""))
    if usable(stored):
        said = f"engine Python: {stored} (the profile's own choice, kept)"
    else:
        values["clip_search"] = {"engine_python": engine_python}
        said = f"engine Python: {engine_python}" + (f" (the profile's {stored} no longer exists)" if stored else "")
    if model:
        values.setdefault("clip_search", {}).update(model=model, pretrained=pretrained)
    for section, keys in values.items():
        if not config.has_section(section):
            config.add_section(section)
        for key, value in keys.items():
            config.set(section, key, value)
    with open(ini, "w", encoding="utf-8") as f:
        config.write(f, space_around_delimiters=False)
    return said


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3, 4):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    print(prepare(*argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
