"""Background work in QGIS's task manager. run() touches no layer or widget and never raises."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qgis.core import QgsTask

from ..engine.requests import IndexRequest
from .client import EngineUnavailable
from .session import EngineSession
from .settings import PluginSettings


class IndexTask(QgsTask):
    """Builds an index in an engine session of its own (searches elsewhere stay responsive): started for the
    task, ``request`` run in it, and stopped when the task ends.

    Progress streams into the task manager; cancelling sends ``cancel`` to the engine, which stops
    within one batch and stores nothing (a process that does not answer within 30 s is ended).
    ``on_done(task)`` runs on the main thread when it ends.
    """

    def __init__(
        self,
        description: str,
        settings: PluginSettings,
        request: IndexRequest,
        on_done: Callable[[IndexTask], None],
    ) -> None:
        super().__init__(description, QgsTask.CanCancel)
        self.settings = settings
        self.request = request
        self.on_done = on_done
        self.result: dict[str, Any] | None = None
        self.error: str | None = None
        self.error_kind: str | None = None
        self.error_details: dict[str, Any] = {}  # what else the engine said of the error (e.g. missing weights)
        self.engine_pid: int | None = None

    def run(self) -> bool:
        try:
            return self._run()
        except Exception as exc:  # noqa: BLE001 - a task must never raise
            self.error, self.error_kind = f"Indexing failed: {exc}", "internal"
            return False

    def _run(self) -> bool:
        session = EngineSession(self.settings, self.request.device)
        try:
            session.client()  # started here, so its process id is known while it indexes
            self.engine_pid = session.pid
            answer = session.run(self.request, self.isCanceled, self._progress)
        except EngineUnavailable as exc:
            self.error, self.error_kind = str(exc), "engine"
            return False
        finally:
            session.stop()
        if answer["event"] == "result":
            self.result = answer["result"]
            return True
        error = answer["error"]
        self.error, self.error_kind = error["message"], error["kind"]
        self.error_details = {k: v for k, v in error.items() if k not in ("kind", "message")}
        return False

    def _progress(self, event: dict[str, Any]) -> None:
        if event.get("event") == "progress" and event.get("total"):
            self.setProgress(100.0 * event["done"] / event["total"])

    def finished(self, result: bool) -> None:
        if not result and self.error is None and self.isCanceled():
            self.error = "Stopped; what was embedded so far is saved, and Index layer resumes from there."
            self.error_kind = "cancelled"
        self.on_done(self)
