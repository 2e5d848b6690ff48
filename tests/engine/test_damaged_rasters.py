"""Damaged rasters never end in a traceback: truncated, bit-flipped and partly zeroed copies of the shared
rasters, in the layouts analysts' files come in, through the real engine process and the real command line.
Each is refused with one line naming the file (and the pixels that could not be read) or indexed; none
crashes the engine, hangs it or is answered as an internal error; what was stored before is untouched."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from clip_search_plugin.engine.building.build import build_index, open_index, search_similar
from clip_search_plugin.engine.embedding.embedder import ClipEmbedder
from clip_search_plugin.engine.errors import Cancelled, DamagedRasterError
from clip_search_plugin.engine.settings import IndexSettings, ModelSpec, TilingSettings
from clip_search_plugin.engine.tiling.raster_io import describe_raster

from .conftest import RASTERS, REPO, shared_raster
from .damage import SOURCES, damaged_copies, declare_size, garble_metadata, set_pixel_width, write_layouts

SEED = 14
COPIES = 48
TINY = {"name": "tiny-random"}
TILING = {"tile_size": 64}
STARTUP_SECONDS, LOCATE_SECONDS, INDEX_SECONDS = 120, 60, 180  # far beyond a healthy answer: a hang fails
SETTINGS = IndexSettings(tiling=TilingSettings(tile_size=32), model=ModelSpec("tiny-random"), batch_size=4)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    for name in SOURCES:
        shared_raster(name)
    return write_layouts(RASTERS, tmp_path_factory.mktemp("layouts"))


class Engine:
    """One engine process on JSON lines; every answer awaited with a timeout, its log kept."""

    def __init__(self, cache: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO), CLIP_SEARCH_CACHE=str(cache))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clip_search_plugin.engine", "serve", "--device", "cpu"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read_events, daemon=True).start()
        self.log_reader = threading.Thread(target=self._read_log, daemon=True)
        self.log_reader.start()
        self.asked = 0
        self.ready = self.answer(None, STARTUP_SECONDS)

    def _read_events(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def _read_log(self) -> None:
        assert self.proc.stderr is not None
        self.log.extend(self.proc.stderr)

    def answer(self, rid: str | None, seconds: float) -> dict[str, Any]:
        deadline = time.monotonic() + seconds
        while True:
            try:
                message = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return {"event": "hung"}
            if message is None:
                return {"event": "crashed", "returncode": self.proc.wait()}
            if rid is None and message["event"] == "ready":
                return message
            if rid is not None and message.get("id") == rid and message["event"] in ("result", "error"):
                return message

    def ask(self, method: str, seconds: float, **params: Any) -> dict[str, Any]:
        self.asked += 1
        rid = str(self.asked)
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps({"id": rid, "method": method, "params": params}) + "\n")
            self.proc.stdin.flush()
        except OSError:
            return {"event": "crashed", "returncode": self.proc.wait()}
        return self.answer(rid, seconds)

    def stop(self) -> str:
        """Shut the process down (killed if it does not stop) and return its whole log."""
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log_reader.join(timeout=10)  # to the last line
        return "".join(self.log)


def example_box(index: Path) -> list[float]:
    """The middle third of the indexed raster, in its CRS (from the index's manifest)."""
    raster = json.loads((index / "manifest.json").read_text())["raster"]
    a, b, c, d, e, f = raster["transform"]
    cols, rows = (raster["width"] / 3, raster["width"] * 2 / 3), (raster["height"] / 3, raster["height"] * 2 / 3)
    xs = [a * col + b * row + c for col in cols for row in rows]
    ys = [d * col + e * row + f for col in cols for row in rows]
    return [min(xs), min(ys), max(xs), max(ys)]


def problems_in(copy: Path, answers: dict[str, dict[str, Any]]) -> list[str]:
    """What is wrong with the engine's answers about one damaged copy (nothing when each is a result or
    a one-line error of the user's kind that names the file when it could not read it)."""
    found = []
    for method, answer in answers.items():
        event, error = answer["event"], answer.get("error") or {}
        message = str(error.get("message", ""))
        if event in ("hung", "crashed"):
            found.append(f"{copy.name}: the engine {event} on {method} ({answer})")
        elif error.get("kind") == "internal":
            found.append(f"{copy.name}: {method} answered an internal error: {message}")
        elif "\n" in message:
            found.append(f"{copy.name}: {method} answered more than one line: {message!r}")
        elif message.startswith("Cannot read") and str(copy) not in message:
            found.append(f"{copy.name}: {method} does not name the file: {message}")
    return found


def try_copy(engine: Engine, copy: Path, work: Path) -> dict[str, dict[str, Any]]:
    """locate, index and (when an index results) a search by example box with a heatmap, as the dock does."""
    answers = {"locate": engine.ask("locate", LOCATE_SECONDS, raster=str(copy), model=TINY, tiling=TILING)}
    if answers["locate"]["event"] in ("hung", "crashed"):
        return answers
    output = work / copy.stem
    answers["index"] = engine.ask("index", INDEX_SECONDS, raster=str(copy), output=str(output), model=TINY,
                                  tiling=TILING, batch_size=16)
    if answers["index"]["event"] == "result":
        answers["similar"] = engine.ask("similar", LOCATE_SECONDS, index=str(output), bbox=example_box(output),
                                        top_k=5, heatmap=str(work / f"{copy.stem}.heat.tif"))
    return answers


def known_damage(layouts: list[Path], folder: Path) -> list[Path]:
    """Damage that random flips rarely reach: a header declaring 2^31 columns or a million rows, a pixel
    width that is NaN, GDAL metadata text that is not UTF-8."""
    folder.mkdir()
    strips = layout(layouts, "colorado_rgb_015m.strip-deflate.tif")
    cog = layout(layouts, "drone_rgba_alpha.cog-deflate.tif")
    original = layout(layouts, "colorado_rgb_015m.original.tif")
    return [declare_size(strips, folder / "wide.tif", width=2**31 - 1),
            declare_size(cog, folder / "tall.tif", height=1_000_000),
            set_pixel_width(original, folder / "nan.tif", float("nan")),
            garble_metadata(original, folder / "metadata.tif")]


def outcome(answers: dict[str, dict[str, Any]]) -> str:
    if answers["locate"]["event"] == "error":
        return "refused when described"
    if answers.get("index", {}).get("event") != "result":
        return "refused while indexing"
    return "indexed, searched" if answers["similar"]["event"] == "result" else "indexed, search refused"


def test_damaged_copies_are_refused_in_one_line_or_indexed_never_a_crash_hang_or_traceback(
    layouts: list[Path], tmp_path: Path
) -> None:
    copies = damaged_copies(layouts, tmp_path / "copies", COPIES, SEED)
    assert len(copies) >= 40
    copies += known_damage(layouts, tmp_path / "known")
    engine = Engine(tmp_path / "cache")
    assert engine.ready.get("event") == "ready", engine.ready
    problems: list[str] = []
    outcomes: Counter[str] = Counter()
    logs = []
    try:
        for copy in copies:
            answers = try_copy(engine, copy, tmp_path / "work")
            problems += problems_in(copy, answers)
            outcomes[outcome(answers)] += 1
            if any(a["event"] in ("hung", "crashed") for a in answers.values()):
                logs.append(engine.stop())
                engine = Engine(tmp_path / "cache")
    finally:
        logs.append(engine.stop())
    log = "".join(logs)
    if "Traceback" in log:
        problems.append("the engine's log holds a traceback:\n" + log[log.index("Traceback") - 2000 :][:6000])
    print(f"{len(copies)} damaged copies (seed {SEED}): {dict(outcomes)}")
    assert not problems, "\n".join(problems)
    assert outcomes["refused when described"] + outcomes["refused while indexing"] >= 10, outcomes


def truncated(source: Path, target: Path, share: float) -> Path:
    data = source.read_bytes()
    target.write_bytes(data[: int(len(data) * share)])
    return target


def layout(layouts: list[Path], name: str) -> Path:
    return next(p for p in layouts if p.name == name)


def test_the_command_line_says_one_line_naming_the_file_and_exits_2_never_a_traceback(
    layouts: list[Path], tmp_path: Path
) -> None:
    """Four damaged copies indexed on the command line at once (each run loads the model: in parallel, the
    test takes the time of one or two)."""
    cases: dict[str, tuple[Path, str | None]] = {
        "stretch read": (  # int16: the contrast stretch's reduced read is the first to fail
            truncated(layout(layouts, "int16_2band_epsg4326.cog-deflate.tif"), tmp_path / "s.tif", 0.5),
            "the pixels in columns 0-286, rows 0-228 (read at reduced resolution for the contrast stretch)",
        ),
        "chunk read in a reader thread": (  # 8-bit: no stretch; the first strips read, later ones fail
            truncated(layout(layouts, "drone_rgba_alpha.strip-deflate.tif"), tmp_path / "r.tif", 0.7),
            "the pixels in columns ",
        ),
        "header of 2^31 columns": (
            declare_size(layout(layouts, "colorado_rgb_015m.strip-deflate.tif"), tmp_path / "w.tif", width=2**31 - 1),
            "its header is damaged",
        ),
        "metadata that is not UTF-8 text": (  # indexed; GDAL's undecodable message is no traceback
            garble_metadata(layout(layouts, "colorado_rgb_015m.original.tif"), tmp_path / "m.tif"),
            None,
        ),
    }
    env = dict(os.environ, PYTHONPATH=str(REPO))
    runs = {
        case: subprocess.Popen(
            [sys.executable, "-m", "clip_search_plugin.engine", "index", str(copy), "--model", "tiny-random",
             "--tile-size", "64", "--output", str(tmp_path / f"ix-{copy.stem}"), "--device", "cpu"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for case, (copy, _) in cases.items()
    }
    for case, (copy, expected) in cases.items():
        _, stderr = runs[case].communicate(timeout=300)
        lines = stderr.splitlines()
        if expected is None:
            assert runs[case].returncode == 0 and not stderr, f"{case}: {stderr}"
            continue
        assert runs[case].returncode == 2, f"{case}: {stderr}"
        assert len(lines) == 1 and lines[0].startswith("error: Cannot read "), f"{case}: {stderr}"
        assert str(copy) in lines[0] and expected in lines[0] and "gdalinfo -checksum" in lines[0], lines[0]
        assert not (tmp_path / f"ix-{copy.stem}").exists()


@pytest.mark.parametrize("name", ["colorado_rgb_015m.original.tif", "colorado_rgb_015m.strip-deflate.tif",
                                  "drone_rgba_alpha.cog-deflate.tif", "int16_2band_epsg4326.original.tif"])
@pytest.mark.parametrize("size", [{"width": 2**31 - 1}, {"height": 2**31 - 1}, {"height": 1_000_000}])
def test_a_header_declaring_more_pixels_than_the_file_holds_is_refused_before_any_plan(
    name: str, size: dict[str, int], layouts: list[Path], tmp_path: Path
) -> None:
    copy = declare_size(layout(layouts, name), tmp_path / name, **size)
    with rasterio.open(copy) as ds:  # GDAL itself opens it, with the declared size
        assert max(ds.width, ds.height) in size.values()
    with pytest.raises(DamagedRasterError, match="its header is damaged") as caught:
        describe_raster(str(copy))
    assert str(copy) in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_geotransform_damaged_to_nan_or_infinity_is_refused(
    value: float, layouts: list[Path], tmp_path: Path
) -> None:
    copy = set_pixel_width(layout(layouts, "colorado_rgb_015m.original.tif"), tmp_path / "c.tif", value)
    with pytest.raises(DamagedRasterError, match=r"geotransform \(.*\) is not all finite numbers") as caught:
        describe_raster(str(copy))
    assert str(copy) in str(caught.value) and "gdalinfo -checksum" in str(caught.value)


def test_every_layout_a_sparse_raster_and_a_constant_one_are_accepted(layouts: list[Path], tmp_path: Path) -> None:
    """The header checks refuse no real file: every layout, a sparse raster of 40,000 x 40,000 pixels with
    one block written, a constant raster packed by ZSTD far beyond what deflate reaches."""
    for path in layouts:
        assert describe_raster(str(path)).width > 0
    crs, transform = "EPSG:32633", rasterio.Affine(0.5, 0, 500_000, 0, -0.5, 4_000_000)
    sparse = tmp_path / "sparse.tif"
    with rasterio.open(sparse, "w", driver="GTiff", width=40_000, height=40_000, count=3, dtype="uint8", crs=crs,
                       transform=transform, tiled=True, blockxsize=512, blockysize=512, compress="zstd",
                       sparse_ok=True) as dst:
        dst.write(np.full((3, 512, 512), 90, np.uint8), window=rasterio.windows.Window(0, 0, 512, 512))
    constant = tmp_path / "constant.tif"
    with rasterio.open(constant, "w", driver="GTiff", width=20_000, height=64, count=3, dtype="uint8", crs=crs,
                       transform=transform, compress="zstd", blockysize=64) as dst:
        dst.write(np.full((3, 64, 20_000), 90, np.uint8))
    assert sparse.stat().st_size < 100_000 and constant.stat().st_size < 1_000
    assert describe_raster(str(sparse)).width == 40_000
    assert describe_raster(str(constant)).width == 20_000


def files_in(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("damage", ["truncated pixel data", "header of 2^31 columns"])
def test_a_damaged_copy_leaves_the_earlier_index_and_a_saved_checkpoint_untouched(
    damage: str, layouts: list[Path], tiny: ClipEmbedder, tmp_path: Path
) -> None:
    good = layout(layouts, "colorado_rgb_015m.strip-deflate.tif")
    raster = Path(shutil.copy(good, tmp_path / "r.tif"))
    index = build_index(raster, SETTINGS, tmp_path / "ix", embedder=tiny).path
    progress: list[int] = []
    with pytest.raises(Cancelled):  # cancelled after its first batch: its progress is saved to resume
        build_index(raster, SETTINGS, tmp_path / "other", lambda done, total: progress.append(done),
                    lambda: bool(progress), tiny)
    partial = tmp_path / ".other.partial"
    index_files, checkpoint_files = files_in(index), files_in(partial)
    assert "progress.json" in checkpoint_files
    if damage == "truncated pixel data":  # 8-bit, so it is described; its pixels fail when read
        truncated(good, raster, 0.7)
    else:
        declare_size(good, raster, width=2**31 - 1)
    for target in (tmp_path / "ix", tmp_path / "other"):
        with pytest.raises(DamagedRasterError) as caught:
            build_index(raster, SETTINGS, target, embedder=tiny)
        assert str(raster) in str(caught.value)
    assert files_in(index) == index_files
    assert files_in(partial) == checkpoint_files
    assert not (tmp_path / "other").exists()


def test_a_search_by_example_over_a_damaged_block_names_the_file_and_the_window(
    tiny: ClipEmbedder, tmp_path: Path
) -> None:
    """A large raster damaged where its fingerprint does not look (between its first and middle MiB) is
    still taken for the indexed one; reading the example box then fails, and says where."""
    with rasterio.open(shared_raster("drone_rgba_alpha.tif")) as ds:
        pixels, profile = ds.read(), ds.profile
    mosaic = np.tile(pixels, (1, 3, 3))
    raster = tmp_path / "mosaic.tif"
    profile.update(width=mosaic.shape[2], height=mosaic.shape[1], compress="deflate", tiled=True,
                   blockxsize=256, blockysize=256)
    with rasterio.open(raster, "w", **profile) as dst:
        dst.write(mosaic)
    settings = IndexSettings(tiling=TilingSettings(tile_size=256), model=ModelSpec("tiny-random"))
    index = open_index(build_index(raster, settings, tmp_path / "ix", embedder=tiny).path)
    data = bytearray(raster.read_bytes())
    assert len(data) > 4 << 20
    quarter = len(data) // 4
    data[quarter : quarter + (64 << 10)] = bytes(64 << 10)  # at least one whole tile's start
    raster.write_bytes(bytes(data))
    x0, y0, x1, y1 = index.raster.bounds()
    with pytest.raises(DamagedRasterError) as caught:
        search_similar(index, tiny, bbox=(x0, y0, x1, y1), top_k=3)
    message = str(caught.value)
    assert str(raster) in message and f"columns 0-{mosaic.shape[2] - 1}, rows 0-{mosaic.shape[1] - 1}" in message
