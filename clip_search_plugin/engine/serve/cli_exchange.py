"""Command line: ``export`` (an index's tiles and vectors as GeoParquet) and ``import`` (an index from one).

Kept beside :mod:`.cli` so the exchange commands need no engine process and load no model: they read and
write files only. ``pyarrow`` is imported when one of them runs, not for every command.
"""

from __future__ import annotations

import argparse
from typing import TypeAlias

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
FORMATS = ("geoparquet",)


def add_commands(sub: Commands) -> None:
    """Add ``export`` and ``import`` to the command line's subcommands."""
    ex = sub.add_parser("export", help="write an index's tiles, footprints and vectors as GeoParquet",
                        description="One row per tile: id, footprint polygon (raster CRS), scale, pixel window and "
                        "vector; the model, tiling and raster in the file's metadata, so that `import` can make a "
                        "searchable index from it. DuckDB and GeoPandas (and GDAL with its Parquet driver) read it as "
                        "it is.")
    ex.add_argument("index", help="index folder")
    ex.add_argument("--format", choices=FORMATS, default="geoparquet", help="file format (default geoparquet)")
    ex.add_argument("-o", "--output", required=True, metavar="FILE.parquet",
                    help="the file to write (an existing Parquet file there is replaced)")
    im = sub.add_parser("import", help="make a searchable index from a GeoParquet file written by export")
    im.add_argument("file", metavar="FILE.parquet")
    im.add_argument("-o", "--output", required=True, metavar="INDEX",
                    help="index folder to write (new, empty, or an index to replace)")


def run_command(a: argparse.Namespace) -> int | None:
    """Run ``export`` or ``import``; None when the command is another one."""
    if a.command == "export":
        from ..index.geoparquet import export_geoparquet

        written = export_geoparquet(a.index, a.output)
        print(f"wrote {written.rows} tiles ({written.dim} values each) to {written.path}")
        return 0
    if a.command == "import":
        from ..index.geoparquet_import import import_geoparquet

        made = import_geoparquet(a.file, a.output)
        print(f"imported {made.tiles} tiles of {made.model} ({made.search} search)\nindex: {made.path}")
        return 0
    return None
