"""The engine: tiling, CLIP embedding, Faiss index and search. Imports no qgis or PyQt.

It runs in its own Python environment and process (see DESIGN.md); the QGIS side talks to it over
JSON lines (``worker.py``). The pipeline API lives in :mod:`clip_search_plugin.engine.building.build`.
"""
