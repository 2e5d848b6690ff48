"""The plugin's messages on QGIS's message bar, one account at a time.

QGIS's message bar keeps a stack: a message pushed over another one hides it, and the older one comes
back when the newer one is closed or times out. For the plugin that meant a "Cancelled" notice from
minutes ago reappearing after a later search. Here every new message first takes the plugin's earlier
ones off the bar, so what the bar shows is always the latest word.

QGIS itself also tells of a long task when it ends ("Task complete" / "Task failed" and the task's
description, on the message bar when the desktop has no notifications). For an index build that would be a
second, different account ("Task failed" for a build the user stopped and can resume): the plugin's own
message says what happened, so QGIS's notice of the plugin's tasks is taken off the bar.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from qgis.core import Qgis
from qgis.gui import QgsMessageBarItem
from qgis.PyQt.QtCore import QTimer

TITLE = "CLIP Search"
STAYS = 0  # duration of a message that stays until the user closes it (what went wrong and must be fixed)


class Messages:
    """Shows the plugin's messages on ``iface``'s message bar; each replaces the plugin's previous one.
    Warnings and errors are also kept in ``recent_errors`` (the plugin's, for Copy diagnostics)."""

    def __init__(self, iface: Any, recent_errors: deque[str] | None = None) -> None:
        self.bar = iface.messageBar() if iface is not None else None
        self.recent_errors: deque[str] = recent_errors if recent_errors is not None else deque(maxlen=10)
        self._items: list[Any] = []
        self._quiet: set[str] = set()  # descriptions of our tasks whose QGIS notices are taken off the bar
        if self.bar is not None:
            self.bar.widgetAdded.connect(self._added)

    def show(self, text: str, level: Any = Qgis.Warning, duration: int = 8) -> None:
        if level in (Qgis.Warning, Qgis.Critical):
            self.recent_errors.append(text)
        if self.bar is None:
            return
        self.clear()
        item = QgsMessageBarItem(TITLE, text, level, duration)
        self.bar.pushItem(item)
        self._items.append(item)

    def clear(self) -> None:
        """Take the plugin's messages off the bar (the user may have closed some already)."""
        items, self._items = self._items, []
        if self.bar is None or not items:
            return
        shown = self.bar.items()
        for item in items:
            try:
                if item in shown:
                    self.bar.popWidget(item)
            except RuntimeError:
                pass  # closed by the user: QGIS deleted it

    def quieten(self, description: str) -> None:
        """QGIS's own end-of-task notice for the task ``description`` will not stay on the bar."""
        self._quiet.add(description)

    def _added(self, _widget: Any) -> None:
        # the signal's argument arrives as a plain QWidget: look at the bar's own items, once it has added it
        QTimer.singleShot(0, self._drop_quietened)

    def _drop_quietened(self) -> None:
        if self.bar is None or not self._quiet:
            return
        try:
            for item in list(self.bar.items()):
                if item.title() != TITLE and item.text() in self._quiet:
                    self.bar.popWidget(item)
        except RuntimeError:
            pass  # the bar or an item is being deleted (QGIS closing)

    def stop(self) -> None:
        """Stop watching the bar (plugin unload); the plugin's messages are left for the user to read."""
        if self.bar is not None:
            try:
                self.bar.widgetAdded.disconnect(self._added)
            except TypeError:
                pass  # already stopped
