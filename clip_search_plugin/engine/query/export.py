"""Writing search results: GeoJSON text, or any vector format GDAL writes (GeoPackage, Shapefile...)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

DRIVERS = {".gpkg": "GPKG", ".geojson": "GeoJSON", ".json": "GeoJSON", ".shp": "ESRI Shapefile"}
FORMATS = {"gpkg": "GPKG", "geojson": "GeoJSON", "shp": "ESRI Shapefile"}


FIELDS = ("rank", "score", "relative", "query", "tile_count", "area", "area_units", "random_weights")


def region_properties(region: dict[str, Any], query: str, random_weights: bool) -> dict[str, Any]:
    """Attributes of one region (a dict as in ``Region.to_dict``), in :data:`FIELDS` order."""
    return {
        "rank": int(region["rank"]),
        "score": round(float(region["score"]), 6),
        "relative": round(float(region["relative"]), 4) if region.get("relative") is not None else float("nan"),
        "query": query,
        "tile_count": int(region["tile_count"]),
        "area": round(float(region["area"]), 3),
        "area_units": str(region["area_units"]),
        "random_weights": int(random_weights),
    } | ({"file": str(region["file"])} if region.get("file") else {})


def to_feature_collection(
    regions: list[dict[str, Any]], query: str, crs_wkt: str, random_weights: bool
) -> dict[str, Any]:
    """A GeoJSON FeatureCollection of the regions, coordinates in the raster's CRS."""
    return {
        "type": "FeatureCollection",
        "crs_wkt": crs_wkt,
        "features": [
            {
                "type": "Feature",
                "id": r["rank"],
                "geometry": r["geometry"],
                "properties": region_properties(r, query, random_weights),
            }
            for r in regions
        ],
    }


def write_regions(
    path: str | Path,
    regions: list[dict[str, Any]],
    query: str,
    crs_wkt: str,
    random_weights: bool,
    fmt: str | None = None,
) -> Path:
    """Write regions as a polygon layer named 'clip_search_results' (format from ``fmt`` or extension)."""
    import pyogrio.raw
    import shapely
    from shapely.geometry import shape

    path = Path(path)
    driver = FORMATS.get(fmt or "") or DRIVERS.get(path.suffix.lower())
    if driver is None:
        raise InputError(f"Cannot tell the output format of {path}; use .gpkg, .geojson or .shp, or --format.")
    geoms = [shape(r["geometry"]) for r in regions]
    multi = any(g.geom_type == "MultiPolygon" for g in geoms)
    if multi:
        geoms = [g if g.geom_type == "MultiPolygon" else shapely.MultiPolygon([g]) for g in geoms]
    props = [region_properties(r, query, random_weights) for r in regions]
    names = list(FIELDS) + (["file"] if any("file" in p for p in props) else [])  # a collection: the sheet
    field_data = [
        np.array([p.get(n, "") for p in props], dtype=object if n in ("query", "area_units", "file") else None)
        for n in names
    ]
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    if tmp.exists():
        os.remove(tmp)
    pyogrio.raw.write(
        str(tmp),
        geometry=np.array([shapely.to_wkb(g) for g in geoms], dtype=object),
        field_data=field_data,
        fields=names,
        crs=crs_wkt or None,
        driver=driver,
        geometry_type="MultiPolygon" if multi else "Polygon",
        layer="clip_search_results",
    )
    for sidecar in _sidecars(tmp):
        os.replace(sidecar, path.with_suffix(sidecar.suffix))
    os.replace(tmp, path)
    return path


def _sidecars(main: Path) -> list[Path]:
    """Extra files a format writes beside the main one (Shapefile's .shx, .dbf, .prj, .cpg)."""
    stem = main.name[: -len(main.suffix)]
    return [p for p in main.parent.glob(stem + ".*") if p != main]
