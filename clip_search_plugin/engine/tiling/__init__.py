"""Tiling: rasters read through rasterio, cut into a grid of pixel windows; areas of interest; sizes on the ground."""
