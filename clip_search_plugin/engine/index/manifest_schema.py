"""The schema of an index's ``manifest.json``, and the validator every manifest passes before it is used.

The schema is JSON Schema (draft 2020-12), kept here as data and published as
``docs/index-manifest.schema.json`` for anyone reading indexes with other tools (a test keeps the two equal).
The validator implements the part of JSON Schema this schema uses (type, const, enum, properties,
required, additionalProperties, items, minItems, maxItems, minimum, maximum, exclusiveMinimum,
exclusiveMaximum, pattern, anyOf), so the engine needs no extra package to check a manifest.
"""

from __future__ import annotations

import re
from typing import Any

Schema = dict[str, Any]

_NUMBER: Schema = {"type": "number"}
_BOX: Schema = {"type": "array", "items": _NUMBER, "minItems": 4, "maxItems": 4}
_GEOMETRY: Schema = {"type": "object", "required": ["type", "coordinates"],
                     "properties": {"type": {"enum": ["Polygon", "MultiPolygon"]}, "coordinates": {"type": "array"}}}
_FILE: Schema = {
    "type": "object",
    "required": ["size", "sha256"],
    "properties": {
        "size": {"type": "integer", "minimum": 0},
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
        # a compact index's big files: SHA-256 of spread pieces, checked on open instead of the whole file's
        "sample_sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    },
}

# Where the pixels came from when not a plain local file: a web layer, a remote file, a folder or VRT of sheets.
# "name" never holds credentials; "files" are the sheets of a collection with their pixel windows in the mosaic.
_SOURCE: Schema = {
    "type": "object",
    "required": ["kind", "name"],
    "properties": {
        "kind": {"enum": ["file", "folder", "remote", "xyz", "wms", "wmts", "gdal-web"]},
        "name": {"type": "string", "minLength": 1},
        "title": {"type": "string"},
        "crs": {"type": "string"},
        "extent": _BOX,
        "resolution": {"type": "number", "exclusiveMinimum": 0},
        "native_resolution": {"anyOf": [{"type": "null"}, {"type": "number", "exclusiveMinimum": 0}]},
        "zoom": {"anyOf": [{"type": "null"}, {"type": "integer", "minimum": 0}]},
        "requests": {"type": "integer", "minimum": 0},
        "files": {"type": "array", "items": {"type": "array", "minItems": 5, "maxItems": 5}},
    },
}

SCHEMA: Schema = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "CLIP Search index manifest",
    "type": "object",
    "required": ["format_version", "raster", "model", "dim", "tiling", "base_tile_px", "tile_count", "files",
                 "created"],
    "properties": {
        "format_version": {"const": 1},
        "raster": {
            "type": "object",
            "required": ["path", "width", "height", "count", "dtype", "crs_wkt", "is_geographic",
                         "linear_units_factor", "transform", "georeferenced", "bands", "fingerprint"],
            "properties": {
                "path": {"type": "string"},
                "width": {"type": "integer", "minimum": 1},
                "height": {"type": "integer", "minimum": 1},
                "count": {"type": "integer", "minimum": 1},
                "dtype": {"type": "string"},
                "crs_wkt": {"type": "string"},
                "is_geographic": {"type": "boolean"},
                "linear_units_factor": {"type": "number", "exclusiveMinimum": 0},
                "transform": {"type": "array", "items": _NUMBER, "minItems": 6, "maxItems": 6},
                "georeferenced": {"type": "boolean"},
                "bands": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 3, "maxItems": 3},
                "stretch": {"anyOf": [
                    {"type": "null"},
                    {"type": "array", "items": {"type": "array", "items": _NUMBER, "minItems": 2, "maxItems": 2}},
                ]},
                "fingerprint": {"type": "string", "pattern": "^[0-9a-f]{8,64}$"},
                "source": _SOURCE,
            },
        },
        "model": {
            "type": "object",
            "required": ["arch", "weights", "random_weights"],
            "properties": {
                "arch": {"type": "string", "minLength": 1},
                "weights": {"type": "string"},
                "random_weights": {"type": "boolean"},
                "quick_gelu": {"type": "boolean"},
            },
        },
        "model_label": {"type": "string"},
        "model_spec": {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}, "pretrained": {"type": ["string", "null"]}},
        },
        "dim": {"type": "integer", "minimum": 1, "maximum": 65536},
        "input_size": {"type": "integer", "minimum": 1},
        "tiling": {
            "type": "object",
            "required": ["tile_size", "tile_units", "overlap", "scales", "max_empty_fraction"],
            "properties": {
                "tile_size": {"type": "number", "exclusiveMinimum": 0},
                "tile_units": {"enum": ["px", "m"]},
                "overlap": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                "scales": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1},
                "max_empty_fraction": {"type": "number", "minimum": 0, "maximum": 1},
                "bands": {"anyOf": [
                    {"type": "null"},
                    {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1, "maxItems": 3},
                ]},
                "area": {"anyOf": [{"type": "null"}, _BOX, {"type": "array", "items": _GEOMETRY}]},
                "resolution": {"anyOf": [{"type": "null"}, {"type": "number", "exclusiveMinimum": 0}]},
            },
        },
        "base_tile_px": {"type": "integer", "minimum": 1},
        "tile_count": {"type": "integer", "minimum": 0},
        "grid_count": {"type": "integer", "minimum": 0},
        "search": {
            "type": "object",
            "required": ["kind"],
            "properties": {
                "kind": {"enum": ["exact", "ivf", "compact"]},
                "nlist": {"type": "integer", "minimum": 1},
                "nprobe": {"type": "integer", "minimum": 1},
                # compact (IVF-PQ + float16 re-scoring): code bytes, bits a code, candidates re-scored, threshold
                "m": {"type": "integer", "minimum": 1},
                "nbits": {"type": "integer", "minimum": 1, "maximum": 16},
                "candidates": {"type": "integer", "minimum": 1},
                "compact_from": {"type": "integer", "minimum": 1},
                "recall_at": {"type": "integer", "minimum": 1},
                "recall_text": {"type": "number", "minimum": 0, "maximum": 1},
                "recall_image": {"type": "number", "minimum": 0, "maximum": 1},
            },
        },
        # What embedded the tiles: the model itself ("torch") or a backend verified against it on this raster.
        "backend": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"enum": ["torch", "onnx", "onnx-int8", "openvino"]},
                "requested": {"enum": ["auto", "torch", "onnx", "onnx-int8", "openvino"]},
                "agreement": {
                    "type": "object",
                    "required": ["tiles", "min_cosine", "queries", "same_top"],
                    "properties": {
                        "tiles": {"type": "integer", "minimum": 0},
                        "min_cosine": {"type": "number", "minimum": -1, "maximum": 1.001},
                        "queries": {"type": "integer", "minimum": 0},
                        "same_top": {"type": "boolean"},
                    },
                },
                "tiles_per_second": {"type": "object"},
                "note": {"type": "string"},
            },
        },
        "files": {
            "type": "object",
            "required": ["vectors.faiss", "tiles.npy"],
            "additionalProperties": False,
            "properties": {"vectors.faiss": _FILE, "tiles.npy": _FILE, "neighbours.npy": _FILE,
                           "vectors16.npy": _FILE},
        },
        "created": {"type": "string", "minLength": 1},
    },
}

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "null": (type(None),),
    "integer": (int,),
    "number": (int, float),
}


def _is(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False  # JSON's true is not a number
    return isinstance(value, _TYPES[kind])


def problems(value: Any, schema: Schema, where: str = "manifest") -> list[str]:
    """Every way ``value`` breaks ``schema``, each as "<where>: <what>" (empty when it is valid)."""
    found: list[str] = []
    kinds = schema.get("type")
    if kinds is not None:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        if not any(_is(value, k) for k in kinds):
            return [f"{where} must be {' or '.join(kinds)}, not {type(value).__name__}"]
    if "const" in schema and (value != schema["const"] or type(value) is not type(schema["const"])):
        found.append(f"{where} must be {schema['const']!r}, not {value!r}")
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{where} must be one of {schema['enum']}, not {value!r}")
    if "anyOf" in schema and all(problems(value, option, where) for option in schema["anyOf"]):
        found.append(f"{where} has an unexpected form")
    if isinstance(value, int | float) and not isinstance(value, bool):
        for key, ok in (("minimum", value >= schema.get("minimum", value)),
                        ("maximum", value <= schema.get("maximum", value)),
                        ("exclusiveMinimum", "exclusiveMinimum" not in schema or value > schema["exclusiveMinimum"]),
                        ("exclusiveMaximum", "exclusiveMaximum" not in schema or value < schema["exclusiveMaximum"])):
            if not ok:
                found.append(f"{where} = {value!r} is out of range ({key} {schema[key]})")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            found.append(f"{where} must not be empty")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            found.append(f"{where} = {value[:80]!r} is not of the expected form")
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            found.append(f"{where} has {len(value)} items")
        if "items" in schema:
            for i, item in enumerate(value):
                found.extend(problems(item, schema["items"], f"{where}[{i}]"))
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        found.extend(f"{where}.{key} is missing" for key in schema.get("required", []) if key not in value)
        if schema.get("additionalProperties", True) is False:
            found.extend(f"{where}.{key} is not expected" for key in value if key not in properties)
        for key, sub in properties.items():
            if key in value:
                found.extend(problems(value[key], sub, f"{where}.{key}"))
    return found
