"""Background work in QGIS's task manager. run() touches no layer or widget and never raises."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any

from qgis.core import QgsTask

from .engine_client import EngineClient, EngineUnavailable

CANCEL_GRACE_S = 30.0  # a build stops within one batch; one that does not answer by then is ended


class IndexTask(QgsTask):
    """Builds an index in an engine process of its own (searches elsewhere stay responsive).

    Progress streams into the task manager; cancelling sends ``cancel`` to the engine, which stops
    within one batch and stores nothing (a process that does not answer within 30 s is ended).
    ``on_done(task)`` runs on the main thread when it ends.
    """

    def __init__(
        self,
        description: str,
        python: str,
        device: str,
        params: dict[str, Any],
        on_done: Callable[[IndexTask], None],
        extra_env: dict[str, str] | None = None,
    ) -> None:
        super().__init__(description, QgsTask.CanCancel)
        self.python = python
        self.device = device
        self.params = params
        self.extra_env = extra_env or {}
        self.on_done = on_done
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.error_kind: str | None = None
        self.engine_pid: int | None = None

    def run(self) -> bool:
        try:
            return self._run()
        except Exception as exc:  # noqa: BLE001 - a task must never raise
            self.error, self.error_kind = f"Indexing failed: {exc}", "internal"
            return False

    def _run(self) -> bool:
        client = EngineClient(self.python, self.device, extra_env=self.extra_env)
        try:
            client.start()
        except EngineUnavailable as exc:
            self.error, self.error_kind = str(exc), "engine"
            return False
        self.engine_pid = client.pid
        events: queue.Queue[dict[str, Any]] = queue.Queue()
        try:
            rid = client.request("index", self.params, events.put)
            cancel_sent: float | None = None
            while True:
                if self.isCanceled() and cancel_sent is None:
                    client.cancel(rid)
                    cancel_sent = time.monotonic()
                if cancel_sent is not None and time.monotonic() - cancel_sent > CANCEL_GRACE_S:
                    return False  # the engine did not stop in time: stop() below ends the process
                try:
                    event = events.get(timeout=0.2)
                except queue.Empty:
                    continue
                if event["event"] == "progress" and event["total"]:
                    self.setProgress(100.0 * event["done"] / event["total"])
                elif event["event"] == "result":
                    self.result = event["result"]
                    return True
                elif event["event"] == "error":
                    self.error, self.error_kind = event["error"]["message"], event["error"]["kind"]
                    return False
        finally:
            client.stop()

    def finished(self, result: bool) -> None:
        if not result and self.error is None and self.isCanceled():
            self.error, self.error_kind = "Cancelled; nothing was stored.", "cancelled"
        self.on_done(self)
