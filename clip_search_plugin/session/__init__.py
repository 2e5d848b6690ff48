"""The engine as QGIS uses it: the client of one engine process, the one rule for its environment, index tasks."""
