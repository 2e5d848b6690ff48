"""The Set up engine dialog: what this computer has, the engine in use, one button that makes the engine's
environment (a QgsTask with progress and a log), and Copy diagnostics for bug reports. Its widgets come from
setup_dialog.ui."""

from __future__ import annotations

import sys
import threading
from collections import deque
from itertools import pairwise
from pathlib import Path
from typing import Any

from qgis.core import Qgis, QgsApplication, QgsNetworkAccessManager, QgsTask
from qgis.PyQt import uic
from qgis.PyQt.QtCore import QT_VERSION_STR, Qt, pyqtSignal
from qgis.PyQt.QtGui import QFontDatabase
from qgis.PyQt.QtNetwork import QNetworkProxy
from qgis.PyQt.QtWidgets import QApplication, QDialog, QDialogButtonBox, QFileDialog, QPushButton, QWidget

from ..setup import install as install
from ..setup import plan as setup

FORM, _ = uic.loadUiType(str(Path(__file__).with_name("setup_dialog.ui")))


class SetupTask(QgsTask):
    """Runs the installer in QGIS's task manager; lines of its log come out through ``line``, what it installs
    instead of the planned torch (when the PyTorch index lacks it) through ``fellBack``."""

    line = pyqtSignal(str)
    fellBack = pyqtSignal(str)
    done = pyqtSignal(object)  # a SetupResult, or the SetupError that stopped it

    def __init__(self, plan: setup.SetupPlan) -> None:
        super().__init__("Setting up the CLIP Search engine", QgsTask.CanCancel)
        self.plan = plan
        self.outcome: install.SetupResult | setup.SetupError | None = None
        self.installer = install.Installer(plan, self.line.emit, lambda done: self.setProgress(done * 100),
                                         self.isCanceled, self.fellBack.emit)

    def run(self) -> bool:
        try:
            self.outcome = self.installer.run()
        except setup.SetupError as exc:
            self.outcome = exc
        return isinstance(self.outcome, install.SetupResult)

    def finished(self, _ok: bool) -> None:
        self.done.emit(self.outcome or setup.SetupCancelled("Set-up cancelled."))


class SetupDialog(QDialog, FORM):  # type: ignore[misc, valid-type]
    """``recent_errors``: the last errors the plugin showed (its own set-up errors are added), for Copy
    diagnostics."""

    engineReady = pyqtSignal(str)  # the new engine's Python
    _found = pyqtSignal(object, object, object)  # GpuReport, [BasePython], self-test report of the engine in use

    def __init__(self, engine_python: str, parent: QWidget | None = None,
                 recent_errors: deque[str] | None = None) -> None:
        super().__init__(parent)
        self.setupUi(self)
        self.setObjectName("ClipSearchSetupDialog")
        self.engine_python = engine_python
        self.recent_errors: deque[str] = deque(maxlen=10) if recent_errors is None else recent_errors
        self.requirements = setup.requirements_file()
        self.gpus = setup.GpuReport(problem="checking…")
        self.build = setup.choose_build(self.gpus)
        self.report: dict[str, Any] | None = None
        self.task: SetupTask | None = None
        self.last_log: Path | None = None  # the full output of the last set-up started here
        self.engineLabel.setText(f"{engine_python or '(none)'}: checking…")
        self.folderWidget.setFilePath(str(setup.default_env_root()))
        self.wheelsWidget.lineEdit().setPlaceholderText("optional: a folder of wheels, to install without internet")
        self.buildCombo.addItem("Automatic (as above)", "")
        for name, label in setup.BUILD_CHOICES.items():
            self.buildCombo.addItem(label, name)
        self.logView.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        self._add_buttons()
        self.browseButton.clicked.connect(self.browse_python)
        self.buildCombo.currentIndexChanged.connect(self.show_plan)
        self.wheelsWidget.fileChanged.connect(self.show_plan)
        self._found.connect(self._show_found, Qt.QueuedConnection)
        self.look()

    def _add_buttons(self) -> None:
        """The dialog's own buttons, beside Close."""
        self.setupButton = self.buttons.addButton("Set up engine", QDialogButtonBox.ActionRole)
        self.checkButton = self.buttons.addButton("Check engine", QDialogButtonBox.ActionRole)
        self.copyButton = self.buttons.addButton("Copy diagnostics", QDialogButtonBox.ActionRole)
        self.cancelButton: QPushButton = self.buttons.addButton("Cancel set-up", QDialogButtonBox.ActionRole)
        close = self.buttons.button(QDialogButtonBox.Close)
        close.setDefault(True)  # Enter closes the dialog; it never starts a set-up
        tab_order = (close, self.setupButton, self.checkButton, self.copyButton, self.cancelButton)
        for before, after in pairwise(tab_order):
            QWidget.setTabOrder(before, after)
        self.cancelButton.setEnabled(False)
        self.setupButton.setEnabled(False)  # until the computer has been looked at
        self.setupButton.clicked.connect(self.start)
        self.checkButton.clicked.connect(self.look)
        self.copyButton.clicked.connect(self.copy_diagnostics)
        self.cancelButton.clicked.connect(self.cancel)
        self.buttons.rejected.connect(self.reject)

    # --- looking at the computer (in a thread: nvidia-smi and the self-test take seconds) --------------
    def look(self) -> None:
        self.checkButton.setEnabled(False)
        self.engineLabel.setText(f"{self.engine_python or '(none)'}: checking…")

        def work() -> None:
            gpus = setup.detect_gpus()
            pythons = [setup.inspect_python(p) for p in setup.python_candidates()]
            report = setup.run_selftest(self.engine_python) if self.engine_python else None
            try:
                self._found.emit(gpus, pythons, report)
            except RuntimeError:
                pass  # the dialog was closed meanwhile

        threading.Thread(target=work, name="clip-search-setup-look", daemon=True).start()

    def _show_found(self, gpus: setup.GpuReport, pythons: list[setup.BasePython], report: Any) -> None:
        self.gpus, self.report = gpus, report
        self.computerLabel.setText(gpus.describe())
        self.build = setup.choose_build(gpus)
        chosen = self.pythonCombo.currentText()
        self.pythonCombo.clear()
        for python in sorted(pythons, key=lambda p: not p.usable):
            self.pythonCombo.addItem(python.describe(), python.path)
        if chosen:
            self.pythonCombo.setEditText(chosen)
        self.show_plan()
        if report is None:
            self.engineLabel.setText("No engine environment yet: click Set up engine.")
        else:
            self.engineLabel.setText(f"{setup_summary(report)}\n{self.engine_python}")
        self.checkButton.setEnabled(True)
        self.setupButton.setEnabled(self.task is None)

    def chosen_python(self) -> str:
        index = self.pythonCombo.findText(self.pythonCombo.currentText())
        data = self.pythonCombo.itemData(index) if index >= 0 else None
        return str(data or self.pythonCombo.currentText()).strip()

    # --- setting up ------------------------------------------------------------------------------------
    def plan(self) -> setup.SetupPlan:
        """What Set up engine will do with the dialog's choices (and QGIS's proxy, for pip)."""
        root = self.folderWidget.filePath().strip() or str(setup.default_env_root())
        proxy = qgis_proxy_url()
        forced = self.buildCombo.currentData()
        build = setup.Build(forced, "chosen in the dialog") if forced else self.build
        return setup.SetupPlan(self.chosen_python(), build, root=Path(root), requirements=self.requirements,
                               wheelhouse=self.wheelsWidget.filePath().strip(),
                               pip_args=("--proxy", proxy) if proxy else ())

    def show_plan(self) -> None:
        """What Set up engine will install with the dialog's choices, from where, and its size."""
        if self.task is None:
            self.planLabel.setText(self.plan().describe())

    def show_fallback(self, note: str) -> None:
        self.planLabel.setText(note)  # what is installed instead of the plan, and its size

    def browse_python(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "The Python to make the engine's environment with",
                                              str(Path(self.chosen_python() or sys.executable).parent))
        if path:
            self.pythonCombo.setEditText(path)

    def start(self) -> None:
        plan = self.plan()
        self.planLabel.setText(plan.describe())
        self.logView.clear()
        self.progressBar.setValue(0)
        self.task = SetupTask(plan)
        self.last_log = self.task.installer.log_path
        self.logFileLabel.setText(f"Full output of every step: {self.last_log}")
        self.task.line.connect(self.logView.appendPlainText, Qt.QueuedConnection)
        self.task.fellBack.connect(self.show_fallback, Qt.QueuedConnection)
        self.task.progressChanged.connect(lambda value: self.progressBar.setValue(int(value)))
        self.task.done.connect(self._finished)
        self.setupButton.setEnabled(False)
        self.cancelButton.setEnabled(True)
        QgsApplication.taskManager().addTask(self.task)

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _finished(self, outcome: Any) -> None:
        self.task = None
        self.cancelButton.setEnabled(False)
        self.setupButton.setEnabled(True)
        if isinstance(outcome, install.SetupResult):
            self.progressBar.setValue(100)
            self.engine_python, self.report = outcome.python, outcome.report
            self.engineLabel.setText(f"{setup_summary(outcome.report)}\n{outcome.python}")
            self.engineReady.emit(outcome.python)
        else:
            message = str(outcome)
            self.recent_errors.append(message)
            self.logView.appendPlainText(f"\n{message}")
            self.engineLabel.setText(f"{self.engine_python or '(none)'}: unchanged. {message}")

    def copy_diagnostics(self) -> str:
        host = {"QGIS": Qgis.QGIS_VERSION, "Qt": QT_VERSION_STR, "QGIS Python": sys.version.split()[0],
                "QGIS Python path": sys.executable}
        text = setup.diagnostics(host, self.engine_python, self.gpus, self.report, list(self.recent_errors),
                                 self.last_log)
        QApplication.clipboard().setText(text)
        self.logView.appendPlainText("Diagnostics copied to the clipboard: paste them into your bug report.")
        return text

    def reject(self) -> None:
        if self.task is not None:  # closing does not leave a set-up running unseen
            self.task.cancel()
        super().reject()


def setup_summary(report: dict[str, Any]) -> str:
    from ..engine.serve.selftest import summary  # pure Python; imports nothing heavy

    return summary(report)


def qgis_proxy_url() -> str:
    """QGIS's own HTTP proxy (Settings ▸ Options ▸ Network) as pip's --proxy, or "" when there is none (a
    system proxy reaches pip through the environment already)."""
    proxy = QgsNetworkAccessManager.instance().fallbackProxy()
    if proxy.type() != QNetworkProxy.HttpProxy or not proxy.hostName():
        return ""
    from urllib.parse import quote

    user = f"{quote(proxy.user(), safe='')}:{quote(proxy.password(), safe='')}@" if proxy.user() else ""
    return f"http://{user}{proxy.hostName()}:{proxy.port()}"
