"""Copy the plugin into a QGIS plugins folder, with the top-level metadata.txt and LICENSE placed inside.

    python scripts/deploy_plugin.py PLUGINS_DIR

metadata.txt at the repository's top level is the single source; it is copied, never edited, here.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "clip_search_plugin"
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".mypy_cache", ".pytest_cache")


def deploy(plugins_dir: Path) -> Path:
    target = plugins_dir / PACKAGE
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(REPO / PACKAGE, target, ignore=IGNORED)
    shutil.copy2(REPO / "metadata.txt", target / "metadata.txt")
    shutil.copy2(REPO / "LICENSE", target / "LICENSE")
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    print(f"plugin deployed to {deploy(Path(args[0]))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
