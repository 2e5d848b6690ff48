"""Build the plugin zip for the QGIS plugins site: dist/clip_search_plugin.zip.

    python scripts/package_plugin.py [--output dist/clip_search_plugin.zip]

The zip holds one folder, clip_search_plugin/, made the same way as a deployed plugin (the top-level
metadata.txt and LICENSE placed inside) plus requirements-engine.txt, so a user can create the engine
environment from the zip alone. Caches, compiled files and anything the site refuses are left out.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from deploy_plugin import PACKAGE, REPO, deploy

LEFT_OUT_SUFFIXES = (".pyc", ".pyo", ".sh", ".so", ".dll", ".exe", ".dylib")
LEFT_OUT_NAMES = ("__pycache__", ".git", "__MACOSX", ".mypy_cache", ".pytest_cache", ".ruff_cache", ".DS_Store")
FIXED_TIME = (2026, 1, 1, 0, 0, 0)  # the same input gives the same zip


def wanted(path: Path) -> bool:
    return not any(part in LEFT_OUT_NAMES for part in path.parts) and not path.name.endswith(LEFT_OUT_SUFFIXES)


def build(output: Path) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        folder = deploy(Path(tmp))
        # for creating the engine by hand (Set up engine does it from the files in requirements/)
        (folder / "requirements-engine.txt").write_bytes((folder / "requirements" / "linux.txt").read_bytes())
        output.parent.mkdir(parents=True, exist_ok=True)
        partial = output.with_name(output.name + ".partial")
        with zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for path in sorted(folder.rglob("*")):
                relative = path.relative_to(folder.parent)
                if path.is_file() and wanted(relative):
                    info = zipfile.ZipInfo(relative.as_posix(), FIXED_TIME)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.external_attr = 0o644 << 16
                    archive.writestr(info, path.read_bytes())
        partial.replace(output)  # never a half-written zip under the real name
    return output


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--output", type=Path, default=REPO / "dist" / f"{PACKAGE}.zip")
    args = parser.parse_args(argv)
    path = build(args.output)
    with zipfile.ZipFile(path) as archive:
        count = len(archive.namelist())
    print(f"{path}: {count} files, {path.stat().st_size / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
