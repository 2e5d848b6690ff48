"""`make run`'s script keeps the engine Python a user chose in its QGIS profile: its settings step
(`scripts/prepare_profile.py`) run on real QGIS3.ini files, and the real `scripts/run_qgis.sh` stopping
before QGIS starts (CLIP_SEARCH_PREPARE_ONLY=1)."""

from __future__ import annotations

import configparser
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ENGINE_PYTHON, REPO

# a profile's settings as QGIS 3.22 writes them, after the user chose an engine and a model in Settings
USER_INI = """[General]
showTips322=false

[PythonPlugins]
clip_search_plugin=true

[clip_search]
engine_python={engine}
model=ViT-L-14
pretrained=openai
tile_size=448

[qgis]
checkVersion=false
digitizing\\default_snap_type=1
"""


def user_engine(tmp_path: Path) -> Path:
    """An engine Python the user chose: a real interpreter in a folder of its own."""
    python = tmp_path / "my-engine" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.symlink_to(sys.executable)
    return python


def read_ini(path: Path) -> configparser.RawConfigParser:
    config = configparser.RawConfigParser(interpolation=None, delimiters=("=",))
    config.optionxform = str  # type: ignore[assignment,method-assign]
    config.read(path)
    return config


def prepare(ini: Path, *args: str) -> str:
    done = subprocess.run(["python3", str(REPO / "scripts" / "prepare_profile.py"), str(ini), *args],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def test_the_profile_keeps_the_users_engine_python_and_model(tmp_path: Path) -> None:
    mine = user_engine(tmp_path)
    ini = tmp_path / "QGIS3.ini"
    ini.write_text(USER_INI.format(engine=mine))
    said = prepare(ini, str(ENGINE_PYTHON))
    assert said == f"engine Python: {mine} (the profile's own choice, kept)"
    config = read_ini(ini)
    assert dict(config["clip_search"]) == {"engine_python": str(mine), "model": "ViT-L-14", "pretrained": "openai",
                                           "tile_size": "448"}
    assert config["qgis"]["digitizing\\default_snap_type"] == "1" and config["General"]["showTips322"] == "false"
    assert config["PythonPlugins"]["clip_search_plugin"] == "true" and config["qgis"]["allowVersionCheck"] == "false"
    # a model preset is written only when given, and still leaves the engine alone
    prepare(ini, str(ENGINE_PYTHON), "tiny-random", "")
    assert dict(read_ini(ini)["clip_search"]) == {"engine_python": str(mine), "model": "tiny-random",
                                                  "pretrained": "", "tile_size": "448"}


def test_a_missing_or_vanished_engine_python_is_set(tmp_path: Path) -> None:
    ini = tmp_path / "QGIS3.ini"
    assert prepare(ini, "/opt/engine/bin/python") == "engine Python: /opt/engine/bin/python"  # a new profile
    assert read_ini(ini)["clip_search"]["engine_python"] == "/opt/engine/bin/python"
    assert "model" not in read_ini(ini)["clip_search"]
    gone = tmp_path / "deleted-engine" / "bin" / "python"
    ini.write_text(USER_INI.format(engine=gone))
    assert prepare(ini, str(ENGINE_PYTHON)) == f"engine Python: {ENGINE_PYTHON} (the profile's {gone} no longer exists)"
    assert read_ini(ini)["clip_search"]["engine_python"] == str(ENGINE_PYTHON)
    assert read_ini(ini)["clip_search"]["model"] == "ViT-L-14"
    # QSettings quotes and escapes some paths; they are read back as QGIS reads them
    quoted = user_engine(tmp_path / "ä, b")
    ini.write_text(USER_INI.format(engine='"' + str(quoted).replace("ä", "\\xe4") + '"'))
    assert prepare(ini, str(ENGINE_PYTHON)).endswith("(the profile's own choice, kept)")


def test_make_runs_script_keeps_the_engine_python_chosen_in_the_profile(tmp_path: Path) -> None:
    if not ENGINE_PYTHON.exists():
        pytest.skip(f"engine environment not found at {ENGINE_PYTHON}; run `make env`")
    mine = user_engine(tmp_path)
    profile = tmp_path / "profiles" / "profiles" / "clip-search"
    ini = profile / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True)
    ini.write_text(USER_INI.format(engine=mine))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIP_SEARCH_")}
    env.update(CLIP_SEARCH_PROFILES=str(tmp_path / "profiles"), CLIP_SEARCH_PREPARE_ONLY="1", CLIP_SEARCH_QUIT="1")
    proc = subprocess.Popen([str(REPO / "scripts" / "run_qgis.sh"), str(ENGINE_PYTHON), str(tmp_path / "any.tif")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # it started QGIS after all
        output, _ = proc.communicate()
    assert read_ini(ini)["clip_search"]["engine_python"] == str(mine), output
    assert proc.returncode == 0 and "QGIS not started" in output, output
    assert f"engine Python: {mine} (the profile's own choice, kept)" in output
    assert (profile / "python" / "plugins" / "clip_search_plugin" / "metadata.txt").is_file()
    assert read_ini(ini)["PythonPlugins"]["clip_search_plugin"] == "true"
