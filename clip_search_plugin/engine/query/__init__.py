"""Querying: text to a query vector, the top-k places, regions, heatmaps and exported results."""
