"""Missing model weights, told in the dock until they are there, with what to do about it in the GUI.

On a first run without internet (or behind a proxy that blocks the model hub) the model's weights cannot be
downloaded. The dock then keeps saying so, and offers three ways on: choose a weights file downloaded
elsewhere (it becomes the model's weights at once and the build starts again), copy the download address, or
a clearly labelled trial with random weights. No command-line syntax: the engine's message for the command
line is not shown here; the dock words it from the structured facts the engine sends with the error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qgis.core import Qgis
from qgis.PyQt.QtWidgets import QApplication, QFileDialog

from ..session.settings import PluginSettings
from ..ui.dock import ClipSearchDock

if TYPE_CHECKING:
    from .controller import Controller

Event = dict[str, Any]
WEIGHT_FILES = "Model weights (*.pt *.pth *.bin *.ckpt *.safetensors);;All files (*)"


class WeightsProblem:
    """The dock's account of a model whose weights could not be loaded, and the user's ways out of it."""

    def __init__(self, controller: Controller, dock: ClipSearchDock) -> None:
        self.controller = controller
        self.dock = dock
        self.missing: Event | None = None  # the engine's facts: model, url, file, reason
        self.model: tuple[str, str] | None = None  # (model, weights setting) the problem belongs to
        self.retry: Callable[[], None] | None = None  # what to do again once the weights are there
        dock.chooseWeightsRequested.connect(lambda: self.choose_file())
        dock.copyAddressRequested.connect(self.copy_address)
        dock.randomWeightsRequested.connect(self.try_random)

    def offer(self, error: Event, retry: Callable[[], None] | None = None) -> bool:
        """Show the problem when ``error`` is missing weights (True); otherwise leave it to the caller."""
        missing = error.get("missing_weights")
        if not isinstance(missing, dict):
            return False
        settings = self.controller.settings
        self.missing, self.model, self.retry = missing, (settings.model, settings.pretrained), retry
        self.show()
        self.controller.messages.show(
            f"The weights of {missing.get('model', settings.model)} are missing; the CLIP Search panel says what "
            "to do.", Qgis.Warning, 8)
        return True

    def text(self) -> str:
        missing = self.missing or {}
        model, reason = missing.get("model", "the model"), missing.get("reason", "")
        file = f" ({missing['file']})" if missing.get("file") else ""
        return (
            f"The weights of {model} could not be downloaded" + (f": {reason}" if reason else "") + ". "
            f"Choose the file{file} if you have it, copy its address to download it on another computer, or try "
            "the plugin with random weights (its results are then meaningless, and say so)."
        )

    def show(self) -> None:
        self.dock.show_weights_problem(self.text(), bool((self.missing or {}).get("url")))
        self.dock.set_status("The model's weights are missing; see below.")

    def shown_for_model(self, settings: PluginSettings) -> bool:
        """True while the problem stands for these model settings (the dock keeps showing it)."""
        if self.missing is None or self.model != (settings.model, settings.pretrained):
            return False
        self.show()
        return True

    def settings_changed(self) -> None:
        """Another model or other weights were chosen: the problem is that model's no more."""
        settings = self.controller.settings
        if self.missing is not None and self.model != (settings.model, settings.pretrained):
            self.solved()

    def solved(self) -> None:
        self.missing = self.model = None
        self.dock.hide_weights_problem()

    # --- the user's ways out --------------------------------------------------------------------------
    def choose_file(self, path: str | None = None) -> None:
        """Use a weights file (asked for when ``path`` is None) as the model's weights, and carry on."""
        if path is None:
            path, _ = QFileDialog.getOpenFileName(self.dock, "The model's weights file", "", WEIGHT_FILES)
        if path:
            self._use(path)

    def copy_address(self) -> str:
        url = str((self.missing or {}).get("url") or "")
        if url:
            QApplication.clipboard().setText(url)
            self.controller.messages.show(
                f"Copied {url}. Download it on a computer with internet access, bring the file here and choose it "
                "with Choose weights file.", Qgis.Info, 10)
        return url

    def try_random(self) -> None:
        self._use("none")

    def _use(self, pretrained: str) -> None:
        retry = self.retry
        self.controller.use_weights(pretrained)  # saved in the settings; settings_changed() clears the problem
        if retry is not None:
            retry()
