"""The engine process: newline-delimited JSON requests on stdin, events on stdout, log on stderr.

Request:  {"id": "7", "method": "index" | "search" | "similar" | "info" | "cancel" | "ping" | "shutdown",
           "params": {...}}
Events:   {"event": "ready", "protocol": 1, "pid": ...}                      once, at start
          {"id": "7", "event": "progress", "done": 10, "total": 96}
          {"id": "7", "event": "result", "result": {...}}
          {"id": "7", "event": "error", "error": {"kind": "input", "message": "..."}}
          {"event": "log", "level": "info", "message": "..."}

Requests run one at a time, in order, on a job thread; ``cancel`` (params: {"target": id}) and
``shutdown`` are handled at once by the reader, so a running index build can be cancelled within one
batch. Anything a library prints to stdout is diverted to stderr so the protocol stays clean.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import traceback
from typing import Any, TextIO

from ..errors import Cancelled, ClipSearchError
from ..sources.names import hide_urls
from .service import Service

PROTOCOL = 1
log = logging.getLogger("clip_search.engine")


class Worker:
    def __init__(self, service: Service, out: TextIO) -> None:
        self.service = service
        self.out = out
        self._lock = threading.Lock()
        self._jobs: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._cancelled: set[Any] = set()
        self._stopping = threading.Event()

    def emit(self, message: dict[str, Any]) -> None:
        line = json.dumps(message, separators=(",", ":"), allow_nan=False)
        with self._lock:
            self.out.write(line + "\n")
            self.out.flush()

    def run(self, lines: TextIO) -> None:
        thread = threading.Thread(target=self._job_loop, name="engine-jobs", daemon=True)
        thread.start()
        self.emit({"event": "ready", "protocol": PROTOCOL, "pid": os.getpid()})
        for line in lines:
            if not line.strip():
                continue
            if not self._accept(line):
                break
        self._cancelled.add("*")  # input closed (the client quit or died): stop whatever is running
        self._stopping.set()
        self._jobs.put(None)
        thread.join()

    def _accept(self, line: str) -> bool:
        """Handle one input line; returns False on shutdown."""
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("method"), str):
                raise ValueError("a request is an object with 'id', 'method' and 'params'")
        except ValueError as exc:
            self.emit({"id": None, "event": "error", "error": {"kind": "protocol", "message": f"Bad request: {exc}"}})
            return True
        method, rid = request["method"], request.get("id")
        if method == "shutdown":
            self._cancelled.add("*")
            self.emit({"id": rid, "event": "result", "result": {"stopping": True}})
            return False
        if method == "cancel":
            target = (request.get("params") or {}).get("target")
            self._cancelled.add(target)
            self.emit({"id": rid, "event": "result", "result": {"cancelled": target}})
        elif method == "ping":
            self.emit({"id": rid, "event": "result", "result": {"pong": True, "pid": os.getpid()}})
        else:
            self._jobs.put(request)
        return True

    def _job_loop(self) -> None:
        while True:
            request = self._jobs.get()
            if request is None:
                return
            self._run_job(request)

    def _run_job(self, request: dict[str, Any]) -> None:
        rid = request.get("id")

        def is_cancelled() -> bool:
            return rid in self._cancelled or "*" in self._cancelled

        def progress(done: int, total: int) -> None:
            self.emit({"id": rid, "event": "progress", "done": done, "total": total})

        try:
            if is_cancelled():
                raise Cancelled()
            result = self.service.handle(request["method"], request.get("params") or {}, progress, is_cancelled)
            self.emit({"id": rid, "event": "result", "result": result})
        except ClipSearchError as exc:
            self.emit({"id": rid, "event": "error", "error": {**exc.details, "kind": exc.kind, "message": str(exc)}})
        except Exception as exc:  # noqa: BLE001 - the engine must answer, whatever went wrong
            log.error("request %s failed:\n%s", rid, traceback.format_exc())
            self.emit(
                {
                    "id": rid,
                    "event": "error",
                    "error": {
                        "kind": "internal",
                        "message": f"Internal error: {type(exc).__name__}: {exc}. See the engine log.",
                    },
                }
            )
        finally:
            self._cancelled.discard(rid)


class EventLogHandler(logging.Handler):
    """Forwards log records to the client as ``log`` events (the full log also goes to stderr)."""

    def __init__(self, worker: Worker, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.worker = worker

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.worker.emit({"event": "log", "level": record.levelname.lower(), "message": record.getMessage()})
        except Exception:  # noqa: BLE001 - logging must never break the engine
            self.handleError(record)


def protocol_stream() -> TextIO:
    """A private copy of stdout for the protocol; fd 1 itself then points at stderr."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "w", encoding="utf-8", buffering=1)


class HiddenCredentials(logging.Filter):
    """Every log line without the credentials of a URL in it: GDAL's messages (which rasterio logs) quote the
    addresses they fetched, a web layer's key among them, and the QGIS side keeps the engine's last lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "://" in message:
            record.msg, record.args = hide_urls(message), None
        return True


def serve(device: str = "auto") -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s", force=True
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(HiddenCredentials())
    out = protocol_stream()
    worker = Worker(Service(device), out)
    logging.getLogger("clip_search").addHandler(EventLogHandler(worker))
    worker.run(sys.stdin)
    return 0
