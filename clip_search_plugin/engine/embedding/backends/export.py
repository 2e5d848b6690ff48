"""A model's towers exported for a backend, cached on disk per model and rebuilt when the model changes.

One folder per model identity and software versions (``<cache>/backends/<model>-<hash>/``) holds ``image.onnx``
(fp32, from the loaded open_clip model), ``image-int8.onnx`` (its matrix products quantized), the same two of the
text tower (``text.onnx``, ``text-int8.onnx``) and ``export.json``, which records what the files were made from
and their checksums. A file that does not match its record (damaged, or left half-written) is made again;
everything is written beside its place and renamed into it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ...errors import ModelError
from ...paths import user_cache_base
from ..models import ModelIdentity, file_sha256

log = logging.getLogger("clip_search.engine")
EXPORT_FORMAT = 2  # bump when the exported graphs change, so caches are made again
RECORD = "export.json"
FP32, INT8 = "image.onnx", "image-int8.onnx"
TEXT_FP32, TEXT_INT8 = "text.onnx", "text-int8.onnx"
TEXT_FILES = {"onnx-int8": TEXT_INT8, "onnx": TEXT_FP32}  # a backend's text tower, fastest first
OPSET = 17


def software_versions() -> dict[str, str]:
    """The versions an export depends on: a change of any of them makes the export again."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"format": str(EXPORT_FORMAT)}
    for package in ("torch", "open_clip_torch", "onnx", "onnxruntime"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "missing"
    return found


def export_folder(identity: ModelIdentity, input_size: int, root: Path | None = None) -> Path:
    """The cache folder of this model's exports (a new folder when the model or a version changes)."""
    made_from = {"model": identity.to_dict(), "input": input_size, "versions": software_versions()}
    digest = hashlib.sha256(json.dumps(made_from, sort_keys=True).encode()).hexdigest()[:16]
    base = root or Path(os.environ.get("CLIP_SEARCH_BACKEND_CACHE") or user_cache_base() / "backends")
    return base / f"{identity.key()}-{digest}"


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object kept beside the exports (empty when missing or unreadable: it is made again)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` written beside ``path`` and renamed into it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
    scratch.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(scratch, path)


def _record(folder: Path) -> dict[str, Any]:
    return read_json(folder / RECORD)


def file_entry(folder: Path, name: str) -> dict[str, Any]:
    """What the record says of ``folder/name`` (size, sha256), empty when nothing."""
    entry = _record(folder).get("files", {}).get(name)
    return entry if isinstance(entry, dict) else {}


def recorded(folder: Path, name: str) -> Path | None:
    """``folder/name`` if it is there and matches its record (size and checksum), else None."""
    path = folder / name
    entry = file_entry(folder, name)
    if not entry or not path.is_file() or path.stat().st_size != entry.get("size"):
        return None
    return path if _checksum(path) == entry.get("sha256") else None


_CHECKSUMS: dict[tuple[str, int, int], str] = {}


def _checksum(path: Path) -> str:
    """A file's SHA-256, remembered while the file keeps its size and time (a choice checks its files often)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _CHECKSUMS:
        _CHECKSUMS[key] = file_sha256(path)
    return _CHECKSUMS[key]


def remember_file(folder: Path, name: str, extra: dict[str, Any] | None = None) -> None:
    """Record ``folder/name`` as made (its size and checksum), with anything else worth knowing about it."""
    path = folder / name
    record = _record(folder)
    record.setdefault("files", {})[name] = {"size": path.stat().st_size, "sha256": _checksum(path), **(extra or {})}
    record["versions"] = software_versions()
    write_json(folder / RECORD, record)


@contextlib.contextmanager
def _written(target: Path) -> Iterator[Path]:
    """A scratch path beside ``target``, renamed into it when the block succeeds (removed when it fails)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    try:
        yield scratch
        os.replace(scratch, target)
    finally:
        scratch.unlink(missing_ok=True)


def _quietly(make: Callable[[], object]) -> None:
    """Run an exporter with its deprecation and tracing warnings kept out of the user's console."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        logging.disable(logging.WARNING)  # the quantizer's advice goes to the root logger
        try:
            make()
        finally:
            logging.disable(logging.NOTSET)


def exported(model: Any, input_size: int, folder: Path, name: str) -> Path:
    """``folder/name`` (one of :data:`FILES`), made from the model first unless it is there as recorded."""
    found = recorded(folder, name)
    if found is not None:
        return found
    target = folder / name
    if name in (INT8, TEXT_INT8):
        _quantize(exported(model, input_size, folder, FP32 if name == INT8 else TEXT_FP32), target)
    else:
        _export(model, input_size, target, text=name == TEXT_FP32)
    remember_file(folder, name)
    return target


def _export(model: Any, input_size: int, target: Path, text: bool) -> None:
    """The image tower (normalised pixels in, features out) or the text tower (tokens in, features out) exported
    from its lean form (:mod:`.lean`: the same arithmetic in fewer operations), for any batch (and prompt length)."""
    import torch

    from .lean import TextTower, lean_copy  # torch, loaded only when exporting

    tower: torch.nn.Module
    if text:
        tower, names = TextTower(model), ["tokens"]
        example = torch.arange(1, 8, dtype=torch.long).repeat(2, 1)  # two prompts of seven tokens
        axes = {"tokens": {0: "batch", 1: "length"}, "features": {0: "batch"}}
    else:
        tower, names = lean_copy(model.visual), ["pixels"]
        example = torch.zeros((2, 3, input_size, input_size), dtype=next(model.visual.parameters()).dtype)
        axes = {"pixels": {0: "batch"}, "features": {0: "batch"}}
    log.info("exporting the %s tower of the model to %s", "text" if text else "image", target)
    try:
        with _written(target) as scratch, torch.inference_mode(False), torch.enable_grad():  # no fused attention
            _quietly(lambda: torch.onnx.export(
                tower, (example,), str(scratch), input_names=names, output_names=["features"], dynamic_axes=axes,
                opset_version=OPSET, dynamo=False))
    except Exception as exc:
        raise ModelError(f"This model's {'text' if text else 'image'} tower could not be exported to ONNX "
                         f"({str(exc)[:200]}).") from exc


def _quantize(source: Path, target: Path) -> None:
    """``source`` with every matrix product quantized to int8.

    Weights per output channel in 7 bits (``reduce_range``: the int8 instructions of CPUs without VNNI add pairs
    of products in 16 bits, which 8-bit weights can overflow), activations per batch. The patch embedding is a
    matrix product in the lean export (ONNX Runtime's int8 convolution was slower than its fp32 one, measured).
    """
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    log.info("quantizing %s to int8: %s", source.name, target)
    try:
        with _written(target) as scratch:
            _quietly(lambda: quantize_dynamic(
                source, scratch, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                op_types_to_quantize=["MatMul"], extra_options={"DefaultTensorType": TensorProto.FLOAT}))
    except Exception as exc:
        raise ModelError(f"The exported {source.stem} tower could not be quantized ({str(exc)[:200]}).") from exc
