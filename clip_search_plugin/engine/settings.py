"""Settings of an index build, as plain frozen dataclasses that round-trip through JSON."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from .embedding.presets import DEFAULT_PRESET
from .errors import InputError

# An area is either a bounding box (xmin, ymin, xmax, ymax) in the raster's CRS or a list of GeoJSON
# geometry dicts (Polygon / MultiPolygon) in the raster's CRS.
Area = tuple[float, float, float, float] | list[dict[str, Any]]


def area_bounds(area: Area | None) -> tuple[float, float, float, float] | None:
    """The bounds of an area (a box, or GeoJSON polygons) in its CRS."""
    if area is None:
        return None
    if isinstance(area, tuple):
        return area
    xs: list[float] = []
    ys: list[float] = []

    def walk(value: Any) -> None:
        if value and isinstance(value[0], int | float):
            xs.append(float(value[0]))
            ys.append(float(value[1]))
        else:
            for item in value:
                walk(item)

    for geometry in area:
        walk(geometry.get("coordinates", []))
    if not xs:
        raise InputError("The area has no coordinates; draw or select it again.")
    return (min(xs), min(ys), max(xs), max(ys))


@dataclass(frozen=True)
class TilingSettings:
    """How a raster is cut into tiles.

    ``tile_size`` is in pixels when ``tile_units`` is ``"px"`` and in metres on the ground when it is
    ``"m"``. ``overlap`` is the fraction shared by neighbouring tiles. ``scales`` are multiples of the
    base tile; every tile is resampled to the model's input size. Tiles with more than
    ``max_empty_fraction`` of nodata / transparent pixels are skipped; wholly empty tiles always are.
    ``bands`` are 1-based band numbers to use as red, green, blue (``None``: chosen from the raster).
    ``resolution`` is the size of a pixel to read at, in the CRS's units (``None``: the source's own; a web
    layer's finest zoom). A web layer is read over the bounds of ``area``, which it needs.
    """

    tile_size: float = 224.0
    tile_units: str = "px"
    overlap: float = 0.5
    scales: tuple[float, ...] = (1.0,)
    max_empty_fraction: float = 0.8
    bands: tuple[int, ...] | None = None
    area: Area | None = None
    resolution: float | None = None

    def __post_init__(self) -> None:
        for name in ("tile_size", "overlap", "max_empty_fraction"):  # 32 and 32.0 are one setting (one cache key)
            if isinstance(getattr(self, name), int) and not isinstance(getattr(self, name), bool):
                object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "scales", tuple(float(s) if isinstance(s, int) else s for s in self.scales))
        if self.tile_units not in ("px", "m"):
            raise InputError(f"Tile units must be 'px' or 'm'; got {self.tile_units!r}.")
        if not self.tile_size > 0:
            raise InputError(f"Tile size must be positive; got {self.tile_size}.")
        if not 0.0 <= self.overlap < 1.0:
            raise InputError(f"Overlap must be at least 0 and below 1; got {self.overlap}.")
        if not self.scales or any(not s > 0 for s in self.scales):
            raise InputError(f"Scales must be positive numbers, e.g. 1 2 4; got {list(self.scales)}.")
        if not 0.0 <= self.max_empty_fraction <= 1.0:
            raise InputError(f"Maximum empty fraction must be between 0 and 1; got {self.max_empty_fraction}.")
        if self.bands is not None and (len(self.bands) not in (1, 3) or any(b < 1 for b in self.bands)):
            raise InputError(f"Give 1 or 3 band numbers (1-based); got {list(self.bands)}.")
        if self.resolution is not None:
            if isinstance(self.resolution, bool) or not isinstance(self.resolution, int | float) \
                    or not 0 < self.resolution < float("inf"):
                raise InputError(f"The resolution is the size of a pixel in the CRS's units, a positive number; "
                                 f"got {self.resolution!r}.")
            object.__setattr__(self, "resolution", float(self.resolution))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["scales"] = list(self.scales)
        data["bands"] = list(self.bands) if self.bands is not None else None
        data["area"] = list(self.area) if isinstance(self.area, tuple) else self.area
        if self.resolution is None:  # left out, so the settings of every earlier index keep their key
            del data["resolution"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TilingSettings:
        area = data.get("area")
        if isinstance(area, list) and len(area) == 4 and all(isinstance(v, int | float) for v in area):
            area = tuple(float(v) for v in area)
        bands = data.get("bands")
        return cls(
            tile_size=float(data.get("tile_size", 224.0)),
            tile_units=str(data.get("tile_units", "px")),
            overlap=float(data.get("overlap", 0.5)),
            scales=tuple(float(s) for s in data.get("scales", (1.0,))),
            max_empty_fraction=float(data.get("max_empty_fraction", 0.8)),
            bands=tuple(int(b) for b in bands) if bands is not None else None,
            area=area,
            resolution=data.get("resolution"),
        )

    def key(self) -> str:
        """A short stable hash of these settings, part of the cache folder's name."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class ModelSpec:
    """Which model to use: a preset name, or an open_clip architecture with ``pretrained``.

    ``pretrained`` is an open_clip weights tag, a path to a local checkpoint file, ``"none"`` for
    random weights (tests only; labelled as such everywhere), or ``None`` for the preset's default.
    A name starting with ``hf-hub:`` loads that Hugging Face Hub model.
    """

    name: str = DEFAULT_PRESET  # the registry's default, the same as the dock's and the command line's
    pretrained: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class IndexSettings:
    """Everything ``build_index`` needs besides the raster."""

    tiling: TilingSettings = field(default_factory=TilingSettings)
    model: ModelSpec = field(default_factory=ModelSpec)
    device: str = "auto"
    batch_size: int = 0  # 0: chosen from the device
    backend: str = "auto"  # how images are embedded: see embedding.backends
