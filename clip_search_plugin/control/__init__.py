"""The dock's controller: wiring (controller), the dock's engine session (engine), each raster's index status
(rasters), index builds (indexing), searches (searches), missing weights (weights) and the texts told (status)."""
