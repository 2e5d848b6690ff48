"""Command line: python -m clip_search_plugin.engine {index,search,similar,info,export,import,serve} ...

Exit codes: 0 done; 2 bad input or a known problem (one line on stderr saying what to do); 1 internal
error; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from types import TracebackType
from typing import Any, TypeAlias

from .. import request_values as values
from ..answers import IndexAnswer, SearchAnswer, SurveyAnswer, fewer_text
from ..embedding.backends import CHOICES
from ..embedding.models import DEFAULT_PRESET, PRESETS
from ..errors import ClipSearchError
from ..query.export import to_feature_collection, write_regions
from ..query.templates import read_templates
from ..requests import IndexRequest, InfoRequest, ResultOptions, SearchRequest, SimilarRequest, SurveyRequest
from ..settings import ModelSpec, TilingSettings
from . import cli_exchange
from .service import Service

BOX = ("XMIN", "YMIN", "XMAX", "YMAX")
SOURCES_HELP = """Index a raster, a folder of sheets, a remote file or a web layer.

Examples:
  index ortho.tif
  index sheets/                                   (every GeoTIFF/JP2 sheet in it: one index)
  index /vsicurl/https://example.org/ortho.tif    (a Cloud-Optimised GeoTIFF, read by range requests)
  index "type=xyz&url=https://tiles.example.org/{z}/{x}/{y}.jpg&zmax=19" --bbox 1000 2000 3000 4000
  index "url=https://example.org/wms&layers=ortho&crs=EPSG:25832&format=image/jpeg" --bbox ... --resolution 0.5

A web layer needs --bbox (in its CRS); downloaded tiles are kept in the user's cache, so a resumed or repeated
build downloads nothing again. Credentials: set GDAL_HTTP_USERPWD or GDAL_HTTP_HEADERS in the environment
(never on the command line); proxies: GDAL_HTTP_PROXY or the usual http_proxy / https_proxy variables."""
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m clip_search_plugin.engine",
        description="Index rasters with CLIP and search them in plain language.",
    )
    sub = p.add_subparsers(dest="command", required=True)
    _add_index(sub)
    _add_search(sub)
    _add_similar(sub)
    sub.add_parser("models", help="list the model presets: weights source, licence, published figures")
    inf = sub.add_parser("info", help="describe an index")
    inf.add_argument("index")
    cli_exchange.add_commands(sub)
    sv = sub.add_parser("serve", help="run the JSON-lines engine process on stdin/stdout")
    sv.add_argument("--device", default="auto")
    return p


def _add_index(sub: Commands) -> None:
    ix = sub.add_parser("index", help="index a raster, a folder of sheets, a remote file or a web layer",
                        description=SOURCES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    ix.add_argument("raster", nargs="+", metavar="SOURCE",
                    help="a raster file or VRT, a folder of sheets, /vsicurl/URL, a GDAL WMS/TMS description, or a "
                    "QGIS data source of an XYZ/WMS/WMTS layer; several files: one collection")
    ix.add_argument(
        "--model", default=DEFAULT_PRESET, help=f"preset ({', '.join(PRESETS)}), open_clip architecture, or hf-hub:NAME"
    )
    ix.add_argument("--pretrained", help="weights tag, checkpoint file, or 'none' (random weights, tests only)")
    ix.add_argument("--output", help="index folder (default: the user cache folder)")
    ix.add_argument("--tile-size", type=float, default=224.0, help="base tile size (default 224)")
    ix.add_argument("--tile-units", choices=("px", "m"), default="px", help="tile size in pixels or metres")
    ix.add_argument("--overlap", type=float, default=0.5, help="fraction shared by neighbours (default 0.5)")
    ix.add_argument("--scales", type=float, nargs="+", default=[1.0], help="multiples of the tile, e.g. 1 2 4")
    ix.add_argument("--max-empty", type=float, default=0.8, help="skip tiles emptier than this (default 0.8)")
    ix.add_argument("--bands", type=int, nargs="+", help="1-based bands to use as R G B (or one for grey)")
    ix.add_argument("--bbox", type=float, nargs=4, metavar=BOX,
                    help="index only this area, in the source's CRS (EPSG:3857 for XYZ); needed for a web layer")
    ix.add_argument("--resolution", type=float, metavar="UNITS",
                    help="read at this pixel size, in the source's CRS units (default: its own; XYZ: its top zoom)")
    ix.add_argument("--dry-run", action="store_true",
                    help="say what the build would read (tiles, server requests, download, time) and stop")
    ix.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    ix.add_argument("--backend", default="auto", choices=CHOICES,
                    help="how tiles are embedded: auto (the fastest that gives the model's own vectors here, "
                         "verified on this raster), torch (the model itself), onnx, onnx-int8 or openvino")
    ix.add_argument("--batch-size", type=int, default=0)
    ix.add_argument("--cluster", metavar="local[:N]|tcp://HOST:PORT",
                    help="embed on Dask: local (N worker processes on this computer; default: one per 4 cores, one "
                         "beside a GPU) or the address of a running `dask scheduler`, whose workers must see the "
                         "source and the output folder at the same paths")
    ix.add_argument("--json", action="store_true", help="print the result as JSON")


def _add_search(sub: Commands) -> None:
    sp = sub.add_parser("search", help="search an index with text")
    sp.add_argument("index", help="index folder")
    sp.add_argument("query")
    sp.add_argument("--raw", action="store_true", help="use the query as is, without prompt templates")
    sp.add_argument(
        "--templates-file",
        help="prompt templates to use instead of the aerial set: one per line, each with {} for the query",
    )
    sp.add_argument("--negative", help="push results away from this (same as 'QUERY but not NEGATIVE')")
    sp.add_argument("--relevant", type=int, nargs="+", help="tile ids marked relevant (relevance feedback)")
    sp.add_argument("--irrelevant", type=int, nargs="+", help="tile ids marked not relevant (left out)")
    _add_result_options(sp)


def _add_similar(sub: Commands) -> None:
    sp = sub.add_parser("similar", help="find tiles like an example")
    sp.add_argument("index", help="index folder")
    sp.add_argument("--tile-id", type=int, nargs="+", help="example tile id(s)")
    sp.add_argument("--example-bbox", type=float, nargs=4, metavar=BOX, help="example area in the raster's CRS")
    _add_result_options(sp)


def _add_result_options(sp: argparse.ArgumentParser) -> None:
    """What every search takes: how many results, which count, where, and where they go."""
    sp.add_argument("--top-k", type=int, default=20,
                    help="number of results (places: a best tile and the matching tiles overlapping it; "
                    "one per tile with --no-merge), default 20")
    sp.add_argument("--heatmap", metavar="FILE.tif", help="also write the best score per location as a GeoTIFF")
    sp.add_argument("--threshold", type=float, help="minimum score (cosine similarity)")
    sp.add_argument(
        "--min-relative",
        type=float,
        help="minimum relative score: standard deviations above the index's typical tile for this query",
    )
    sp.add_argument("--bbox", type=float, nargs=4, metavar=BOX, help="search only this area (raster CRS)")
    sp.add_argument("--no-merge", action="store_true", help="one result per tile, no merging")
    sp.add_argument("--no-rerank", action="store_true",
                    help="rank by each tile's own score only, without look-alike re-ranking")
    sp.add_argument("--format", choices=("table", "geojson", "gpkg", "shp", "json"), default=None)
    sp.add_argument("-o", "--output", help="write results to this file (.gpkg, .geojson, .shp)")


class TerminalProgress:
    """A one-line progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.started: float | None = None
        self.first = 0

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled or total <= 0:
            return
        now = time.perf_counter()
        if self.started is None:  # the rate counts from the first report, after the model loaded
            self.started, self.first = now, done
        width = 30
        filled = int(width * done / total)
        elapsed = now - self.started
        rate = f"  {(done - self.first) / elapsed:.1f} tiles/s" if elapsed > 0 else ""
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} tiles{rate}")
        if done >= total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _index_request(a: argparse.Namespace) -> IndexRequest | SurveyRequest:
    tiling = TilingSettings(
        tile_size=a.tile_size,
        tile_units=a.tile_units,
        overlap=a.overlap,
        scales=tuple(a.scales),
        max_empty_fraction=a.max_empty,
        bands=tuple(a.bands) if a.bands else None,
        area=tuple(a.bbox) if a.bbox else None,
        resolution=a.resolution,
    )
    raster = a.raster[0]
    if len(a.raster) > 1:  # several files: one collection, a mosaic VRT of them
        from ..sources.collection import collection_vrt

        raster = str(collection_vrt([os.path.abspath(r) for r in a.raster], "collection")[0])
    if a.dry_run:
        return SurveyRequest(raster=raster, model=ModelSpec(a.model, a.pretrained), tiling=tiling)
    return IndexRequest(raster=raster, model=ModelSpec(a.model, a.pretrained), tiling=tiling, device=a.device,
                        batch_size=a.batch_size, output=a.output, backend=a.backend, cluster=a.cluster)


def _search_request(a: argparse.Namespace) -> SearchRequest | SimilarRequest:
    options = ResultOptions(
        top_k=a.top_k,
        threshold=a.threshold,
        min_relative=a.min_relative,
        area=tuple(a.bbox) if a.bbox else None,
        merge=not a.no_merge,
        **({"rerank": False} if a.no_rerank else {}),  # absent: the engine's default
        heatmap=a.heatmap,
    )
    if a.command == "similar":
        return SimilarRequest(index=a.index, tile_ids=tuple(a.tile_id or ()),
                              bbox=(tuple(a.example_bbox),) if a.example_bbox else (), options=options)
    templates: values.Templates = "raw" if a.raw else "default"
    if a.templates_file:
        templates = read_templates(a.templates_file)
    return SearchRequest(index=a.index, query=a.query, templates=templates, negative=a.negative,
                         relevant_ids=tuple(a.relevant or ()), irrelevant_ids=tuple(a.irrelevant or ()),
                         options=options)


def _print_table(result: SearchAnswer) -> None:
    if result.random_weights:
        print("NOTE: this index uses RANDOM WEIGHTS (test model); scores and ranks are meaningless.")
    print(f"query: {result.query!r}   model: {result.model}   {len(result.regions)} region(s)")
    if result.fewer:
        print(f"NOTE: {fewer_text(result)}")
    print(f"{'rank':>4}  {'score':>7}  {'rel':>5}  {'tiles':>5}  {'area':>12}  bounds (xmin, ymin, xmax, ymax)")
    for r in result.regions:
        b = ", ".join(f"{v:.6g}" for v in r["bounds"])
        rel = f"{r['relative']:>5.1f}" if r.get("relative") is not None else f"{'-':>5}"
        print(f"{r['rank']:>4}  {r['score']:>7.4f}  {rel}  {r['tile_count']:>5}  {r['area']:>10.1f}"
              f"{r['area_units']:>3}  {b}")


def _output_results(a: argparse.Namespace, result: SearchAnswer) -> None:
    fmt = a.format or ("table" if not a.output else None)
    if a.output:
        path = write_regions(a.output, result.regions, result.query, result.crs_wkt, result.random_weights,
                             None if fmt in (None, "table", "json") else fmt)
        print(f"wrote {len(result.regions)} region(s) to {path}", file=sys.stderr)
        if a.format is None:
            return
    if fmt == "geojson":
        json.dump(to_feature_collection(result.regions, result.query, result.crs_wkt, result.random_weights),
                  sys.stdout)
        print()
    elif fmt == "json":
        json.dump(result.to_dict(), sys.stdout, indent=1)
        print()
    elif fmt == "table":
        _print_table(result)


def _print_models() -> None:
    for preset in PRESETS.values():
        default = " (default)" if preset.name == DEFAULT_PRESET else ""
        print(preset.details().replace(f"{preset.name}:", f"{preset.name}{default}:", 1) + "\n")


def _print_index(a: argparse.Namespace, result: dict[str, Any]) -> None:
    if a.json:
        print(json.dumps(result, indent=1))
        return
    answer = IndexAnswer.from_dict(result)
    resumed = answer.resumed_tiles
    print(
        f"indexed {answer.tiles} tiles ({answer.skipped_empty} empty skipped"
        + (f"; {resumed} resumed from the build that was stopped" if resumed else "")
        + f") in {answer.seconds:.1f} s with {answer.model}, backend {answer.backend}\nindex: {answer.path}"
    )
    if answer.backend_note:
        print(f"NOTE: {answer.backend_note}")


def run(argv: list[str] | None = None) -> int:
    a = _parser().parse_args(argv)
    exchanged = cli_exchange.run_command(a)
    if exchanged is not None:
        return exchanged
    if a.command == "models":
        _print_models()
        return 0
    if a.command == "serve":
        from .worker import serve

        return serve(a.device)
    service = Service(getattr(a, "device", "auto"))
    never = lambda: False  # noqa: E731
    quiet = lambda done, total: None  # noqa: E731
    if a.command == "index":
        request = _index_request(a)
        if isinstance(request, SurveyRequest):
            survey = SurveyAnswer.from_dict(service.answer(request, quiet, never))
            print(json.dumps(survey.to_dict(), indent=1) if a.json else f"{survey.title}: {survey.summary()}")
            return 0
        _print_index(a, service.answer(request, TerminalProgress(), never))
    elif a.command == "info":
        print(json.dumps(service.answer(InfoRequest(index=a.index), quiet, never), indent=1))
    else:
        _output_results(a, SearchAnswer.from_dict(service.answer(_search_request(a), quiet, never)))
    return 0


def quiet_undecodable_gdal_messages() -> None:
    """A GDAL message quoting a damaged file's bytes may not be UTF-8 text. rasterio's logging callback then
    fails to decode it, and Cython prints that failure (through ``sys.excepthook``, with no traceback object)
    and reports it as unraisable, with a traceback: for a message nobody needs. Both are left out."""
    default_unraisable, default_except = sys.unraisablehook, sys.excepthook

    def unraisable(args: sys.UnraisableHookArgs) -> None:
        if not (isinstance(args.exc_value, UnicodeDecodeError) and "rasterio" in str(args.object)):
            default_unraisable(args)

    def uncaught(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if not (isinstance(value, UnicodeDecodeError) and tb is None):  # a real one always has a traceback
            default_except(kind, value, tb)

    sys.unraisablehook, sys.excepthook = unraisable, uncaught


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(message)s")
    # open_clip logs what our own messages already say (random weights, failed downloads)
    logging.getLogger().setLevel(logging.CRITICAL)
    quiet_undecodable_gdal_messages()  # the engine process (serve) runs through here too
    try:
        return run(argv)
    except ClipSearchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`, which stopped reading
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print("interrupted; no index was stored (the same command resumes where it stopped)", file=sys.stderr)
        return 130
