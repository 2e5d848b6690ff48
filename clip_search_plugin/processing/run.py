"""What a Processing run of the algorithms needs besides QGIS: one engine session with the progress bar shared out
over the run's steps, and the names and styles of the outputs QGIS loads when the run ends (as the dock shows its
own results)."""

from __future__ import annotations

import threading
from types import TracebackType
from typing import Any

from qgis.core import (
    QgsProcessingContext,
    QgsProcessingException,
    QgsProcessingFeedback,
    QgsProcessingLayerPostProcessorInterface,
    QgsRasterLayer,
    QgsVectorLayer,
)
from qgis.PyQt import sip

from ..engine.answers import IndexAnswer, IndexStatus, InfoAnswer, SearchAnswer
from ..engine.requests import IndexRequest, InfoRequest, LocateRequest, Request, SearchRequest, SimilarRequest
from ..results import layers
from ..session.client import EngineUnavailable
from ..session.session import EngineSession
from ..session.settings import PluginSettings

Event = dict[str, Any]
BUILD_WEIGHT = 19.0  # a build's share of its run, in steps: starting the engine (one step) shows as 5%


class EngineRun:
    """One engine session (process) for one algorithm run, its requests sent in order.

    The progress bar is shared out over the run's ``steps``: starting the engine is one, each request its
    ``weight`` (one unless told); within a request, the engine's progress events (tiles embedded, for a build)
    move it. So a search moves when the engine is ready, when the index is open and after each query, and a
    build with each batch. Cancelling in Processing cancels the running request and ends the process."""

    def __init__(
        self, settings: PluginSettings, feedback: QgsProcessingFeedback | None, steps: float, device: str | None = None
    ) -> None:
        self.session = EngineSession(settings, device)
        self.feedback = feedback
        self.steps = max(float(steps), 1.0)
        self.done = 0.0

    def __enter__(self) -> EngineRun:
        try:
            self.session.client()
        except EngineUnavailable as exc:
            self.session.stop()
            raise QgsProcessingException(str(exc)) from exc
        self.advance(1.0)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.session.stop()

    def advance(self, steps: float) -> None:
        self.done = min(self.steps, self.done + steps)
        self.show(0.0)

    def show(self, within: float) -> None:
        """Set the progress bar to the steps done plus ``within`` of the current one."""
        if self.feedback is not None:
            self.feedback.setProgress(100.0 * min(self.done + within, self.steps) / self.steps)

    def call(self, request: Request, weight: float = 1.0) -> dict[str, Any]:
        """The result of one request, or QgsProcessingException with the engine's message."""

        def report(event: Event) -> None:
            if event.get("event") == "progress" and event.get("total"):
                self.show(weight * min(1.0, event["done"] / event["total"]))
            elif event.get("event") == "log" and self.feedback is not None:
                self.feedback.pushDebugInfo(str(event.get("message", "")))

        is_cancelled = self.feedback.isCanceled if self.feedback is not None else None
        try:
            answer = self.session.run(request, is_cancelled, report)
        except EngineUnavailable as exc:  # the process ended between requests
            raise QgsProcessingException(str(exc)) from exc
        if answer["event"] == "error":
            raise QgsProcessingException(answer["error"]["message"])
        self.advance(weight)
        return dict(answer["result"])

    def build(self, request: IndexRequest, weight: float = 1.0) -> IndexAnswer:
        return IndexAnswer.from_dict(self.call(request, weight))

    def locate(self, request: LocateRequest) -> IndexStatus:
        return IndexStatus.from_dict(self.call(request))

    def info(self, request: InfoRequest) -> InfoAnswer:
        return InfoAnswer.from_dict(self.call(request))

    def search(self, request: SearchRequest | SimilarRequest) -> SearchAnswer:
        return SearchAnswer.from_dict(self.call(request))


class ResultsStyle(QgsProcessingLayerPostProcessorInterface):
    """Styles a results layer Processing loads as the dock styles its own: score-graded fill, rank labels."""

    def postProcessLayer(
        self, layer: Any, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        if isinstance(layer, QgsVectorLayer) and layer.fields().indexOf("score") >= 0:
            layers.style_results(layer, [float(f["score"]) for f in layer.getFeatures()])


class HeatmapStyle(QgsProcessingLayerPostProcessorInterface):
    """Styles a heatmap Processing loads as the dock styles its own (relative score in a colour ramp)."""

    def postProcessLayer(
        self, layer: Any, context: QgsProcessingContext, feedback: QgsProcessingFeedback
    ) -> None:
        if isinstance(layer, QgsRasterLayer):
            layers.style_heatmap(layer)


# QGIS owns a post-processor once it is set (the run's context deletes it), but calls into its Python part,
# which lives only while Python holds a reference: these are kept here until QGIS has deleted them. Runs in
# background tasks set them from their own threads, hence the lock.
_KEPT: list[QgsProcessingLayerPostProcessorInterface] = []
_KEPT_LOCK = threading.Lock()


def load_as(
    context: QgsProcessingContext, destination: str, name: str, style: QgsProcessingLayerPostProcessorInterface
) -> None:
    """When ``destination`` is loaded as the run ends (the dialog, runAndLoadResults), name it ``name`` (unless
    QGIS's "use filename as layer name" applies to a file output) and style it with ``style``."""
    if not context.willLoadLayerOnCompletion(destination):
        return
    details = context.layerToLoadOnCompletionDetails(destination)
    details.name = name
    with _KEPT_LOCK:
        _KEPT[:] = [kept for kept in _KEPT if not sip.isdeleted(kept)] + [style]
    details.setPostProcessor(style)
