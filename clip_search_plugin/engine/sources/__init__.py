"""Sources: what a build reads (a file, a folder of sheets, a remote file or a web layer) and how GDAL opens it."""
