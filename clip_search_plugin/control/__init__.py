"""The dock's controller: index builds, searches and the raster's index status, wired between dock and engine."""
