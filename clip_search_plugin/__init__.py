"""CLIP Search: find places in aerial imagery by describing them in plain language.

The QGIS side (dock, tasks, layers) lives in this package; the engine that runs the model lives in
``clip_search_plugin.engine`` and runs in its own Python environment and process.
"""

from typing import Any


def classFactory(iface: Any) -> Any:
    from .plugin import ClipSearchPlugin

    return ClipSearchPlugin(iface)
