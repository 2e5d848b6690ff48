"""The dock's engine: one engine session, whose answers are handed to the GUI thread.

The session answers on its own threads; every answer (and the word that a crashed engine was restarted) reaches
the main thread through a queued Qt signal, so whoever asked touches layers and widgets there only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from qgis.core import Qgis
from qgis.PyQt.QtCore import QObject, Qt, pyqtSignal, pyqtSlot

from ..engine.requests import Request
from ..session.session import EngineSession
from ..session.settings import PluginSettings
from ..ui.messages import Messages

Event = dict[str, Any]
Answer = Callable[[Event], None]
RESTARTED = "The engine process stopped while working on a request; it was restarted and the request sent again."
RESTART_QUIET_S = 10.0  # requests lost together to one crash are told of once


class DockEngine(QObject):
    """Sends the dock's requests (locate, search, similar) without blocking; ``on_answer`` runs on the GUI
    thread. A request lost to a crashed engine is sent once more to a new one, and the user told once."""

    _deliver = pyqtSignal(object, object)

    def __init__(self, settings: PluginSettings, messages: Messages) -> None:
        super().__init__()
        self.messages = messages
        self.session = EngineSession(settings, on_restart=self._restarted)
        self._closed = False
        self._restart_told = -1e9  # when the user was last told of an engine restart (monotonic s)
        self._deliver.connect(self._run_callback, Qt.QueuedConnection)

    def ask(self, request: Request, on_answer: Answer) -> None:
        """Send ``request``; its result or error event goes to ``on_answer`` on the GUI thread."""
        self.session.send(request, lambda event: self._hand_over(on_answer, event))

    def use(self, settings: PluginSettings) -> None:
        """New settings: the running engine ends, and the next request starts one with these."""
        self.session.use(settings)

    def stop(self) -> None:
        """End the engine process for good; answers still on their way are dropped."""
        self._closed = True
        self.session.stop()

    def _hand_over(self, callback: Answer, event: Event) -> None:
        """On a session thread: queue ``callback(event)`` for the GUI thread."""
        try:
            self._deliver.emit(callback, event)
        except RuntimeError:
            pass  # this object was deleted (plugin unloaded) while the answer was on its way

    def _restarted(self, event: Event) -> None:
        self._hand_over(self._tell_restarted, event)

    @pyqtSlot(object, object)
    def _run_callback(self, callback: Answer, event: Event) -> None:
        if not self._closed:
            callback(event)

    def _tell_restarted(self, _event: Event) -> None:
        """Say once (not once per lost request) that the engine died and was restarted."""
        now = time.monotonic()
        if now - self._restart_told > RESTART_QUIET_S:
            self.messages.show(RESTARTED, Qgis.Info, 5)
        self._restart_told = now
