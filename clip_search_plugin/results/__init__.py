"""Results in QGIS: one record per results layer, styled layers, the chosen result, export."""
