"""The question asked before anything is downloaded from a web layer: what a build would read, and the layer's terms.

Not modal to the application: the dialog is opened (``open``), the map and QGIS stay usable, and the answer comes
as a signal (``decided(True)`` for Download and index). Nothing here decides what to do with the answer.
"""

from __future__ import annotations

from html import escape

from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtGui import QTextDocument
from qgis.PyQt.QtWidgets import QMessageBox, QWidget

NO_TERMS = "The layer states no terms: check the service's terms of use before downloading."


class DownloadQuestion(QMessageBox):
    """"Download and index" or "Cancel", with the figures of the build (tiles, requests, volume, time) and the
    layer's attribution and terms. ``decided`` carries the answer once, when the dialog closes."""

    decided = pyqtSignal(bool)

    def __init__(self, parent: QWidget | None, layer_name: str, figures: list[str], terms: list[str]) -> None:
        super().__init__(parent)
        self.setObjectName("clipSearchDownloadQuestion")
        self.setWindowTitle("CLIP Search: download imagery?")
        self.setIcon(QMessageBox.Question)
        self.setTextFormat(Qt.RichText)
        self.setText(f"<b>Index {escape(layer_name)} from the web?</b>")
        lines = "".join(f"<li>{escape(line)}</li>" for line in figures)
        said = "".join(f"<p>{escape(term)}</p>" for term in terms) or f"<p>{escape(NO_TERMS)}</p>"
        self.setInformativeText(f"<ul>{lines}</ul><p><b>Terms of use</b></p>{said}")
        self.download_button = self.addButton("Download and index", QMessageBox.AcceptRole)
        self.cancel_button = self.addButton(QMessageBox.Cancel)
        self.setDefaultButton(self.cancel_button)
        self._told = False
        self.finished.connect(self._tell)

    def plain_text(self) -> str:
        """What the dialog says, as plain text (for logs and tests)."""
        document = QTextDocument()
        document.setHtml(f"{self.text()}<br>{self.informativeText()}")
        return str(document.toPlainText())

    def _tell(self, _result: int) -> None:
        if not self._told:
            self._told = True
            self.decided.emit(self.clickedButton() is self.download_button)
