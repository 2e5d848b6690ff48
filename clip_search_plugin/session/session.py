"""One engine session: the one way the plugin starts, asks, cancels, restarts and stops an engine process.

The dock's searches, each index task and each Processing run hold an :class:`EngineSession`; none of them starts
or stops an engine process any other way. Plain Python (no Qt): answers arrive on the engine's reader thread,
and the dock hands them to the GUI thread itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from ..engine.requests import Request
from .client import EngineClient, EngineUnavailable
from .settings import PluginSettings

Event = dict[str, Any]
Callback = Callable[[Event], None]


class EngineSession:
    """An engine process for ``settings`` (its Python, device and cache folder), started on first use.

    ``send`` never blocks (the dock); ``run`` waits for the answer (index tasks and Processing, in their own
    threads). A request lost because the engine process died is sent once more to a new process, after
    ``on_restart`` is told; the process is ended by ``stop`` (and by ``use`` when the settings change)."""

    def __init__(self, settings: PluginSettings, device: str | None = None,
                 on_restart: Callable[[Event], None] | None = None) -> None:
        self.settings = settings
        self.device = device or settings.device
        self.on_restart = on_restart
        self._client: EngineClient | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def pid(self) -> int | None:
        client = self._client
        return client.pid if client is not None and client.running else None

    @property
    def running_client(self) -> EngineClient | None:
        """The engine process started last, if any (without starting one): for diagnostics and tests."""
        return self._client

    def use(self, settings: PluginSettings) -> None:
        """New settings: the running process (if any) is ended, and the next request starts one with these."""
        self.settings, self.device = settings, settings.device
        self._stop_client()

    def client(self) -> EngineClient:
        """The running engine process, started here if needed (in the caller's thread: seconds). ``stop`` may run
        meanwhile in another thread without waiting for the lock: a process started after it is ended at once."""
        with self._lock:
            if self._closed:
                raise EngineUnavailable("CLIP Search was unloaded.")
            client = self._client
            if client is None or not client.running:
                if client is not None:
                    client.stop()  # it died: release its pipes
                client = EngineClient(self.settings.engine_python, self.device, env=self.settings.engine_env())
                self._client = client  # visible to stop() while it starts
                client.start()
                if self._closed or self._client is not client:
                    client.stop()
                    raise EngineUnavailable("CLIP Search was unloaded or its settings changed.")
            return client

    def send(self, request: Request, on_answer: Callback, retry: bool = True) -> None:
        """Send ``request`` without blocking; ``on_answer`` gets its result or error event, on another thread.
        For quick, repeatable requests (locate, search, similar): one lost to a dead engine is sent again once."""

        def deliver(event: Event) -> None:
            if self._closed or event.get("event") not in ("result", "error"):
                return  # stopped meanwhile: nobody to tell; or progress and log, which senders ignore
            if retry and event.get("event") == "error" and event["error"].get("crashed"):
                if self.on_restart is not None:
                    self.on_restart(event)
                self.send(request, on_answer, retry=False)
            else:
                on_answer(event)

        def send() -> None:
            try:
                self.client().request(request.method, request.to_params(), deliver)
            except EngineUnavailable as exc:
                deliver({"event": "error", "error": {"kind": "engine", "message": str(exc), "unavailable": True}})

        threading.Thread(target=send, name="clip-search-send", daemon=True).start()

    def run(self, request: Request, is_cancelled: Callable[[], bool] | None = None,
            on_event: Callback | None = None) -> Event:
        """Send ``request`` and wait for its result or error event (progress and log go to ``on_event``);
        cancelled once ``is_cancelled()`` is true. Raises EngineUnavailable when no engine can be started."""
        return self.client().run(request.method, request.to_params(), is_cancelled, on_event)

    def stop(self) -> None:
        """End the engine process for good (plugin unload, QGIS exit, the end of a task or a Processing run)."""
        self._closed = True
        self._stop_client()

    def _stop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.stop()
