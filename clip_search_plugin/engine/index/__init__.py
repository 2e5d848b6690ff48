"""The index folder: manifest, vectors, tiles and look-alikes; opening, locating and searching structures."""
